"""CSV files as tables (one file per row partition) or, without a header, as arrays.

Parameters are ``pandas.read_csv``'s, passed as upstream passes them (``sep``, ``names``,
``usecols``, ``dtype``, ``header``, ...; dask's ``assume_missing`` too: integer columns are
read as floats). A table's structure comes from its first file; every other file must have
the same columns, and numeric columns are cast to the first file's types.

Text has no zarr codec, so the zarr view always parses and re-encodes, as the node's
metadata says. Parsed files are shared for a while (:data:`tiled.adapters.sequence.DECODED`),
so the column chunks of one partition do not parse it each.
"""

from __future__ import annotations

import builtins
import re
import threading
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy
import pandas

from ..errors import BadRequest
from ..ndslice import NDSlice
from ..structures.array import ArrayStructure, data_type_from_numpy
from ..structures.table import TableStructure
from ..zarr_format.model import re_encoded_view, with_zarr_view
from .base import ArrayAdapterBase, TableAdapterBase
from .files import asset_uris, path_from_uri
from .sequence import DECODED, FileChanged, FileUnreadable, bounding_box, opened
from .table import TableAdapter, _Partitions

if TYPE_CHECKING:
    from ..structures.data_source import DataSource

ZARR_VIEW = re_encoded_view("CSV text is parsed, then encoded")
_NUMERIC_KINDS = "biufcmM"
# The widest table read: parsing a header of 10**6 names alone takes pandas minutes, and each
# column is a node of the zarr view. Checked on the first line before anything is parsed.
MAX_COLUMNS = 10_000
_PEEK_BYTES = 64 * 1024 * 1024  # how much of the first line is looked at for that check
_QUOTED = re.compile(rb'"[^"]*"')
_INT64 = numpy.iinfo(numpy.int64)


def _frame_bytes(frame: pandas.DataFrame) -> int:
    return int(frame.memory_usage(index=True, deep=False).sum())


def _big_integers_as_text(frame: pandas.DataFrame) -> pandas.DataFrame:
    """Integers too large for 64 bits (pandas keeps them as Python ints, which neither Arrow
    nor JSON encoders take) as their text, in columns of text."""
    big = {}
    for column, dtype in frame.dtypes.items():
        if getattr(dtype, "kind", None) != "O":
            continue
        values = frame[column]
        if any(
            isinstance(v, int) and not isinstance(v, bool) and not _INT64.min <= v <= _INT64.max
            for v in values
        ):
            big[column] = values.map(lambda v: str(v) if isinstance(v, int) else v)
    if big:
        frame = frame.copy(deep=False)
        for column, values in big.items():
            frame[column] = values
    return frame


