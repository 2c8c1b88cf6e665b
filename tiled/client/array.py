"""Array clients: reads through the zarr chunk routes, concurrently, or one request for small
selections; writes by block."""

from __future__ import annotations

import concurrent.futures
import itertools
import math
from collections.abc import Sequence
from typing import Any

from ..ndslice import NDBlock, NDSlice
from .base import BaseClient
from .utils import is_interactive

# A selection at least this large is read through the zarr chunk routes, concurrently.
ZARR_READ_THRESHOLD = 4 * 2**20
# A read at least this large shows a progress bar (when tqdm is installed and not disabled).
PROGRESS_THRESHOLD = 64 * 2**20
# The largest chunk ``write_array`` makes of an array without chunks of its own.
WRITE_CHUNK_BYTES = 32 * 2**20
# Data types the zarr views serve bit for bit: numbers and booleans.
ZARR_KINDS = frozenset("biufc")

OCTET_STREAM = "application/octet-stream"


def normalize_key(
    key: Any, shape: tuple[int, ...]
) -> tuple[tuple[int | slice, ...], tuple[int, ...]]:
    """A numpy-style index as one int or positive-step slice per dimension, and the shape of
    the result. Negative steps and integer arrays are not taken (raise ``IndexError``)."""
    if not isinstance(key, tuple):
        key = (key,)
    if any(k is Ellipsis for k in key):
        at = next(i for i, k in enumerate(key) if k is Ellipsis)
        fill = len(shape) - (len(key) - 1)
        key = key[:at] + (slice(None),) * fill + key[at + 1 :]
    if len(key) > len(shape):
        raise IndexError(f"too many indices for an array of {len(shape)} dimensions")
    key = key + (slice(None),) * (len(shape) - len(key))
    parts: list[int | slice] = []
    result: list[int] = []
    for part, size in zip(key, shape, strict=True):
        if isinstance(part, slice):
            start, stop, step = part.indices(size)
            if step < 1:
                raise IndexError("Slices with a negative step are not supported; read, then flip")
            stop = max(stop, start)
            parts.append(slice(start, stop, step))
            result.append(len(range(start, stop, step)))
        else:
            try:
                index = int(part)  # numpy integers too
            except TypeError:
                raise IndexError(f"Unsupported index {part!r}") from None
            if not -size <= index < size:
                raise IndexError(f"index {index} is out of bounds for size {size}")
            parts.append(index % size)
    return tuple(parts), tuple(result)


def _query(parts: tuple[int | slice, ...]) -> str:
    return NDSlice(*parts).to_query()


