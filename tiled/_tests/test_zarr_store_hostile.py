"""Zarr stores on disk that are hostile to serve: a chunk file that is a symbolic link out of
the store (whose bytes the pass-through and zarr-python would serve), a FIFO in place of a
chunk file (whose opening waits forever, holding a worker thread), a directory in place of one
(whose error named the server's path), metadata that is a link out of the store, and a chunk
grid of millions of chunks (which listing in a structure would take the server's memory). Each
is refused with a 4xx naming only the store's key, or served in coarser chunks; a link to
another file of the same store keeps working."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import fsspec
import httpx
import numpy
import pytest
import zarr

from tiled.adapters.mapping import MapAdapter
from tiled.adapters.sequence import FileUnreadable
from tiled.adapters.zarr import ZarrAdapter, ZarrArrayAdapter
from tiled.server.app import build_app
from tiled.zarr_format.model import MAX_CHUNKS_PER_DIMENSION, bounded_chunk_shape

from .live_server import serve
from .processes import server_process

SECRET = b"SECRET-BYTES-OUTSIDE-THE-STORE"
# Three stored chunks of one element per chunk the structure may list: served in chunks of 3.
MANY = 3 * MAX_CHUNKS_PER_DIMENSION
TIMEOUT = 10  # a FIFO opened for reading would wait forever: the test fails instead


def _v2(path: Path, values: numpy.ndarray, chunks: tuple[int, ...]) -> zarr.Array:
    array = zarr.open_array(
        path, mode="w", shape=values.shape, chunks=chunks, dtype=values.dtype, zarr_format=2,
        compressor=None, fill_value=0,
    )  # fmt: skip
    array[...] = values
    return array


def _replace(path: Path, how) -> None:
    path.unlink()
    how(path)


def _many_chunks(path: Path, zarr_format: int) -> None:
    """An array of MANY one-element chunks, declared by hand (a few hundred bytes), one written."""
    path.mkdir()
    if zarr_format == 2:
        document = {
            "zarr_format": 2, "shape": [MANY], "chunks": [1], "dtype": "|u1", "compressor": None,
            "fill_value": 0, "filters": None, "order": "C", "dimension_separator": ".",
        }  # fmt: skip
        (path / ".zarray").write_text(json.dumps(document))
        (path / "5").write_bytes(b"\x09")
    else:
        document = {
            "zarr_format": 3, "node_type": "array", "shape": [MANY], "data_type": "uint8",
            "chunk_grid": {"name": "regular", "configuration": {"chunk_shape": [1]}},
            "chunk_key_encoding": {"name": "default", "configuration": {"separator": "/"}},
            "fill_value": 0, "codecs": [{"name": "bytes"}], "attributes": {},
        }  # fmt: skip
        (path / "zarr.json").write_text(json.dumps(document))
        (path / "c").mkdir()
        (path / "c" / "5").write_bytes(b"\x09")


@pytest.fixture(scope="module")
def stores(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("hostile_zarr")
    outside = root / "outside"
    outside.mkdir()
    (outside / "secret").write_bytes(SECRET)
    (outside / "attrs.json").write_text(json.dumps({"secret": SECRET.decode()}))
    served = root / "served"
    served.mkdir()
    four = numpy.full(4, 7, dtype="u1")
    _v2(served / "ok.zarr", four, (2,))
    # A link to another chunk file of the same store: read as that chunk.
    _v2(served / "inlink.zarr", four, (2,))
    _replace(served / "inlink.zarr" / "1", lambda p: p.symlink_to("0"))
    _v2(served / "link.zarr", four, (4,))
    _replace(served / "link.zarr" / "0", lambda p: p.symlink_to(outside / "secret"))
    link3 = zarr.create_array(served / "link3.zarr", shape=(4,), chunks=(4,), dtype="u1",
                              compressors=None, fill_value=0)  # fmt: skip
    link3[...] = four
    _replace(served / "link3.zarr" / "c" / "0", lambda p: p.symlink_to(outside / "secret"))
    _v2(served / "attrs.zarr", four, (4,))
    (served / "attrs.zarr" / ".zattrs").unlink(missing_ok=True)
    (served / "attrs.zarr" / ".zattrs").symlink_to(outside / "attrs.json")
    _v2(served / "dirchunk.zarr", four, (4,))
    _replace(served / "dirchunk.zarr" / "0", Path.mkdir)
    _v2(served / "fifo.zarr", four, (4,))
    _replace(served / "fifo.zarr" / "0", os.mkfifo)
    # A FIFO in place of the store's own document: opening the store waited on it forever.
    _v2(served / "fifometa.zarr", four, (4,))
    _replace(served / "fifometa.zarr" / ".zarray", os.mkfifo)
    # A group with a healthy member, one whose document links out, one whose document is a
    # FIFO: the group and its healthy member stay readable.
    group = zarr.open_group(served / "group.zarr", mode="w", zarr_format=3)
    group.create_array("good", data=four, chunks=(4,), compressors=None)
    group.create_array("linked", data=four, chunks=(4,), compressors=None)
    group.create_array("fifo", data=four, chunks=(4,), compressors=None)
    _replace(served / "group.zarr" / "linked" / "zarr.json",
             lambda p: p.symlink_to(outside / "attrs.json"))  # fmt: skip
    _replace(served / "group.zarr" / "fifo" / "zarr.json", os.mkfifo)
    _many_chunks(served / "many2.zarr", 2)
    _many_chunks(served / "many3.zarr", 3)
    return served


@pytest.fixture(scope="module")
def server(stores):
    # Not the FIFO: a worker thread blocked on it would outlive this process's server.
    names = ["ok", "inlink", "link", "link3", "dirchunk", "many2", "many3", "group"]
    tree = MapAdapter({name: ZarrAdapter.from_uris(str(stores / f"{name}.zarr")) for name in names})
    with serve(build_app(tree, authentication={"allow_anonymous_access": True})) as live:
        yield live


@pytest.fixture(scope="module")
def directory_server(stores, tmp_path_factory):
    from .test_serve_directory import TILED, _eventually, _indexed, _log

    logs = tmp_path_factory.mktemp("logs")
    with server_process([TILED, "serve", "directory", stores, "--public"], logs) as url:
        _eventually(lambda: _indexed(_log(logs)))
        yield url


def _routes(name: str) -> list[str]:
    return [
        f"/zarr/v2/{name}/0",
        f"/zarr/v3/{name}/c/0",
        f"/api/v1/array/full/{name}?format=application/json",
        f"/api/v1/array/block/{name}?block=0&format=application/json",
    ]


def _refused(response: httpx.Response, stores: Path) -> str:
    """The detail of a 4xx that reveals neither the outside file's bytes nor a server path."""
    assert 400 <= response.status_code < 500, (response.status_code, response.content[:200])
    assert SECRET not in response.content
    detail = response.json()["detail"]
    assert str(stores.parent) not in detail and "/tmp" not in detail, detail
    return detail


