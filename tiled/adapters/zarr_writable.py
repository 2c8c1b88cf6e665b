"""Zarr v3 arrays that the server creates and writes (catalog storage).

Arrays are created with a regular chunk grid and the codecs ``bytes`` + ``blosc(lz4, 5,
shuffle)``, which :class:`tiled.adapters.zarr.ZarrArrayAdapter` serves by passing the stored
chunk bytes through. Arrays live in a node's :class:`~tiled.adapters.node_storage.NodeStorage` (a
directory or a bucket prefix). Writes are staged: zarr-python encodes the chunks, the storage's
transaction holds them (temporary files, or bytes for a bucket), and they replace the visible
chunks only once all of them are encoded.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import itertools
from collections.abc import Iterator, Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy
import zarr
from zarr.codecs import BloscCodec, BytesCodec
from zarr.storage import LocalStore

from ..structures.array import ArrayStructure, BuiltinDtype, Endianness
from ..zarr_format.formats import encoding_for
from ..zarr_format.model import regular_chunks
from .files import FileTransaction
from .node_storage import CONCURRENT_PUTS, ZARR_DOCUMENTS, NodeStorage

ZARR_MIMETYPE = "application/x-zarr"


def regular_chunk_shape(chunks: tuple[tuple[int, ...], ...]) -> tuple[int, ...]:
    """The regular grid covering dask-style chunks: the largest chunk of each dimension."""
    return tuple(max(1, *dim) for dim in chunks)


def _codecs(structure: ArrayStructure) -> dict[str, Any]:
    data_type = structure.data_type
    big = isinstance(data_type, BuiltinDtype) and data_type.endianness == Endianness.big
    return {
        "serializer": BytesCodec(endian="big" if big else "little"),
        "compressors": BloscCodec(cname="lz4", clevel=5, shuffle="shuffle"),
    }


def create_zarr_array(storage: NodeStorage, structure: ArrayStructure) -> ArrayStructure:
    """Create an empty array in ``storage``; return the structure as stored (regular chunks)."""
    dtype = structure.data_type.to_numpy_dtype()
    chunk_shape = regular_chunk_shape(structure.chunks)
    storage.create()
    zarr.create_array(
        storage.zarr_store(),
        shape=structure.shape,
        chunks=chunk_shape,
        dtype=dtype,
        fill_value=numpy.zeros((), dtype=dtype)[()],
        dimension_names=structure.dims,
        zarr_format=3,
        **_codecs(structure),
    )
    # Only the chunks change (see the docstring): resizable, dims and the rest are as given.
    return replace(structure, chunks=regular_chunks(structure.shape, chunk_shape))


class StagingStore(LocalStore):
    """A local store whose writes and deletes are staged in a :class:`FileTransaction`."""

    def __init__(self, root: Path | str, transaction: FileTransaction, **kwargs: Any):
        super().__init__(root, **kwargs)
        self.transaction = transaction

    def with_read_only(self, read_only: bool = False) -> StagingStore:
        return type(self)(self.root, self.transaction, read_only=read_only)

    async def set(self, key: str, value: Any) -> None:
        self._check_writable()
        await asyncio.to_thread(self.set_sync, key, value)

    def set_sync(self, key: str, value: Any) -> None:
        self.transaction.write(self.root / key, value.as_buffer_like())

    async def delete(self, key: str) -> None:
        self.delete_sync(key)

    def delete_sync(self, key: str) -> None:
        # zarr deletes a chunk that became all fill value; readers then get the fill value.
        self.transaction.remove(self.root / key)


def _open_staged(storage: NodeStorage, transaction: Any) -> zarr.Array:
    return zarr.open_array(store=storage.zarr_store(transaction), mode="r+")


def write_region(storage: NodeStorage, region: tuple[slice, ...], data: numpy.ndarray) -> None:
    """Write ``data`` into ``region`` of the array in ``storage``: all chunks together (see
    :mod:`tiled.adapters.node_storage` for what a bucket promises)."""
    with storage.locked(), storage.staged() as transaction:
        _open_staged(storage, transaction)[region] = data


def patch_region(
    storage: NodeStorage, region: tuple[slice, ...], data: numpy.ndarray, shape: tuple[int, ...]
) -> None:
    """Write ``data`` into ``region`` of the array in ``storage``, first growing it to
    ``shape`` if it is smaller: the new metadata and the chunks are replaced together."""
    with storage.locked(), storage.staged() as transaction:
        array = _open_staged(storage, transaction)
        if tuple(array.shape) != tuple(shape):
            array.resize(shape)
        array[region] = data


def open_readonly(storage: NodeStorage) -> zarr.Array:
    """The stored array, read in the byte order its chunks are stored in: the order the
    catalog's structure declares (see :func:`in_stored_byte_order`)."""
    return in_stored_byte_order(zarr.open_array(store=storage.zarr_store(), mode="r"))