class _CSVPartitions(_Partitions):
    """Partitions parsed from CSV files when asked for; conformed to the table's schema."""

    def __init__(self, paths: Sequence[Path], kwargs: dict[str, Any]):
        self.paths = list(paths)
        self.kwargs = dict(kwargs)
        self.assume_missing = bool(self.kwargs.pop("assume_missing", False))
        self.structure: TableStructure | None = None
        self._meta: pandas.DataFrame | None = None
        self._key = repr(sorted(self.kwargs.items(), key=lambda kv: kv[0]))
        self._lengths: tuple[int, ...] | None = None
        self._lock = threading.Lock()

    def set_structure(self, structure: TableStructure) -> None:
        self.structure = structure
        self._meta = structure.meta

    @property
    def frames(self) -> list[Path]:  # what column adapters inspect: nothing in memory
        return self.paths

    def frame(self, index: int) -> pandas.DataFrame:
        path = self.paths[index]
        with opened(path) as file:
            key = ("csv", path, file.identity, self._key, self.structure)
            return DECODED.get_or_make(key, lambda: self._parse(file), _frame_bytes)

    def _parse(self, file: Any) -> pandas.DataFrame:
        self._check_width(file)
        frame = pandas.read_csv(file.file, **self.kwargs)
        frame = frame.rename(columns=str)
        frame = _big_integers_as_text(frame)
        usecols = self.kwargs.get("usecols")
        if (
            usecols is not None
            and not callable(usecols)
            and all(isinstance(c, str) for c in usecols)
        ):
            frame = frame[list(usecols)]  # pandas keeps the file's order; the caller's wins
        if self.assume_missing:
            ints = [c for c, t in frame.dtypes.items() if t.kind in "iu"]
            frame = frame.astype({c: "float64" for c in ints})
        if self._meta is not None:
            frame = self._conform(frame, file.name)
        return frame

    def _check_width(self, file: Any) -> None:
        """Refuse a file whose first line has more than :data:`MAX_COLUMNS` fields, before
        pandas spends minutes on it (quoted fields are not counted as separators)."""
        sep = self.kwargs.get("sep", self.kwargs.get("delimiter", ","))
        if not isinstance(sep, str) or len(sep) != 1 or "skiprows" in self.kwargs:
            return  # a regular expression, sniffed, or not the first line: pandas decides
        head = file.file.read(_PEEK_BYTES)
        file.file.seek(0)
        line = _QUOTED.sub(b"", head.split(b"\n", 1)[0])
        fields = line.count(sep.encode()) + 1
        if fields > MAX_COLUMNS:
            raise FileUnreadable(
                f"{file.name} has {fields} or more columns, more than this server reads "
                f"({MAX_COLUMNS})"
            )

    def _conform(self, frame: pandas.DataFrame, name: str) -> pandas.DataFrame:
        columns = tuple(frame.columns)
        if columns != tuple(self._meta.columns):
            raise FileChanged(
                f"{name} has the columns {list(columns)}; this table has {list(self._meta.columns)}"
            )
        casts = {}
        for column, wanted in self._meta.dtypes.items():
            have = frame.dtypes[column]
            if isinstance(wanted, numpy.dtype) and wanted.kind in _NUMERIC_KINDS and have != wanted:
                casts[column] = wanted
        if casts:
            try:
                frame = frame.astype(casts)
            except (TypeError, ValueError) as err:
                raise FileUnreadable(
                    f"{name} does not fit the table's column types: {err}"
                ) from None
        return frame

    def read(self, index: int, fields: Sequence[str] | None = None) -> pandas.DataFrame:
        frame = self.frame(index)
        # A new frame object each time (sharing data, copy-on-write): the parsed one is shared.
        return frame.copy(deep=False) if fields is None else frame[list(fields)]

    def column(self, index: int, name: str) -> pandas.Series:
        return self.frame(index)[name]

    def dtype(self, column: str) -> Any:
        return self._meta.dtypes[column]

    @property
    def lengths_known(self) -> bool:
        return self._lengths is not None

    def _compute_lengths(self) -> tuple[int, ...]:
        return tuple(len(self.frame(i)) for i in range(len(self.paths)))


def _paths(data_uris: Iterable[str], owner: str) -> list[Path]:
    paths = [path_from_uri(uri) for uri in data_uris]
    if not paths:
        raise BadRequest(f"{owner} needs at least one file")
    return paths


class _CSVFiles:
    """What the CSV table and the CSV array share: how a catalog opens them, and the zarr
    view note (text has no zarr codec)."""

    _metadata: dict[str, Any]

    @classmethod
    def from_uris(cls, *data_uris: str, **kwargs: Any) -> Any:
        return cls(data_uris, **kwargs)

    @classmethod
    def from_catalog(cls, data_source: DataSource, node: Any, /, **kwargs: Any) -> Any:
        uris = kwargs.pop("data_uris", None) or asset_uris(data_source)
        return cls(
            uris,
            structure=data_source.structure,
            metadata=node.metadata_,
            specs=node.specs,
            **kwargs,
        )

    def metadata(self) -> dict[str, Any]:
        return with_zarr_view(self._metadata, ZARR_VIEW)


class CSVAdapter(_CSVFiles, TableAdapter):
    """A table read from CSV files, one per row partition.

    ``CSVAdapter(data_uris, structure=None, *, metadata=None, specs=None, **read_csv_kwargs)``
    """

    def __init__(
        self,
        data_uris: Iterable[str],
        structure: TableStructure | None = None,
        *,
        metadata: dict[str, Any] | None = None,
        specs: Any = None,
        **kwargs: Any,
    ):
        paths = _paths(data_uris, type(self).__name__)
        partitions = _CSVPartitions(paths, kwargs)
        if structure is None:
            structure = TableStructure.from_pandas(partitions.frame(0), len(paths))
        if structure.npartitions != len(paths):
            raise BadRequest(
                f"A table of {structure.npartitions} partitions needs as many files, got {len(paths)}"
            )
        partitions.set_structure(structure)
        TableAdapterBase.__init__(self, structure, metadata=metadata, specs=specs)
        self._partitions = partitions
        self._columns = {}
        self._read_csv_kwargs = dict(kwargs)

    @property
    def paths(self) -> list[Path]:
        return list(self._partitions.paths)

    def read(self, fields: Sequence[str] | None = None) -> pandas.DataFrame:
        frame = super().read(fields)
        if "index_col" not in self._read_csv_kwargs and len(self._partitions) > 1:
            # Each file numbers its rows from 0; number the rows of the whole table instead.
            frame = frame.reset_index(drop=True)
        return frame

    def __repr__(self) -> str:
        return f"<CSVAdapter {list(self.structure().columns)} files={len(self._partitions)}>"


