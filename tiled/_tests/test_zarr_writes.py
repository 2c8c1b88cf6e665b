"""Writing through /zarr on a live server: zarr-python (fsspec and obstore), xarray and dask
write into the catalog, and the result is an ordinary node, stored as the bytes the client sent.

Every refused write is checked to change nothing; conditional writes answer 412.
"""

from __future__ import annotations

import concurrent.futures
import json
from pathlib import Path

import dask.array
import httpx
import numpy
import pytest
import xarray
import zarr
from zarr.codecs import Crc32cCodec, GzipCodec

from tiled.adapters.array import ArrayAdapter
from tiled.adapters.mapping import MapAdapter
from tiled.catalog import from_uri
from tiled.server.app import build_app

from .live_server import serve

KEY = "secret"
HEADERS = {"Authorization": f"Apikey {KEY}"}
STORAGE_OPTIONS = {"client_kwargs": {"headers": HEADERS}}
MAX_BYTES = 1_000_000


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    directory = tmp_path_factory.mktemp("zarr-writes")
    (directory / "files").mkdir()
    catalog = from_uri(
        f"sqlite:///{directory / 'catalog.db'}", writable_storage=directory / "data",
        readable_storage=[directory / "files"], init_if_not_exists=True,
    )  # fmt: skip
    app = build_app(
        catalog,
        authentication={"single_user_api_key": KEY},
        server_settings={"zarr_write_max_bytes": MAX_BYTES},
    )
    with serve(app) as live:
        live.files = directory / "files"
        yield live


@pytest.fixture
def name(request) -> str:
    """A fresh top-level key per test (and per parameter)."""
    return "n" + str(abs(hash(request.node.nodeid)))[:12]


def fsspec_store(url: str, read_only: bool = False) -> zarr.storage.FsspecStore:
    return zarr.storage.FsspecStore.from_url(
        url, storage_options=STORAGE_OPTIONS, read_only=read_only
    )


def native(url: str, route: str, path: str) -> httpx.Response:
    return httpx.get(f"{url}/api/v1/{route}/{path}", headers=HEADERS)


def put(url: str, key: str, body: bytes, **headers: str) -> httpx.Response:
    return httpx.put(f"{url}/{key}", content=body, headers={**HEADERS, **headers})


def local_chunk_bytes(tmp_path: Path, zarr_format: int, data, chunks, key: str, **kwargs) -> bytes:
    """What zarr-python stores for chunk ``key`` of ``data`` written with these settings."""
    array = zarr.create_array(
        str(tmp_path / "local"), shape=data.shape, chunks=chunks, dtype=data.dtype,
        zarr_format=zarr_format, **kwargs,
    )  # fmt: skip
    array[...] = data
    return (tmp_path / "local" / key).read_bytes()


# --- zarr-python through fsspec ----------------------------------------------------------------


def test_zarr_python_creates_groups_and_arrays(server, name, zarr_format, tmp_path):
    url = f"{server.url}/zarr/v{zarr_format}/{name}"
    group = zarr.open_group(fsspec_store(url), mode="w-", zarr_format=zarr_format)
    group.attrs["title"] = "written by zarr"
    inner = group.create_group("inner", attributes={"level": 2})
    data = numpy.arange(120, dtype="f4").reshape(10, 12)
    dims = ["y", "x"] if zarr_format == 3 else None
    array = inner.create_array(
        "a", shape=data.shape, chunks=(4, 5), dtype="f4", dimension_names=dims
    )
    array[...] = data
    array.attrs["units"] = "m"

    # Read back by zarr, and by the native API: an ordinary node.
    back = zarr.open_group(fsspec_store(url, read_only=True), mode="r")
    numpy.testing.assert_array_equal(back["inner/a"][...], data)
    assert dict(back.attrs) == {"title": "written by zarr"}
    assert dict(back["inner"].attrs) == {"level": 2}
    assert dict(back["inner/a"].attrs) == {"units": "m"}
    described = native(server.url, "metadata", f"{name}/inner/a").json()["data"]["attributes"]
    assert described["metadata"] == {"units": "m"}
    assert described["structure"]["shape"] == [10, 12]
    assert described["structure"]["chunks"] == [[4, 4, 2], [5, 5, 2]]
    full = native(server.url, "array/full", f"{name}/inner/a").content
    numpy.testing.assert_array_equal(numpy.frombuffer(full, "f4").reshape(10, 12), data)
    found = httpx.get(
        f"{server.url}/api/v1/search/{name}/inner",
        params={"filter[eq][condition][key]": "units", "filter[eq][condition][value]": '"m"'},
        headers=HEADERS,
    ).json()
    assert [item["id"] for item in found["data"]] == ["a"]

    # The stored chunk is the bytes zarr-python encoded, served back byte for byte.
    key = "c/1/2" if zarr_format == 3 else "1.2"
    expected = local_chunk_bytes(
        tmp_path, zarr_format, data, (4, 5), key, compressors=array.compressors
    )
    served = httpx.get(f"{url}/inner/a/{key}", headers=HEADERS)
    assert served.status_code == 200 and served.content == expected


