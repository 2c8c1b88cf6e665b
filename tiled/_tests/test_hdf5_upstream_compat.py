"""HDF5 files as upstream Tiled 0.2.20 serves them: scalars and empty datasets with a leading
axis of one, broken links listed but not found, variable-length data with a warning, the
combined adapter an ``HDF5ArrayAdapter``, a catalog's structure reshaping the data, and group
trees inlined to ``INLINED_DEPTH`` -- through a real server where the wire is involved."""

from __future__ import annotations

import io
import os
from types import SimpleNamespace

import h5py
import httpx
import numpy
import pytest

from tiled.adapters import hdf5 as hdf5_module
from tiled.adapters.hdf5 import HDF5Adapter, HDF5ArrayAdapter
from tiled.errors import IncompatibleShapeError, NoSuchEntry
from tiled.server.app import build_app
from tiled.structures.array import ArrayStructure, BuiltinDtype
from tiled.structures.data_source import Asset, DataSource
from tiled.utils import BrokenLink

from .live_server import serve

ANONYMOUS = {"allow_anonymous_access": True}


def _uri(path) -> str:
    return f"file://localhost{path}"


@pytest.fixture
def links(tmp_path):
    with h5py.File(tmp_path / "other.h5", "w") as f:
        f.create_dataset("z/x", data=numpy.arange(4.0))
    with h5py.File(tmp_path / "main.h5", "w") as f:
        f.create_dataset("g/d", data=numpy.ones((2, 2)))
        f["g/soft"] = h5py.SoftLink("/g/nowhere")
        f["g/ext"] = h5py.ExternalLink("other.h5", "/z")
    return tmp_path


def test_scalars_and_empty_datasets_have_a_leading_axis(tmp_path):
    path = tmp_path / "s.h5"
    with h5py.File(path, "w") as f:
        f["float"] = 2.5
        f["text"] = "hello"
        f["none"] = numpy.empty(0)
        f["null"] = h5py.Empty("f4")
    root = HDF5Adapter.from_uris(_uri(path))
    assert root["float"].structure().shape == (1,)
    assert root["float"].read().tolist() == [2.5]
    assert root["float"].read(slice=(slice(0, 1),)).tolist() == [2.5]
    with pytest.warns(UserWarning, match="The dataset /text"):
        assert root["text"].read().tolist() == [b"hello"]
    assert root["none"].structure().shape == (1, 0)
    assert root["null"].structure().shape == (0,)  # no dimensions at all: as it reads
    # Several files stack them: one step of the leading axis per file.
    stacked = HDF5ArrayAdapter.from_uris(*[_uri(path)] * 3, dataset="float")
    assert isinstance(stacked, HDF5ArrayAdapter)
    assert stacked.read().tolist() == [2.5, 2.5, 2.5]


async def test_a_contiguous_scalar_still_passes_through_to_zarr(tmp_path):
    path = tmp_path / "s.h5"
    with h5py.File(path, "w") as f:
        f["x"] = numpy.float64(7.25)
    adapter = HDF5Adapter.from_uris(_uri(path))["x"]
    assert adapter.metadata()["zarr_view"]["chunks"] == "stored"
    meta = await adapter.to_zarr_meta()
    assert meta.shape == (1,)
    chunk = await adapter.to_zarr_chunk((0,), meta)
    assert numpy.frombuffer(bytes(chunk), "<f8").tolist() == [7.25]


def test_broken_links_are_listed_and_answer_404(links):
    main = _uri(links / "main.h5")
    with pytest.raises(BrokenLink):
        HDF5Adapter.from_uris(main, dataset="g/soft")
    with pytest.raises(NoSuchEntry):
        HDF5Adapter.from_uris(main, dataset="g/absent")
    (links / "other.h5").unlink()
    with pytest.raises(BrokenLink):
        HDF5Adapter.from_uris(main, dataset="g/ext")
    tree = HDF5Adapter.from_uris(main)
    with serve(build_app(tree, authentication=ANONYMOUS)) as server:
        base = f"{server.url}/api/v1"
        listing = httpx.get(f"{base}/search/g").json()
        assert [d["id"] for d in listing["data"]] == ["d", "ext", "soft"]
        assert listing["meta"]["count"] == 3
        for key in ["soft", "ext"]:
            response = httpx.get(f"{base}/metadata/g/{key}")
            assert response.status_code == 404 and "target is missing" in response.json()["detail"]
        # The zarr group has only what can be read.
        zarr_group = httpx.get(f"{server.url}/zarr/v3/g/zarr.json").json()
        assert set(zarr_group["consolidated_metadata"]["metadata"]) == {"d"}
        exported = httpx.get(f"{base}/container/full/", params={"format": "application/x-hdf5"})
        assert exported.status_code == 200
        with h5py.File(io.BytesIO(exported.content), "r") as f:
            numpy.testing.assert_array_equal(f["g/d"][()], numpy.ones((2, 2)))


def test_a_changed_external_file_is_seen_without_the_main_file_changing(links):
    tree = HDF5Adapter.from_uris(_uri(links / "main.h5"))
    assert list(tree["g"]["ext"]) == ["x"]
    with h5py.File(links / "other.h5", "a") as f:
        f.create_dataset("z/y", data=[1])
    assert list(tree["g"]["ext"]) == ["x", "y"]
    with h5py.File(links / "other.h5", "a") as f:
        del f["z"]
    assert "ext" in list(tree["g"])
    with pytest.raises(BrokenLink):
        tree["g"]["ext"]


