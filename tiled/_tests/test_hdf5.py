"""The HDF5 adapter: native reads, the zarr view (stored chunks passed through untouched, or
re-encoded with the reason in the metadata), changing files and broken ones."""

from __future__ import annotations

import atexit
import ctypes
import itertools
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import fsspec
import h5py
import httpx
import numcodecs
import numpy
import pytest
import zarr
from numpy.lib.recfunctions import repack_fields

from tiled.adapters import hdf5 as hdf5_module
from tiled.adapters.files import file_identity, identity_etag
from tiled.adapters.hdf5 import (
    HDF5Adapter,
    HDF5ArrayAdapter,
    contiguous_chunk_shape,
    json_value,
    zarr_storage,
)
from tiled.adapters.mapping import MapAdapter
from tiled.errors import Conflict, DataUnavailable, NoSuchEntry, ZarrKeyNotFound
from tiled.ndslice import NDSlice
from tiled.queries import Eq
from tiled.server.app import build_app
from tiled.structures.data_source import Asset, DataSource
from tiled.zarr_format.chunk_cache import content_etag
from tiled.zarr_format.formats import encoding_for
from tiled.zarr_format.model import ZARR_VIEW_KEY, ZarrOptions

from .isolated_python import run_isolated
from .live_server import serve
from .zarr_conformance import ZarrArrayHookConformance, ZarrCase, assert_same_values

# zarr-python warns that numcodecs codecs (HDF5's shuffle and zlib) are outside the v3 spec.
pytestmark = pytest.mark.filterwarnings("ignore:Numcodecs codecs are not in the Zarr")
rng = numpy.random.default_rng(11)
TINY = ZarrOptions(chunk_budget_bytes=64)  # several contiguous slabs, a short last one


# --- sample files ------------------------------------------------------------------------------


def _dont_filter_partial_chunks(dcpl: h5py.h5p.PropDCID) -> None:
    # h5py cannot set H5D_CHUNK_DONT_FILTER_PARTIAL_CHUNKS; HDF5 can (other writers do).
    function = ctypes.CDLL(h5py.h5p.__file__).H5Pset_chunk_opts
    function.argtypes = [ctypes.c_int64, ctypes.c_uint]
    function.restype = ctypes.c_int
    assert function(dcpl.id, 0x2) >= 0


def _direct_chunks(group, name, data, chunks, filter_id, codec) -> None:
    """A dataset whose chunks we encode ourselves (for filters this HDF5 has no plugin for)."""
    dataset = group.create_dataset(
        name,
        shape=data.shape,
        chunks=chunks,
        dtype=data.dtype,
        compression=filter_id,
        allow_unknown_filter=True,
    )
    grid = [range(0, s, c) for s, c in zip(data.shape, chunks, strict=True)]
    for start in itertools.product(*grid):
        block = numpy.zeros(chunks, dtype=data.dtype)  # edge chunks are stored full-size
        part = data[tuple(slice(s, s + c) for s, c in zip(start, chunks, strict=True))]
        block[tuple(slice(0, n) for n in part.shape)] = part
        dataset.id.write_direct_chunk(start, codec.encode(block))


