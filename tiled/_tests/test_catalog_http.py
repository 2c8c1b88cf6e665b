"""The catalog through HTTP on SQLite and PostgreSQL: write with /api/v1, read with /api/v1 and
zarr-python (both formats), stored chunks passed through, refused writes change nothing."""

from __future__ import annotations

import io

import httpx
import numpy
import pandas
import pyarrow
import pytest
import zarr
from fsspec.implementations.http import HTTPFileSystem

from tiled.catalog import from_uri
from tiled.server.app import build_app
from tiled.structures.array import ArrayStructure, data_type_from_numpy
from tiled.structures.table import TableStructure

from .live_server import serve
from .test_catalog import database_uri, postgres_database, snapshot, storage  # noqa: F401 (fixtures)

HEADERS = {"Authorization": "Apikey secret"}


def array_request(key: str, data: numpy.ndarray, chunks) -> dict:
    structure = ArrayStructure(data_type_from_numpy(data.dtype), chunks, data.shape)
    return {
        "id": key,
        "structure_family": "array",
        "metadata": {"units": "m"},
        "specs": [],
        "data_sources": [
            {
                "structure_family": "array",
                "structure": structure.to_json(),
                "assets": [],
                "management": "writable",
            }
        ],
    }


def table_request(key: str, frame: pandas.DataFrame) -> dict:
    structure = TableStructure.from_pandas(frame, npartitions=1)
    return {
        "id": key,
        "structure_family": "table",
        "metadata": {},
        "specs": [],
        "data_sources": [
            {
                "structure_family": "table",
                "structure": structure.to_json(),
                "assets": [],
                "management": "writable",
            }
        ],
    }


def arrow_bytes(frame: pandas.DataFrame) -> bytes:
    sink = io.BytesIO()
    table = pyarrow.Table.from_pandas(frame, preserve_index=False)
    with pyarrow.ipc.new_file(sink, table.schema) as writer:
        writer.write_table(table)
    return sink.getvalue()


@pytest.fixture
def live_catalog(database_uri, storage):  # noqa: F811
    def start():
        tree = from_uri(database_uri, writable_storage=storage, init_if_not_exists=True)
        return serve(build_app(tree, authentication={"single_user_api_key": "secret"})), tree

    return start


def test_write_then_read_natively_and_with_zarr(live_catalog, storage):  # noqa: F811
    data = numpy.arange(20 * 30, dtype="float64").reshape(20, 30)
    server_context, _ = live_catalog()
    with server_context as server, httpx.Client(base_url=server.url, headers=HEADERS) as client:
        assert (
            client.post(
                "/api/v1/metadata/",
                json={"id": "c", "structure_family": "container", "metadata": {"a": 1}},
            ).status_code
            == 200
        )
        created = client.post(
            "/api/v1/metadata/c", json=array_request("x", data, [[10, 10], [10, 10, 10]])
        )
        assert created.status_code == 200, created.text
        source = created.json()["data_sources"][0]
        assert source["mimetype"] == "application/x-zarr" and source["management"] == "writable"
        assert client.put("/api/v1/array/full/c/x", content=data.tobytes()).status_code == 200
        native = client.get("/api/v1/array/full/c/x")
        numpy.testing.assert_array_equal(numpy.frombuffer(native.content).reshape(20, 30), data)
        fs = HTTPFileSystem(client_kwargs={"headers": HEADERS})
        for zarr_format in (2, 3):
            root = zarr.open(fs.get_mapper(f"{server.url}/zarr/v{zarr_format}/"), mode="r")
            numpy.testing.assert_array_equal(root["c/x"][...], data)
            assert root["c/x"].attrs["units"] == "m" and root["c"].attrs["a"] == 1
        # The chunk served is the stored file, byte for byte, in both formats.
        stored = next(p for p in storage.rglob("c/1/2") if p.is_file()).read_bytes()
        assert (
            client.get("/zarr/v3/c/x/c/1/2").content
            == stored
            == client.get("/zarr/v2/c/x/1.2").content
        )
        before = client.get("/zarr/v3/c/x/c/1/2").headers["etag"]
        document = client.get("/zarr/v3/c/x/zarr.json").content
        block = -numpy.ones((10, 10))
        assert (
            client.put(
                "/api/v1/array/block/c/x", params={"block": "1,2"}, content=block.tobytes()
            ).status_code
            == 200
        )
        assert client.get("/zarr/v3/c/x/c/1/2").headers["etag"] != before  # visible at once
        assert client.get("/zarr/v3/c/x/zarr.json").content == document
        root = zarr.open(fs.get_mapper(f"{server.url}/zarr/v3/"), mode="r")
        numpy.testing.assert_array_equal(root["c/x"][10:, 20:], block)
    server_context, _ = live_catalog()  # a new server on the same database and storage
    with server_context as server, httpx.Client(base_url=server.url, headers=HEADERS) as client:
        again = numpy.frombuffer(client.get("/api/v1/array/full/c/x").content).reshape(20, 30)
        numpy.testing.assert_array_equal(again[10:, 20:], block)


