"""A reusable conformance suite for the zarr hooks of array-like adapters.

Subclass :class:`ZarrArrayHookConformance` and implement ``build_cases()`` returning
``{name: ZarrCase}``; every test then runs for every case and both zarr formats. The documents
from the encodings are parsed by zarr-python itself, and every chunk is decoded by zarr-python
on its own (a store that holds the metadata and that one chunk), then compared with numpy.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Any

import numpy
import pytest
import zarr
from zarr.core.buffer import cpu
from zarr.storage import MemoryStore

from tiled.errors import ChunkOutOfRange, ZarrKeyNotFound
from tiled.zarr_format.formats import encoding_for
from tiled.zarr_format.model import ZarrOptions


@dataclass
class ZarrCase:
    adapter: Any
    expected: numpy.ndarray
    options: ZarrOptions = ZarrOptions()


def open_with_zarr(documents: dict[str, bytes], zarr_format: int) -> zarr.Array:
    store = MemoryStore({k: cpu.Buffer.from_bytes(v) for k, v in documents.items()})
    return zarr.open_array(store, mode="r", zarr_format=zarr_format)


def assert_same_values(actual: numpy.ndarray, expected: numpy.ndarray) -> None:
    assert actual.shape == expected.shape
    if expected.dtype.kind in "fc":
        numpy.testing.assert_array_equal(actual, expected)  # treats NaN == NaN
    elif expected.dtype.kind in "OT" or actual.dtype.kind in "OT":
        assert [str(x) for x in actual.ravel()] == [str(x) for x in expected.ravel()]
    else:
        # zarr v3 hands back native byte order; the values must be identical.
        assert actual.dtype.newbyteorder("=") == expected.dtype.newbyteorder("=")
        assert actual.astype(expected.dtype).tobytes() == expected.tobytes()


class ZarrArrayHookConformance:
    @classmethod
    def build_cases(cls) -> dict[str, ZarrCase]:
        raise NotImplementedError

    async def test_metadata_parses_with_zarr(self, zarr_case: ZarrCase, zarr_format: int):
        meta = await zarr_case.adapter.to_zarr_meta(zarr_case.options)
        documents = encoding_for(zarr_format).array_documents(meta)
        array = open_with_zarr(documents, zarr_format)
        assert array.shape == zarr_case.expected.shape
        assert array.metadata.zarr_format == zarr_format
        assert tuple(array.chunks) == meta.chunk_shape

    async def test_every_chunk_decodes_to_the_data(self, zarr_case: ZarrCase, zarr_format: int):
        encoding = encoding_for(zarr_format)
        meta = await zarr_case.adapter.to_zarr_meta(zarr_case.options)
        documents = encoding.array_documents(meta)
        for coords in itertools.product(*(range(n) for n in meta.grid_shape)):
            try:
                chunk = {
                    encoding.chunk_key(coords): await zarr_case.adapter.to_zarr_chunk(coords, meta)
                }
            except ZarrKeyNotFound:
                chunk = {}  # a chunk holding only the fill value may be absent, as in any store
            store = {**documents, **chunk}
            region = meta.chunk_region(coords)
            decoded = open_with_zarr(store, zarr_format)[region]
            assert_same_values(numpy.asarray(decoded), zarr_case.expected[region])

    async def test_metadata_reads_no_data(self, zarr_case: ZarrCase):
        adapter = zarr_case.adapter

        def refuse(*args, **kwargs):
            raise AssertionError("to_zarr_meta read data")

        spied = {name: getattr(adapter, name) for name in ("read", "read_block")}
        try:
            for name in spied:
                setattr(adapter, name, refuse)
            await adapter.to_zarr_meta(zarr_case.options)
        finally:
            for name in spied:
                delattr(adapter, name)

    async def test_out_of_range_chunks_are_refused(self, zarr_case: ZarrCase):
        meta = await zarr_case.adapter.to_zarr_meta(zarr_case.options)
        grid = meta.grid_shape
        bad = [(0,) * (len(grid) + 1)]
        if grid:
            bad += [tuple(grid), (-1,) + (0,) * (len(grid) - 1)]
        for coords in bad:
            with pytest.raises(ChunkOutOfRange, match="Chunk coordinates"):
                await zarr_case.adapter.to_zarr_chunk(coords, meta)
