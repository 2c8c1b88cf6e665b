"""Array clients: a selection is read in one request, or, when larger than
``RESPONSE_BYTESIZE_LIMIT``, in pieces cut along the chunk boundaries and fetched concurrently;
writes by block."""

from __future__ import annotations

import builtins
import concurrent.futures
import itertools
import math
from collections.abc import Sequence
from typing import Any

from ..ndslice import NDBlock, NDSlice, split_slice
from .base import BaseClient
from .utils import ClientError, detail_of, handle_error, is_interactive

# A response at least this large is read through aiohttp (Context.get_large_content).
LARGE_BODY_BYTES = 2**20
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
        refuse_booleans(part)
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


def refuse_booleans(key: Any) -> None:
    """IndexError for a boolean scalar index: an int to Python (``True`` would read row 1),
    a new axis to numpy; neither is what an array node can serve."""
    for part in key if isinstance(key, tuple) else (key,):
        kind = getattr(getattr(part, "dtype", None), "kind", None)
        if isinstance(part, bool) or (kind == "b" and getattr(part, "ndim", None) == 0):
            raise IndexError(
                f"Boolean indices are not supported on an array node ({part!r}); read, then mask"
            )


def expand_selection(key: Any, shape: tuple[int, ...]) -> NDSlice:
    """A numpy-style basic index (ints, slices with any step, ``...``; ``None`` or ``()`` for
    everything) as an expanded :class:`NDSlice` for ``shape``; ``IndexError`` when it selects
    outside the array or is not a basic index."""
    if key is None:
        key = ()
    if isinstance(key, list) or getattr(key, "ndim", 0) > 0:  # fancy indexing
        raise IndexError(f"Only integers, slices and '...' index an array node, not {key!r}")
    refuse_booleans(key)
    try:
        return NDSlice(key).expand_for_shape(shape)
    except TypeError as err:  # NDSlice's SliceTypeError: not an int, slice or '...'
        raise IndexError(str(err)) from None


def block_index(block: Any, chunks: Sequence[Sequence[int]]) -> tuple[int, ...]:
    """A block of the chunk grid as non-negative integers: negative ones count from the end
    of their dimension, as upstream's server takes them; IndexError off the grid."""
    block = tuple(block) if isinstance(block, Sequence) else (block,)
    if len(block) != len(chunks):
        raise IndexError(f"Block {block} has {len(block)} indices; the array has {len(chunks)}")
    result = []
    for index, dim in zip(block, chunks, strict=True):
        if isinstance(index, bool) or not hasattr(index, "__index__"):
            raise IndexError(f"Block indices must be integers, not {index!r}")
        index = int(index)
        if not -len(dim) <= index < len(dim):
            raise IndexError(f"Block index {block} out of range for the chunk grid {chunks}")
        result.append(index % len(dim))
    return tuple(result)


# The answers of a server refusing a block (this one: 422; others: 400 or 404).
BLOCK_REFUSALS = frozenset({400, 404, 422})


class BlockOutOfRange(ClientError, IndexError):
    """A block off an array's chunk grid, as the server refused it: upstream's client raises
    the server's error (an ``httpx.HTTPStatusError``); this client's raised IndexError."""


def _block_as_given(block: Any) -> tuple[Any, ...]:
    return tuple(block) if isinstance(block, Sequence) else (block,)


def _persist_params(persist: bool | None) -> dict[str, str]:
    """``?persist=false`` when the values are not to be stored (only then, as upstream: None
    is the server's default, stored)."""
    return {} if persist is None or persist else {"persist": "false"}


def chunks_repr(chunks: Sequence[Sequence[int]]) -> str:
    """Chunks with long runs of one size abbreviated, e.g. ``((1, 1, ..., 1), (13,))``."""

    def one(dim: Sequence[int]) -> str:
        if len(dim) <= 5:
            return str(tuple(dim))
        first = dim[0]
        if all(c == first for c in dim):
            return f"({first}, {first}, ..., {first})"
        if all(c == first for c in dim[:-1]):
            return f"({first}, {first}, ..., {first}, {dim[-1]})"
        return "variable"

    return "(" + ", ".join(one(dim) for dim in chunks) + ")"