def test_tables_metadata_revisions_and_delete(live_catalog, storage):  # noqa: F811
    frame = pandas.DataFrame({"a": numpy.arange(5.0), "b": ["x", "y", "z", "w", "v"]})
    server_context, _ = live_catalog()
    with server_context as server, httpx.Client(base_url=server.url, headers=HEADERS) as client:
        assert client.post("/api/v1/metadata/", json=table_request("t", frame)).status_code == 200
        assert (
            client.put(
                "/api/v1/table/full/t",
                content=arrow_bytes(frame),
                headers={"Content-Type": "application/vnd.apache.arrow.file"},
            ).status_code
            == 200
        )
        more = pandas.DataFrame({"a": [5.0], "b": ["u"]})
        appended = client.patch(
            "/api/v1/table/partition/t",
            params={"partition": 0},
            content=arrow_bytes(more),
            headers={"Content-Type": "application/vnd.apache.arrow.file"},
        )
        assert appended.status_code == 200, appended.text
        read = client.get("/api/v1/table/full/t", params={"format": "json"}).json()
        assert read["a"] == [0.0, 1.0, 2.0, 3.0, 4.0, 5.0] and read["b"][-1] == "u"
        root = zarr.open(
            HTTPFileSystem(client_kwargs={"headers": HEADERS}).get_mapper(f"{server.url}/zarr/v3/"),
            mode="r",
        )
        assert list(root["t"]["b"][...]) == ["x", "y", "z", "w", "v", "u"]
        assert client.put("/api/v1/metadata/t", json={"metadata": {"v": 2}}).status_code == 200
        patch = {"content-type": "application/merge-patch+json", "metadata": {"w": 3}}
        assert client.patch("/api/v1/metadata/t", json=patch).status_code == 200
        assert client.get("/api/v1/metadata/t").json()["data"]["attributes"]["metadata"] == {
            "v": 2,
            "w": 3,
        }
        revisions = client.get("/api/v1/revisions/t").json()
        assert revisions["meta"]["count"] == 2
        assert [r["attributes"]["metadata"] for r in revisions["data"]] == [{}, {"v": 2}]
        assert client.delete("/api/v1/metadata/t").status_code == 409  # would delete written data
        assert (
            client.delete("/api/v1/metadata/t", params={"external_only": False}).status_code == 200
        )
        assert client.get("/api/v1/metadata/t").status_code == 404
        assert client.get("/zarr/v3/t/zarr.json").status_code == 404
    assert [p for p in storage.rglob("*") if p.is_file()] == []