def test_attributes_are_metadata_with_revisions(server, name, zarr_format):
    url = f"{server.url}/zarr/v{zarr_format}/{name}"
    group = zarr.open_group(fsspec_store(url), mode="w-", zarr_format=zarr_format)
    array = group.create_array("a", shape=(4,), chunks=(2,), dtype="i8")
    array.attrs.put({"version": 1})
    array.attrs.put({"version": 2})
    revisions = native(server.url, "revisions", f"{name}/a").json()
    assert [r["attributes"]["metadata"] for r in revisions["data"]][-1] == {"version": 1}
    assert native(server.url, "metadata", f"{name}/a").json()["data"]["attributes"]["metadata"] == {
        "version": 2
    }


def test_resize_by_rewriting_the_metadata(server, name, zarr_format):
    url = f"{server.url}/zarr/v{zarr_format}/{name}"
    store = fsspec_store(url)
    array = zarr.create_array(
        store, shape=(6, 4), chunks=(2, 4), dtype="u2", zarr_format=zarr_format
    )
    array[...] = numpy.arange(24, dtype="u2").reshape(6, 4)
    array.resize((9, 4))
    array[6:] = 7
    assert native(server.url, "metadata", name).json()["data"]["attributes"]["structure"][
        "shape"
    ] == [9, 4]
    back = zarr.open_array(fsspec_store(url, read_only=True), mode="r")
    assert back.shape == (9, 4) and (back[6:] == 7).all()
    # Shrinking (zarr-python would also delete the chunks outside the new shape, which
    # fsspec's HTTP filesystem cannot): the server removes them with the metadata change.
    name_of_document = "zarr.json" if zarr_format == 3 else ".zarray"
    document = httpx.get(f"{url}/{name_of_document}", headers=HEADERS).json()
    document["shape"] = [3, 4]
    assert put(url, name_of_document, json.dumps(document).encode()).status_code == 204
    listing = httpx.request("PROPFIND", url, headers={**HEADERS, "Depth": "infinity"}).text
    first, gone = ("c/0/0", "c/2/0") if zarr_format == 3 else ("0.0", "2.0")
    assert f"{name}/{first}<" in listing and f"{name}/{gone}<" not in listing
    numpy.testing.assert_array_equal(
        zarr.open_array(fsspec_store(url, read_only=True), mode="r")[...],
        numpy.arange(12, dtype="u2").reshape(3, 4),
    )
    # Growing again shows the fill value, not what row 3 held before the array shrank (it
    # shares a chunk with row 2, which stayed).
    document["shape"] = [5, 4]
    assert put(url, name_of_document, json.dumps(document).encode()).status_code == 204
    expected = numpy.zeros((5, 4), dtype="u2")
    expected[:3] = numpy.arange(12, dtype="u2").reshape(3, 4)
    numpy.testing.assert_array_equal(
        zarr.open_array(fsspec_store(url, read_only=True), mode="r")[...], expected
    )


def test_modes(server, name, zarr_format):
    url = f"{server.url}/zarr/v{zarr_format}/{name}"
    zarr.open_group(fsspec_store(url), mode="w-", zarr_format=zarr_format)
    with pytest.raises(Exception):  # noqa: B017 - zarr-python's "already exists" error
        zarr.open_group(fsspec_store(url), mode="w-", zarr_format=zarr_format)
    group = zarr.open_group(fsspec_store(url), mode="a", zarr_format=zarr_format)
    group.create_array("a", shape=(3,), chunks=(3,), dtype="f8")[...] = [1.0, 2.0, 3.0]
    existing = zarr.open_group(fsspec_store(url), mode="r+", zarr_format=zarr_format)
    existing["a"][1] = 20.0
    numpy.testing.assert_array_equal(existing["a"][...], [1.0, 20.0, 3.0])


# --- xarray and dask ------------------------------------------------------------------------


def dataset(times) -> xarray.Dataset:
    rng = numpy.random.default_rng(len(times))
    return xarray.Dataset(
        {
            "temperature": (("time", "y", "x"), rng.random((len(times), 5, 6)).astype("f4")),
            "pressure": (("time",), numpy.arange(len(times), dtype="f8")),
        },
        coords={"time": times, "y": numpy.arange(5) * 2.0, "x": numpy.arange(6) * 3.0},
        attrs={"title": "weather"},
    )


