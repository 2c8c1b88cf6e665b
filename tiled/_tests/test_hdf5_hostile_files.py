"""HDF5 files that are small on disk but hostile to serve: a chunk grid of 10**9 chunks (which
listing in a structure would take the server's memory and event loop), and datasets whose
elements are fixed-size arrays (HDF5 array types, numpy sub-array dtypes, which structures and
zarr refuse as element types), and groups linked into their own descendants (an endless tree to
every walk). Each is served, or refused with a 4xx, and never takes its
siblings, its parent's listing or the zarr view of its ancestors down with it."""

from __future__ import annotations

import time
from pathlib import Path

import fsspec
import h5py
import httpx
import numpy
import pytest
import zarr

from tiled.adapters.hdf5 import HDF5Adapter, HDF5ArrayAdapter
from tiled.adapters.mapping import MapAdapter
from tiled.server.app import build_app
from tiled.zarr_format.model import MAX_CHUNKS_PER_DIMENSION, ZARR_VIEW_KEY
from tiled.zarr_format.model import bounded_chunk_shape as _bounded_chunk_shape

from .live_server import serve
from .processes import server_process

# zarr-python warns that numcodecs codecs (HDF5's shuffle and zlib) are outside the v3 spec.
# The placeholder of variable-length blocks warns, as upstream does, on every use.
pytestmark = [
    pytest.mark.filterwarnings("ignore:Numcodecs codecs are not in the Zarr"),
    pytest.mark.filterwarnings("ignore:The dataset /vlen_block"),
]

HUGE = 10**12  # elements of the dataset of 10**9 chunks
WRITTEN = slice(5_000_000, 5_000_010)  # the one chunk of it the file holds
BLOCK = numpy.dtype(("f4", (3,)))


def write_huge_chunks(path: Path) -> None:
    with h5py.File(path, "w") as f:
        x = f.create_dataset("x", shape=(HUGE,), dtype="u1", chunks=(1000,))
        x[WRITTEN] = numpy.arange(1, 11, dtype="u1")
        # Exactly the most chunks a dimension may have: listed as HDF5 stores them.
        f.create_dataset("million", shape=(MAX_CHUNKS_PER_DIMENSION,), dtype="u1", chunks=(1,))
        f.create_dataset("y", data=numpy.arange(5))


def write_array_types(path: Path) -> dict[str, numpy.ndarray]:
    """Datasets of HDF5 array types next to a plain sibling; returns what h5py reads."""
    with h5py.File(path, "w") as f:
        a = f.create_dataset("a", (2,), dtype=BLOCK)
        a[...] = numpy.arange(6, dtype="f4").reshape(2, 3)
        f["b"] = numpy.arange(4.0)
        chunked = f.create_dataset(
            "chunked", (5,), dtype=numpy.dtype(("<i2", (2, 2))), chunks=(2,), compression="gzip",
            shuffle=True,
        )  # fmt: skip
        chunked[:3] = numpy.arange(12, dtype="i2").reshape(3, 2, 2)  # the last chunk unwritten
        scalar = f.create_dataset("scalar", (), dtype=BLOCK)
        scalar[()] = numpy.array([7, 8, 9], dtype="f4")
        # Blocks of variable-length strings: a placeholder, as other variable-length data are.
        f.create_dataset("vlen_block", (2,), dtype=numpy.dtype((h5py.string_dtype(), (2,))))
        return {name: f[name][()] for name in ["a", "b", "chunked", "scalar"]}


def write_cycles(path: Path) -> None:
    """Links back to a group's ancestors, by hard and soft links, beside links that only
    repeat a member elsewhere (a finite tree)."""
    with h5py.File(path, "w") as f:
        a = f.create_group("a")
        a["x"] = numpy.arange(5)
        a["hard_loop"] = a  # a hard link to itself
        a["soft_loop"] = h5py.SoftLink("/a")
        f["root_again"] = f  # the root, hard-linked from itself
        f["a_again"] = a  # a second name for /a: its own loops are left out too
        f["x_again"] = a["x"]


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> tuple[Path, dict[str, numpy.ndarray]]:
    directory = tmp_path_factory.mktemp("hostile")
    write_huge_chunks(directory / "huge_chunks.h5")
    expected = write_array_types(directory / "array_types.h5")
    write_cycles(directory / "cycles.h5")
    return directory, expected