REFUSED = [
    ("put", "/api/v1/array/full/x", {"content": b"\0" * 7}, 400),
    ("put", "/api/v1/array/block/x", {"params": {"block": "5,0"}, "content": b"\0" * 800}, 422),
    ("put", "/api/v1/array/block/x", {"params": {"block": "0"}, "content": b"\0" * 800}, 422),
    (
        "put",
        "/api/v1/array/full/x",
        {"content": b"\0" * 3200, "headers": {"Content-Type": "text/csv"}},
        415,
    ),
    ("post", "/api/v1/metadata/", {"json": {"id": "x", "structure_family": "container"}}, 409),
    ("post", "/api/v1/metadata/", {"json": {"id": "a/b", "structure_family": "container"}}, 422),
    ("post", "/api/v1/metadata/", {"json": {"id": "..", "structure_family": "container"}}, 422),
    (
        "post",
        "/api/v1/metadata/",
        {"json": {"id": "bad\u0001key", "structure_family": "container"}},
        422,
    ),
    (
        "post",
        "/api/v1/metadata/",
        {"json": {"id": "y", "structure_family": "array", "data_sources": []}},
        400,
    ),
    (
        "patch",
        "/api/v1/metadata/x",
        {
            "json": {
                "content-type": "application/json-patch+json",
                "metadata": [{"op": "remove", "path": "/nope"}],
            }
        },
        400,
    ),
    ("patch", "/api/v1/metadata/x", {"json": {"content-type": "text/plain", "metadata": {}}}, 406),
    # A patch of access_tags must leave a list of tag names (was a 500, or stored dict keys).
    (
        "patch",
        "/api/v1/metadata/x",
        {"json": {"content-type": "application/merge-patch+json", "access_tags": [1, 2]}},
        400,
    ),
    (
        "patch",
        "/api/v1/metadata/x",
        {"json": {"content-type": "application/merge-patch+json", "access_tags": {"a": "b"}}},
        400,
    ),
]


@pytest.mark.parametrize(("method", "url", "kwargs", "status"), REFUSED)
async def test_refused_writes_change_nothing(live_catalog, storage, method, url, kwargs, status):  # noqa: F811
    data = numpy.arange(20 * 20, dtype="float64").reshape(20, 20)
    server_context, tree = live_catalog()
    with server_context as server, httpx.Client(base_url=server.url, headers=HEADERS) as client:
        assert (
            client.post(
                "/api/v1/metadata/", json=array_request("x", data, [[10, 10], [10, 10]])
            ).status_code
            == 200
        )
        assert client.put("/api/v1/array/full/x", content=data.tobytes()).status_code == 200
        before = (
            client.get("/api/v1/array/full/x").content,
            sorted(p.name for p in storage.rglob("*")),
        )
        kwargs = dict(kwargs)  # the parameter list is shared by both back ends
        headers = {**HEADERS, **kwargs.pop("headers", {})}
        response = getattr(client, method)(url, headers=headers, **kwargs)
        assert response.status_code == status, response.text
        assert "detail" in response.json()
        after = (
            client.get("/api/v1/array/full/x").content,
            sorted(p.name for p in storage.rglob("*")),
        )
        assert after == before
        assert client.get("/api/v1/metadata/x").json()["data"]["attributes"]["metadata"] == {
            "units": "m"
        }


@pytest.mark.parametrize("policy_name", ["tags", "simple"])
def test_access_policies_on_a_catalog(database_uri, storage, policy_name):  # noqa: F811
    from tiled.access.policies import SimpleAccessPolicy, TagBasedAccessPolicy

    policies = {
        "tags": TagBasedAccessPolicy({"open": {"public": ["read:metadata", "read:data"]}}),
        "simple": SimpleAccessPolicy({}, public=["seen"]),
    }
    tree = from_uri(database_uri, writable_storage=storage, init_if_not_exists=True)
    writer = build_app(tree, authentication={"single_user_api_key": "secret"})
    with serve(writer) as server, httpx.Client(base_url=server.url, headers=HEADERS) as client:
        for key, tags in [("seen", ["open"]), ("hidden", ["closed"]), ("untagged", None)]:
            body = {
                "id": key,
                "structure_family": "container",
                "access_blob": {"tags": tags} if tags else None,
            }
            assert client.post("/api/v1/metadata/", json=body).status_code == 200
    public = build_app(
        tree, authentication={"allow_anonymous_access": True}, access_policy=policies[policy_name]
    )
    with serve(public) as server, httpx.Client(base_url=server.url) as client:
        assert [item["id"] for item in client.get("/api/v1/search/").json()["data"]] == ["seen"]
        assert client.get("/api/v1/search/").json()["meta"]["count"] == 1
        assert client.get("/zarr/v3/").json() == [f"{server.url}/zarr/v3/seen"]
        assert sorted(
            client.get("/zarr/v3/zarr.json").json()["consolidated_metadata"]["metadata"]
        ) == ["seen"]
        assert client.get("/api/v1/metadata/hidden").status_code == 404
        assert client.get("/zarr/v2/untagged/.zgroup").status_code == 404