@pytest.mark.filterwarnings("ignore:Consolidated metadata:UserWarning")
def test_xarray_to_zarr_and_append(server, name, zarr_format):
    url = f"{server.url}/zarr/v{zarr_format}/{name}"
    first, second = dataset(numpy.arange(4)), dataset(numpy.arange(4, 7))
    options = {"storage_options": STORAGE_OPTIONS, "zarr_format": zarr_format, "consolidated": True}
    first.to_zarr(url, mode="w-", **options)
    second.to_zarr(url, mode="a", append_dim="time", **options)
    back = xarray.open_zarr(url, **options).load()
    xarray.testing.assert_identical(back, xarray.concat([first, second], "time"))
    # The consolidated metadata the server derives follows every write.
    consolidated = httpx.get(
        f"{url}/{'zarr.json' if zarr_format == 3 else '.zmetadata'}", headers=HEADERS
    ).json()
    if zarr_format == 3:
        shape = consolidated["consolidated_metadata"]["metadata"]["temperature"]["shape"]
    else:
        shape = consolidated["metadata"]["temperature/.zarray"]["shape"]
    assert shape == [7, 5, 6]
    # Written once more in mode "a" without append_dim: a region overwrite.
    changed = second.copy(deep=True)
    changed["pressure"][:] = -1.0
    changed = changed.drop_vars(["y", "x"])
    changed.to_zarr(url, mode="a", region={"time": slice(4, 7)}, **options)
    assert (xarray.open_zarr(url, **options)["pressure"].values[4:] == -1.0).all()


def test_dask_to_zarr(server, name, zarr_format):
    data = dask.array.random.default_rng(3).random((20, 12), chunks=(5, 4))
    dask.array.to_zarr(
        data, fsspec_store(f"{server.url}/zarr/v{zarr_format}/{name}"), zarr_format=zarr_format
    )
    back = zarr.open_array(fsspec_store(f"{server.url}/zarr/v{zarr_format}/{name}", True), mode="r")
    numpy.testing.assert_array_equal(back[...], data.compute())


# --- obstore's HTTPStore (PUT, DELETE, PROPFIND) -------------------------------------------


def http_store(url: str) -> zarr.storage.ObjectStore:
    from obstore.store import HTTPStore

    options = {"allow_http": True, "default_headers": HEADERS}
    return zarr.storage.ObjectStore(HTTPStore.from_url(url, client_options=options))


def test_obstore_http_store(server, name):
    base = f"{server.url}/zarr/v3/{name}"
    # obstore 0.12's HTTPStore has no create-only PUT, which zarr-python uses to make parent
    # groups: each node is created as the root of a store at its own URL.
    zarr.open_group(http_store(base), mode="w-", zarr_format=3, attributes={"a": 1})
    array = zarr.create_array(http_store(f"{base}/x"), shape=(8, 8), chunks=(4, 4), dtype="i4")
    array[...] = numpy.arange(64, dtype="i4").reshape(8, 8)
    array.attrs["units"] = "counts"
    array.resize((12, 8))
    # obstore lists with PROPFIND and names keys by their full path: a store rooted at the
    # server sees the tree as it is, members, deletes and all.
    root = zarr.open_group(http_store(f"{server.url}/"), path=f"zarr/v3/{name}", mode="r+")
    assert list(root.keys()) == ["x"]
    assert root["x"].shape == (12, 8) and dict(root["x"].attrs) == {"units": "counts"}
    root["x"][0, 0] = 100
    assert root["x"][0, 0] == 100
    # Deleting a chunk key: readers get the fill value.
    import obstore
    from obstore.store import HTTPStore

    raw = HTTPStore.from_url(base, client_options={"allow_http": True, "default_headers": HEADERS})
    obstore.delete(raw, "x/c/1/1")
    assert httpx.get(f"{base}/x/c/1/1", headers=HEADERS).status_code == 404
    assert (root["x"][4:8, 4:8] == 0).all()
    del root["x"]  # lists the keys below x (PROPFIND) and deletes them
    assert native(server.url, "search", name).json()["meta"]["count"] == 0


def test_propfind(server, name):
    base = f"{server.url}/zarr/v3/{name}"
    group = zarr.open_group(fsspec_store(base), mode="w-", zarr_format=3)
    group.create_array("x", shape=(4,), chunks=(2,), dtype="u1")[...] = [1, 2, 3, 4]
    group.create_group("g")

    def listing(path: str, depth: str | None) -> list[tuple[str, bool]]:
        headers = dict(HEADERS) if depth is None else {**HEADERS, "Depth": depth}
        response = httpx.request("PROPFIND", f"{base}/{path}", headers=headers)
        assert response.status_code == 207, response.text
        assert response.headers["content-type"].startswith("application/xml")
        hrefs = []
        for piece in response.text.split("<D:response>")[1:]:
            href = piece.split("<D:href>")[1].split("</D:href>")[0]
            hrefs.append((href.removeprefix(f"/zarr/v3/{name}"), "<D:collection/>" in piece))
        return hrefs

    assert listing("", "0") == [("/", True)]
    assert sorted(listing("", "1")) == [
        ("/", True),
        ("/g/", True),
        ("/x/", True),
        ("/zarr.json", False),
    ]
    assert sorted(listing("x", "1")) == [("/x/", True), ("/x/c/", True), ("/x/zarr.json", False)]
    every = sorted(listing("", None))  # no Depth header: infinity
    assert [href for href, collection in every if not collection] == [
        "/g/zarr.json", "/x/c/0", "/x/c/1", "/x/zarr.json", "/zarr.json",
    ]  # fmt: skip
    assert listing("x/c/1", "0") == [("/x/c/1", False)]
    bad = httpx.request("PROPFIND", base, headers={**HEADERS, "Depth": "2"})
    assert bad.status_code == 400 and "Depth" in bad.json()["detail"]
    assert httpx.request("PROPFIND", f"{base}/nope", headers=HEADERS).status_code == 404


