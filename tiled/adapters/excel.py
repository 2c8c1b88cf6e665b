"""Excel workbooks (.xlsx) as containers of tables, one table per sheet.

A workbook is read whole when the node is made (openpyxl has no cheaper way in); each sheet
becomes an in-memory table. Spreadsheet cells have no zarr codec, so the zarr view encodes
the parsed values, as the nodes' metadata says.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas

from ..zarr_format.model import re_encoded_view, with_zarr_view
from .files import asset_uris, path_from_uri
from .mapping import MapAdapter
from .sequence import opened
from .table import TableAdapter

if TYPE_CHECKING:
    from ..structures.data_source import DataSource

ZARR_VIEW = re_encoded_view("spreadsheet cells are parsed, then encoded")


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
            return cls._of(_sheets(file), **kwargs)
        # A workbook opened here is closed here: every sheet is read into memory first.
        with pandas.ExcelFile(file) as excel_file:
            return cls._of(_sheets(excel_file), **kwargs)

    @classmethod
    def from_uris(cls, data_uri: str, **kwargs: Any) -> ExcelAdapter:
        path = path_from_uri(data_uri)
        with opened(Path(path)) as file, pandas.ExcelFile(file.file) as excel_file:
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
