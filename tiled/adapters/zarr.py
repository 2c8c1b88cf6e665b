"""Arrays and groups stored as zarr (format 2 or 3) as Tiled nodes.

A stored array whose codecs a zarr client of either format can read as they are (one
serializer writing raw bytes, at most one blosc/zstd/gzip compressor, no sharding) is served
by **passing the stored chunk bytes through**: ``to_zarr_meta`` advertises the stored chunk
grid, byte order, fill value and compressor, and ``to_zarr_chunk`` returns the stored file's
bytes untouched. Any other array falls back to the default hooks (decode, re-encode).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from importlib.metadata import version
from pathlib import Path
from typing import Any

import numpy
import zarr
from zarr.storage import LocalStore

from ..errors import NoSuchEntry, ZarrKeyNotFound
from ..ndslice import NDSlice
from ..structures.array import ArrayStructure
from ..utils import run_sync
from ..zarr_format.model import EncodedChunk, ZarrArrayMeta, ZarrOptions, regular_chunks
from ..zarr_format.stored import passable_codecs
from ..zarr_format.zarr_python import default_buffer_prototype
from .base import ArrayAdapterBase, zarr_attributes
from .files import file_identity, identity_etag
from .mapping import MapAdapter
from .node_storage import NodeStorage

# Upstream's public flag: True when the installed zarr-python is major version 2.
ZARR_LIB_V2 = version("zarr").split(".")[0] == "2"


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
        self._array = array
        self._passthrough = passable_codecs(array.metadata)
        # The node's own storage (the catalog's arrays): chunks are read by key from it, with
        # its ETags, whether it is a directory or a bucket.
        self._storage = storage

    @classmethod
    def from_array(
        cls, array: zarr.Array, *, metadata=None, specs=None, dims=None
    ) -> ZarrArrayAdapter:
        dims = dims or _dimension_names(array)
        shape = tuple(array.shape)
        structure = ArrayStructure.from_array(
            array, shape=shape, chunks=regular_chunks(shape, tuple(array.chunks)), dims=dims
        )
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
        if isinstance(self._array.store, LocalStore):
            return await run_sync(_read_chunk_file, Path(self._array.store.root) / path, coords)
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


def _read_chunk_file(path: Path, coords: Sequence[int]) -> EncodedChunk:
    """A stored chunk file's bytes, tagged from its identity (no hashing of the payload)."""
    try:
        with open(path, "rb") as file:
            info = os.fstat(file.fileno())
            payload = file.read()
    except FileNotFoundError:
        raise ZarrKeyNotFound(f"Chunk {list(coords)} holds only the fill value") from None
    return EncodedChunk.tagged(payload, identity_etag(file_identity(info)))


def _dimension_names(array: zarr.Array) -> tuple[str, ...] | None:
    names = getattr(array.metadata, "dimension_names", None) or array.attrs.get("_ARRAY_DIMENSIONS")
    return tuple(names) if names and all(isinstance(n, str) for n in names) else None


class ZarrGroupAdapter(MapAdapter):
    """A stored zarr group: members are its arrays and groups, attributes its metadata."""

    def __init__(self, group: zarr.Group, *, metadata=None, specs=None):
        members = {name: _adapter_for(member) for name, member in group.members()}
        super().__init__(
            members, metadata=dict(group.attrs) if metadata is None else metadata, specs=specs
        )
        self._group = group


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
            node = zarr.open(path, mode="r")
        except FileNotFoundError:
            raise NoSuchEntry([data_uri]) from None
        return _adapter_for(node)

    @staticmethod
    def from_catalog(data_source: Any, node: Any, /, **kwargs: Any) -> Any:
        """The store a catalog registered (its first asset), as array or group."""
        from .files import asset_uris

        return ZarrAdapter.from_uris(asset_uris(data_source)[0])


__all__ = ["ZarrAdapter", "ZarrArrayAdapter", "ZarrGroupAdapter"]