# --- nodes made through /api/v1 are writable through /zarr -------------------------------


def test_nodes_made_by_the_native_api_are_writable(server, name, zarr_format):
    made = httpx.post(
        f"{server.url}/api/v1/metadata/",
        json={
            "id": name, "structure_family": "array", "metadata": {},
            "data_sources": [{
                "structure_family": "array", "mimetype": "application/x-zarr",
                "structure": {
                    "data_type": {"endianness": "little", "kind": "i", "itemsize": 4, "dt_units": None},
                    "chunks": [[2, 2], [3]], "shape": [4, 3], "dims": None, "resizable": False,
                },
            }],
        },
        headers=HEADERS,
    )  # fmt: skip
    assert made.status_code == 200, made.text
    array = zarr.open_array(fsspec_store(f"{server.url}/zarr/v{zarr_format}/{name}"), mode="r+")
    array[2:4] = numpy.full((2, 3), 9, dtype="i4")
    full = numpy.frombuffer(native(server.url, "array/full", name).content, "i4").reshape(4, 3)
    numpy.testing.assert_array_equal(full, [[0, 0, 0], [0, 0, 0], [9, 9, 9], [9, 9, 9]])


# --- conditional writes -----------------------------------------------------------------------


def test_conditional_writes(server, name):
    base = f"{server.url}/zarr/v3/{name}"
    array = zarr.create_array(
        fsspec_store(base), shape=(4,), chunks=(2,), dtype="u1", compressors=None
    )
    array[...] = [1, 2, 3, 4]
    current = httpx.get(f"{base}/c/0", headers=HEADERS).headers["etag"]
    assert put(base, "c/0", b"\x05\x06", **{"If-None-Match": "*"}).status_code == 412
    stale = put(base, "c/0", b"\x05\x06", **{"If-Match": '"not-the-etag"'})
    assert stale.status_code == 412 and "If-Match" in stale.json()["detail"]
    assert httpx.get(f"{base}/c/0", headers=HEADERS).content == b"\x01\x02"
    written = put(base, "c/0", b"\x05\x06", **{"If-Match": current})
    assert written.status_code == 204 and written.headers["etag"] != current
    assert httpx.get(f"{base}/c/0", headers=HEADERS).headers["etag"] == written.headers["etag"]
    # Two writers holding the same version: exactly one wins.
    version = written.headers["etag"]

    def attempt(value: int) -> int:
        return put(
            base,
            "c/1",
            bytes([value, value]),
            **{"If-Match": httpx.get(f"{base}/c/1", headers=HEADERS).headers["etag"]},
        ).status_code

    assert put(base, "c/1", b"\x07\x07", **{"If-Match": version}).status_code == 412
    statuses = [
        put(base, "c/0", bytes([v, v]), **{"If-Match": version}).status_code for v in (8, 9)
    ]
    assert statuses == [204, 412]
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        assert 204 in list(pool.map(attempt, range(10, 14)))
    # Create-only: a missing chunk may be created once.
    array.resize((6,))
    assert put(base, "c/2", b"\x01\x01", **{"If-None-Match": "*"}).status_code == 201
    assert put(base, "c/2", b"\x02\x02", **{"If-None-Match": "*"}).status_code == 412
    assert put(base, "c/2", b"\x02\x02", **{"If-Match": "*"}).status_code == 204
    # Documents: the ETag a reader got.
    document = httpx.get(f"{base}/zarr.json", headers=HEADERS)
    meta = document.json()
    meta["attributes"] = {"a": 1}
    body = json.dumps(meta).encode()
    assert put(base, "zarr.json", body, **{"If-Match": '"old"'}).status_code == 412
    assert put(base, "zarr.json", body, **{"If-Match": document.headers["etag"]}).status_code == 204
    assert (
        put(
            f"{server.url}/zarr/v3", f"{name}/zarr.json", body, **{"If-None-Match": "*"}
        ).status_code
        == 412
    )
    fresh = put(f"{server.url}/zarr/v3", f"{name}-new/zarr.json", body, **{"If-Match": "*"})
    assert fresh.status_code == 412


# --- refusals change nothing ------------------------------------------------------------------