class ArrayClient(BaseClient):
    """An array node: ``node[...]`` and ``node.read()`` give numpy arrays."""

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.structure().shape)

    @property
    def dtype(self) -> Any:
        return self.structure().data_type.to_numpy_dtype()

    @property
    def chunks(self) -> tuple[tuple[int, ...], ...]:
        return tuple(self.structure().chunks)

    @property
    def dims(self) -> list[str] | None:
        dims = self.structure().dims
        return list(dims) if dims is not None else None

    @property
    def ndim(self) -> int:
        return len(self.shape)

    @property
    def size(self) -> int:
        return math.prod(self.shape)

    @property
    def nbytes(self) -> int:
        return self.size * self.dtype.itemsize

    def __len__(self) -> int:
        if not self.shape:
            raise TypeError("len() of a 0-d array")
        return self.shape[0]

    def __array__(self, dtype: Any = None, copy: Any = None) -> Any:
        values = self.read()
        return values if dtype is None else values.astype(dtype)

    def __getitem__(self, key: Any) -> Any:
        return self.read(key)

    def read(self, slice: Any = ...) -> Any:  # noqa: A002 (upstream's parameter name)
        """The selection ``slice`` (numpy-style; default all) as a numpy array."""
        import numpy

        parts, shape = normalize_key(slice, self.shape)
        dtype = self.dtype
        if math.prod(shape) == 0:
            return numpy.empty(shape, dtype=dtype)
        nbytes = math.prod(shape) * dtype.itemsize
        if nbytes >= ZARR_READ_THRESHOLD and dtype.kind in ZARR_KINDS and dtype.fields is None:
            return self._read_through_zarr(parts, nbytes)
        content = self.context.get_content(
            f"array/full/{self._path}",
            params={
                "slice": _query(parts),
                "expected_shape": ",".join(map(str, shape)) or "scalar",
            },
            accept=OCTET_STREAM,
        )
        return numpy.frombuffer(content, dtype=dtype).reshape(shape).copy()

    def _read_through_zarr(self, parts: tuple[int | slice, ...], nbytes: int) -> Any:
        import numpy
        import zarr

        store = self.zarr_store(3)
        bar = None
        if self.context.show_progress and nbytes >= PROGRESS_THRESHOLD and is_interactive():
            try:
                from tqdm.auto import tqdm
            except ImportError:
                pass
            else:
                bar = tqdm(total=nbytes, unit="B", unit_scale=True, desc=self.path_parts[-1])
                store.on_bytes = bar.update
        try:
            array = zarr.open_array(store, mode="r", zarr_format=3)
            values = array[parts]
        finally:
            if bar is not None:
                bar.n = bar.total
                bar.close()
        # zarr gives native byte order; a read returns the node's dtype whatever its size.
        return numpy.asarray(values).astype(self.dtype, copy=False)

    def read_block(self, block: Sequence[int], slice: Any = ...) -> Any:  # noqa: A002
        """Block ``block`` of the chunk grid (optionally a selection within it)."""
        import numpy

        region = NDBlock(*block).slices(self.chunks)
        block_shape = tuple(r.stop - r.start for r in region)
        parts, shape = normalize_key(slice, block_shape)
        params = {
            "block": ",".join(map(str, block)),
            "expected_shape": ",".join(map(str, shape)) or "scalar",
        }
        if slice is not ...:
            params["slice"] = _query(parts)
        content = self.context.get_content(
            f"array/block/{self._path}", params=params, accept=OCTET_STREAM
        )
        return numpy.frombuffer(content, dtype=self.dtype).reshape(shape).copy()

    # --- writing ---

    def write(self, array: Any) -> None:
        """Replace the whole array's values."""
        import numpy

        # Not ascontiguousarray: it makes 0-d arrays 1-d.
        array = numpy.asarray(array, dtype=self.dtype, order="C")
        if array.shape != self.shape:
            raise ValueError(f"Expected shape {self.shape}, got {array.shape}")
        self.context.request(
            "PUT", f"array/full/{self._path}", content=array.tobytes(),
            headers={"Content-Type": OCTET_STREAM},
        )  # fmt: skip

    def write_block(self, array: Any, block: Sequence[int]) -> None:
        """Replace block ``block`` of the chunk grid."""
        import numpy

        array = numpy.asarray(array, dtype=self.dtype, order="C")
        self.context.request(
            "PUT", f"array/block/{self._path}", params={"block": ",".join(map(str, block))},
            content=array.tobytes(), headers={"Content-Type": OCTET_STREAM},
        )  # fmt: skip

    def export(
        self,
        filepath: Any,
        *,
        format: str | None = None,
        slice: Any = None,
        **params: Any,  # noqa: A002
    ) -> None:
        if slice is not None:
            params["slice"] = _query(normalize_key(slice, self.shape)[0])
        super().export(filepath, format=format, **params)

    _export_route = "array/full"

    def __repr__(self) -> str:
        return f"<{type(self).__name__} shape={self.shape} chunks={self.chunks} dtype={self.dtype}>"


class DaskArrayClient(ArrayClient):
    """An array node read lazily: ``read()`` gives a dask array over the zarr chunks."""

    def read(self, slice: Any = ...) -> Any:  # noqa: A002
        import dask.array
        import zarr

        if self.dtype.kind in ZARR_KINDS and self.dtype.fields is None and self.size:
            array = dask.array.from_zarr(zarr.open_array(self.zarr_store(3), mode="r"))
        else:
            array = dask.array.from_array(ArrayClient.read(self), chunks=self.chunks)
        return array if slice is ... else array[slice]

    def compute(self) -> Any:
        return ArrayClient.read(self)


def default_chunks(array: Any) -> tuple[tuple[int, ...], ...]:
    """An array's own chunks (dask), else slabs along the first axis of at most
    ``WRITE_CHUNK_BYTES``."""
    own = getattr(array, "chunks", None)
    if own and isinstance(own[0], tuple):
        return tuple(tuple(int(c) for c in dim) for dim in own)
    shape = tuple(int(s) for s in array.shape)
    if not shape:
        return ()
    row = max(math.prod(shape[1:]) * array.dtype.itemsize, 1)
    rows = max(1, min(shape[0], WRITE_CHUNK_BYTES // row)) if shape[0] else 0
    first = (
        tuple(min(rows, shape[0] - start) for start in range(0, shape[0], rows)) if rows else (0,)
    )
    return (first, *((s,) for s in shape[1:]))


def write_blocks(client: ArrayClient, array: Any, structure: Any) -> None:
    """Send ``array`` block by block (concurrently), or whole when it is one block."""
    grid = [range(len(c)) for c in structure.chunks]
    blocks = list(itertools.product(*grid))
    if math.prod(structure.shape) == 0:
        return
    if len(blocks) <= 1:
        client.write(_computed(array))
        return

    def send(block: tuple[int, ...]) -> None:
        region = NDBlock(*block).slices(structure.chunks)
        client.write_block(_computed(array[region]), block)

    with concurrent.futures.ThreadPoolExecutor(client.context.max_connections) as pool:
        list(pool.map(send, blocks))


def _computed(array: Any) -> Any:
    return array.compute() if hasattr(array, "compute") else array


__all__ = ["ArrayClient", "DaskArrayClient"]
