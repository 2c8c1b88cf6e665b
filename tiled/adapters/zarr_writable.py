"""Zarr v3 arrays that the server creates and writes (catalog storage).

Arrays are created with a regular chunk grid and the codecs ``bytes`` + ``blosc(lz4, 5,
shuffle)``, which :class:`tiled.adapters.zarr.ZarrArrayAdapter` serves by passing the stored
chunk bytes through. Writes go through :class:`StagingStore`: zarr-python encodes the chunks,
the store stages them as temporary files, and they replace the visible chunks only once all of
them are written (see :mod:`tiled.adapters.files`).
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy
import zarr
from zarr.codecs import BloscCodec, BytesCodec
from zarr.storage import LocalStore

from ..structures.array import ArrayStructure, BuiltinDtype, Endianness
from ..zarr_format.formats import encoding_for
from ..zarr_format.model import regular_chunks
from .files import (
    FileTransaction,
    file_identity,
    identity_etag,
    locked,
    staged,
    write_temp_file,
)

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


def create_zarr_array(path: Path, structure: ArrayStructure) -> ArrayStructure:
    """Create an empty array at ``path``; return the structure as stored (regular chunks)."""
    dtype = structure.data_type.to_numpy_dtype()
    chunk_shape = regular_chunk_shape(structure.chunks)
    zarr.create_array(
        str(path),
        shape=structure.shape,
        chunks=chunk_shape,
        dtype=dtype,
        fill_value=numpy.zeros((), dtype=dtype)[()],
        dimension_names=structure.dims,
        zarr_format=3,
        **_codecs(structure),
    )
    chunks = regular_chunks(structure.shape, chunk_shape)
    return ArrayStructure(structure.data_type, chunks, structure.shape, structure.dims)


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


def write_region(path: Path, region: tuple[slice, ...], data: numpy.ndarray) -> None:
    """Write ``data`` into ``region`` of the array at ``path``: all chunks or none."""
    with locked(path), staged(path) as transaction:
        array = zarr.open_array(store=StagingStore(path, transaction), mode="r+")
        array[region] = data


def patch_region(
    path: Path, region: tuple[slice, ...], data: numpy.ndarray, shape: tuple[int, ...]
) -> None:
    """Write ``data`` into ``region`` of the array at ``path``, first growing it to ``shape``
    if it is smaller: the new metadata and the chunks are replaced together or not at all."""
    with locked(path), staged(path) as transaction:
        array = zarr.open_array(store=StagingStore(path, transaction), mode="r+")
        if tuple(array.shape) != tuple(shape):
            array.resize(shape)
        array[region] = data


def open_readonly(path: Path) -> zarr.Array:
    return zarr.open_array(str(path), mode="r")


def store_zarr_documents(path: Path, documents: Mapping[str, bytes]) -> None:
    """Start a new array directory from zarr metadata documents (a client's, see
    :mod:`tiled.zarr_format.submitted`)."""
    path.mkdir(parents=True)
    for name, document in documents.items():
        write_temp_file(path / name, document)


def resize_stored(path: Path, shape: tuple[int, ...]) -> None:
    """Give the stored array ``shape``: its metadata rewritten and the chunks now wholly
    outside it removed, together or not at all (zarr-python's own resize)."""
    with locked(path), staged(path) as transaction:
        zarr.open_array(store=StagingStore(path, transaction), mode="r+").resize(shape)


def stored_chunk_files(
    path: Path, metadata: Any
) -> Iterator[tuple[tuple[int, ...], int, float, str]]:
    """``(coords, size, modification time, ETag)`` of each chunk file stored under ``path``
    (the ETag readers get for it). The server's arrays use their format's own chunk keys (the
    only ones written through /zarr), so that format's grammar reads them."""
    encoding = encoding_for(metadata.zarr_format)
    ndim = len(metadata.shape)
    for folder, _, files in os.walk(path):
        relative = os.path.relpath(folder, path)
        for name in files:
            if name.startswith("."):
                continue  # documents of v2 and staged files
            key = name if relative == "." else f"{relative}/{name}".replace(os.sep, "/")
            coords = encoding.parse_chunk_key(key, ndim)
            if coords is not None and len(coords) == ndim:
                info = os.stat(os.path.join(folder, name))
                yield coords, info.st_size, info.st_mtime, identity_etag(file_identity(info))