def write_sample(path: Path) -> dict[str, numpy.ndarray]:
    """Every kind of dataset the adapter tells apart. Returns the data of the datasets this
    HDF5 cannot read back itself (filters without a plugin here)."""
    written = {}
    with h5py.File(path, "w", libver="latest") as f:
        f.attrs["title"] = "sample"
        f.attrs["NX_class"] = b"NXroot"
        entry = f.create_group("entry")
        entry.attrs.update({"NX_class": "NXentry", "start": numpy.float32(1.5)})
        data = entry.create_group("data")
        data.attrs.update({"NX_class": "NXdata", "signal": "counts", "axes": ["x", "y"]})
        counts = data.create_dataset(
            "counts",
            data=rng.random((45, 33)),
            chunks=(10, 8),
            compression="gzip",
            compression_opts=4,
            shuffle=True,
        )
        counts.attrs.update({"units": "counts", "long_name": b"Counts", "shape": [45, 33]})
        f.create_dataset("gzip", data=numpy.arange(30, dtype="i4"), chunks=(7,), compression="gzip")
        f.create_dataset(
            "shuffle_only", data=rng.integers(0, 9999, (25, 4), dtype="u2"), chunks=(10, 4),
            shuffle=True,
        )  # fmt: skip
        f.create_dataset(
            "no_filter", data=numpy.arange(100, dtype=">i4").reshape(10, 10), chunks=(3, 4)
        )
        f.create_dataset(
            "lzf", data=rng.random((20, 7)).astype("f4"), chunks=(6, 7), compression="lzf"
        )
        f.create_dataset("contiguous", data=rng.random((50, 6)))
        f.create_dataset("contiguous_3d", data=numpy.arange(210, dtype="i2").reshape(5, 6, 7))
        f.create_dataset("contiguous_big_endian", data=rng.random(33).astype(">f4"))
        f.create_dataset("contiguous_unwritten", shape=(12, 5), dtype="f4", fillvalue=1.5)
        fill = f.create_dataset(
            "fill_unwritten", shape=(20, 20), chunks=(5, 5), dtype="i2", fillvalue=-7,
            compression="gzip",
        )  # fmt: skip
        fill[0:5, 0:5] = 1
        fill[17:, 12:] = 2
        nan = f.create_dataset(
            "fill_nan", shape=(9, 9), chunks=(4, 4), dtype="f8", fillvalue=numpy.nan
        )
        nan[0:4, 0:4] = 3.0
        f.create_dataset("edge", data=numpy.arange(13, dtype="u1"), chunks=(5,), compression="gzip")
        f["scalar"] = 3.5
        f["scalar_big_endian"] = numpy.array(7, dtype=">i8")
        f.create_dataset("bool", data=numpy.arange(17) % 3 == 0, chunks=(5,), compression="gzip")
        f.create_dataset(
            "complex", data=rng.random(8) + 1j * rng.random(8), chunks=(3,), compression="gzip"
        )
        f.create_dataset("vstr", data=["alpha", "β", "", "delta long"], dtype=h5py.string_dtype())
        f.create_dataset(
            "vstr_chunked", data=[f"s{i}" * i for i in range(8)], dtype=h5py.string_dtype(),
            chunks=(3,), compression="gzip",
        )  # fmt: skip
        f["fstr"] = numpy.array([b"ab", b"cde", b""])
        compound = numpy.array(
            [(1, 2.0, b"x"), (3, 4.5, b"yz"), (5, -1.0, b"")],
            dtype=[("a", "<i4"), ("b", "<f8"), ("c", "S2")],
        )
        f.create_dataset("compound", data=compound, chunks=(2,), compression="gzip")
        padded = numpy.dtype([("a", "i1"), ("b", ">f8")], align=True)
        f["compound_padded"] = numpy.array([(1, 2.0), (-3, 0.25)], dtype=padded)
        f.create_dataset("empty", data=h5py.Empty("f4"))
        f.create_dataset("fletcher32", data=numpy.arange(10.0), chunks=(4,), fletcher32=True)
        f.create_dataset("resizable", data=rng.random((12, 4)), maxshape=(None, 4), chunks=(5, 4))
        # Chunks with filters skipped (an optional filter that failed stores the chunk raw).
        masked = f.create_dataset(
            "masked", shape=(8,), chunks=(4,), dtype="<f8", compression="gzip"
        )
        masked.id.write_direct_chunk((0,), numpy.arange(4.0).tobytes(), filter_mask=1)
        masked[4:] = [4.0, 5.0, 6.0, 7.0]
        # Partial edge chunks stored unfiltered (HDF5's H5D_CHUNK_DONT_FILTER_PARTIAL_CHUNKS).
        dcpl = h5py.h5p.create(h5py.h5p.DATASET_CREATE)
        dcpl.set_chunk((4, 3))
        dcpl.set_shuffle()
        dcpl.set_deflate(5)
        _dont_filter_partial_chunks(dcpl)
        space = h5py.h5s.create_simple((10, 7))
        raw_edges = h5py.Dataset(
            h5py.h5d.create(f.id, b"raw_edges", h5py.h5t.NATIVE_INT32, space, dcpl=dcpl)
        )
        raw_edges[...] = numpy.arange(70, dtype="i4").reshape(10, 7)
        dcpl = h5py.h5p.create(h5py.h5p.DATASET_CREATE)
        dcpl.set_layout(h5py.h5d.COMPACT)
        space = h5py.h5s.create_simple((6,))
        compact = h5py.h5d.create(f.id, b"compact", h5py.h5t.NATIVE_INT16, space, dcpl=dcpl)
        h5py.Dataset(compact)[...] = numpy.arange(6, dtype="i2")
        f["vstr_scalar"] = "a lone string"
        layout = h5py.VirtualLayout(shape=(2, 30), dtype="i4")
        layout[0] = h5py.VirtualSource(f["gzip"])
        layout[1] = h5py.VirtualSource(f["gzip"])
        f.create_virtual_dataset("virtual", layout, fillvalue=-1)
        f["link"] = h5py.SoftLink("/entry/data/counts")
        f["broken_link"] = h5py.SoftLink("/nowhere")
        written["external"] = numpy.arange(24, dtype="i8").reshape(4, 6)
        with h5py.File(path.parent / "other.h5", "w") as other:
            other.create_dataset(
                "data", data=written["external"], chunks=(2, 3), compression="gzip"
            )
        f["external"] = h5py.ExternalLink("other.h5", "/data")
        f["external_missing"] = h5py.ExternalLink("nowhere.h5", "/data")
        f.create_dataset("vlen_ints", shape=(2,), dtype=h5py.vlen_dtype("i4"))
        f["long_double"] = numpy.arange(3, dtype=numpy.longdouble)
        plugins = f.create_group("plugins")
        written["plugins/blosc"] = rng.random((10, 6))
        _direct_chunks(
            plugins, "blosc", written["plugins/blosc"], (4, 6), 32001,
            numcodecs.Blosc(cname="lz4", clevel=5, shuffle=numcodecs.Blosc.SHUFFLE),
        )  # fmt: skip
        written["plugins/zstd"] = numpy.arange(40, dtype="u4").reshape(8, 5)
        _direct_chunks(
            plugins, "zstd", written["plugins/zstd"], (3, 5), 32015, numcodecs.Zstd(level=3)
        )
    return written


def read_all(path: Path) -> dict[str, numpy.ndarray]:
    """What h5py reads from every dataset (strings decoded as zarr hands them back), scalars
    with the leading axis of one that they are served with (as upstream serves them)."""
    found = {}

    def visit(name: str, node) -> None:
        if not isinstance(node, h5py.Dataset) or name.startswith("plugins"):
            return
        if node.dtype.kind == "O":
            if h5py.check_string_dtype(node.dtype) is not None:
                found[name] = numpy.asarray(node.asstr()[()], dtype=str)
            return
        found[name] = numpy.asarray(node[()]) if node.shape is not None else numpy.zeros(0, "f4")

    with h5py.File(path, "r") as f:
        f.visititems(visit)
    return {
        name: value[numpy.newaxis] if value.ndim == 0 else value for name, value in found.items()
    }


