"""Arrays and groups stored as zarr (format 2 or 3) as Tiled nodes.

A stored array whose codecs a zarr client of either format can read as they are (one
serializer writing raw bytes, at most one blosc/zstd/gzip compressor, no sharding) is served
by **passing the stored chunk bytes through**: ``to_zarr_meta`` advertises the stored chunk
grid, byte order, fill value and compressor, and ``to_zarr_chunk`` returns the stored file's
bytes untouched. Any other array falls back to the default hooks (decode, re-encode), and so
does an array of more than ``MAX_CHUNKS_PER_DIMENSION`` stored chunks along a dimension: its
structure lists coarser chunks (see :func:`~tiled.zarr_format.model.bounded_chunk_shape`).

A store in a directory is read only through :class:`ContainedStore`, by the pass-through and
by zarr-python alike: every key must be a regular file inside the store's directory once
symbolic links are followed (a link out of the store, a FIFO, a device or a directory in
place of a file is refused with a 4xx naming the key, never the server's path).
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Iterable, Sequence
from importlib.metadata import version
from pathlib import Path
from typing import Any

import numpy
import zarr
from zarr.abc.store import ByteRequest, OffsetByteRequest, RangeByteRequest, SuffixByteRequest
from zarr.storage import LocalStore

from ..errors import DataUnavailable, NoSuchEntry, ZarrKeyNotFound
from ..ndslice import NDSlice
from ..structures.array import ArrayStructure
from ..utils import run_sync
from ..zarr_format.model import (
    EncodedChunk,
    ZarrArrayMeta,
    ZarrOptions,
    bounded_chunk_shape,
    regular_chunks,
)
from ..zarr_format.stored import passable_codecs
from ..zarr_format.zarr_python import default_buffer_prototype
from .base import ArrayAdapterBase, zarr_attributes
from .files import file_identity, identity_etag, open_failure
from .mapping import MapAdapter
from .node_storage import NodeStorage
from .sequence import FileUnreadable, open_regular_file

logger = logging.getLogger(__name__)

# Upstream's public flag: True when the installed zarr-python is major version 2.
ZARR_LIB_V2 = version("zarr").split(".")[0] == "2"


class ContainedStore(LocalStore):
    """A read-only :class:`~zarr.storage.LocalStore` that reads a key only from a regular file
    inside its root directory, symbolic links followed (a link to another file of the store
    keeps working). Anything else is :class:`FileUnreadable` (a 415 naming the key): a link
    out of the store, a FIFO (whose opening would wait forever), a device, a directory. A key
    with no file, as in ``LocalStore``, reads as absent (the chunk holds the fill value)."""

    def __init__(self, root: Path | str, *, read_only: bool = True) -> None:
        super().__init__(root, read_only=True)
        self.resolved_root = Path(os.path.realpath(self.root))

    def open_key(self, key: str) -> Any | None:
        """The file of ``key`` opened for binary reading (the caller closes it), or None if
        there is none. Blocking: call it on a worker thread."""
        # realpath, not Path.resolve(): a loop of links then fails at open() (ELOOP), not
        # with an error that names the server's path.
        path = Path(os.path.realpath(self.root / key))
        if not path.is_relative_to(self.resolved_root):
            raise FileUnreadable(f"zarr key {key!r} is a link to a file outside the store")
        try:
            return open_regular_file(path)
        except FileUnreadable:
            raise FileUnreadable(
                f"zarr key {key!r} is not a regular file (a FIFO, socket or device)"
            ) from None
        except (FileNotFoundError, NotADirectoryError):
            return None
        except OSError as err:
            raise FileUnreadable(f"zarr key {key!r} {open_failure(err)}") from None

    def _read(self, key: str, prototype: Any, byte_range: ByteRequest | None) -> Any | None:
        file = self.open_key(key)
        if file is None:
            return None
        with file:
            if byte_range is None:
                data = file.read()
            elif isinstance(byte_range, RangeByteRequest):
                file.seek(byte_range.start)
                data = file.read(max(byte_range.end - byte_range.start, 0))
            elif isinstance(byte_range, OffsetByteRequest):
                file.seek(byte_range.offset)
                data = file.read()
            elif isinstance(byte_range, SuffixByteRequest):
                file.seek(max(0, file.seek(0, os.SEEK_END) - byte_range.suffix))
                data = file.read()
            else:
                raise TypeError(f"Unexpected byte_range, got {byte_range}.")
        return prototype.buffer.from_bytes(data)

    def get_sync(
        self, key: str, *, prototype: Any = None, byte_range: ByteRequest | None = None
    ) -> Any | None:
        # Read straight from the file: opening the store (which only checks its directory
        # for a read-only one) is not needed to read a key.
        return self._read(key, prototype or default_buffer_prototype(), byte_range)

    async def get(
        self, key: str, prototype: Any = None, byte_range: ByteRequest | None = None
    ) -> Any | None:
        prototype = prototype or default_buffer_prototype()
        return await asyncio.to_thread(self._read, key, prototype, byte_range)

    async def get_partial_values(
        self, prototype: Any, key_ranges: Iterable[tuple[str, ByteRequest | None]]
    ) -> list[Any | None]:
        reads = (self.get(key, prototype, byte_range) for key, byte_range in key_ranges)
        return list(await asyncio.gather(*reads))


def contained(node: zarr.Array | zarr.Group) -> zarr.Array | zarr.Group:
    """``node`` opened again through a :class:`ContainedStore` if it is read from a directory
    by a plain ``LocalStore`` (its metadata documents are read again, as they may be links out
    of the store too); a node of any other store as it is."""
    store = node.store
    if not isinstance(store, LocalStore) or isinstance(store, ContainedStore):
        return node
    store = ContainedStore(store.root)
    zarr_format = node.metadata.zarr_format
    if isinstance(node, zarr.Group):
        return zarr.open_group(store, path=node.path, mode="r", zarr_format=zarr_format)
    return zarr.open_array(store, path=node.path, mode="r", zarr_format=zarr_format)


class ZarrArrayAdapter(ArrayAdapterBase):
    """A stored zarr array (zarr-python ``Array``), with stored chunks passed through."""

    def __init__(
        self,
        array: zarr.Array,
        structure: ArrayStructure,
        *,
        metadata=None,
        specs=None,
        storage: NodeStorage | None = None,
    ):
        super().__init__(structure, metadata=metadata, specs=specs)
        self._array = array = contained(array)
        self._passthrough = passable_codecs(array.metadata)
        if self._passthrough is not None and not _listable(array):
            # More stored chunks along a dimension than a structure may list: its chunks are
            # coarser (see from_array), and the zarr view in them is re-encoded.
            self._passthrough = None
        # The node's own storage (the catalog's arrays): chunks are read by key from it, with
        # its ETags, whether it is a directory or a bucket.
        self._storage = storage

    @classmethod
    def from_array(
        cls, array: zarr.Array, *, metadata=None, specs=None, dims=None
    ) -> ZarrArrayAdapter:
        dims = dims or _dimension_names(array)
        shape = tuple(array.shape)
        chunks = regular_chunks(shape, bounded_chunk_shape(shape, tuple(array.chunks)))
        structure = ArrayStructure.from_array(array, shape=shape, chunks=chunks, dims=dims)
        metadata = dict(array.attrs) if metadata is None else metadata
        metadata.pop("_ARRAY_DIMENSIONS", None)
        return cls(array, structure, metadata=metadata, specs=specs)

    @property
    def passes_chunks_through(self) -> bool:
        return self._passthrough is not None

    def read(self, slice: NDSlice = NDSlice()) -> numpy.ndarray:
        if not slice:
            return numpy.asarray(self._array[...])
        # zarr refuses negative steps: read forward, then reverse in memory.
        forward, reorder = NDSlice(slice).forward_for_shape(self._array.shape)
        return numpy.asarray(self._array[tuple(forward)])[tuple(reorder)]

    async def to_zarr_meta(self, options: ZarrOptions | None = None) -> ZarrArrayMeta:
        if self._passthrough is None:
            return await super().to_zarr_meta(options)
        dtype, compressors = self._passthrough
        structure = self.structure()
        return ZarrArrayMeta(
            shape=structure.shape,
            chunk_shape=tuple(self._array.chunks),
            dtype=dtype,
            fill_value=self._array.fill_value,
            compressors=compressors,
            dimension_names=structure.dims,
            attributes=zarr_attributes(self),
        )

    async def to_zarr_chunk(self, coords: Sequence[int], meta: ZarrArrayMeta) -> bytes:
        if self._passthrough is None:
            return await super().to_zarr_chunk(coords, meta)
        meta.chunk_region(coords)  # refuses coordinates outside the grid
        key = self._array.metadata.encode_chunk_key(tuple(coords))
        if self._storage is not None:
            fetched = await self._storage.fetch(key)
            if fetched is None:
                raise ZarrKeyNotFound(f"Chunk {list(coords)} holds only the fill value")
            return EncodedChunk.tagged(fetched.data, fetched.etag)
        path = f"{self._array.path}/{key}" if self._array.path else key
        if isinstance(self._array.store, ContainedStore):
            return await run_sync(_read_chunk_file, self._array.store, path, coords)
        buffer = await self._array.store.get(path, prototype=default_buffer_prototype())
        if buffer is None:
            # Never written: the stored fill value, which the metadata declares too.
            raise ZarrKeyNotFound(f"Chunk {list(coords)} holds only the fill value")
        return buffer.to_bytes()

    def zarr_chunk_url(self, coords: Sequence[int], seconds: float) -> str | None:
        """A URL from which a client may read stored chunk ``coords`` itself for ``seconds``
        (blocking; signing may ask the store), or None: the chunk is served by the server
        (chunks re-encoded, storage without such URLs)."""
        if self._passthrough is None or self._storage is None:
            return None
        key = self._array.metadata.encode_chunk_key(tuple(coords))
        return self._storage.signed_url(key, seconds)


def _read_chunk_file(store: ContainedStore, key: str, coords: Sequence[int]) -> EncodedChunk:
    """A stored chunk file's bytes, tagged from its identity (no hashing of the payload)."""
    file = store.open_key(key)
    if file is None:
        raise ZarrKeyNotFound(f"Chunk {list(coords)} holds only the fill value")
    with file:
        info = os.fstat(file.fileno())
        payload = file.read()
    return EncodedChunk.tagged(payload, identity_etag(file_identity(info)))