V3_ARRAY = {
    "zarr_format": 3, "node_type": "array", "shape": [4], "data_type": "float32",
    "chunk_grid": {"name": "regular", "configuration": {"chunk_shape": [2]}},
    "chunk_key_encoding": {"name": "default", "configuration": {"separator": "/"}},
    "fill_value": 0.0, "codecs": [{"name": "bytes", "configuration": {"endian": "little"}}],
    "attributes": {},
}  # fmt: skip
ZSTD = {"name": "zstd", "configuration": {"level": 1, "checksum": False}}


def snapshot(url: str, name: str) -> tuple:
    listing = httpx.request(
        "PROPFIND", f"{url}/zarr/v3/{name}", headers={**HEADERS, "Depth": "infinity"}
    )
    document = httpx.get(f"{url}/zarr/v3/{name}/zarr.json", headers=HEADERS)
    chunk = httpx.get(f"{url}/zarr/v3/{name}/c/0", headers=HEADERS)
    return listing.text, document.content, chunk.content


@pytest.mark.parametrize(
    "key, body, status, words",
    [
        ("zarr.json", b"not json", 400, "not JSON"),
        ("zarr.json", json.dumps({**V3_ARRAY, "data_type": None}).encode(), 400, "zarr-python"),
        (
            "zarr.json",
            json.dumps({k: v for k, v in V3_ARRAY.items() if k != "shape"}).encode(),
            400,
            "zarr-python",
        ),
        ("zarr.json", json.dumps({**V3_ARRAY, "data_type": "float64"}).encode(), 409, "data type"),
        ("zarr.json", json.dumps({**V3_ARRAY, "node_type": "group"}).encode(), 409, "is an array"),
        (
            "zarr.json",
            json.dumps({**V3_ARRAY, "codecs": [*V3_ARRAY["codecs"], ZSTD]}).encode(),
            409,
            "codecs",
        ),
        ("c/0", b"\x00" * 7, 400, "does not decode"),
        ("c/0", b"\x00" * 9, 400, "does not decode"),
        ("c/5", b"\x00" * 8, 400, "outside"),
        ("c/0/0", b"\x00" * 8, 400, "chunk key"),
        ("c/0", b"\x00" * (MAX_BYTES + 1), 413, "limit"),
    ],
)
def test_bad_writes_change_nothing(server, name, key, body, status, words):
    base = f"{server.url}/zarr/v3/{name}"
    assert put(base, "zarr.json", json.dumps(V3_ARRAY).encode()).status_code == 201
    assert put(base, "c/0", numpy.array([1.5, 2.5], "<f4").tobytes()).status_code == 201
    before = snapshot(server.url, name)
    refused = put(base, key, body)
    assert refused.status_code == status, refused.text
    assert words in refused.json()["detail"]
    assert snapshot(server.url, name) == before


@pytest.mark.parametrize(
    "change, words",
    [
        ({"codecs": [{"name": "bytes"}, {"name": "crc32c"}]}, "at most one compressor"),
        (
            {"codecs": [{"name": "transpose", "configuration": {"order": [0]}}, {"name": "bytes"}]},
            "serializer",
        ),
        ({"data_type": "string", "fill_value": ""}, "zarr-python"),
        ({"chunk_grid": {"name": "rectilinear", "configuration": {}}}, "zarr-python"),
    ],
)
def test_refused_arrays_are_not_created(server, name, change, words):
    refused = put(
        f"{server.url}/zarr/v3/{name}", "zarr.json", json.dumps({**V3_ARRAY, **change}).encode()
    )
    assert refused.status_code == 400, refused.text
    assert words in refused.json()["detail"] or "cannot" in refused.json()["detail"]
    assert native(server.url, "metadata", name).status_code == 404


def test_sharded_and_string_arrays_are_refused(server, name, tmp_path):
    sharded = zarr.create_array(
        str(tmp_path / "s"), shape=(8,), chunks=(2,), shards=(4,), dtype="f4"
    )
    document = (tmp_path / "s" / "zarr.json").read_bytes()
    assert sharded.shape == (8,)
    refused = put(f"{server.url}/zarr/v3/{name}", "zarr.json", document)
    assert refused.status_code == 400 and "sharding_indexed" in refused.json()["detail"]
    zarr.create_array(str(tmp_path / "t"), shape=(3,), chunks=(3,), dtype=str)
    refused = put(
        f"{server.url}/zarr/v3/{name}", "zarr.json", (tmp_path / "t" / "zarr.json").read_bytes()
    )
    assert refused.status_code == 400
    assert native(server.url, "metadata", name).status_code == 404