def _array_dtype(frames: Sequence[pandas.DataFrame]) -> numpy.dtype:
    """The array type of headerless CSV data: one type for all columns when they agree,
    else a record of one field per column (upstream's rule). Text becomes fixed-width."""
    fields = []
    for column in frames[0].columns:
        dtype = frames[0].dtypes[column]
        if isinstance(dtype, numpy.dtype) and dtype.kind in _NUMERIC_KINDS:
            fields.append((str(column), dtype))
        else:
            width = max((_text(f[column]).dtype.itemsize // 4 for f in frames), default=1)
            fields.append((str(column), numpy.dtype(f"<U{max(width, 1)}")))
    kinds = {dtype.kind if dtype.kind == "U" else dtype for _, dtype in fields}
    if len(kinds) == 1:
        return max((dtype for _, dtype in fields), key=lambda d: d.itemsize)
    return numpy.dtype(fields)


def _text(series: pandas.Series) -> numpy.ndarray:
    return series.astype(str).to_numpy(dtype=str) if len(series) else numpy.empty(0, "<U1")


class CSVArrayAdapter(_CSVFiles, ArrayAdapterBase):
    """An array read from headerless CSV files, one per block of rows.

    ``CSVArrayAdapter(data_uris, structure=None, *, metadata=None, specs=None, **read_csv_kwargs)``
    Columns of one type make a 2-d array ``(rows, columns)``; columns of different types make
    a record array of shape ``(rows, 1)``, one field per column.
    """

    # A catalog may declare another data type (or other field names): the text is parsed
    # into it, as upstream's does (see tiled.catalog.registered.DECLARED_CHANGES).
    declared_structure_changes: ClassVar[frozenset[str]] = frozenset({"data_type"})

    def __init__(
        self,
        data_uris: Iterable[str],
        structure: ArrayStructure | None = None,
        *,
        metadata: dict[str, Any] | None = None,
        specs: Any = None,
        **kwargs: Any,
    ):
        paths = _paths(data_uris, type(self).__name__)
        self._partitions = _CSVPartitions(paths, {"header": None, **kwargs})
        if structure is None:
            frames = [self._partitions.frame(i) for i in range(len(paths))]
            dtype = _array_dtype(frames)
            columns = 1 if dtype.fields else len(frames[0].columns)
            lengths = tuple(len(f) for f in frames)
            structure = ArrayStructure(
                data_type_from_numpy(dtype), (lengths, (columns,)), (sum(lengths), columns)
            )
        if len(structure.chunks[0]) != len(paths):
            raise BadRequest(
                f"An array of {len(structure.chunks[0])} row blocks needs as many files, "
                f"got {len(paths)}"
            )
        super().__init__(structure, metadata=metadata, specs=specs)

    def read(self, slice: NDSlice = NDSlice()) -> numpy.ndarray:
        shape = self.structure().shape
        box, post = bounding_box(slice, shape)
        rows = box[0]
        pieces, start = [], 0
        for index, length in enumerate(self.structure().chunks[0]):
            stop = start + length
            if length and start < rows.stop and stop > rows.start:
                values = self._block(index, length)
                pieces.append(values[max(rows.start, start) - start : min(rows.stop, stop) - start])
            start = stop
        dtype = self.structure().data_type.to_numpy_dtype()
        data = numpy.concatenate(pieces) if pieces else numpy.empty((0, *shape[1:]), dtype)
        return data[(builtins.slice(None), *box[1:])][post]

    def _block(self, index: int, length: int) -> numpy.ndarray:
        frame = self._partitions.frame(index)
        if len(frame) != length:
            raise FileChanged(
                f"{self._partitions.paths[index].name} has {len(frame)} rows; this array "
                f"expects {length} there"
            )
        dtype = self.structure().data_type.to_numpy_dtype()
        if dtype.fields is None:
            if dtype.kind == "U":
                return frame.astype(str).to_numpy(dtype=dtype)
            return frame.to_numpy(dtype=dtype)
        records = numpy.empty(len(frame), dtype=dtype)
        for name, column in zip(dtype.names, frame.columns, strict=True):
            field = dtype.fields[name][0]
            values = frame[column]
            records[name] = _text(values) if field.kind == "U" else values.to_numpy(dtype=field)
        return records.reshape(-1, 1)

    def __repr__(self) -> str:
        return f"<CSVArrayAdapter shape={list(self.structure().shape)}>"


__all__ = ["CSVAdapter", "CSVArrayAdapter"]