@pytest.fixture(scope="module")
def server(files):
    directory, _ = files
    tree = MapAdapter(
        {
            "huge_chunks": HDF5Adapter.from_uris(str(directory / "huge_chunks.h5")),
            "array_types": HDF5Adapter.from_uris(str(directory / "array_types.h5")),
            "cycles": HDF5Adapter.from_uris(str(directory / "cycles.h5")),
        }
    )
    with serve(build_app(tree, authentication={"allow_anonymous_access": True})) as live:
        yield live


def _zarr_root(url: str, zarr_format: int) -> zarr.Group:
    store = fsspec.get_mapper(f"{url}/zarr/v{zarr_format}/")
    return zarr.open_group(store, mode="r", zarr_format=zarr_format)


# --- a chunk grid too large to list ------------------------------------------------------------


def test_chunk_counts_are_bounded_by_a_multiple_of_the_native_chunk():
    m = MAX_CHUNKS_PER_DIMENSION
    assert _bounded_chunk_shape((HUGE,), (1000,)) == (10**6,)
    assert _bounded_chunk_shape((m,), (1,)) == (1,)  # at the limit: unchanged
    assert _bounded_chunk_shape((m + 1,), (1,)) == (2,)
    assert _bounded_chunk_shape((10, 4 * m), (100, 2)) == (100, 4)
    for shape, chunk in [((HUGE + 7,), (3,)), ((2**62,), (1,)), ((7 * m + 1,), (7,))]:
        (bounded,) = _bounded_chunk_shape(shape, chunk)
        assert bounded % chunk[0] == 0 and -(-shape[0] // bounded) <= m


def test_huge_chunk_grid_metadata_is_quick_and_bounded(server):
    url = f"{server.url}/api/v1"
    started = time.monotonic()
    response = httpx.get(f"{url}/metadata/huge_chunks/x", timeout=60)
    assert response.status_code == 200, response.text
    # About 0.3 s for its 8 MB; listing all 10**9 chunks would be gigabytes and hours. The
    # bound leaves a loaded machine room.
    assert time.monotonic() - started < 30
    attributes = response.json()["data"]["attributes"]
    (chunks,) = attributes["structure"]["chunks"]
    assert attributes["structure"]["shape"] == [HUGE]
    assert len(chunks) <= MAX_CHUNKS_PER_DIMENSION and sum(chunks) == HUGE
    assert chunks[0] % 1000 == 0  # whole native chunks
    view = attributes["metadata"][ZARR_VIEW_KEY]
    assert view["chunks"] == "re-encoded" and "HDF5 chunks" in view["reason"]
    # The parent's listing describes it too, and its siblings.
    listing = httpx.get(f"{url}/search/huge_chunks", timeout=30)
    assert listing.status_code == 200, listing.text
    assert {d["id"] for d in listing.json()["data"]} == {"x", "million", "y"}


def test_huge_chunk_grid_reads_its_fill_value_and_its_one_written_chunk(server):
    url = f"{server.url}/api/v1/array"
    octets = {"Accept": "application/octet-stream"}
    block = httpx.get(f"{url}/block/huge_chunks/x", params={"block": "3"}, headers=octets)
    assert block.status_code == 200, block.text
    data = numpy.frombuffer(block.content, dtype="u1")
    assert data.size == 10**6 and not data.any()
    tail = httpx.get(
        f"{url}/full/huge_chunks/x", params={"slice": f"{HUGE - 5}:", "format": "json"}
    )
    assert tail.status_code == 200 and tail.json() == [0] * 5
    written = httpx.get(
        f"{url}/full/huge_chunks/x", params={"slice": "4999998:5000012", "format": "json"}
    )
    assert written.json() == [0, 0, *range(1, 11), 0, 0]


@pytest.mark.parametrize("zarr_format", [2, 3])
def test_zarr_python_reads_the_huge_chunk_grid(server, zarr_format):
    x = _zarr_root(server.url, zarr_format)["huge_chunks/x"]
    assert x.shape == (HUGE,)
    # Re-encoded in chunks of the structure's grid, never the stored 1000-element ones.
    assert x.chunks[0] % 1000 == 0 and -(-HUGE // x.chunks[0]) <= MAX_CHUNKS_PER_DIMENSION
    assert x[4_999_998:5_000_012].tolist() == [0, 0, *range(1, 11), 0, 0]
    assert x[HUGE - 3 :].tolist() == [0, 0, 0]


def test_a_million_chunks_are_listed_as_stored(server):
    started = time.monotonic()
    response = httpx.get(f"{server.url}/api/v1/metadata/huge_chunks/million", timeout=60)
    assert response.status_code == 200, response.text
    assert time.monotonic() - started < 10
    attributes = response.json()["data"]["attributes"]
    assert attributes["structure"]["chunks"] == [[1] * MAX_CHUNKS_PER_DIMENSION]
    assert attributes["metadata"][ZARR_VIEW_KEY]["chunks"] == "stored"


# --- elements that are fixed-size arrays -------------------------------------------------------


def test_array_types_are_served_with_their_blocks_dimensions(files):
    directory, expected = files
    root = HDF5Adapter.from_uris(str(directory / "array_types.h5"))
    a = root["a"]
    assert isinstance(a, HDF5ArrayAdapter)
    structure = a.structure()
    assert structure.shape == (2, 3) and structure.chunks == ((2,), (3,))
    assert structure.data_type.to_numpy_dtype() == numpy.dtype("f4")
    numpy.testing.assert_array_equal(a.read(), expected["a"])
    chunked = root["chunked"].structure()
    assert chunked.shape == (5, 2, 2) and chunked.chunks == ((2, 2, 1), (2,), (2,))
    assert root["scalar"].structure().shape == (1, 3)  # a scalar has a leading axis of one


def test_array_types_over_the_native_api(server, files):
    _, expected = files
    url = f"{server.url}/api/v1"
    metadata = httpx.get(f"{url}/metadata/array_types/a")
    assert metadata.status_code == 200, metadata.text
    structure = metadata.json()["data"]["attributes"]["structure"]
    assert structure["shape"] == [2, 3] and structure["data_type"]["kind"] == "f"
    listing = httpx.get(f"{url}/search/array_types")
    assert listing.status_code == 200, listing.text
    assert {d["id"] for d in listing.json()["data"]} == {
        "a", "b", "chunked", "scalar", "vlen_block",
    }  # fmt: skip
    parent = httpx.get(f"{url}/metadata/array_types")
    assert parent.status_code == 200, parent.text
    for name in ["a", "b", "chunked", "scalar"]:
        got = httpx.get(f"{url}/array/full/array_types/{name}", params={"format": "json"})
        assert got.status_code == 200, (name, got.text)
        want = expected[name] if name != "scalar" else expected[name][numpy.newaxis]
        numpy.testing.assert_array_equal(numpy.array(got.json()), want)
    # A selection reaching into the blocks, with a negative step h5py cannot take itself.
    part = httpx.get(
        f"{url}/array/full/array_types/chunked", params={"slice": "1:4,::-1,1", "format": "json"}
    )
    assert part.status_code == 200, part.text
    numpy.testing.assert_array_equal(numpy.array(part.json()), expected["chunked"][1:4, ::-1, 1])
    block = httpx.get(
        f"{url}/array/block/array_types/chunked", params={"block": "1,0,0", "format": "json"}
    )
    numpy.testing.assert_array_equal(numpy.array(block.json()), expected["chunked"][2:4])
    # A block of variable-length data is a placeholder: described, readable, 415 as zarr.
    placeholder = httpx.get(f"{url}/metadata/array_types/vlen_block")
    assert placeholder.status_code == 200, placeholder.text
    assert httpx.get(f"{url}/array/full/array_types/vlen_block").status_code == 200


@pytest.mark.parametrize("zarr_format", [2, 3])
def test_array_types_in_the_zarr_view(server, files, zarr_format):
    _, expected = files
    url = f"{server.url}/zarr/v{zarr_format}"
    document = "zarr.json" if zarr_format == 3 else ".zarray"
    for name in ["a", "chunked"]:
        response = httpx.get(f"{url}/array_types/{name}/{document}")
        assert response.status_code == 200, (name, response.text)
    refused = httpx.get(f"{url}/array_types/vlen_block/{document}")
    assert refused.status_code == 415 and "vlen_block" in refused.json()["detail"]
    consolidated = f"{url}/zarr.json" if zarr_format == 3 else f"{url}/.zmetadata"
    assert httpx.get(consolidated).status_code == 200
    root = _zarr_root(server.url, zarr_format)
    for name in ["a", "b", "chunked"]:
        numpy.testing.assert_array_equal(root[f"array_types/{name}"][...], expected[name])
    numpy.testing.assert_array_equal(root["array_types/scalar"][...], [expected["scalar"]])
    # The stored chunks pass through: a block is whole in every chunk.
    chunked = root["array_types/chunked"]
    assert chunked.chunks == (2, 2, 2)
    assert chunked.attrs[ZARR_VIEW_KEY]["chunks"] == "stored"
    with h5py.File(files[0] / "array_types.h5", "r") as f:
        _, raw = f["chunked"].id.read_direct_chunk((2,))
    key = "1.0.0" if zarr_format == 2 else "c/1/0/0"
    served = httpx.get(f"{url}/array_types/chunked/{key}")
    assert served.status_code == 200 and served.content == raw
    missing = "2.0.0" if zarr_format == 2 else "c/2/0/0"  # never written: the fill value
    assert httpx.get(f"{url}/array_types/chunked/{missing}").status_code == 404


# --- links that make the tree endless --------------------------------------------------------


def test_links_back_to_an_ancestor_are_left_out_of_listings(server):
    listing = httpx.get(f"{server.url}/api/v1/search/cycles?max_depth=5")
    assert listing.status_code == 200, listing.text
    assert [d["id"] for d in listing.json()["data"]] == ["a", "a_again", "x_again"]
    for name in ["a", "a_again"]:
        inner = httpx.get(f"{server.url}/api/v1/search/cycles/{name}").json()["data"]
        assert [d["id"] for d in inner] == ["x"]
    for loop in ["root_again", "a/hard_loop", "a/soft_loop", "a_again/hard_loop"]:
        response = httpx.get(f"{server.url}/api/v1/metadata/cycles/{loop}")
        assert response.status_code == 404, response.text


@pytest.mark.parametrize("format", ["application/json", "application/x-hdf5"])
def test_a_file_with_loops_exports_as_its_finite_tree(server, format, tmp_path):
    response = httpx.get(
        f"{server.url}/api/v1/container/full/cycles", params={"format": format}, timeout=30
    )
    assert response.status_code == 200, response.text
    if format == "application/json":
        assert sorted(response.json()["contents"]) == ["a", "a_again", "x_again"]
        return
    (tmp_path / "export.h5").write_bytes(response.content)
    with h5py.File(tmp_path / "export.h5", "r") as exported:
        assert exported["a/x"][()].tolist() == exported["a_again/x"][()].tolist() == [0, 1, 2, 3, 4]
        assert "hard_loop" not in exported["a"]


@pytest.mark.parametrize("zarr_format", [2, 3])
def test_zarr_python_walks_a_file_with_loops(server, zarr_format):
    group = _zarr_root(server.url, zarr_format)["cycles"]
    arrays = {name: array[...].tolist() for name, array in group.arrays()}
    assert arrays == {"x_again": [0, 1, 2, 3, 4]}
    walked = sorted(name for name, _ in group.members(max_depth=None))
    assert walked == ["a", "a/x", "a_again", "a_again/x", "x_again"]


def test_tiled_serve_directory_serves_both_files(files, tmp_path):
    directory, expected = files
    from .test_serve_directory import TILED, _eventually, _indexed, _log

    command = [TILED, "serve", "directory", directory, "--public"]
    with server_process(command, tmp_path) as url:
        _eventually(lambda: _indexed(_log(tmp_path)))
        started = time.monotonic()
        response = httpx.get(f"{url}/api/v1/metadata/huge_chunks/x", timeout=60)
        assert response.status_code == 200, response.text
        assert time.monotonic() - started < 30  # as in the test above
        (chunks,) = response.json()["data"]["attributes"]["structure"]["chunks"]
        assert len(chunks) <= MAX_CHUNKS_PER_DIMENSION
        listing = httpx.get(f"{url}/api/v1/search/array_types", timeout=30)
        assert listing.status_code == 200, listing.text
        assert {"a", "b"} <= {d["id"] for d in listing.json()["data"]}
        root = _zarr_root(url, 3)
        numpy.testing.assert_array_equal(root["array_types/a"][...], expected["a"])
        numpy.testing.assert_array_equal(root["array_types/b"][...], expected["b"])
        assert root["huge_chunks/x"][4_999_999:5_000_001].tolist() == [0, 1]