# --- links out of the store ---------------------------------------------------------------------


@pytest.mark.parametrize("name", ["link", "link3"])
def test_chunk_linked_out_of_the_store_is_refused(server, stores, name):
    for route in _routes(name):
        response = httpx.get(f"{server.url}{route}", timeout=TIMEOUT)
        assert "outside the store" in _refused(response, stores), route


def test_chunk_linked_out_of_the_store_is_refused_by_the_directory_server(directory_server, stores):
    for name in ["link", "link3"]:
        for route in _routes(name):
            response = httpx.get(f"{directory_server}{route}", timeout=TIMEOUT)
            assert "outside the store" in _refused(response, stores), route


def test_zarr_python_reads_are_contained_too(stores):
    """An array opened by zarr-python's own LocalStore (as the catalog opens registered
    stores) is read through the contained store: its reads refuse the link too."""
    adapter = ZarrArrayAdapter.from_array(zarr.open_array(stores / "link.zarr", mode="r"))
    with pytest.raises(FileUnreadable, match="outside the store"):
        adapter.read()
    with pytest.raises(FileUnreadable, match="outside the store"):
        ZarrAdapter.from_uris(str(stores / "attrs.zarr"))


def test_metadata_linked_out_of_the_store_is_not_served(directory_server):
    response = httpx.get(f"{directory_server}/api/v1/metadata/attrs", timeout=TIMEOUT)
    assert SECRET not in response.content
    assert SECRET.decode() not in json.dumps(response.json())


def test_link_inside_the_store_keeps_working(server, directory_server):
    for url in [server.url, directory_server]:
        response = httpx.get(f"{url}/zarr/v2/inlink/1", timeout=TIMEOUT)
        assert response.status_code == 200 and response.content == b"\x07\x07"
        full = httpx.get(f"{url}/api/v1/array/full/inlink?format=application/json", timeout=10)
        assert full.status_code == 200 and full.json() == [7, 7, 7, 7]