def test_allowed_compressors_are_a_setting(tmp_path):
    catalog = from_uri(
        f"sqlite:///{tmp_path / 'c.db'}",
        writable_storage=tmp_path / "data",
        init_if_not_exists=True,
    )
    app = build_app(
        catalog,
        authentication={"single_user_api_key": KEY},
        server_settings={"zarr_write_compressors": ["zstd"]},
    )
    with serve(app) as live:
        store = fsspec_store(f"{live.url}/zarr/v3/gz")
        with pytest.raises(Exception) as refused:  # noqa: B017 - fsspec raises aiohttp's error
            zarr.create_array(store, shape=(4,), chunks=(2,), dtype="f4", compressors=GzipCodec())
        assert "400" in str(refused.value)
        zarr.create_array(
            fsspec_store(f"{live.url}/zarr/v3/zs"), shape=(4,), chunks=(2,), dtype="f4"
        )
        with pytest.raises(Exception):  # noqa: B017
            zarr.create_array(
                fsspec_store(f"{live.url}/zarr/v3/crc"),
                shape=(4,),
                chunks=(2,),
                dtype="f4",
                compressors=Crc32cCodec(),
            )
        assert native(live.url, "metadata", "gz").status_code == 404


def test_in_memory_trees_and_registered_files_are_read_only(server, name, tmp_path):
    tree = MapAdapter({"a": ArrayAdapter.from_array(numpy.arange(4.0))})
    with serve(build_app(tree, authentication={"single_user_api_key": KEY})) as live:
        refused = put(f"{live.url}/zarr/v3/a", "c/0", numpy.zeros(4).tobytes())
        assert refused.status_code == 405 and "not support" in refused.json()["detail"]
        refused = put(f"{live.url}/zarr/v3", "b/zarr.json", json.dumps(V3_ARRAY).encode())
        assert refused.status_code == 405
        assert httpx.delete(f"{live.url}/zarr/v3/a/zarr.json", headers=HEADERS).status_code == 405
    path = server.files / name
    stored = zarr.create_array(str(path), shape=(4,), chunks=(2,), dtype="f4", zarr_format=3)
    stored[...] = 1.0
    registered = httpx.post(
        f"{server.url}/api/v1/register/",
        json={"id": name, "structure_family": "array", "metadata": {}, "specs": [], "data_sources": [{
            "structure_family": "array", "mimetype": "application/x-zarr", "management": "external",
            "assets": [{"data_uri": f"file://localhost{path}", "is_directory": True, "parameter": "data_uri", "num": None}],
        }]},
        headers=HEADERS,
    )  # fmt: skip
    assert registered.status_code == 200, registered.text
    before = (path / "c" / "0").read_bytes()
    assert put(f"{server.url}/zarr/v3/{name}", "c/0", b"\x00" * 8).status_code == 405
    assert (
        httpx.delete(f"{server.url}/zarr/v3/{name}/zarr.json", headers=HEADERS).status_code == 405
    )
    assert (path / "c" / "0").read_bytes() == before


def test_deletes(server, name, zarr_format):
    url = f"{server.url}/zarr/v{zarr_format}/{name}"
    group = zarr.open_group(fsspec_store(url), mode="w-", zarr_format=zarr_format)
    group.create_array("a", shape=(4,), chunks=(2,), dtype="f8")[...] = [1, 2, 3, 4]
    group.attrs["x"] = 1
    chunk = "c/1" if zarr_format == 3 else "1"
    assert httpx.delete(f"{url}/a/{chunk}", headers=HEADERS).status_code == 204
    assert httpx.get(f"{url}/a/{chunk}", headers=HEADERS).status_code == 404
    numpy.testing.assert_array_equal(
        zarr.open_array(fsspec_store(f"{url}/a", True), mode="r")[...], [1, 2, 0, 0]
    )
    if zarr_format == 2:
        assert httpx.delete(f"{url}/.zattrs", headers=HEADERS).status_code == 204
        assert native(server.url, "metadata", name).json()["data"]["attributes"]["metadata"] == {}
    document = "zarr.json" if zarr_format == 3 else ".zarray"
    assert httpx.delete(f"{url}/a/{document}", headers=HEADERS).status_code == 204
    assert native(server.url, "metadata", f"{name}/a").status_code == 404
    assert httpx.delete(f"{url}/a/{document}", headers=HEADERS).status_code == 404
    root = "zarr.json" if zarr_format == 3 else ".zgroup"
    assert (
        httpx.delete(f"{server.url}/zarr/v{zarr_format}/{root}", headers=HEADERS).status_code == 400
    )
    assert httpx.delete(f"{url}/{root}", headers=HEADERS).status_code == 204
    assert native(server.url, "metadata", name).status_code == 404


