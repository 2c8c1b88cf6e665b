"""Excel workbooks (.xlsx) as containers of tables, one table per sheet.

A workbook is read whole when the node is made (openpyxl has no cheaper way in); each sheet
becomes an in-memory table. Spreadsheet cells have no zarr codec, so the zarr view encodes
the parsed values, as the nodes' metadata says.
"""

from __future__ import annotations

import zipfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas

from ..zarr_format.model import re_encoded_view, with_zarr_view
from .files import asset_uris, path_from_uri
from .mapping import MapAdapter
from .sequence import FileUnreadable, opened
from .table import TableAdapter

if TYPE_CHECKING:
    from ..structures.data_source import DataSource

ZARR_VIEW = re_encoded_view("spreadsheet cells are parsed, then encoded")
# A sheet is read into memory as rows padded to its widest row: one cell far from the others
# (XFD1048576) would make 1.7e10 of them. Sheets spanning more cells than this are refused.
MAX_CELLS = 20_000_000
# Bytes the workbook's parts may expand to (a zip bomb is small on disk).
MAX_UNCOMPRESSED_BYTES = 1 << 30


def _check_size(file: Any, name: str) -> None:
    """Refuse a workbook whose parts expand to more than :data:`MAX_UNCOMPRESSED_BYTES`."""
    try:
        with zipfile.ZipFile(file) as archive:
            expanded = sum(info.file_size for info in archive.infolist())
    except zipfile.BadZipFile as err:
        raise FileUnreadable(f"{name} is not a workbook (an .xlsx file is a zip): {err}") from None
    finally:
        file.seek(0)
    if expanded > MAX_UNCOMPRESSED_BYTES:
        raise FileUnreadable(
            f"{name} expands to {expanded} bytes, more than this server reads "
            f"({MAX_UNCOMPRESSED_BYTES})"
        )


def _check_extent(excel_file: pandas.ExcelFile, name: str) -> None:
    """Refuse a workbook with a sheet whose cells (its rows, padded to its widest row, as
    pandas reads them) are more than :data:`MAX_CELLS`; streamed, never held."""
    book = getattr(excel_file, "book", None)
    for sheet in getattr(book, "worksheets", None) or []:
        if not hasattr(sheet, "reset_dimensions"):
            continue  # not openpyxl's read-only sheet: nothing to stream
        # Declared dimensions may lie either way: counted instead, and left reset, so that
        # pandas reads the rows as they are rather than padded to what was declared.
        sheet.reset_dimensions()
        rows = width = 0
        for number, row in enumerate(sheet.iter_rows(values_only=True), start=1):
            used = len(row)
            while used and row[used - 1] is None:
                used -= 1
            if used:
                rows, width = number, max(width, used)
                if rows * width > MAX_CELLS:
                    raise FileUnreadable(
                        f"{name}: the sheet {sheet.title!r} spans more than {MAX_CELLS} "
                        f"cells (row {rows}, column {width}), more than this server reads"
                    )


def _sheets(excel_file: pandas.ExcelFile) -> dict[str, TableAdapter]:
    return {
        str(name): TableAdapter.from_pandas(
            pandas.read_excel(excel_file, sheet_name=name),
            npartitions=1,
            metadata=with_zarr_view({}, ZARR_VIEW),
        )
        for name in excel_file.sheet_names
    }


class ExcelAdapter(MapAdapter):
    """The sheets of a workbook as tables: ``ExcelAdapter.from_uris("file://localhost/a.xlsx")``."""

    @classmethod
    def from_file(cls, file: Any, **kwargs: Any) -> ExcelAdapter:
        """From a ``pandas.ExcelFile``, a path or an open binary file; ``kwargs`` go to the
        container (``metadata``, ``specs``, ...)."""
        if isinstance(file, pandas.ExcelFile):
            _check_extent(file, "the workbook")
            return cls._of(_sheets(file), **kwargs)
        # A workbook opened here is closed here: every sheet is read into memory first.
        with pandas.ExcelFile(file) as excel_file:
            _check_extent(excel_file, "the workbook")
            return cls._of(_sheets(excel_file), **kwargs)

    @classmethod
    def from_uris(cls, data_uri: str, **kwargs: Any) -> ExcelAdapter:
        path = path_from_uri(data_uri)
        with opened(Path(path)) as file:
            _check_size(file.file, file.name)
            with pandas.ExcelFile(file.file) as excel_file:
                _check_extent(excel_file, file.name)
                sheets = _sheets(excel_file)  # a corrupt or unreadable workbook: a clear 4xx
        # Upstream passes the data source's structure along; a container has none to use.
        kwargs.pop("structure", None)
        return cls._of(sheets, **kwargs)

    @classmethod
    def from_catalog(cls, data_source: DataSource, node: Any, /, **kwargs: Any) -> ExcelAdapter:
        uri = kwargs.pop("data_uri", None) or asset_uris(data_source)[0]
        return cls.from_uris(uri, metadata=node.metadata_, specs=node.specs)

    @classmethod
    def _of(cls, sheets: dict[str, TableAdapter], **kwargs: Any) -> ExcelAdapter:
        metadata = with_zarr_view(kwargs.pop("metadata", None) or {}, ZARR_VIEW)
        return cls(sheets, metadata=metadata, **kwargs)


__all__ = ["ExcelAdapter"]