# --- a FIFO or a directory in place of a chunk file --------------------------------------------


def test_fifo_chunk_is_refused_without_waiting(directory_server, stores):
    for route in _routes("fifo"):
        started = time.monotonic()
        response = httpx.get(f"{directory_server}{route}", timeout=TIMEOUT)
        assert "not a regular file" in _refused(response, stores), route
        assert time.monotonic() - started < 5
    # No worker thread is left waiting: the server still answers.
    ok = httpx.get(f"{directory_server}/zarr/v2/ok/0", timeout=TIMEOUT)
    assert ok.status_code == 200 and ok.content == b"\x07\x07"


def test_directory_chunk_names_only_the_key(server, directory_server, stores):
    for url in [server.url, directory_server]:
        for route in _routes("dirchunk"):
            response = httpx.get(f"{url}{route}", timeout=TIMEOUT)
            assert _refused(response, stores) == "zarr key '0' is a directory, not a file"


# --- too many chunks to list --------------------------------------------------------------------


def test_bounded_chunk_shape_is_public():
    assert bounded_chunk_shape((MANY,), (1,)) == (3,)
    assert bounded_chunk_shape((10**9,), (1,)) == (1000,)
    assert bounded_chunk_shape((MAX_CHUNKS_PER_DIMENSION,), (1,)) == (1,)


@pytest.mark.parametrize("name", ["many2", "many3"])
def test_many_chunks_are_served_coarser_and_re_encoded(server, name):
    response = httpx.get(f"{server.url}/api/v1/metadata/{name}", timeout=30)
    assert response.status_code == 200, response.text
    (chunks,) = response.json()["data"]["attributes"]["structure"]["chunks"]
    assert len(chunks) == MAX_CHUNKS_PER_DIMENSION and set(chunks) == {3}
    zarray = httpx.get(f"{server.url}/zarr/v2/{name}/.zarray", timeout=TIMEOUT).json()
    assert zarray["chunks"] == [3]
    block = httpx.get(
        f"{server.url}/api/v1/array/block/{name}?block=1&format=application/json", timeout=10
    )
    assert block.status_code == 200 and block.json() == [0, 0, 9]
    for zarr_format in (2, 3):
        store = fsspec.get_mapper(f"{server.url}/zarr/v{zarr_format}/")
        remote = zarr.open_group(store, mode="r", zarr_format=zarr_format)[name]
        assert remote.chunks == (3,)
        assert remote[4:7].tolist() == [0, 9, 0]


def test_many_chunks_are_registered_by_the_directory_server(directory_server):
    for name in ["many2", "many3"]:
        response = httpx.get(f"{directory_server}/api/v1/metadata/{name}", timeout=30)
        assert response.status_code == 200, response.text
        (chunks,) = response.json()["data"]["attributes"]["structure"]["chunks"]
        assert len(chunks) <= MAX_CHUNKS_PER_DIMENSION
        chunk = httpx.get(f"{directory_server}/zarr/v3/{name}/c/1", timeout=TIMEOUT)
        assert chunk.status_code == 200


def test_many_chunks_adapter_does_not_pass_chunks_through(stores):
    adapter = ZarrAdapter.from_uris(str(stores / "many2.zarr"))
    assert not adapter.passes_chunks_through
    assert ZarrAdapter.from_uris(str(stores / "ok.zarr")).passes_chunks_through


def test_fifo_in_place_of_a_stores_document_is_skipped_by_the_walk(directory_server):
    # The directory server finished indexing (its fixture waits for that): the store is no
    # zarr array; its folder is walked as a folder, whose FIFO is skipped.
    found = httpx.get(f"{directory_server}/api/v1/metadata/fifometa", timeout=TIMEOUT)
    assert found.status_code == 404 or (
        found.json()["data"]["attributes"]["structure_family"] == "container"
    )
    assert httpx.get(f"{directory_server}/api/v1/metadata/ok", timeout=TIMEOUT).status_code == 200


def test_one_hostile_member_leaves_its_group_readable(server):
    listing = httpx.get(f"{server.url}/api/v1/search/group", timeout=TIMEOUT)
    assert listing.status_code == 200, listing.text
    assert [d["id"] for d in listing.json()["data"]] == ["good"]
    root = zarr.open_group(fsspec.get_mapper(f"{server.url}/zarr/v3/group"), mode="r")
    assert root["good"][...].tolist() == [7, 7, 7, 7]
