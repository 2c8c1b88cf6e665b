"""In-memory tables (pandas or dask frames, one per row partition) and their column arrays.

A table's zarr view is a group of one-dimensional column arrays chunked along the partitions.
Column metadata is built from dtypes and partition lengths only, so a zarr metadata request
never reads column values; chunk requests read only the partitions they overlap.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import threading
from collections.abc import Iterable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

import numpy
import pandas

from ..errors import BadRequest, NoSuchEntry
from ..ndslice import NDBlock, NDSlice
from ..structures.array import ArrayStructure, BuiltinDtype, data_type_from_numpy
from ..structures.core import Spec
from ..structures.table import TableStructure
from ..utils import run_sync
from ..zarr_format.model import VARIABLE_LENGTH_STRING, is_variable_length_string
from .base import ArrayAdapterBase, TableAdapterBase

if TYPE_CHECKING:
    from ..zarr_format.model import ZarrArrayMeta, ZarrOptions

_NUMERIC_KINDS = "biufcmM"


class _Partitions:
    """The row partitions of one table, shared by the table and its column adapters.

    Every read of values goes through :meth:`read`; lengths are cached once known.
    """

    def __init__(self, frames: Iterable[Any]):
        self.frames = list(frames)
        self._lengths: tuple[int, ...] | None = None
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self.frames)

    def read(self, index: int, fields: Sequence[str] | None = None) -> pandas.DataFrame:
        frame = self.frames[index]
        if fields is not None:
            frame = frame[list(fields)]
        if isinstance(frame, pandas.DataFrame):
            # A new frame object (sharing data, copy-on-write), so callers cannot alter ours.
            return frame.copy(deep=False) if fields is None else frame
        return frame.compute()  # a dask partition: computed only now, when asked for

    def column(self, index: int, name: str) -> pandas.Series:
        """One column of one partition (a pandas column is selected without copying)."""
        frame = self.frames[index]
        if isinstance(frame, pandas.DataFrame):
            return frame[name]
        return frame[name].compute()

    def dtype(self, column: str) -> Any:
        # pandas and dask frames both report dtypes without touching values.
        return self.frames[0].dtypes[column]

    @property
    def lengths_known(self) -> bool:
        return self._lengths is not None or all(
            isinstance(f, pandas.DataFrame) for f in self.frames
        )

    def lengths(self) -> tuple[int, ...]:
        if self._lengths is None:
            with self._lock:
                if self._lengths is None:
                    self._lengths = self._compute_lengths()
        return self._lengths

    def _compute_lengths(self) -> tuple[int, ...]:
        lazy = [i for i, f in enumerate(self.frames) if not isinstance(f, pandas.DataFrame)]
        lengths = [len(f) if isinstance(f, pandas.DataFrame) else 0 for f in self.frames]
        if lazy:
            import dask

            # One compute for all dask partitions, so shared upstream work runs once.
            counts = dask.compute(*(self.frames[i].shape[0] for i in lazy))
            for i, count in zip(lazy, counts, strict=True):
                lengths[i] = int(count)
        return tuple(lengths)


class _StoredPartitions(_Partitions):
    """Partitions kept outside memory (files, another adapter), read when asked for; ``meta``
    (an empty frame of the table's schema) answers for dtypes without reading values."""

    meta: Any

    def column(self, index: int, name: str) -> pandas.Series:
        frame = self.read(index, [name])
        return frame[_label(frame, name)]

    def dtype(self, column: str) -> Any:
        return self.meta.dtypes[_label(self.meta, column)]

    @property
    def lengths_known(self) -> bool:
        return self._lengths is not None


def _label(frame: pandas.DataFrame, name: str) -> Any:
    """The label of column ``name`` (a structure lists columns by name; pandas' metadata of a
    stored table brings back labels of other types: the integers of columns 0, 1)."""
    if name in frame.columns:
        return name
    return next((label for label in frame.columns if str(label) == name), name)


def _check_fields(fields: Sequence[str] | None, columns: Sequence[str]) -> None:
    for field in fields or ():
        if field not in columns:
            raise BadRequest(f"No such field {field!r}; the columns are {list(columns)}")


class TableAdapter(TableAdapterBase):
    """Serve a table held as a list of pandas or dask frames, one per row partition."""

    def __init__(
        self,
        partitions: Iterable[Any],
        structure: TableStructure,
        *,
        metadata=None,
        specs=None,
    ):
        super().__init__(structure, metadata=metadata, specs=specs)
        self._partitions = _Partitions(partitions)
        self._columns: dict[str, TableColumnAdapter] = {}

    @classmethod
    def from_pandas(
        cls, *args: Any, metadata=None, specs=None, npartitions: int = 1, **kwargs: Any
    ) -> TableAdapter:
        """Split a frame into row partitions as ``dask.dataframe.from_pandas`` would."""
        data, positional, sort, chunksize = _from_pandas_arguments(*args, **kwargs)
        count = npartitions if positional is None else positional
        partitions = _split_frame(data, 1 if count is None else count, sort, chunksize)
        structure = TableStructure.from_pandas(partitions[0], len(partitions))
        specs = [Spec("dataframe")] if specs is None else specs
        return cls(partitions, structure, metadata=metadata, specs=specs)

    @classmethod
    def from_dict(
        cls, *args: Any, metadata=None, specs=None, npartitions: int = 1, **kwargs: Any
    ) -> TableAdapter:
        data = pandas.DataFrame.from_dict(*args, **kwargs)
        return cls.from_pandas(data, metadata=metadata, specs=specs, npartitions=npartitions)

    @classmethod
    def from_dask_dataframe(cls, ddf: Any, *, metadata=None, specs=None) -> TableAdapter:
        partitions = [ddf.get_partition(i) for i in range(ddf.npartitions)]
        structure = TableStructure.from_pandas(ddf._meta, ddf.npartitions)
        specs = [Spec("dataframe")] if specs is None else specs
        return cls(partitions, structure, metadata=metadata, specs=specs)

    def read(self, fields: Sequence[str] | None = None) -> pandas.DataFrame:
        _check_fields(fields, self.structure().columns)
        frames = [self._partitions.read(i, fields) for i in range(len(self._partitions))]
        if not frames:
            meta = self.structure().meta
            return meta if fields is None else meta[list(fields)]
        return frames[0] if len(frames) == 1 else pandas.concat(frames)

    def read_partition(
        self, partition: int, fields: Sequence[str] | None = None
    ) -> pandas.DataFrame:
        if not 0 <= partition < len(self._partitions):
            raise BadRequest("Partition out of range")
        _check_fields(fields, self.structure().columns)
        return self._partitions.read(partition, fields)

    def __getitem__(self, column: str) -> TableColumnAdapter:
        if column not in self.structure().columns:
            raise NoSuchEntry([column])
        if column not in self._columns:
            self._columns[column] = TableColumnAdapter(self, column)
        return self._columns[column]

    def get(self, column: str, default: Any = None) -> TableColumnAdapter | Any:
        try:
            return self[column]
        except KeyError:
            return default

    def keys(self) -> list[str]:
        return list(self.structure().columns)

    def items(self) -> Iterator[tuple[str, TableColumnAdapter]]:
        return ((column, self[column]) for column in self.structure().columns)

    def _column_dtype(self, column: str) -> Any:
        if len(self._partitions):
            return self._partitions.dtype(column)
        return self.structure().meta.dtypes[column]

    def __repr__(self) -> str:
        s = self.structure()
        return f"<TableAdapter columns={list(s.columns)} npartitions={s.npartitions}>"


def _from_pandas_arguments(data, npartitions=None, sort=True, chunksize=None):
    """The parameters of ``dask.dataframe.from_pandas``, so callers may pass them alike."""
    return data, npartitions, sort, chunksize


def _string_column_names(data: pandas.DataFrame) -> pandas.DataFrame:
    # The structure names columns by str; partitions must answer to the same names.
    if all(isinstance(c, str) for c in data.columns):
        return data
    return data.rename(columns=str)


def _split_frame(
    data: pandas.DataFrame | pandas.Series, count: int, sort: bool, chunksize: int | None
) -> list[pandas.DataFrame]:
    if count < 1 or (chunksize is not None and chunksize < 1):
        raise ValueError("npartitions and chunksize must be at least 1")
    data = _string_column_names(data.to_frame() if isinstance(data, pandas.Series) else data)
    if sort and not data.index.is_monotonic_increasing:
        data = data.sort_index()
    bounds = _row_bounds(data.index, count, chunksize)
    # Positional slices share the frame's memory (copy-on-write), so nothing is copied here.
    return [data.iloc[a:b] for a, b in itertools.pairwise(bounds)]


def _row_bounds(index: pandas.Index, npartitions: int, chunksize: int | None) -> list[int]:
    """Partition boundaries (row positions), matching dask's ``from_pandas``."""
    nrows = len(index)
    if nrows == 0:
        return [0] * (max(npartitions, 1) + 1)
    if not index.is_monotonic_increasing:  # sort=False on an unsorted index: equal cuts
        size = chunksize or math.ceil(nrows / npartitions)
        return [*range(0, nrows, size), nrows]
    if not index.is_unique:
        # Duplicate index values must not straddle partitions; dask knows how to place them.
        from dask.dataframe.io.io import sorted_division_locations

        if chunksize:
            return list(sorted_division_locations(index, chunksize=chunksize)[1])
        return list(sorted_division_locations(index, npartitions=npartitions)[1])
    if chunksize:
        return [*range(0, nrows, chunksize), nrows]
    count = min(npartitions, nrows)
    base, extra = divmod(nrows, count)
    sizes = [base + (i < extra) for i in range(count)]
    return [0, *numpy.cumsum(sizes).tolist()]


def zarr_dtype_of(dtype: Any) -> numpy.dtype:
    """The numpy dtype a pandas column is served as (variable-length strings for text)."""
    if isinstance(dtype, pandas.CategoricalDtype):
        return zarr_dtype_of(dtype.categories.dtype)
    if isinstance(dtype, pandas.DatetimeTZDtype):
        return numpy.dtype(f"datetime64[{dtype.unit}]")  # served as UTC
    if isinstance(dtype, pandas.SparseDtype):
        return zarr_dtype_of(dtype.subtype)
    if not isinstance(dtype, numpy.dtype):
        # Masked (Int64, boolean, ...) and Arrow dtypes name their numpy counterpart.
        dtype = getattr(dtype, "numpy_dtype", None)
    if isinstance(dtype, numpy.dtype) and dtype.kind in _NUMERIC_KINDS:
        return dtype
    return VARIABLE_LENGTH_STRING


def _strings(series: pandas.Series) -> list[str]:
    # Missing text becomes "" rather than "nan"/"None", in every view of the column.
    missing = series.isna().to_numpy()
    values = series.to_numpy(dtype=object)
    return ["" if m else str(v) for v, m in zip(values, missing, strict=True)]


def _column_values(series: pandas.Series, target: numpy.dtype, for_zarr: bool) -> numpy.ndarray:
    """Values of ``series`` as numpy: ``target`` dtype, or str objects / unicode for text."""
    if is_variable_length_string(target):
        strings = _strings(series)
        if for_zarr:
            return numpy.asarray(strings, dtype=object)  # castable to StringDType
        return numpy.asarray(strings, dtype=str) if strings else numpy.empty(0, "<U1")
    if series.dtype == target:
        return series.to_numpy()
    if target.kind in "mM":
        return series.to_numpy(dtype=target)  # missing values stay NaT
    # Extension dtypes may hold NA, which numpy ints and bools cannot; NaN or zero stand in.
    na_value = numpy.nan if target.kind in "fc" else target.type(0)
    return series.to_numpy(dtype=target, na_value=na_value)


def _row_selection(parts: Sequence[Any], nrows: int) -> int | range:
    """A 1-d slice as a non-negative row number or a range of rows (any step)."""
    parts = [slice(None) if p is Ellipsis else p for p in parts]
    (part,) = NDSlice(*parts).expand((nrows,))  # validates rank and bounds
    return part % nrows if isinstance(part, int) else range(*part.indices(nrows))


# Rows per zarr chunk of a column of a table that rows are appended to.
GROWING_TABLE_CHUNK_ROWS = 65536


class TableColumnAdapter(ArrayAdapterBase):
    """One column of a :class:`TableAdapter`, as a 1-d array chunked along its partitions.

    It refers to the table's partitions rather than copying the column, and it builds its zarr
    metadata from the column dtype and the partition lengths alone.
    """

    def __init__(self, table: TableAdapter, column: str):
        super().__init__(None, metadata={}, specs=[])
        self._partitions = table._partitions
        # Rows may be appended to this table (it can append_partition): see to_zarr_meta.
        self._growing = callable(getattr(table, "append_partition", None))
        self._column = column
        self._dtype = zarr_dtype_of(table._column_dtype(column))
        self._cached_structure: ArrayStructure | None = None
        self.reads_from_memory = all(
            isinstance(f, pandas.DataFrame) for f in self._partitions.frames
        )

    @property
    def dims(self) -> None:
        return None

    def zarr_dtype(self) -> numpy.dtype:
        return self._dtype

    def zarr_layout(self) -> tuple[tuple[int, ...], Sequence[Sequence[int]], numpy.dtype, Any]:
        lengths = self._partitions.lengths()
        return (sum(lengths),), (lengths,), self._dtype, None

    async def to_zarr_meta(self, options: ZarrOptions | None = None) -> ZarrArrayMeta:
        if not self._partitions.lengths_known:
            await run_sync(self._partitions.lengths)  # dask lengths: compute off the event loop
        meta = await super().to_zarr_meta(options)
        if self._growing:
            # Chunks that do not depend on the current row count: a zarr reader that read the
            # metadata before rows were appended still decodes every chunk (the last one is
            # padded to full size), and sees the rows it knew of.
            meta = dataclasses.replace(meta, chunk_shape=(GROWING_TABLE_CHUNK_ROWS,))
        return meta

    def structure(self) -> ArrayStructure:
        if self._cached_structure is None:
            lengths = self._partitions.lengths()
            data_type = self._data_type()
            self._cached_structure = ArrayStructure(data_type, (lengths,), (sum(lengths),))
        return self._cached_structure

    def _data_type(self) -> Any:
        if not is_variable_length_string(self._dtype):
            return data_type_from_numpy(self._dtype)
        # Fixed-width unicode needs the longest value, so this reads the whole column.
        widest = 1
        for i in range(len(self._partitions)):
            values = self._values(i, 0, None, for_zarr=False)
            widest = max(widest, values.dtype.itemsize // 4)
        return BuiltinDtype.from_numpy_dtype(numpy.dtype(f"<U{widest}"))

    def read(self, slice: NDSlice = NDSlice()) -> numpy.ndarray:
        rows = _row_selection(slice, sum(self._partitions.lengths()))
        if isinstance(rows, int):
            return numpy.asarray(self._rows(rows, rows + 1, for_zarr=False)[0])
        if not rows:
            return self._rows(0, 0, for_zarr=False)
        lo, hi = min(rows[0], rows[-1]), max(rows[0], rows[-1]) + 1
        values = self._rows(lo, hi, for_zarr=False)
        return values[rows.start - lo :: rows.step][: len(rows)]

    def read_block(self, block: Sequence[int], slice: NDSlice = NDSlice()) -> numpy.ndarray:
        # Blocks are partitions; locate them from lengths so text columns need no full scan.
        (region,) = NDBlock(*block).slices((self._partitions.lengths(),))
        data = self._rows(region.start, region.stop, for_zarr=False)
        return data[tuple(slice)] if slice else data

    def read_zarr_region(self, region: tuple[slice, ...]) -> numpy.ndarray:
        (rows,) = region
        return self._rows(rows.start, rows.stop, for_zarr=True)

    def _rows(self, lo: int, hi: int, *, for_zarr: bool) -> numpy.ndarray:
        """Rows ``lo:hi``, reading only the partitions that overlap them."""
        pieces = []
        start = 0
        for i, length in enumerate(self._partitions.lengths()):
            stop = start + length
            if length and start < hi and stop > lo:
                pieces.append(
                    self._values(i, max(lo, start) - start, min(hi, stop) - start, for_zarr)
                )
            start = stop
        if not pieces:
            empty = pandas.Series([], dtype=object if self._is_text else self._dtype)
            return _column_values(empty, self._dtype, for_zarr)
        return pieces[0] if len(pieces) == 1 else numpy.concatenate(pieces)

    @property
    def _is_text(self) -> bool:
        return is_variable_length_string(self._dtype)

    def _values(self, partition: int, a: int, b: int | None, for_zarr: bool) -> numpy.ndarray:
        series = self._partitions.column(partition, self._column).iloc[a:b]
        return _column_values(series, self._dtype, for_zarr)

    def __repr__(self) -> str:
        return f"<TableColumnAdapter {self._column!r} dtype={self._dtype}>"


DataFrameAdapter = TableAdapter

__all__ = [
    "DataFrameAdapter",
    "TableAdapter",
    "TableColumnAdapter",
    "zarr_dtype_of",
]