def test_v2_attributes_may_arrive_before_their_node(server, name, monkeypatch):
    import threading

    from tiled.server.zarr import writes

    url = f"{server.url}/zarr/v2/{name}"
    zarr.open_group(fsspec_store(url), mode="w-", zarr_format=2)
    array_document = json.dumps({
        "zarr_format": 2, "shape": [4], "chunks": [2], "dtype": "<f8", "compressor": None,
        "fill_value": 0.0, "filters": None, "order": "C",
    }).encode()  # fmt: skip
    attributes = json.dumps({"units": "s", "_ARRAY_DIMENSIONS": ["t"]}).encode()
    # The .zarray is sent once the .zattrs waits for its node (not after a pause that a loaded
    # machine may not keep the order of), and the node is given longer than the server's
    # 2 s to arrive (a loaded machine may take as long to create it).
    waiting = threading.Event()
    wait_for_node = writes._wait_for_node

    async def told(*args):
        waiting.set()
        return await wait_for_node(*args)

    def node_once_awaited() -> httpx.Response:
        assert waiting.wait(timeout=60), "the attributes did not wait for their node"
        return put(url, "a/.zarray", array_document)

    with monkeypatch.context() as patched:
        patched.setattr(writes, "_wait_for_node", told)
        patched.setattr(writes, "ATTRIBUTES_WAIT_SECONDS", 60.0)
        with concurrent.futures.ThreadPoolExecutor(2) as pool:
            early = pool.submit(
                httpx.put, f"{url}/a/.zattrs", content=attributes, headers=HEADERS, timeout=90
            )
            later = pool.submit(node_once_awaited)
            assert early.result().status_code == 204, early.result().text
            assert later.result().status_code == 201
    described = native(server.url, "metadata", f"{name}/a").json()["data"]["attributes"]
    assert described["metadata"] == {"units": "s"} and described["structure"]["dims"] == ["t"]
    assert put(url, "b/.zattrs", attributes).status_code == 404  # nothing came


def test_documents_of_the_other_format_are_refused(server, name):
    refused = put(f"{server.url}/zarr/v2/{name}", "zarr.json", json.dumps(V3_ARRAY).encode())
    assert refused.status_code == 400 and "/zarr/v3" in refused.json()["detail"]
    refused = put(f"{server.url}/zarr/v3/{name}", ".zgroup", b'{"zarr_format": 2}')
    assert refused.status_code == 400 and "/zarr/v2" in refused.json()["detail"]
    assert native(server.url, "metadata", name).status_code == 404


@pytest.mark.parametrize("method", ["PATCH", "POST", "TRACE", "MKCOL"])
def test_other_methods_are_405(server, method):
    response = httpx.request(method, f"{server.url}/zarr/v3/zarr.json", headers=HEADERS)
    assert response.status_code == 405 and "PUT" in response.headers["allow"]
    assert method in response.json()["detail"]


def test_attributes_of_xarray_nodes_go_back_under_attrs(server, name):
    made = httpx.post(
        f"{server.url}/api/v1/metadata/",
        json={
            "id": name, "structure_family": "array", "specs": ["xarray_data_var"],
            "metadata": {"attrs": {"units": "m"}, "source": "client"},
            "data_sources": [{
                "structure_family": "array", "mimetype": "application/x-zarr",
                "structure": {
                    "data_type": {"endianness": "little", "kind": "f", "itemsize": 8, "dt_units": None},
                    "chunks": [[2]], "shape": [2], "dims": ["t"], "resizable": False,
                },
            }],
        },
        headers=HEADERS,
    )  # fmt: skip
    assert made.status_code == 200, made.text
    array = zarr.open_array(fsspec_store(f"{server.url}/zarr/v3/{name}"), mode="r+")
    assert dict(array.attrs) == {"units": "m"}
    array.attrs["units"] = "km"
    assert native(server.url, "metadata", name).json()["data"]["attributes"]["metadata"] == {
        "attrs": {"units": "km"},
        "source": "client",
    }


# --- found in review: races, odd input, the event loop ---------------------------------------


def group_document(attributes: dict | None = None) -> bytes:
    return json.dumps(
        {"zarr_format": 3, "node_type": "group", "attributes": attributes or {}}
    ).encode()


def test_conditional_document_writes_admit_one_writer(server, name):
    base = f"{server.url}/zarr/v3"
    assert put(base, f"{name}/zarr.json", group_document()).status_code == 201
    etag = httpx.get(f"{base}/{name}/zarr.json", headers=HEADERS).headers["etag"]
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(
            lambda i: put(base, f"{name}/zarr.json", group_document({"i": i}), **{"If-Match": etag}).status_code,
            range(8),
        ))  # fmt: skip
    assert sorted(answers) == [204] + [412] * 7


def test_concurrent_creators_of_one_group(server, name):
    base = f"{server.url}/zarr/v3"
    with concurrent.futures.ThreadPoolExecutor(6) as pool:
        plain = list(
            pool.map(
                lambda _: put(base, f"{name}/zarr.json", group_document()).status_code, range(6)
            )
        )
        only_new = list(pool.map(
            lambda _: put(base, f"{name}-x/zarr.json", group_document(), **{"If-None-Match": "*"}).status_code,
            range(6),
        ))  # fmt: skip
    assert sorted(plain) == [201] + [204] * 5
    assert sorted(only_new) == [201] + [412] * 5