def _listable(array: zarr.Array) -> bool:
    """Whether a structure may list the stored chunks of ``array`` as they are."""
    chunks = tuple(array.chunks)
    return bounded_chunk_shape(tuple(array.shape), chunks) == chunks


def _dimension_names(array: zarr.Array) -> tuple[str, ...] | None:
    names = getattr(array.metadata, "dimension_names", None) or array.attrs.get("_ARRAY_DIMENSIONS")
    return tuple(names) if names and all(isinstance(n, str) for n in names) else None


class ZarrGroupAdapter(MapAdapter):
    """A stored zarr group: members are its arrays and groups, attributes its metadata."""

    search_deep = None  # a deep search matches the group but does not walk the store (as HDF5)

    def __init__(self, group: zarr.Group, *, metadata=None, specs=None):
        group = contained(group)
        members = {}
        for name, member in _members(group):
            try:
                members[name] = _adapter_for(member)
            except (FileUnreadable, DataUnavailable) as err:
                logger.warning("zarr group member %r left out: %s", name, err)
        super().__init__(
            members, metadata=dict(group.attrs) if metadata is None else metadata, specs=specs
        )
        self._group = group


def _members(group: zarr.Group) -> list[tuple[str, Any]]:
    """The group's members; where one cannot be opened (a document that is a link out of the
    store, a FIFO), the others, each opened on its own, that one left out with a warning:
    one hostile member must not make its group unreadable."""
    try:
        return list(group.members())
    except (FileUnreadable, DataUnavailable):
        pass
    found = []
    directory = Path(group.store.root) / group.path
    with os.scandir(directory) as entries:
        names = sorted(e.name for e in entries if e.is_dir() and not e.name.startswith("."))
    for name in names:
        try:
            found.append((name, group[name]))
        except KeyError:
            continue  # a folder that is no member (v3's chunk folder "c", say)
        except (FileUnreadable, DataUnavailable) as err:
            logger.warning("zarr group member %r left out: %s", name, err)
    return found


def _adapter_for(node: zarr.Array | zarr.Group) -> Any:
    return (
        ZarrGroupAdapter(node)
        if isinstance(node, zarr.Group)
        else ZarrArrayAdapter.from_array(node)
    )


class ZarrAdapter:
    """Open a zarr store by URI or path as the matching adapter."""

    @staticmethod
    def from_uris(data_uri: str, **kwargs: Any) -> ZarrArrayAdapter | ZarrGroupAdapter:
        path = data_uri.removeprefix("file://localhost").removeprefix("file://")
        try:
            node = zarr.open(ContainedStore(path), mode="r")
        except FileNotFoundError:
            raise NoSuchEntry([data_uri]) from None
        return _adapter_for(node)

    @staticmethod
    def from_catalog(data_source: Any, node: Any, /, **kwargs: Any) -> Any:
        """The store a catalog registered (its first asset), as array or group."""
        from .files import asset_uris

        return ZarrAdapter.from_uris(asset_uris(data_source)[0])


__all__ = ["ContainedStore", "ZarrAdapter", "ZarrArrayAdapter", "ZarrGroupAdapter", "contained"]