def test_client_disconnect_mid_upload_changes_nothing(live_catalog, storage):  # noqa: F811
    import socket
    import time

    data = numpy.arange(100, dtype="float64")
    server_context, _ = live_catalog()
    with server_context as server, httpx.Client(base_url=server.url, headers=HEADERS) as client:
        assert (
            client.post("/api/v1/metadata/", json=array_request("x", data, [[50, 50]])).status_code
            == 200
        )
        assert client.put("/api/v1/array/full/x", content=data.tobytes()).status_code == 200
        before = sorted((p.name, p.stat().st_mtime_ns) for p in storage.rglob("*") if p.is_file())
        with socket.create_connection(("127.0.0.1", server.port)) as raw:
            head = (
                "PUT /api/v1/array/full/x HTTP/1.1\r\nHost: x\r\nAuthorization: Apikey secret\r\n"
                "Content-Type: application/octet-stream\r\nContent-Length: 800\r\n\r\n"
            )
            raw.sendall(head.encode() + b"\xff" * 300)  # then hang up, 500 bytes short
        time.sleep(0.5)
        after = sorted((p.name, p.stat().st_mtime_ns) for p in storage.rglob("*") if p.is_file())
        assert after == before
        numpy.testing.assert_array_equal(
            numpy.frombuffer(client.get("/api/v1/array/full/x").content), data
        )


def test_bad_specs_are_422(live_catalog):
    server_context, _ = live_catalog()
    with server_context as server, httpx.Client(base_url=server.url, headers=HEADERS) as client:
        for specs in (["x", "x"], [f"s{i}" for i in range(21)], [{"version": "1"}]):
            response = client.post(
                "/api/v1/metadata/",
                json={"id": "n", "structure_family": "container", "specs": specs},
            )
            assert response.status_code == 422, response.text
        assert (
            client.post(
                "/api/v1/metadata/", json={"id": "n", "structure_family": "container"}
            ).status_code
            == 200
        )
        assert client.put("/api/v1/metadata/n", json={"specs": ["a", "a"]}).status_code == 422


def test_query_values_no_database_binds_are_400(live_catalog):
    # A lone surrogate or an integer past 64 bits cannot be sent to SQLite or PostgreSQL: it
    # was a 500 on search and distinct.
    eq = "filter[eq][condition][key]=color&filter[eq][condition][value]="
    server_context, _ = live_catalog()
    with server_context as server, httpx.Client(base_url=server.url, headers=HEADERS) as client:
        assert client.post(
            "/api/v1/metadata/", json={"id": "n", "structure_family": "container"}
        ).is_success
        for value in ('"\\ud800"', str(2**63), str(-(2**63) - 1), "[18446744073709551616]"):
            for route in ("/api/v1/search/", "/api/v1/distinct/"):
                response = client.get(f"{route}?{eq}{value}")
                assert response.status_code == 400, (route, value, response.text)
                assert response.json()["detail"]
        within = client.get(f"/api/v1/search/?{eq}{2**63 - 1}")
        assert within.status_code == 200 and within.json()["data"] == []


def test_columns_labelled_by_integers_are_members_by_their_names(live_catalog):
    """A frame with columns 0 and 1 is stored with pandas' metadata, which brings the integer
    labels back on reads; its structure lists the names "0" and "1", by which the columns are
    members (they were 404)."""
    from tiled.client import from_uri as client_from_uri

    server_context, _ = live_catalog()
    with server_context as server, httpx.Client(base_url=server.url, headers=HEADERS) as http:
        client = client_from_uri(server.url, api_key="secret")
        client.write_dataframe(pandas.DataFrame({0: [1, 2], 1: [3.5, 4.5]}), key="t")
        assert client["t"].structure().columns == ["0", "1"]
        column = http.get("/api/v1/array/full/t/1", params={"format": "application/json"})
        assert column.status_code == 200 and column.json() == [3.5, 4.5]
        chunk = http.get("/zarr/v3/t/0/c/0")
        assert chunk.status_code == 200, chunk.text
        assert client["t"]["0"].read().tolist() == [1, 2]
        assert client["t"].read().to_dict("list") == {"0": [1, 2], "1": [3.5, 4.5]}
