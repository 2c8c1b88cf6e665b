"""The format-neutral zarr model: what a node looks like as a zarr array or group.

Adapters produce these values through their ``to_zarr_meta`` hooks; the v2 and v3 encodings
(:mod:`tiled.zarr_format.v2` / :mod:`~tiled.zarr_format.v3`) only spell them out in each
format's JSON. The chunk-grid arithmetic and the default chunk encoder live here too, so every
producer agrees on them; the numcodecs work they need is in :mod:`tiled.zarr_format.codecs`.

Chunk grid rule (documented in ``docs/source/how-to/zarr.md``): per dimension, a regular native
chunking (all chunks equal but a shorter last one) is kept as it is; an irregular one uses the
greatest common divisor of its chunk sizes when that is at least a quarter of the largest chunk
(so every zarr chunk lies inside one native chunk) and the largest chunk otherwise. Then, while
one chunk would exceed the byte budget, the dimension with the largest chunk extent is halved,
which keeps zarr chunks aligned to native ones whenever sizes are even.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import reduce
from typing import Any

import numpy

from ..errors import ChunkOutOfRange, InvalidStructure
from .chunk_cache import ENCODED_CHUNKS, EncodedChunk
from .codecs import compress, compressors_for, decompress, deserialize_strings, serialize_strings

DEFAULT_CHUNK_BUDGET_BYTES = 4 * 1024 * 1024
# The most chunks along one dimension of an array the server stores, however it is written
# (/zarr or /api/v1): the catalog keeps every chunk's size, as upstream's structures do, and
# every reader of the node gets them all.
MAX_CHUNKS_PER_DIMENSION = 1_000_000


@dataclass(frozen=True)
class ZarrOptions:
    """Server-side choices that shape the zarr view: the codec and the chunk byte budget."""

    codec: str = "blosc-lz4"
    chunk_budget_bytes: int = DEFAULT_CHUNK_BUDGET_BYTES

    def __post_init__(self) -> None:
        compressors_for(self.codec)  # validate early
        if self.chunk_budget_bytes < 1:
            raise ValueError("chunk_budget_bytes must be positive")

    @property
    def compressors(self) -> tuple[Any, ...]:
        """The numcodecs codec chain of the configured codec."""
        return compressors_for(self.codec)


VARIABLE_LENGTH_STRING = numpy.dtypes.StringDType()


def is_variable_length_string(dtype: numpy.dtype) -> bool:
    return isinstance(dtype, numpy.dtypes.StringDType)


# The node metadata key under which an adapter says how its zarr view serves the chunks: the
# stored bytes passed through ("stored", with the codec), decoded and encoded again
# ("re-encoded", with the reason), or not at all ("unavailable", with the reason).
ZARR_VIEW_KEY = "zarr_view"


def stored_chunks_view(codec: str, **details: str) -> dict[str, str]:
    return {"chunks": "stored", "codec": codec, **details}


def re_encoded_view(reason: str) -> dict[str, str]:
    return {"chunks": "re-encoded", "reason": reason}


def unavailable_view(reason: str) -> dict[str, str]:
    return {"chunks": "unavailable", "reason": reason}


def with_zarr_view(metadata: Mapping[str, Any], view: Mapping[str, str]) -> dict[str, Any]:
    """``metadata`` with the zarr view note (a fresh dict: callers may change it)."""
    return {**metadata, ZARR_VIEW_KEY: dict(view)}


def grid_counts(shape: Sequence[int], chunk_shape: Sequence[int]) -> tuple[int, ...]:
    """How many chunks of ``chunk_shape`` cover ``shape`` along each dimension."""
    # Integer arithmetic: sizes near 2**63 lose precision as floats.
    return tuple(-(-s // c) for s, c in zip(shape, chunk_shape, strict=True))


def check_chunk_counts(counts: Sequence[int]) -> None:
    """Refuse a chunk grid of ``counts`` chunks per dimension with more than
    :data:`MAX_CHUNKS_PER_DIMENSION` along one (:class:`InvalidStructure`, a 400)."""
    if any(n > MAX_CHUNKS_PER_DIMENSION for n in counts):
        raise InvalidStructure(
            f"The chunk grid {list(counts)} has more than {MAX_CHUNKS_PER_DIMENSION} chunks "
            "along a dimension; use larger chunks"
        )


def bounded_chunk_shape(shape: tuple[int, ...], chunks: tuple[int, ...]) -> tuple[int, ...]:
    """``chunks``, a whole multiple of itself along each dimension where it would cut
    ``shape`` into more than :data:`MAX_CHUNKS_PER_DIMENSION` chunks, so that there are at
    most that many. A structure lists every chunk's size: an HDF5 file or a zarr array's
    metadata of a kilobyte may declare 10**12 chunks, and listing them would take the
    server's memory and event loop. Where this differs from ``chunks``, the stored chunks
    cannot be passed through: the zarr view is re-encoded in the coarser grid."""
    bounded = []
    for size, chunk in zip(shape, chunks, strict=True):
        count = -(-size // chunk)  # integers: sizes near 2**63 lose precision as floats
        factor = -(-count // MAX_CHUNKS_PER_DIMENSION)
        bounded.append(chunk * factor if factor > 1 else chunk)
    return tuple(bounded)


def split_dimension(size: int, chunk: int) -> tuple[int, ...]:
    """``size`` cut into pieces of ``chunk`` (the last may be shorter); ``(0,)`` when empty."""
    full, rest = divmod(size, chunk)
    return (chunk,) * full + ((rest,) if rest else ()) or (0,)


def regular_chunks(shape: Sequence[int], chunk_shape: Sequence[int]) -> tuple[tuple[int, ...], ...]:
    """The dask-style chunks of a regular grid of ``chunk_shape`` over ``shape``."""
    return tuple(split_dimension(s, c) for s, c in zip(shape, chunk_shape, strict=True))


@dataclass(frozen=True)
class ZarrGroupMeta:
    attributes: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ZarrArrayMeta:
    """A zarr array: regular chunk grid, element type, fill value, codecs and attributes.

    ``dtype`` is a numpy dtype; ``numpy.dtypes.StringDType()`` stands for variable-length
    UTF-8 strings. ``fill_value`` None means "none declared" (v2 null, v3 the type's default).
    ``compressors`` are the bytes-to-bytes codecs applied, in order, after the array is
    serialized (raw little/big-endian bytes as the dtype says, or vlen-utf8 for strings); a
    chain of several (shuffle, then zlib) is written in v2 as filters followed by a compressor.
    """

    shape: tuple[int, ...]
    chunk_shape: tuple[int, ...]
    dtype: numpy.dtype
    fill_value: Any = None
    compressors: tuple[Any, ...] = ()
    dimension_names: tuple[str, ...] | None = None
    attributes: Mapping[str, Any] = field(default_factory=dict)
    # This metadata's documents as bytes, by zarr format: filled by whoever encodes them
    # (the server answers every request for an array's zarr.json from here). Not a field of
    # the value: equality, repr and dataclasses.replace ignore it.
    encoded: dict[int, dict[str, bytes]] = field(
        default_factory=dict, init=False, repr=False, compare=False
    )

    def __post_init__(self) -> None:
        object.__setattr__(self, "shape", tuple(int(s) for s in self.shape))
        object.__setattr__(self, "chunk_shape", tuple(int(c) for c in self.chunk_shape))
        if len(self.shape) != len(self.chunk_shape):
            raise InvalidStructure(
                f"chunk shape {self.chunk_shape} does not match shape {self.shape}"
            )
        if any(c < 1 for c in self.chunk_shape):
            raise InvalidStructure(f"chunk sizes must be positive: {list(self.chunk_shape)}")

    @functools.cached_property
    def grid_shape(self) -> tuple[int, ...]:
        """Number of chunks along each dimension (a 0-d array has one chunk at ``()``)."""
        return grid_counts(self.shape, self.chunk_shape)

    @functools.cached_property
    def chunk_bytes(self) -> int:
        """Uncompressed size of one chunk (variable-length strings counted at 16 bytes each)."""
        return math.prod(self.chunk_shape) * (self.dtype.itemsize or 16)

    def chunk_region(self, coords: Sequence[int]) -> tuple[slice, ...]:
        """The part of the array chunk ``coords`` covers (clipped at the edges).

        Raises :class:`ChunkOutOfRange` for coordinates of the wrong rank, negative or beyond
        the grid: a zarr store has no such key.
        """
        coords = tuple(coords)
        grid = self.grid_shape
        if len(coords) != len(grid):
            raise ChunkOutOfRange(coords, grid)
        region = []
        for i, n, c, s in zip(coords, grid, self.chunk_shape, self.shape, strict=True):
            if not isinstance(i, int) or i < 0 or i >= n:
                raise ChunkOutOfRange(coords, grid)
            region.append(slice(i * c, min((i + 1) * c, s)))
        return tuple(region)

    def encode_chunk(self, data: numpy.ndarray) -> bytes:
        """Pad ``data`` (the chunk's region) to the full chunk shape and encode it; the same
        values encoded again come from the process's cache of encoded chunks, with their ETag
        (see :mod:`tiled.zarr_format.chunk_cache`)."""
        return ENCODED_CHUNKS.encoded(self, numpy.asarray(data), self._encode)

    def _encode(self, data: numpy.ndarray) -> bytes:
        if data.shape != self.chunk_shape:
            data = _pad(data, self.chunk_shape, self.fill_value)
        if is_variable_length_string(self.dtype):
            payload: Any = serialize_strings(data)
        else:
            payload = numpy.ascontiguousarray(data, dtype=self.dtype)
        return compress(payload, self.compressors)

    def decode_chunk(self, payload: bytes) -> numpy.ndarray:
        """Inverse of :meth:`encode_chunk` (used to re-encode stored chunks and in tests)."""
        payload = decompress(payload, self.compressors)
        if is_variable_length_string(self.dtype):
            flat = deserialize_strings(payload)
            return numpy.asarray(flat, dtype=self.dtype).reshape(self.chunk_shape)
        buffer = numpy.frombuffer(memoryview(payload), dtype=self.dtype)
        return buffer.reshape(self.chunk_shape)


def _pad(data: numpy.ndarray, chunk_shape: tuple[int, ...], fill_value: Any) -> numpy.ndarray:
    out = numpy.empty(chunk_shape, dtype=data.dtype)
    if fill_value is not None:
        out[...] = fill_value
    elif data.dtype.kind in "OT":
        out[...] = ""
    else:
        out[...] = numpy.zeros((), dtype=data.dtype)
    out[tuple(slice(0, n) for n in data.shape)] = data
    return out


def _dimension_chunk(sizes: Sequence[int]) -> int:
    # Up to MAX_CHUNKS_PER_DIMENSION sizes, on every chunk request of a node built anew per
    # request: the common regular case is told by C-level list scans (~100x faster).
    if not isinstance(sizes, list | tuple):
        sizes = list(sizes)
    if 0 in sizes:
        sizes = [s for s in sizes if s > 0]
    if not sizes:
        return 1
    first, equal = sizes[0], sizes.count(sizes[0])
    if equal == len(sizes) or (equal == len(sizes) - 1 and sizes[-1] < first):
        return first  # all equal, or all but a shorter last one
    divisor = reduce(math.gcd, sizes)
    largest = max(sizes)
    return divisor if 4 * divisor >= largest else largest


def choose_chunk_shape(
    native_chunks: Sequence[Sequence[int]], itemsize: int, budget_bytes: int
) -> tuple[int, ...]:
    """A regular zarr chunk shape for a node with the given (dask-style) native chunks."""
    shape = [_dimension_chunk(sizes) for sizes in native_chunks]
    itemsize = max(int(itemsize), 1)
    while shape and math.prod(shape) * itemsize > budget_bytes:
        widest = max(range(len(shape)), key=lambda d: shape[d])
        if shape[widest] == 1:
            break
        shape[widest] = math.ceil(shape[widest] / 2)
    return tuple(shape)


__all__ = [
    "DEFAULT_CHUNK_BUDGET_BYTES",
    "MAX_CHUNKS_PER_DIMENSION",
    "VARIABLE_LENGTH_STRING",
    "ZARR_VIEW_KEY",
    "EncodedChunk",
    "ZarrArrayMeta",
    "ZarrGroupMeta",
    "ZarrOptions",
    "bounded_chunk_shape",
    "check_chunk_counts",
    "choose_chunk_shape",
    "grid_counts",
    "is_variable_length_string",
    "re_encoded_view",
    "regular_chunks",
    "split_dimension",
    "stored_chunks_view",
    "unavailable_view",
    "with_zarr_view",
]