@pytest.mark.parametrize(
    "body, words",
    [
        (group_document({"x": 123456789012345678901234567890}), "cannot be stored"),
        (group_document({"\ud800": 1}), "cannot be stored"),
        (
            b'{"zarr_format": 3, "node_type": "group", "attributes": {"x": '
            + b"[" * 5000
            + b"]" * 5000
            + b"}}",
            "JSON",
        ),
        (
            json.dumps(
                {
                    **V3_ARRAY,
                    "shape": [2**62],
                    "chunk_grid": {"name": "regular", "configuration": {"chunk_shape": [1]}},
                }
            ).encode(),
            "chunk grid",
        ),
        (
            json.dumps(
                {
                    **V3_ARRAY,
                    "chunk_grid": {"name": "regular", "configuration": {"chunk_shape": [2**40]}},
                }
            ).encode(),
            "limit",
        ),
        (
            json.dumps(
                {
                    **V3_ARRAY,
                    "chunk_key_encoding": {"name": "v2", "configuration": {"separator": "."}},
                }
            ).encode(),
            "chunk key encoding",
        ),
        (
            json.dumps(
                {
                    **V3_ARRAY,
                    "chunk_key_encoding": {"name": "default", "configuration": {"separator": "."}},
                }
            ).encode(),
            "chunk key encoding",
        ),
    ],
)
def test_odd_documents_are_400_and_create_nothing(server, name, body, words):
    refused = put(f"{server.url}/zarr/v3", f"{name}/zarr.json", body)
    assert refused.status_code == 400, refused.text
    assert words in refused.json()["detail"]
    assert native(server.url, "metadata", name).status_code == 404
    assert httpx.get(f"{server.url}/zarr/v3/zarr.json", headers=HEADERS).status_code == 200


def test_v2_documents_with_slash_separated_keys_are_refused(server, name):
    store = fsspec_store(f"{server.url}/zarr/v2/{name}")
    with pytest.raises(Exception) as refused:  # noqa: B017 - fsspec raises aiohttp's error
        zarr.create_array(store, shape=(4, 4), chunks=(2, 2), dtype="f4", zarr_format=2,
                          chunk_key_encoding={"name": "v2", "separator": "/"})  # fmt: skip
    assert "400" in str(refused.value)
    assert native(server.url, "metadata", name).status_code == 404


def test_odd_chunk_keys(server, name):
    base = f"{server.url}/zarr/v3/{name}"
    assert put(base, "zarr.json", json.dumps(V3_ARRAY).encode()).status_code == 201
    body = numpy.zeros(2, "<f4").tobytes()
    for key in ("c/" + "9" * 5000, "c/00", "c/\u0660", "c/0%0A"):
        assert put(base, key, body).status_code in (400, 404), key
        assert httpx.get(f"{base}/{key}", headers=HEADERS).status_code == 404, key
    assert put(base, "c/0", body).status_code == 201  # the one spelling of chunk 0


def test_propfind_gives_chunk_etags_to_readers_of_data(server, name):
    base = f"{server.url}/zarr/v3/{name}"
    assert put(base, "zarr.json", json.dumps(V3_ARRAY).encode()).status_code == 201
    written = put(base, "c/1", numpy.ones(2, "<f4").tobytes())
    listing = httpx.request("PROPFIND", f"{base}/c/1", headers={**HEADERS, "Depth": "0"}).text
    assert f"<D:getetag>{written.headers['etag']}</D:getetag>" in listing


def test_root_attributes_written_unchanged(server):
    root = httpx.get(f"{server.url}/zarr/v3/zarr.json", headers=HEADERS).json()
    unchanged = json.dumps(
        {"zarr_format": 3, "node_type": "group", "attributes": root["attributes"]}
    )
    assert put(f"{server.url}/zarr/v3", "zarr.json", unchanged.encode()).status_code == 204
    changed = group_document({"new": 1})
    assert put(f"{server.url}/zarr/v3", "zarr.json", changed).status_code == 405


def test_a_chunk_write_waiting_for_a_lock_does_not_stop_the_server(server, name):
    import fcntl
    import os
    import threading

    base = f"{server.url}/zarr/v3/{name}"
    assert put(base, "zarr.json", json.dumps(V3_ARRAY).encode()).status_code == 201
    described = httpx.get(
        f"{server.url}/api/v1/metadata/{name}", params={"include_data_sources": "true"},
        headers=HEADERS,
    ).json()  # fmt: skip
    source = described["data"]["attributes"]["data_sources"][0]
    directory = source["assets"][0]["data_uri"].removeprefix("file://localhost")
    release = threading.Event()
    holder = os.open(directory, os.O_RDONLY)
    fcntl.flock(holder, fcntl.LOCK_EX)  # as another process writing the array would
    try:
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            waiting = pool.submit(put, base, "c/0", numpy.zeros(2, "<f4").tobytes())
            # The server answers others while that write waits for the lock.
            assert httpx.get(f"{server.url}/healthz", timeout=30).status_code == 200
            assert not waiting.done()
            release.set()
            fcntl.flock(holder, fcntl.LOCK_UN)
            assert waiting.result().status_code == 201
    finally:
        os.close(holder)
