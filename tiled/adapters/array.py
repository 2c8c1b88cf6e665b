"""In-memory arrays (numpy or dask) as array nodes."""

from __future__ import annotations

from typing import Any

import numpy

from ..ndslice import NDSlice
from ..structures.array import ArrayStructure
from .base import ArrayAdapterBase
from .utils import force_reshape


def _as_plain_array(array: Any) -> Any:
    """numpy/dask arrays pass; other values become numpy, with objects turned into text."""
    if hasattr(array, "__dask_graph__") or isinstance(array, numpy.ndarray):
        if getattr(array, "dtype", None) is not None and array.dtype.kind == "O":
            return _coerce_objects(numpy.asarray(array))
        return array
    if hasattr(array, "to_numpy"):  # pandas Series/Index, possibly with string/extension dtype
        array = array.to_numpy()
    array = numpy.asanyarray(array)
    return _coerce_objects(array) if array.dtype.kind in "OT" else array


def _coerce_objects(array: numpy.ndarray) -> numpy.ndarray:
    flat = array.ravel()
    if flat.size and all(isinstance(x, numpy.ndarray) for x in flat):
        shapes = {x.shape for x in flat}
        if len(shapes) == 1:
            return numpy.stack(list(flat)).reshape(array.shape + shapes.pop())
    return numpy.asarray([str(x) for x in flat], dtype=str).reshape(array.shape)


def _auto_chunks(array: Any, shape: tuple[int, ...]) -> tuple[tuple[int, ...], ...]:
    existing = getattr(array, "chunks", None)
    if existing is not None:
        return tuple(tuple(c) for c in existing)
    if not shape:
        return ()
    from dask.array.core import normalize_chunks

    # Upstream Tiled's default: dask's "auto" chunking (dask's array.chunk-size, 128 MiB).
    return normalize_chunks(("auto",) * len(shape), shape=shape, dtype=array.dtype)


class ArrayAdapter(ArrayAdapterBase):
    """Serve a numpy or dask array."""

    def __init__(self, array: Any, structure: ArrayStructure, *, metadata=None, specs=None):
        super().__init__(structure, metadata=metadata, specs=specs)
        self._array = array
        self.reads_from_memory = isinstance(array, numpy.ndarray)

    @classmethod
    def from_array(
        cls, array: Any, *, shape=None, chunks=None, dims=None, metadata=None, specs=None
    ) -> ArrayAdapter:
        array = _as_plain_array(array)
        shape = tuple(array.shape if shape is None else shape)
        if chunks is None:
            chunks = _auto_chunks(array, shape)
        elif shape:
            from dask.array.core import normalize_chunks

            chunks = normalize_chunks(chunks, shape=shape, dtype=array.dtype)
        structure = ArrayStructure.from_array(array, shape=shape, chunks=chunks, dims=dims)
        return cls(array, structure, metadata=metadata, specs=specs)

    def read(self, slice: NDSlice = NDSlice()) -> numpy.ndarray:
        structure = self.structure()
        # The array may have grown (or not yet grown) since the structure was recorded; serve
        # exactly the advertised shape or say why not (see force_reshape).
        data = force_reshape(self._array, structure.shape)
        data = data[tuple(slice)] if slice else data
        if hasattr(data, "compute"):
            # Reads already run on a worker thread; for a few dask chunks the threaded
            # scheduler only adds overhead, for many it reads them in parallel.
            data = data.compute(scheduler="sync" if data.npartitions <= 4 else "threads")
        # The bytes sent are read as the advertised dtype, whatever the array holds.
        return numpy.asarray(data, dtype=structure.data_type.to_numpy_dtype())

    def read_zarr_region(self, region: tuple[slice, ...]) -> numpy.ndarray:
        # A held numpy array is sliced directly: read() as ArrayAdapter defines it would give
        # the same values, after checking a slice that chunk_region made valid (a subclass that
        # reads otherwise is asked through read()).
        if not self.reads_from_memory or type(self).read is not ArrayAdapter.read:
            return super().read_zarr_region(region)
        structure = self.structure()
        data = force_reshape(self._array, structure.shape)[region]
        return numpy.asarray(data, dtype=structure.data_type.to_numpy_dtype())

    def __repr__(self) -> str:
        s = self.structure()
        return f"<ArrayAdapter shape={list(s.shape)} dtype={s.data_type.to_numpy_dtype()}>"
