"""The process's cache of encoded chunks: answers equal to a fresh encoding, never stale."""

from __future__ import annotations

import asyncio

import httpx
import numpy
import pytest

from tiled.adapters.array import ArrayAdapter
from tiled.adapters.mapping import MapAdapter
from tiled.server.app import build_app
from tiled.zarr_format.chunk_cache import ENCODED_CHUNKS, EncodedChunkCache, content_etag
from tiled.zarr_format.model import ZarrArrayMeta, ZarrOptions

from .live_server import serve


def _meta(codec: str = "blosc-lz4", dtype: str = "int32", shape=(4, 4)) -> ZarrArrayMeta:
    return ZarrArrayMeta(
        shape=shape,
        chunk_shape=shape,
        dtype=numpy.dtype(dtype),
        compressors=ZarrOptions(codec=codec).compressors,
    )


def test_the_same_values_are_encoded_once():
    cache, meta, calls = EncodedChunkCache(), _meta(), []

    def encode(data):
        calls.append(data)
        return meta._encode(data)

    data = numpy.arange(16, dtype="int32").reshape(4, 4)
    first = cache.encoded(meta, data, encode)
    second = cache.encoded(meta, data.copy(), encode)  # equal values, another array
    assert len(calls) == 1 and second is first
    assert first == meta._encode(data) and first.etag == content_etag(first)
    numpy.testing.assert_array_equal(meta.decode_chunk(first), data)


@pytest.mark.parametrize("region", [numpy.float64(3.5), numpy.arange(32).reshape(4, 8)[:, ::2]])
def test_scalars_and_strided_regions(region):
    region = numpy.asarray(region)
    meta = _meta(dtype=str(region.dtype), shape=region.shape)
    cache = EncodedChunkCache()
    assert cache.encoded(meta, region, meta._encode) == meta._encode(region)
    assert cache.encoded(meta, region, meta._encode) == meta._encode(region)
    assert len(cache) == 1


def test_values_changed_in_place_are_encoded_again():
    cache, meta = EncodedChunkCache(), _meta()
    data = numpy.zeros((4, 4), dtype="int32")
    before = cache.encoded(meta, data, meta._encode)
    data[...] = 7
    after = cache.encoded(meta, data, meta._encode)
    assert after != before
    numpy.testing.assert_array_equal(meta.decode_chunk(after), data)
    data[...] = 0  # back: the first entry answers again
    assert cache.encoded(meta, data, meta._encode) is before


def test_other_metadata_or_dtype_or_shape_is_another_entry():
    cache = EncodedChunkCache()
    blosc, zstd = _meta("blosc-lz4"), _meta("zstd")
    data = numpy.ones((4, 4), dtype="int32")
    assert cache.encoded(blosc, data, blosc._encode) != cache.encoded(zstd, data, zstd._encode)
    # The same bytes read as another dtype or shape are other values.
    as_float = data.view("float32")
    assert cache.encoded(blosc, as_float, blosc._encode) == blosc._encode(as_float)
    top, left = data[:2], data[:2].reshape(4, 2)  # edge regions, padded to the chunk
    assert cache.encoded(blosc, top, blosc._encode) == blosc._encode(top)
    assert cache.encoded(blosc, left, blosc._encode) == blosc._encode(left)
    assert len(cache) == 5


def test_a_snapshot_is_encoded(monkeypatch):
    """An array written while it is encoded: the entry holds the values it encoded."""
    cache, meta = EncodedChunkCache(), _meta()
    data = numpy.zeros((4, 4), dtype="int32")

    def encode_while_written(values):
        data[...] = 5  # another thread writing meanwhile
        return meta._encode(values)

    first = cache.encoded(meta, data, encode_while_written)
    numpy.testing.assert_array_equal(meta.decode_chunk(first), numpy.zeros((4, 4)))
    # The current values (fives) were never encoded: not answered from the zeros' entry.
    numpy.testing.assert_array_equal(meta.decode_chunk(cache.encoded(meta, data, meta._encode)), 5)


@pytest.mark.parametrize(
    "values",
    [
        numpy.array(["a", "bb"], dtype=object),
        numpy.array(["a", "bb"], dtype=numpy.dtypes.StringDType()),
    ],
)
def test_pointer_dtypes_are_not_cached(values):
    cache, calls = EncodedChunkCache(), []
    for _ in range(2):
        cache.encoded(None, values, lambda data: calls.append(data) or b"x")
    assert len(calls) == 2 and len(cache) == 0


def test_the_cache_is_bounded_by_bytes():
    meta = _meta("none", "float64", (64,))  # 512 bytes a chunk, incompressible
    cache = EncodedChunkCache(max_bytes=8 * 512)
    rng = numpy.random.default_rng(0)
    chunks = [rng.random(64) for _ in range(20)]
    for chunk in chunks:
        cache.encoded(meta, chunk, meta._encode)
    assert cache.held_bytes <= 8 * 512 and len(cache) == 8
    # The least recently used went first: the last eight are held.
    assert cache.encoded(meta, chunks[-1], lambda data: b"not asked") != b"not asked"
    assert cache.encoded(meta, chunks[0], lambda data: b"asked") == b"asked"
    # A chunk larger than an eighth of the bound is answered, not kept.
    big = _meta("none", "float64", (1024,))
    cache.encoded(big, rng.random(1024), big._encode)
    assert cache.held_bytes <= 8 * 512


def test_no_stale_chunk_over_http_for_an_array_changed_in_place():
    values = numpy.zeros((3, 3))
    ENCODED_CHUNKS.clear()
    app = build_app(
        MapAdapter({"dynamic": ArrayAdapter.from_array(values)}),
        authentication={"allow_anonymous_access": True},
    )
    meta = asyncio.run(app.state.tiled.root_tree["dynamic"].to_zarr_meta(None))
    with serve(app) as live, httpx.Client(base_url=live.url + "/zarr/v3/dynamic") as client:
        first = client.get("c/0/0")
        again = client.get("c/0/0")
        assert again.content == first.content and again.headers["etag"] == first.headers["etag"]
        values[...] = 3  # in place, as the demo's dynamic array changes
        changed = client.get("c/0/0", headers={"If-None-Match": first.headers["etag"]})
        assert changed.status_code == 200
        assert changed.headers["etag"] != first.headers["etag"]
        numpy.testing.assert_array_equal(meta.decode_chunk(changed.content), values)
        current = client.get("c/0/0", headers={"If-None-Match": changed.headers["etag"]})
        assert current.status_code == 304