_SAMPLE: tuple[Path, dict[str, numpy.ndarray]] | None = None


def sample() -> tuple[Path, dict[str, numpy.ndarray]]:
    """One sample file for the module, written at collection time (the conformance cases are
    listed then); removed when the process exits."""
    global _SAMPLE
    if _SAMPLE is None:
        directory = Path(tempfile.mkdtemp(prefix="tiled-hdf5-"))
        atexit.register(shutil.rmtree, directory, True)
        path = directory / "sample.h5"
        written = write_sample(path)
        _SAMPLE = path, {**read_all(path), **written}
    return _SAMPLE


def as_zarr_reads(expected: numpy.ndarray) -> numpy.ndarray:
    # zarr v3 records no byte order per record member and no padding: compounds come back packed
    # and little-endian, with the same values.
    if expected.dtype.fields is not None:
        return repack_fields(expected).astype(repack_fields(expected.dtype).newbyteorder("<"))
    return expected


PASS_THROUGH = [
    "entry/data/counts",
    "gzip",
    "shuffle_only",
    "no_filter",
    "contiguous",
    "contiguous_3d",
    "contiguous_big_endian",
    "contiguous_unwritten",
    "fill_unwritten",
    "fill_nan",
    "edge",
    "scalar",
    "scalar_big_endian",
    "bool",
    "complex",
    "fstr",
    "compound",
    "resizable",
    "masked",
    "raw_edges",
    "plugins/blosc",
    "plugins/zstd",
]
RE_ENCODED = {
    "lzf": "LZF",
    "vstr": "variable-length strings",
    "vstr_chunked": "variable-length strings",
    "compound_padded": "padding",
    "empty": "null dataspace",
    "fletcher32": "fletcher32",
    "compact": "compact layout",
    "external": "another file",
    "vstr_scalar": "variable-length strings",
    "virtual": "virtual dataset",
}


# --- the conformance suite, both zarr formats ----------------------------------------------------


class TestHDF5Conformance(ZarrArrayHookConformance):
    @classmethod
    def build_cases(cls):
        path, expected = sample()
        root = HDF5Adapter.from_uris(str(path))
        cases = {}
        for name in [*PASS_THROUGH, *RE_ENCODED]:
            adapter = HDF5Adapter.from_uris(str(path), dataset=name)
            cases[name] = ZarrCase(adapter, as_zarr_reads(expected[name]))
            if expected[name].ndim and expected[name].size:
                cases[name + "-tiny"] = ZarrCase(adapter, as_zarr_reads(expected[name]), TINY)
        cases["via-group"] = ZarrCase(
            root["entry"]["data"]["counts"], expected["entry/data/counts"]
        )
        return cases


# --- the zarr view: what passes through and what does not --------------------------------------


def _root() -> HDF5Adapter:
    return HDF5Adapter.from_uris(str(sample()[0]))


def _array(name: str) -> HDF5ArrayAdapter:
    adapter = HDF5Adapter.from_uris(str(sample()[0]), dataset=name)
    assert isinstance(adapter, HDF5ArrayAdapter)
    return adapter


@pytest.mark.parametrize("name", PASS_THROUGH)
def test_what_passes_through(name):
    adapter = _array(name)
    assert adapter.metadata()[ZARR_VIEW_KEY]["chunks"] == "stored"
    with h5py.File(sample()[0], "r") as f:
        assert not isinstance(zarr_storage(f[name]), str)


@pytest.mark.parametrize("name", sorted(RE_ENCODED))
def test_what_is_re_encoded_says_why_in_the_metadata(name):
    note = _array(name).metadata()[ZARR_VIEW_KEY]
    assert note["chunks"] == "re-encoded"
    assert RE_ENCODED[name] in note["reason"]


async def test_stored_chunks_are_the_files_bytes_unchanged(monkeypatch):
    adapter = _array("entry/data/counts")
    meta = await adapter.to_zarr_meta()
    assert meta.chunk_shape == (10, 8)
    assert [c.codec_id for c in meta.compressors] == ["shuffle", "zlib"]

    def refuse(*args, **kwargs):
        raise AssertionError("a stored chunk was decoded")

    monkeypatch.setattr(HDF5ArrayAdapter, "read", refuse)
    with h5py.File(sample()[0], "r") as f:
        dataset = f["entry/data/counts"]
        for coords in itertools.product(*(range(n) for n in meta.grid_shape)):
            offset = tuple(i * c for i, c in zip(coords, meta.chunk_shape, strict=True))
            mask, raw = dataset.id.read_direct_chunk(offset)
            chunk = await adapter.to_zarr_chunk(coords, meta)
            assert mask == 0 and bytes(chunk) == raw
            assert chunk.etag  # tagged from the file's identity, not hashed