def test_variable_length_data_warn_and_serve(tmp_path):
    path = tmp_path / "v.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset("s", data=["é", "bb"], dtype=h5py.string_dtype())
        f.create_dataset("v", shape=(3,), dtype=h5py.vlen_dtype("i4"))
    tree = HDF5Adapter.from_uris(_uri(path))
    with serve(build_app(tree, authentication=ANONYMOUS)) as server:
        base = f"{server.url}/api/v1"
        with pytest.warns(UserWarning, match="The dataset /s"):
            strings = httpx.get(f"{base}/array/full/s", headers={"Accept": "application/json"})
        assert strings.json() == ["é", "bb"]
        with pytest.warns(UserWarning, match="placeholder"):
            placeholder = httpx.get(f"{base}/array/full/v", params={"format": "json"})
        assert placeholder.json() == ["", "", ""]
        # No zarr form for the placeholder; a whole-file export still works.
        assert httpx.get(f"{server.url}/zarr/v3/v/zarr.json").status_code == 415
        exported = httpx.get(f"{base}/container/full/", params={"format": "application/x-hdf5"})
        assert exported.status_code == 200


def test_slice_and_squeeze_give_an_hdf5_array_adapter(tmp_path):
    path = tmp_path / "a.h5"
    with h5py.File(path, "w") as f:
        f["d"] = numpy.arange(12).reshape(3, 4)
    adapter = HDF5Adapter.from_uris(_uri(path), dataset="d", slice="(1:2, :)", squeeze=True)
    assert isinstance(adapter, HDF5ArrayAdapter)
    assert adapter.read().tolist() == [4, 5, 6, 7]
    assert adapter.metadata()["zarr_view"]["chunks"] == "re-encoded"


def _registered(path, shape, chunks, n_files=1) -> HDF5ArrayAdapter:
    source = DataSource(
        mimetype="application/x-hdf5",
        structure_family="array",
        structure=ArrayStructure(
            shape=shape, chunks=chunks, data_type=BuiltinDtype.from_numpy_dtype(numpy.dtype("i8"))
        ),
        parameters={"dataset": "d"},
        assets=[
            Asset(data_uri=_uri(path), is_directory=False, parameter="data_uris", num=i)
            for i in range(n_files)
        ],
    )
    node = SimpleNamespace(metadata_={}, specs=[])
    return HDF5Adapter.from_catalog(source, node, **source.parameters)


async def test_a_catalog_structure_reshapes_the_data(tmp_path):
    path = tmp_path / "a.h5"
    data = numpy.arange(12, dtype="i8").reshape(3, 4)
    with h5py.File(path, "w") as f:
        f.create_dataset("d", data=data, chunks=(1, 4), compression="gzip")
    same = _registered(path, (3, 4), ((1, 1, 1), (4,)))
    assert same.metadata()["zarr_view"]["chunks"] == "stored"  # still passed through
    reshaped = _registered(path, (6, 2), ((6,), (2,)))
    assert reshaped.structure().shape == (6, 2)
    numpy.testing.assert_array_equal(reshaped.read(), data.reshape(6, 2))
    numpy.testing.assert_array_equal(reshaped.read(slice=(slice(4, None),)), [[8, 9], [10, 11]])
    assert reshaped.metadata()["zarr_view"]["chunks"] == "re-encoded"
    meta = await reshaped.to_zarr_meta()
    assert meta.shape == (6, 2)
    numpy.testing.assert_array_equal(
        meta.decode_chunk(await reshaped.to_zarr_chunk((0, 0), meta)), data.reshape(6, 2)
    )
    trimmed = _registered(path, (2, 4), ((2,), (4,)))  # the file has grown since: its start
    numpy.testing.assert_array_equal(trimmed.read(), data[:2])
    with pytest.raises(IncompatibleShapeError):
        _registered(path, (1, 13), ((1,), (13,))).read()
    stacked = _registered(path, (2, 3, 4), ((1, 1), (3,), (4,)), n_files=2)
    numpy.testing.assert_array_equal(stacked.read(), numpy.stack([data, data]))


def test_group_trees_are_inlined_to_inlined_depth(tmp_path, monkeypatch):
    path = tmp_path / "deep.h5"
    with h5py.File(path, "w") as f:
        f["a/b/c/d"] = numpy.arange(3)
    tree = HDF5Adapter.from_uris(_uri(path))
    with serve(build_app(tree, authentication=ANONYMOUS)) as server:

        def depth_inlined() -> int:
            item = httpx.get(f"{server.url}/api/v1/metadata/").json()["data"]
            depth = 0
            while (item["attributes"]["structure"] or {}).get("contents"):
                item = next(iter(item["attributes"]["structure"]["contents"].values()))
                depth += 1
            return depth

        assert depth_inlined() == 4  # a, b, c, d: the whole file in one response
        monkeypatch.setattr(hdf5_module, "INLINED_DEPTH", 1)
        assert depth_inlined() == 2
        monkeypatch.setattr(hdf5_module, "INLINED_DEPTH", -1)
        assert depth_inlined() == 0


def test_an_unreadable_file_does_not_break_its_parents_listing(tmp_path):
    from tiled.adapters.mapping import MapAdapter

    (tmp_path / "junk.h5").write_bytes(b"not HDF5" * 64)
    good = tmp_path / "good.h5"
    with h5py.File(good, "w") as f:
        f["x"] = numpy.arange(2)
    tree = MapAdapter(
        {name: HDF5Adapter.from_uris(_uri(tmp_path / f"{name}.h5")) for name in ["good", "junk"]}
    )
    with serve(build_app(tree, authentication=ANONYMOUS)) as server:
        listing = httpx.get(f"{server.url}/api/v1/search/")
        assert listing.status_code == 200
        assert httpx.get(f"{server.url}/api/v1/search/junk").status_code == 415
    assert os.path.exists(good)