def _request_form(piece: NDSlice) -> tuple[NDSlice, list[int]]:
    """``piece`` with every reversed slice turned forward (the server reads forward slices
    from any storage; not every file format reads backwards), and the result axes to flip
    back afterwards."""
    parts: list[int | slice] = []
    flipped: list[int] = []
    axis = 0
    for part in piece:
        if isinstance(part, slice):
            step = part.step or 1
            if step < 0:
                count = len(range(part.start, -1 if part.stop is None else part.stop, step))
                last = part.start + step * (count - 1)
                part = slice(last, part.start + 1, -step)
                flipped.append(axis)
            axis += 1
        parts.append(part)
    return NDSlice(*parts), flipped


def _offset(piece: Any, whole: Any) -> int:
    """Where the expanded 1-D slice ``piece`` (a cut of ``whole``) starts in the result."""
    return (piece.start - whole.start) // (whole.step or 1)


class ArrayClient(BaseClient):
    """An array node: ``node[...]`` and ``node.read()`` give numpy arrays."""

    # Selections larger than this are fetched in several requests, each at most this size.
    RESPONSE_BYTESIZE_LIMIT = 100 * 2**20

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

    def _pieces(self, selection: NDSlice, shape: tuple[int, ...]) -> list[NDSlice]:
        """The requests that fetch ``selection``: itself when it fits one response, else cuts
        of at most ``RESPONSE_BYTESIZE_LIMIT``, preferably on chunk boundaries (where the
        server reads whole stored chunks)."""
        itemsize = max(self.dtype.itemsize, 1)
        if math.prod(shape) * itemsize < self.RESPONSE_BYTESIZE_LIMIT:
            return [selection]
        boundaries = [list(itertools.accumulate(c, initial=0)) for c in self.chunks]
        max_size = max(self.RESPONSE_BYTESIZE_LIMIT // itemsize, 1)
        return list(split_slice(selection, max_size, pref_splits=boundaries).values())

    def fetch_count(self, slice: Any = None) -> int:  # noqa: A002 (upstream's name)
        """How many requests ``read(slice)`` makes (none for an empty selection)."""
        selection = expand_selection(slice, self.shape)
        shape = selection.shape_after_slice(self.shape)
        return len(self._pieces(selection, shape)) if math.prod(shape) else 0

    def read(self, slice: Any = None) -> Any:  # noqa: A002 (upstream's parameter name)
        """The selection ``slice`` (numpy-style; default all) as a numpy array."""
        import numpy

        selection = expand_selection(slice, self.shape)
        shape = selection.shape_after_slice(self.shape)
        if math.prod(shape) == 0:
            return numpy.empty(shape, dtype=self.dtype)  # nothing to ask the server for
        pieces = self._pieces(selection, shape)
        bar = self._progress_bar(math.prod(shape) * self.dtype.itemsize)
        try:
            if len(pieces) == 1:
                return self._fetch(pieces[0], bar).copy()  # frombuffer's arrays are read-only
            result = numpy.empty(shape, dtype=self.dtype)
            kept = [(i, p) for i, p in enumerate(selection) if isinstance(p, builtins.slice)]

            def place(piece: NDSlice) -> None:
                data = self._fetch(piece, bar)
                offsets = [_offset(piece[i], whole) for i, whole in kept]
                spans = zip(offsets, data.shape, strict=True)
                result[tuple(builtins.slice(o, o + n) for o, n in spans)] = data

            with concurrent.futures.ThreadPoolExecutor(self.context.max_connections) as pool:
                list(pool.map(place, pieces))
            return result
        finally:
            if bar is not None:
                bar.close()

    def _fetch(self, piece: NDSlice, bar: Any = None) -> Any:
        """One ``/array/full`` request for the expanded selection ``piece``."""
        import numpy

        shape = piece.shape_after_slice(self.shape)
        forward, flipped = _request_form(piece)
        params = {"expected_shape": ",".join(map(str, shape)) or "scalar"}
        if not self._is_everything(forward):
            params["slice"] = forward.to_query()
        get = (
            self.context.get_large_content
            if math.prod(shape) * self.dtype.itemsize >= LARGE_BODY_BYTES
            else self.context.get_content
        )
        try:
            content = get(f"array/full/{self._path}", params=params, accept=OCTET_STREAM)
        except ClientError as error:
            if error.status_code != 422 or "slice" in params:
                raise
            # An array that has grown since its shape was read (being extended): ask for the
            # region this client knows of, which the array still holds.
            params["slice"] = forward.to_query()
            content = get(f"array/full/{self._path}", params=params, accept=OCTET_STREAM)
        data = numpy.frombuffer(content, dtype=self.dtype).reshape(shape)
        if flipped:
            data = numpy.flip(data, axis=flipped)
        if bar is not None:
            bar.update(len(content))
        return data

    def _is_everything(self, selection: NDSlice) -> bool:
        return all(
            isinstance(part, slice) and part.start == 0 and (part.step or 1) == 1
            and part.stop in (size, None)
            for part, size in zip(selection, self.shape, strict=True)
        )  # fmt: skip

    def _progress_bar(self, nbytes: int) -> Any:
        """A tqdm bar for a large read watched on a terminal, else None."""
        if not (self.context.show_progress and nbytes >= PROGRESS_THRESHOLD and is_interactive()):
            return None
        try:
            from tqdm.auto import tqdm
        except ImportError:
            return None
        return tqdm(total=nbytes, unit="B", unit_scale=True, desc=self.path_parts[-1])

    def read_block(self, block: Sequence[int], slice: Any = ...) -> Any:  # noqa: A002
        """Block ``block`` of the chunk grid (optionally a selection within it)."""
        import numpy

        block = block_index(block, self.chunks)
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

    def write(self, array: Any, persist: bool | None = True) -> None:
        """Replace the whole array's values. ``persist=False`` sends them without storing
        them (``?persist=false``: the server streams them to subscribers only)."""
        import numpy

        # Not ascontiguousarray: it makes 0-d arrays 1-d.
        array = numpy.asarray(array, dtype=self.dtype, order="C")
        if array.shape != self.shape:
            raise ValueError(f"Expected shape {self.shape}, got {array.shape}")
        self.context.request(
            "PUT", f"array/full/{self._path}", content=array.tobytes(),
            headers={"Content-Type": OCTET_STREAM}, params=_persist_params(persist),
        )  # fmt: skip

    def write_block(
        self,
        array: Any,
        block: Sequence[int],
        slice: Any = ...,  # noqa: A002 (upstream's name)
        persist: bool | None = True,
    ) -> None:
        """Replace block ``block`` of the chunk grid (negative indices count from the end).

        With ``slice`` (a selection within the block, steps of 1) and ``array`` of that
        selection's shape, only that region of the block is written. An ``array`` of the
        whole block's shape is written to the whole block, ``slice`` or not, as upstream's
        server takes it. ``persist=False`` sends the values without storing them
        (``?persist=false``). A block off the chunk grid is refused by the server: a
        :class:`ClientError` that is also an ``IndexError``."""
        import numpy

        array = numpy.asarray(array, dtype=self.dtype, order="C")
        try:
            index = block_index(block, self.chunks)
        except IndexError:
            index = None  # off the grid (as this client knows it): the server's to refuse
        if index is not None and slice is not None and slice is not ...:
            region = self._region_in_block(index, slice)
            if region is not None and region[1] == array.shape:
                offset, _, shape = region
                self.patch(array.reshape(shape), offset, persist=persist)
                return
        sent = index if index is not None else _block_as_given(block)
        params = {"block": ",".join(map(str, sent)), **_persist_params(persist)}
        response = self.context.request(
            "PUT", f"array/block/{self._path}", params=params, check=False,
            content=array.tobytes(), headers={"Content-Type": OCTET_STREAM},
        )  # fmt: skip
        if index is None and response.status_code in BLOCK_REFUSALS:
            response.read()
            raise BlockOutOfRange(
                f"Block {tuple(sent)} is not on the chunk grid {self.chunks}: "
                f"{response.status_code}: {detail_of(response)} {response.request.url}",
                request=response.request,
                response=response,
            )
        handle_error(response)

    def _region_in_block(
        self, block: tuple[int, ...], selection: Any
    ) -> tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]] | None:
        """``(offset, shape of the data, shape of the region)`` of ``selection`` within
        ``block``, or None when it selects the whole block. Steps other than 1 are refused
        (ValueError), as upstream's client refuses them."""
        region = NDBlock(*block).slices(self.chunks)
        block_shape = tuple(r.stop - r.start for r in region)
        for part in selection if isinstance(selection, tuple) else (selection,):
            if isinstance(part, builtins.slice) and part.step not in (None, 1):
                raise ValueError("Slices with a 'step' other than 1 are not supported.")
        parts, data_shape = normalize_key(selection, block_shape)
        offset, shape = [], []
        for part, start in zip(parts, (r.start for r in region), strict=True):
            if isinstance(part, builtins.slice):
                offset.append(start + part.start)
                shape.append(part.stop - part.start)
            else:
                offset.append(start + part)
                shape.append(1)
        if tuple(shape) == block_shape:
            return None
        return tuple(offset), data_shape, tuple(shape)

    def patch(
        self,
        array: Any,
        offset: int | Sequence[int],
        extend: bool = False,
        persist: bool | None = True,
    ) -> None:
        """Write ``array`` into this array at ``offset`` (the index of its first element; a
        shorter offset is padded with zeros). With ``extend``, the array grows to hold data
        that reach past its end (it never shrinks); without, such data are refused
        (:class:`tiled.utils.Conflicts`). New elements outside the data written read as zeros.

        >>> frames = client.write_array(numpy.zeros((1, 4, 4)), key="frames")
        >>> frames.patch(numpy.ones((1, 4, 4)), offset=(1,), extend=True)
        >>> frames.shape
        (2, 4, 4)
        """
        import numpy

        from ..structures.families import structure_from_json
        from ..utils import Conflicts

        params = _persist_params(persist)
        if extend and params:
            raise ValueError(
                "Cannot PATCH an array with both parameters extend=True and persist=False: "
                "an array grows only by storing data"
            )
        array = numpy.asarray(array)
        if array.dtype != self.dtype:
            raise ValueError(
                f"The data have dtype {array.dtype}; this array's dtype is {self.dtype}"
            )
        offset = (offset,) if isinstance(offset, int) else tuple(int(o) for o in offset)
        params.update(
            offset=",".join(map(str, offset)),
            shape=",".join(map(str, array.shape)),
            extend="true" if extend else "false",
        )
        response = self.context.request(
            "PATCH", f"array/full/{self._path}", params=params, check=False,
            content=numpy.ascontiguousarray(array).tobytes(),
            headers={"Content-Type": OCTET_STREAM},
        )  # fmt: skip
        if response.status_code in (400, 409):
            detail = str(response.json().get("detail", "The data do not fit this array"))
            detail = detail.replace("Use ?extend=true", "Pass extend=True")
            raise (Conflicts if response.status_code == 409 else ValueError)(detail)
        handle_error(response)
        attributes = self._item["attributes"]
        attributes["structure"] = response.json()
        self._structure_cache = structure_from_json(
            attributes["structure_family"], attributes["structure"]
        )

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

    def subscribe(self, executor: concurrent.futures.Executor | None = None) -> Any:
        """Live updates of this array (values written to it): an
        :class:`~tiled.client.stream.ArraySubscription`; see the how-to on streaming."""
        from .stream import ArraySubscription

        return ArraySubscription(self.context, self.path_parts, executor)

    def __repr__(self) -> str:
        text = f"<{type(self).__name__} shape={self.shape} chunks={chunks_repr(self.chunks)}"
        text += f" dtype={self.dtype}"
        dims = self.structure().dims
        return text + (f" dims={tuple(dims)}>" if dims else ">")


class DaskArrayClient(ArrayClient):
    """An array node read lazily: ``read()`` gives a dask array over the zarr chunks."""

    def read(self, slice: Any = None) -> Any:  # noqa: A002
        import dask.array
        import zarr

        if self.dtype.kind in ZARR_KINDS and self.dtype.fields is None and self.size:
            array = dask.array.from_zarr(zarr.open_array(self.zarr_store(3), mode="r"))
        else:
            array = dask.array.from_array(ArrayClient.read(self), chunks=self.chunks)
        if slice is None:
            return array
        refuse_booleans(slice)
        return array[slice]

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