async def test_contiguous_chunks_are_byte_ranges_of_the_file():
    adapter = _array("contiguous_3d")
    meta = await adapter.to_zarr_meta(ZarrOptions(chunk_budget_bytes=50))
    assert meta.chunk_shape == (1, 3, 7)  # rows of whole inner axes, one byte range each
    with h5py.File(sample()[0], "r") as f:
        offset = f["contiguous_3d"].id.get_offset()
    raw = sample()[0].read_bytes()[offset : offset + 210 * 2]
    chunk = await adapter.to_zarr_chunk((2, 1, 0), meta)
    start = (2 * 6 + 3) * 7 * 2
    assert bytes(chunk) == raw[start : start + 3 * 7 * 2]


def test_contiguous_chunk_shape_keeps_to_the_budget():
    assert contiguous_chunk_shape((1000, 100), 8, 8000) == (10, 100)
    assert contiguous_chunk_shape((10, 10, 1000), 8, 4000) == (1, 1, 500)
    assert contiguous_chunk_shape((5, 5), 8, 10**6) == (5, 5)
    assert contiguous_chunk_shape((), 8, 1) == ()
    assert contiguous_chunk_shape((0, 4), 8, 100) == (1, 4)


async def test_unwritten_chunks_are_absent_keys_read_as_the_fill_value():
    adapter = _array("fill_unwritten")
    meta = await adapter.to_zarr_meta()
    assert meta.fill_value == -7
    with pytest.raises(ZarrKeyNotFound):
        await adapter.to_zarr_chunk((1, 1), meta)
    assert await adapter.to_zarr_chunk((0, 0), meta)
    contiguous = _array("contiguous_unwritten")
    meta = await contiguous.to_zarr_meta()
    with pytest.raises(ZarrKeyNotFound):
        await contiguous.to_zarr_chunk((0, 0), meta)


async def test_documents_declare_the_files_codec_chain(zarr_format):
    meta = await _array("entry/data/counts").to_zarr_meta()
    document = encoding_for(zarr_format).array_json(meta)
    if zarr_format == 2:
        array = document[".zarray"]
        assert array["filters"] == [{"id": "shuffle", "elementsize": 8}]
        assert array["compressor"] == {"id": "zlib", "level": 4}
        assert array["dtype"] == "<f8"
    else:
        codecs = document["zarr.json"]["codecs"]
        assert [c["name"] for c in codecs] == ["bytes", "numcodecs.shuffle", "numcodecs.zlib"]
    big = encoding_for(zarr_format).array_json(await _array("no_filter").to_zarr_meta())
    if zarr_format == 2:
        assert big[".zarray"]["dtype"] == ">i4" and big[".zarray"]["compressor"] is None
    else:
        assert big["zarr.json"]["codecs"] == [{"name": "bytes", "configuration": {"endian": "big"}}]


async def test_chunks_with_skipped_filters_are_re_encoded_with_the_declared_chain():
    adapter = _array("masked")
    meta = await adapter.to_zarr_meta()
    first = await adapter.to_zarr_chunk((0,), meta)  # stored raw: filter mask 1
    assert numpy.array_equal(meta.decode_chunk(first), numpy.arange(4.0))
    # Made here, not a stored byte range: tagged, if at all, by its bytes (the chunk cache).
    assert getattr(first, "etag", None) in (None, content_etag(first))
    edge = _array("raw_edges")
    meta = await edge.to_zarr_meta()
    assert meta.decode_chunk(await edge.to_zarr_chunk((2, 2), meta))[0, 0] == 62


# --- native reads --------------------------------------------------------------------------------


def test_native_reads_equal_h5py():
    path, expected = sample()
    for name, data in expected.items():
        if name.startswith("plugins"):
            continue
        adapter = _array(name)
        got = adapter.read()
        structure = adapter.structure()
        assert got.shape == structure.shape == data.shape, name
        assert got.dtype == structure.data_type.to_numpy_dtype(), name
        if data.dtype.kind == "U":  # variable-length strings: UTF-8 bytes, as upstream serves
            assert [x.decode() for x in got.ravel()] == list(data.ravel()), name
        elif data.dtype.fields is not None:
            assert got.tolist() == data.tolist(), name
        else:
            assert_same_values(got, data)


def test_slices_and_blocks():
    adapter = _array("entry/data/counts")
    data = sample()[1]["entry/data/counts"]
    for ndslice in [
        NDSlice(3),
        NDSlice(slice(2, 9), slice(None, None, 3)),
        NDSlice(slice(None, None, -2)),
        NDSlice(Ellipsis, 4),
    ]:
        numpy.testing.assert_array_equal(adapter.read(ndslice), data[tuple(ndslice)])
    assert adapter.structure().chunks[0] == (10, 10, 10, 10, 5)
    numpy.testing.assert_array_equal(adapter.read_block((4, 4)), data[40:45, 32:33])


def test_groups_attributes_links_and_search():
    root = _root()
    keys = list(root)
    # Broken links are listed, as upstream lists them, and are not found when looked up.
    assert {"broken_link", "external_missing"} <= set(keys)
    with pytest.raises(KeyError, match="target is missing"):
        root["broken_link"]
    assert {"link", "external", "entry"} <= set(keys)
    assert root.metadata() == {"title": "sample", "NX_class": "NXroot"}
    entry = root["entry"]
    assert entry.metadata() == {"NX_class": "NXentry", "start": 1.5}
    data = entry["data"]
    assert data.metadata()["axes"] == ["x", "y"]
    counts = data["counts"]
    assert counts.metadata() == {
        "units": "counts",
        "long_name": "Counts",
        "shape": [45, 33],
        ZARR_VIEW_KEY: {"chunks": "stored", "codec": "shuffle+zlib"},
    }
    numpy.testing.assert_array_equal(root["link"].read(), counts.read())
    found = root.search(Eq("NX_class", "NXentry"))
    assert list(found) == ["entry"]
    with pytest.raises(NoSuchEntry):
        root["missing"]