def in_stored_byte_order(array: zarr.Array) -> zarr.Array:
    """``array``, reading values in the byte order of its v3 ``bytes`` codec.

    zarr v3's ``data_type`` has no byte order (the ``bytes`` codec has), so zarr-python reads
    every array it opens in native order. The catalog declares the order the array was
    created with (the client's, e.g. ``>i4``), and every reader (the octet-stream routes above
    all, whose bytes the client reads as the declared type) must get the values in it.
    """
    metadata = array.metadata
    if metadata.zarr_format != 3 or not metadata.codecs:
        return array  # v2 dtypes carry their byte order
    serializer = metadata.codecs[0]
    endian = getattr(serializer, "endian", None) if isinstance(serializer, BytesCodec) else None
    data_type = metadata.data_type
    stored = getattr(endian, "value", endian)
    if stored is None or getattr(data_type, "endianness", stored) == stored:
        return array
    metadata = replace(metadata, data_type=replace(data_type, endianness=stored))
    return zarr.Array(zarr.AsyncArray(metadata, array.store_path, array.config))


def store_zarr_documents(storage: NodeStorage, documents: Mapping[str, bytes]) -> None:
    """Start a new array from zarr metadata documents (a client's, see
    :mod:`tiled.zarr_format.submitted`)."""
    storage.create()
    with storage.staged() as transaction:
        for name, document in documents.items():
            transaction.write(name, document)


def resize_stored(storage: NodeStorage, shape: tuple[int, ...]) -> None:
    """Give the stored array ``shape``: its metadata rewritten, the chunks now wholly outside
    it removed and what the others hold outside it set to the fill value, together."""
    with storage.locked(), storage.staged() as transaction:
        array = _open_staged(storage, transaction)
        _forget_beyond(array, shape)
        array.resize(shape)


def _forget_beyond(array: zarr.Array, shape: tuple[int, ...]) -> None:
    """Set to the fill value what the chunks that stay hold outside ``shape``. zarr-python's
    resize keeps those chunks whole, so growing the array again would show values written
    before it shrank. Each such chunk is rewritten once: a staged write is not read back."""
    before, chunk_shape = tuple(array.shape), tuple(array.chunks)
    cut = [
        axis
        for axis, (old, new, size) in enumerate(zip(before, shape, chunk_shape, strict=True))
        if new < old and new % size
    ]
    if not cut:
        return
    staying = [
        -(-min(old, new) // size) for old, new, size in zip(before, shape, chunk_shape, strict=True)
    ]
    edge: set[tuple[int, ...]] = set()
    for axis in cut:
        ranges: list[Any] = [range(count) for count in staying]
        ranges[axis] = [staying[axis] - 1]
        edge.update(itertools.product(*ranges))
    fill = array.fill_value
    if fill is None:  # zarr v2's "undefined": readers get the dtype's zero
        fill = numpy.zeros((), dtype=array.dtype)[()]

    def rewrite(index: tuple[int, ...]) -> None:
        region = tuple(
            slice(i * size, min((i + 1) * size, old))
            for i, size, old in zip(index, chunk_shape, before, strict=True)
        )
        block = numpy.array(array[region])
        for axis in cut:
            if index[axis] == staying[axis] - 1:
                outside = (slice(None),) * axis + (slice(shape[axis] - region[axis].start, None),)
                block[outside] = fill
        array[region] = block

    # Chunk by chunk (each is read once, before anything of this write is staged), several
    # at a time: in a bucket, each read and write is a request.
    with concurrent.futures.ThreadPoolExecutor(CONCURRENT_PUTS) as pool:
        list(pool.map(rewrite, sorted(edge)))  # raises the first failure


def stored_chunk_files(
    storage: NodeStorage, metadata: Any
) -> Iterator[tuple[tuple[int, ...], int, float, str]]:
    """``(coords, size, modification time, ETag)`` of each chunk stored in ``storage`` (the
    ETag readers get for it). The server's arrays use their format's own chunk keys (the
    only ones written through /zarr), so that format's grammar reads them."""
    encoding = encoding_for(metadata.zarr_format)
    ndim = len(metadata.shape)
    for found in storage.list():
        if found.key.rsplit("/", 1)[-1] in ZARR_DOCUMENTS:
            continue
        coords = encoding.parse_chunk_key(found.key, ndim)
        if coords is not None and len(coords) == ndim:
            yield coords, found.size, found.mtime, found.etag
