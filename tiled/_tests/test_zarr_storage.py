"""Arrays stored as zarr: served through the hooks, with stored chunks passed through."""

from __future__ import annotations

import atexit
import shutil
import tempfile
from pathlib import Path

import fsspec
import numpy
import pytest
import zarr
from zarr.codecs import BloscCodec, BytesCodec, Crc32cCodec, GzipCodec, ZstdCodec

from tiled.adapters.zarr import ZarrAdapter, ZarrArrayAdapter
from tiled.server.app import build_app

from .live_server import serve
from .zarr_conformance import ZarrArrayHookConformance, ZarrCase

rng = numpy.random.default_rng(11)
DATA = rng.random((37, 23)).astype("float32")
STORE_ROOT = Path(tempfile.mkdtemp(prefix="tiled-zarr-storage-"))
atexit.register(shutil.rmtree, STORE_ROOT, ignore_errors=True)

# name: (zarr_format, dtype, create_array keyword arguments)
LAYOUTS = {
    "v3-blosc": (3, "<f4", {"compressors": BloscCodec(cname="lz4", clevel=5, shuffle="shuffle")}),
    "v3-zstd": (3, "<f4", {"compressors": ZstdCodec(level=3)}),
    "v3-gzip-big-endian": (
        3,
        ">f4",
        {"serializer": BytesCodec(endian="big"), "compressors": GzipCodec(level=4)},
    ),
    "v3-uncompressed": (3, "<f4", {"compressors": None}),
    "v3-crc32c": (3, "<f4", {"compressors": Crc32cCodec()}),  # not passable: re-encoded
    "v3-sharded": (3, "<f4", {"shards": (20, 20)}),  # not passable: re-encoded
    "v2-blosc": (2, "<f4", {}),  # zarr-python's v2 default: blosc
    "v2-uncompressed-big-endian": (2, ">f4", {"compressors": None}),
}
PASSABLE = {
    "v3-blosc",
    "v3-zstd",
    "v3-gzip-big-endian",
    "v3-uncompressed",
    "v2-blosc",
    "v2-uncompressed-big-endian",
}


def stored(name: str) -> zarr.Array:
    zarr_format, dtype, kwargs = LAYOUTS[name]
    path = STORE_ROOT / name
    if not path.exists():
        array = zarr.create_array(
            str(path), shape=DATA.shape, chunks=(10, 10), dtype=dtype, zarr_format=zarr_format,
            fill_value=-1.0, dimension_names=["y", "x"] if zarr_format == 3 else None, **kwargs,
        )  # fmt: skip
        array[...] = DATA
        array[30:, :] = -1.0  # chunks equal to the fill value are not stored: absent keys
        array.attrs["units"] = "m"
    return zarr.open_array(str(path), mode="r")


def expected() -> numpy.ndarray:
    data = DATA.copy()
    data[30:, :] = -1.0
    return data


class TestStoredZarrArrays(ZarrArrayHookConformance):
    @classmethod
    def build_cases(cls):
        return {
            name: ZarrCase(ZarrArrayAdapter.from_array(stored(name)), expected())
            for name in LAYOUTS
        }


@pytest.mark.parametrize("name", sorted(LAYOUTS))
async def test_chunks_pass_through_when_the_codecs_allow(name):
    array = stored(name)
    adapter = ZarrArrayAdapter.from_array(array)
    assert adapter.passes_chunks_through == (name in PASSABLE)
    meta = await adapter.to_zarr_meta()
    assert meta.chunk_shape == (10, 10)
    chunk = await adapter.to_zarr_chunk((1, 1), meta)
    key = array.metadata.encode_chunk_key((1, 1))
    stored_bytes = (STORE_ROOT / name / key).read_bytes()
    assert (chunk == stored_bytes) == (name in PASSABLE)


async def test_structure_dims_and_attributes():
    adapter = ZarrArrayAdapter.from_array(stored("v3-blosc"))
    structure = adapter.structure()
    assert structure.shape == (37, 23) and structure.chunks[0] == (10, 10, 10, 7)
    assert structure.dims == ("y", "x") and adapter.metadata() == {"units": "m"}
    numpy.testing.assert_array_equal(adapter.read((slice(0, 2), 3)), expected()[0:2, 3])


def test_group_served_over_both_formats(zarr_format):
    root = zarr.open_group(str(STORE_ROOT / "group"), mode="a")
    root.attrs["title"] = "stored"
    root.create_array("a", shape=(5,), chunks=(2,), dtype="i8", fill_value=0, overwrite=True)[
        ...
    ] = numpy.arange(5)
    tree = ZarrAdapter.from_uris(f"file://localhost{STORE_ROOT / 'group'}")
    app = build_app(tree, authentication={"allow_anonymous_access": True})
    with serve(app) as server:
        client_root = zarr.open(fsspec.get_mapper(f"{server.url}/zarr/v{zarr_format}/"), mode="r")
        assert dict(client_root.attrs) == {"title": "stored"}
        numpy.testing.assert_array_equal(client_root["a"][...], numpy.arange(5))