def test_attribute_values_become_json():
    assert json_value(b"text") == "text"
    assert json_value(numpy.array([1, 2], dtype=">i2")) == [1, 2]
    assert json_value(numpy.array([b"a", b"b"], dtype=object)) == ["a", "b"]
    assert json_value(numpy.float32(0.5)) == 0.5
    assert json_value(numpy.complex64(1 + 2j)) == {"real": 1.0, "imag": 2.0}
    assert json_value(h5py.Empty("f4")) is None


def test_variable_length_sequences_are_an_empty_placeholder():
    # As upstream serves them: empty bytes of the dataset's shape, with a warning.
    adapter = _array("vlen_ints")
    with pytest.warns(UserWarning, match="placeholder"):
        assert adapter.structure().shape == (2,)  # listed with its shape
        assert adapter.read().tolist() == [b"", b""]


async def test_element_types_zarr_cannot_hold_are_4xx_in_the_zarr_view():
    if numpy.dtype(numpy.longdouble).itemsize <= 8:
        pytest.skip("long double is double on this platform")
    adapter = _array("long_double")
    numpy.testing.assert_array_equal(adapter.read(), [0, 1, 2])
    with pytest.raises(DataUnavailable, match="zarr has no data type"):
        await adapter.to_zarr_meta()
    assert adapter.metadata()[ZARR_VIEW_KEY]["chunks"] == "unavailable"
    with pytest.raises(DataUnavailable, match="variable-length"):
        await _array("vlen_ints").to_zarr_meta()


def test_constructors_take_upstream_parameters(tmp_path):
    path, expected = sample()
    uri = f"file://localhost{path}"
    array = HDF5ArrayAdapter.from_uris(uri, dataset=["entry", "data", "counts"], swmr=False)
    assert array.structure().shape == (45, 33)
    group = HDF5Adapter.from_uris(uri, dataset="entry/data", libver="latest")
    assert isinstance(group, HDF5Adapter) and list(group) == ["counts"]
    sliced = HDF5ArrayAdapter.from_uris(uri, dataset="gzip", slice="2:10:2")
    numpy.testing.assert_array_equal(sliced.read(), expected["gzip"][2:10:2])
    assert ZARR_VIEW_KEY in sliced.metadata()
    squeezed = HDF5ArrayAdapter.from_uris(
        uri, dataset="entry/data/counts", slice="3:4", squeeze=True
    )
    assert squeezed.structure().shape == (33,)
    with pytest.raises(NoSuchEntry):
        HDF5Adapter.from_uris(uri, dataset="nothing/here")


def test_several_files_are_concatenated(tmp_path):
    parts = []
    for i in range(3):
        path = tmp_path / f"part{i}.h5"
        with h5py.File(path, "w") as f:
            f.create_dataset("x", data=numpy.full((4, 2), i), chunks=(2, 2), compression="gzip")
            f.create_dataset("s", data=float(i))
        parts.append(str(path))
    array = HDF5ArrayAdapter.from_uris(*parts, dataset="x")
    numpy.testing.assert_array_equal(array.read()[:, 0], numpy.repeat([0, 1, 2], 4))
    scalars = HDF5Adapter.from_uris(*parts)["s"]  # a container over several files
    numpy.testing.assert_array_equal(scalars.read(), [0.0, 1.0, 2.0])


def test_from_catalog_as_upstream_registers(tmp_path):
    path, expected = sample()
    uri = f"file://localhost{path}"

    class Node:
        metadata_ = {"from": "catalog", "units": "overridden"}
        specs = []

    array_source = DataSource(
        structure_family="array",
        structure=_array("entry/data/counts").structure(),
        mimetype="application/x-hdf5",
        parameters={"dataset": "entry/data/counts", "swmr": True},
        assets=[Asset(data_uri=uri, is_directory=False, parameter="data_uris", num=0)],
    )
    array = HDF5Adapter.from_catalog(array_source, Node(), **array_source.parameters)
    assert array.metadata()["from"] == "catalog" and array.metadata()["units"] == "overridden"
    numpy.testing.assert_array_equal(array.read(), expected["entry/data/counts"])
    group_source = DataSource(
        structure_family="container",
        mimetype="application/x-hdf5",
        parameters={"dataset": ["entry"]},
        assets=[Asset(data_uri=uri, is_directory=False, parameter="data_uri")],
    )
    group = HDF5Adapter.from_catalog(group_source, Node(), **group_source.parameters)
    assert list(group) == ["data"] and group.metadata()["NX_class"] == "NXentry"


# --- files that change -------------------------------------------------------------------------


async def test_a_changed_file_is_reindexed(tmp_path, monkeypatch):
    builds = []
    build = hdf5_module._ChunkIndex.build
    monkeypatch.setattr(
        hdf5_module._ChunkIndex, "build", lambda dataset: builds.append(1) or build(dataset)
    )
    path = tmp_path / "changing.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset("x", data=numpy.arange(10.0), chunks=(5,), compression="gzip")
    adapter = HDF5Adapter.from_uris(str(path))["x"]
    meta = await adapter.to_zarr_meta()
    first = await adapter.to_zarr_chunk((1,), meta)
    assert list(meta.decode_chunk(first)) == [5.0, 6.0, 7.0, 8.0, 9.0]
    await adapter.to_zarr_chunk((0,), meta)
    assert len(builds) == 1  # the file's chunk index is read once while it is unchanged
    replacement = tmp_path / "replacement.h5"
    with h5py.File(replacement, "w") as f:
        f.attrs["version"] = 2
        f.create_dataset("x", data=numpy.arange(14.0) * 10, chunks=(4,), compression="gzip")
    os.replace(replacement, path)
    meta = await adapter.to_zarr_meta()
    assert meta.shape == (14,) and meta.chunk_shape == (4,)
    assert list(meta.decode_chunk(await adapter.to_zarr_chunk((3,), meta))) == [120.0, 130.0, 0, 0]
    assert len(builds) == 2
    numpy.testing.assert_array_equal(adapter.read(), numpy.arange(14.0) * 10)
    assert HDF5Adapter.from_uris(str(path)).metadata() == {"version": 2}


async def test_a_deleted_file_answers_data_unavailable(tmp_path):
    path = tmp_path / "gone.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset("x", data=numpy.arange(4.0), chunks=(2,))
    adapter = HDF5Adapter.from_uris(str(path))["x"]
    meta = await adapter.to_zarr_meta()
    path.unlink()
    with pytest.raises(DataUnavailable, match="does not exist"):
        adapter.read()
    with pytest.raises(DataUnavailable, match="does not exist"):
        await adapter.to_zarr_chunk((0,), meta)


async def test_a_file_changing_while_read_is_a_conflict(tmp_path, monkeypatch):
    path = tmp_path / "busy.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset("x", data=numpy.arange(10.0), chunks=(5,))
    adapter = HDF5Adapter.from_uris(str(path))["x"]
    meta = await adapter.to_zarr_meta()
    real_pread = os.pread

    def pread_while_appending(fd, size, offset):
        with open(path, "ab") as file:  # another writer, right now
            file.write(b"\0")
        return real_pread(fd, size, offset)

    monkeypatch.setattr(hdf5_module.os, "pread", pread_while_appending)
    with pytest.raises(Conflict, match="changed while"):
        await adapter.to_zarr_chunk((0,), meta)


SWMR_WRITER = r"""
import sys, h5py, numpy
f = h5py.File(sys.argv[1], "w", libver="latest")
d = f.create_dataset("x", shape=(0, 3), maxshape=(None, 3), chunks=(4, 3), dtype="f8",
                     compression="gzip", shuffle=True)
f.attrs["kind"] = "swmr"
f.swmr_mode = True
print("ready", flush=True)
for line in sys.stdin:
    old, n = d.shape[0], int(line)
    d.resize((old + n, 3))
    d[old:] = numpy.arange(old * 3, (old + n) * 3, dtype="f8").reshape(n, 3)
    d.flush()
    print("ok", flush=True)
f.close()
"""


async def test_a_file_appended_by_an_swmr_writer(tmp_path):
    path = tmp_path / "swmr.h5"
    writer = subprocess.Popen(
        [sys.executable, "-c", SWMR_WRITER, str(path)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert writer.stdout.readline().strip() == "ready"
        root = HDF5Adapter.from_uris(str(path))  # SWMR-safe reading is the default
        array = root["x"]
        for total, step in [(5, 5), (11, 6), (12, 1)]:
            writer.stdin.write(f"{step}\n")
            writer.stdin.flush()
            assert writer.stdout.readline().strip() == "ok"
            expected = numpy.arange(total * 3, dtype="f8").reshape(total, 3)
            numpy.testing.assert_array_equal(array.read(), expected)
            meta = await array.to_zarr_meta()
            assert meta.shape == (total, 3)
            store = {**encoding_for(3).array_documents(meta)}
            for i in range(meta.grid_shape[0]):
                store[f"c/{i}/0"] = await array.to_zarr_chunk((i, 0), meta)
            from .zarr_conformance import open_with_zarr

            numpy.testing.assert_array_equal(open_with_zarr(store, 3)[...], expected)
    finally:
        writer.stdin.close()
        writer.wait(timeout=30)


# --- broken files -----------------------------------------------------------------------------


@pytest.fixture
def broken_files(tmp_path):
    good = tmp_path / "good.h5"
    with h5py.File(good, "w") as f:
        f.create_dataset(
            "x", data=numpy.arange(12.0).reshape(3, 4), chunks=(2, 2), compression="gzip"
        )
        f.create_dataset("y", data=numpy.arange(5.0), chunks=(5,), compression="lzf")
    content = good.read_bytes()
    (tmp_path / "truncated.h5").write_bytes(content[: len(content) // 2])
    (tmp_path / "junk.h5").write_bytes(b"not an HDF5 file " * 64)
    corrupt = bytearray(content)
    with h5py.File(good, "r") as f:
        info = f["y"].id.get_chunk_info(0)
    corrupt[info.byte_offset : info.byte_offset + info.size] = b"\xff" * info.size
    (tmp_path / "bad_chunk.h5").write_bytes(bytes(corrupt))
    names = ["good", "truncated", "junk", "bad_chunk", "missing"]
    return MapAdapter({name: HDF5Adapter.from_uris(str(tmp_path / f"{name}.h5")) for name in names})


@pytest.mark.parametrize("name", ["truncated", "junk", "missing"])
async def test_unreadable_files_answer_data_unavailable(broken_files, name):
    with pytest.raises(DataUnavailable, match="HDF5 file"):
        await broken_files[name].to_zarr_meta()
    with pytest.raises(DataUnavailable):
        list(broken_files[name])
    assert await broken_files[name].count() == 0  # how its parent lists it


async def test_an_unreadable_file_is_logged_with_its_traceback_at_debug(broken_files, caplog):
    import logging

    caplog.set_level(logging.DEBUG, logger="tiled.adapters.hdf5")
    with pytest.raises(DataUnavailable):
        await broken_files["junk"].to_zarr_meta()
    told = [r for r in caplog.records if r.getMessage().startswith("Cannot read HDF5 file")]
    assert told and all(r.levelno == logging.DEBUG for r in told)
    assert told[0].exc_info is not None and "junk.h5" in told[0].getMessage()


async def test_permission_denied_is_data_unavailable(tmp_path, monkeypatch):
    path = tmp_path / "secret.h5"
    with h5py.File(path, "w") as f:
        f["x"] = numpy.arange(3)
    path.chmod(0)
    if os.geteuid() == 0:  # root reads anything: make the open fail as it would for others
        real_open = os.open

        def refuse(name, *args, **kwargs):
            if str(name) == str(path):
                raise PermissionError(13, "Permission denied", str(name))
            return real_open(name, *args, **kwargs)

        monkeypatch.setattr(hdf5_module.os, "open", refuse)
    with pytest.raises(DataUnavailable, match="permission denied"):
        await HDF5Adapter.from_uris(str(path)).to_zarr_meta()


def test_broken_files_are_4xx_and_the_rest_keeps_serving(broken_files):
    app = build_app(broken_files, authentication={"allow_anonymous_access": True})
    with serve(app) as server, httpx.Client(base_url=server.url) as client:
        listing = client.get("/api/v1/search/")
        assert listing.status_code == 200
        assert {d["id"] for d in listing.json()["data"]} >= {"good", "truncated", "junk"}
        for name, words in [
            ("truncated", "truncated"),
            ("junk", "signature"),
            ("missing", "exist"),
        ]:
            urls = [f"/api/v1/search/{name}", f"/zarr/v3/{name}/zarr.json"]
            for url in [*urls, f"/zarr/v2/{name}/.zgroup"]:
                response = client.get(url)
                assert response.status_code == 415, (url, response.text)
                assert words in response.json()["detail"]
        # A file with one corrupt chunk: that dataset answers 415, its neighbour serves.
        assert client.get("/api/v1/array/full/bad_chunk/y").status_code == 415
        assert client.get("/zarr/v3/bad_chunk/y/c/0").status_code == 415
        assert client.get("/api/v1/array/full/bad_chunk/x", params={"format": "json"}).json() == (
            numpy.arange(12.0).reshape(3, 4).tolist()
        )
        consolidated = client.get("/zarr/v3/zarr.json").json()["consolidated_metadata"]
        assert "good/x" in consolidated["metadata"] and "junk" not in consolidated["metadata"]
        group = zarr.open_group(
            zarr.storage.FsspecStore.from_url(f"{server.url}/zarr/v3/good", read_only=True),
            mode="r",
        )
        numpy.testing.assert_array_equal(group["x"][...], numpy.arange(12.0).reshape(3, 4))


# --- through a real server, read by zarr-python ------------------------------------------------


@pytest.fixture(scope="module")
def sample_server():
    path, _ = sample()
    tree = MapAdapter({"sample": HDF5Adapter.from_uris(str(path))})
    with serve(build_app(tree, authentication={"allow_anonymous_access": True})) as server:
        yield server


@pytest.mark.parametrize("how", ["mapper", "fsspec-store"])
def test_zarr_python_reads_what_h5py_reads(sample_server, zarr_format, how):
    url = f"{sample_server.url}/zarr/v{zarr_format}/sample"
    if how == "mapper":
        store = fsspec.get_mapper(url)
    else:
        store = zarr.storage.FsspecStore.from_url(url, read_only=True)
    root = zarr.open_group(store, mode="r", zarr_format=zarr_format)
    _, expected = sample()
    for name in [*PASS_THROUGH, *RE_ENCODED]:
        array = root[name]
        assert array.shape == expected[name].shape, name
        assert_same_values(_read_all(array), as_zarr_reads(expected[name]))
    assert root["entry/data/counts"].attrs["units"] == "counts"
    assert root["entry"].attrs["NX_class"] == "NXentry"
    assert root["lzf"].attrs[ZARR_VIEW_KEY]["chunks"] == "re-encoded"


def _read_all(array) -> numpy.ndarray:
    """All of ``array``'s values; a refused chunk fails with the server's answer (fsspec
    reports only the status)."""
    import aiohttp

    try:
        return numpy.asarray(array[...])
    except aiohttp.ClientResponseError as err:
        again = httpx.get(str(err.request_info.url))
        pytest.fail(f"{err.request_info.url}: {err.status}; asked again: {again.status_code} "
                    f"{again.text}")  # fmt: skip


def test_served_chunks_are_the_stored_chunks(sample_server, zarr_format):
    with h5py.File(sample()[0], "r") as f:
        mask, raw = f["entry/data/counts"].id.read_direct_chunk((10, 16))
        where = f["entry/data/counts"].id.get_chunk_info_by_coord((10, 16))
    key = "1.2" if zarr_format == 2 else "c/1/2"
    url = f"{sample_server.url}/zarr/v{zarr_format}/sample/entry/data/counts/{key}"
    response = httpx.get(url)
    assert response.status_code == 200 and response.content == raw
    # Tagged from the file's version and the byte range, as static file servers do.
    identity = file_identity(os.stat(sample()[0]))
    assert response.headers["etag"] == identity_etag(identity, where.byte_offset, where.size)
    missing = "1.1" if zarr_format == 2 else "c/1/1"  # never written: the fill value
    url = f"{sample_server.url}/zarr/v{zarr_format}/sample/fill_unwritten/{missing}"
    assert httpx.get(url).status_code == 404


def test_native_api_reads_the_sample(sample_server):
    _, expected = sample()
    base = f"{sample_server.url}/api/v1"
    got = httpx.get(f"{base}/array/full/sample/entry/data/counts", params={"format": "json"})
    numpy.testing.assert_array_equal(numpy.array(got.json()), expected["entry/data/counts"])
    strings = httpx.get(
        f"{base}/array/full/sample/vstr", headers={"Accept": "application/octet-stream"}
    )
    assert strings.status_code == 200
    assert numpy.frombuffer(strings.content, dtype="S10").tolist()[1].decode() == "β"
    metadata = httpx.get(f"{base}/metadata/sample/entry/data").json()["data"]["attributes"]
    assert metadata["metadata"]["NX_class"] == "NXdata"
    listing = httpx.get(f"{base}/search/sample/entry").json()
    assert [d["id"] for d in listing["data"]] == ["data"]
    assert httpx.get(f"{base}/array/full/sample/vlen_ints").status_code == 200  # placeholder
    for name in ["vlen_ints", "long_double"]:  # no zarr data type: 415 with the reason
        response = httpx.get(f"{sample_server.url}/zarr/v3/sample/{name}/zarr.json")
        assert response.status_code == 415 and name in response.json()["detail"]
    long_double = httpx.get(
        f"{base}/array/full/sample/long_double", headers={"Accept": "application/octet-stream"}
    )
    assert numpy.frombuffer(long_double.content, dtype=numpy.longdouble).tolist() == [0, 1, 2]


ZARR2_SCRIPT = r"""
import json, sys
import fsspec, numpy, zarr
root = zarr.open_group(fsspec.get_mapper(sys.argv[1]), mode="r")
print(json.dumps({name: numpy.asarray(root[name][...]).tolist() for name in sys.argv[2:]}))
"""


@pytest.mark.slow
def test_zarr_python_2_reads_the_stored_chunks(zarr2_python, sample_server):
    # zarr-python 2 reads HDF5's shuffle + deflate as v2 filters + compressor.
    names = ["entry/data/counts", "no_filter", "fill_unwritten", "contiguous_big_endian"]
    names += ["plugins/blosc", "raw_edges", "vstr", "lzf", "scalar"]
    url = f"{sample_server.url}/zarr/v2/sample"
    result = run_isolated(zarr2_python, ZARR2_SCRIPT, url, *names)
    assert result.returncode == 0, result.stderr
    got = json.loads(result.stdout)
    expected = sample()[1]
    for name in names:
        assert got[name] == expected[name].tolist(), name


# --- defects found in review -------------------------------------------------------------------


@pytest.fixture
def file_opens_on_the_event_loop(monkeypatch):
    """Records each time the file registry is asked for a file on the event loop's thread (the
    main one here): every such call may stat or open the file, which blocks the loop."""
    import threading

    calls: list[str] = []
    current = hdf5_module._Registry.current

    def recording(self, path, options):
        if threading.current_thread() is threading.main_thread():
            calls.append(path)
        return current(self, path, options)

    monkeypatch.setattr(hdf5_module._Registry, "current", recording)
    return calls


async def test_zarr_hooks_do_no_file_io_on_the_event_loop(tmp_path, file_opens_on_the_event_loop):
    path = tmp_path / "cold.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset(
            "x", data=numpy.arange(40.0).reshape(8, 5), chunks=(4, 5), compression="gzip"
        )
        f.create_dataset("lzf", data=numpy.arange(6.0), chunks=(3,), compression="lzf")
    adapters = [
        HDF5ArrayAdapter.from_uris(str(path), dataset="x"),
        HDF5ArrayAdapter.from_uris(str(path), dataset="lzf"),  # re-encoded
        HDF5ArrayAdapter.from_uris(str(path), dataset="x", slice="1:7"),  # combined
    ]
    for adapter in adapters:
        meta = await adapter.to_zarr_meta()
        hdf5_module._registry.peek(str(path)).retire()  # closed: the chunk must open it again
        await adapter.to_zarr_chunk((0,) * len(meta.shape), meta)
    assert file_opens_on_the_event_loop == []


async def test_a_chunk_declared_before_the_file_was_rewritten_keeps_the_declared_codecs(tmp_path):
    path = tmp_path / "rewritten.h5"
    data = numpy.arange(40.0).reshape(8, 5)
    with h5py.File(path, "w") as f:
        f.create_dataset("x", data=data, chunks=(4, 5), compression="gzip")
    adapter = HDF5ArrayAdapter.from_uris(str(path), dataset="x")
    meta = await adapter.to_zarr_meta()  # declares zlib
    replacement = tmp_path / "replacement.h5"
    with h5py.File(replacement, "w") as f:  # same shape and chunks, now stored uncompressed
        f.create_dataset("x", data=data + 1, chunks=(4, 5))
    os.replace(replacement, path)
    chunk = await adapter.to_zarr_chunk((1, 0), meta)
    numpy.testing.assert_array_equal(meta.decode_chunk(chunk), data[4:8] + 1)
