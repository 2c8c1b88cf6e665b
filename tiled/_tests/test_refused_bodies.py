"""Write bodies the /api/v1 routes refuse with a 4xx and a JSON ``detail``, changing nothing:
bodies larger than the write can use (413, before they are held in memory), values that do
not fit the node's type, awkward buffers that do not form an array, repeated or extra sparse
coordinates, a ``slice`` on a whole-array write; and the reads that answered 500."""

from __future__ import annotations

import http.client
import io
import json
import select
import time
import zipfile
from contextlib import contextmanager

import awkward
import httpx
import numpy
import pandas
import pytest

from tiled.catalog import from_uri as catalog_from_uri
from tiled.client import from_uri
from tiled.server.app import build_app

from .live_server import serve
from .test_catalog import database_uri, postgres_database, storage  # noqa: F401 (fixtures)
from .test_catalog_http import HEADERS, arrow_bytes

ARROW = "application/vnd.apache.arrow.file"
OCTETS = "application/octet-stream"
ZIP = "application/zip"
JSON = "application/json"
ARRAY = numpy.arange(8, dtype="float64")  # 64 bytes: the largest body its full write can use
ROWS = [[1, 2], [3]]


@pytest.fixture
def live(tmp_path, database_uri, storage):  # noqa: F811
    """Start a server on a catalog with directory storage and DuckDB storage (for ragged
    arrays) holding one written node of each family the write routes take."""

    @contextmanager
    def start(**server_settings):
        tree = catalog_from_uri(
            database_uri,
            writable_storage=[storage, f"duckdb:///{tmp_path / 'ragged.duckdb'}"],
            init_if_not_exists=True,
        )
        app = build_app(
            tree,
            authentication={"single_user_api_key": "secret"},
            server_settings=server_settings,
        )
        with serve(app) as server, httpx.Client(base_url=server.url, headers=HEADERS) as http:
            client = from_uri(server.url, api_key="secret")
            client.write_array(ARRAY, key="arr")
            client.write_dataframe(pandas.DataFrame({"a": numpy.arange(4.0)}), key="tab")
            client.write_sparse(coords=[[0, 2]], data=[1.0, 2.0], shape=(4,), key="sp")
            client.write_awkward(awkward.Array(ROWS), key="awk")
            client.write_ragged(ROWS, key="rag")
            yield server, http

    return start


def _state(http: httpx.Client, storage) -> tuple:  # noqa: F811
    """What a refused write must leave as it was: every node's data and catalog entry, and
    every stored file."""
    reads = [
        http.get("/api/v1/array/full/arr").content,
        http.get("/api/v1/table/full/tab", params={"format": "json"}).content,
        http.get("/api/v1/array/full/sp", params={"format": "json"}).content,
        http.get("/api/v1/awkward/full/awk", params={"format": "json"}).content,
        http.get("/api/v1/ragged/full/rag", params={"format": "json"}).content,
    ]
    entries = [
        http.get(f"/api/v1/metadata/{key}").json()["data"]["attributes"]
        for key in ("arr", "tab", "sp", "awk", "rag")
    ]
    files = sorted(
        (str(p.relative_to(storage)), p.stat().st_size, p.stat().st_mtime_ns)
        for p in storage.rglob("*")
        if p.is_file()
    )
    return reads, entries, files


def _refused(response: httpx.Response, status: int) -> None:
    assert response.status_code == status, response.text
    assert response.json()["detail"]


@contextmanager
def _request_head(server, method: str, url: str, headers: dict[str, str]):
    """A connection that has sent the head of a request, and nothing of its body yet; a
    server still waiting for the body after 5 s fails the test (socket timeout)."""
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=5)
    try:
        connection.putrequest(method, url)
        for name, value in {**HEADERS, **headers}.items():
            connection.putheader(name, value)
        connection.endheaders()
        yield connection
    finally:
        connection.close()  # the server is stopped next: it need not wait for this one


def _answer(connection) -> tuple[int, dict]:
    response = connection.getresponse()
    return response.status, json.loads(response.read())


# The routes that take a body, with the media type a client sends them.
BODY_ROUTES = [
    ("PUT", "/api/v1/array/full/arr", OCTETS),
    ("PUT", "/api/v1/array/block/arr?block=0", OCTETS),
    ("PATCH", "/api/v1/array/full/arr?offset=8&shape=2&extend=true", OCTETS),
    ("PUT", "/api/v1/array/full/sp", ARROW),
    ("PUT", "/api/v1/table/full/tab", ARROW),
    ("PUT", "/api/v1/table/partition/tab?partition=0", ARROW),
    ("PATCH", "/api/v1/table/partition/tab?partition=0", ARROW),
]
# The ragged and awkward routes (tiled/server/api/ragged.py, awkward.py).
OTHER_BODY_ROUTES = [
    ("PUT", "/api/v1/ragged/full/rag", JSON),
    ("PATCH", "/api/v1/ragged/full/rag?offset=2&extend=true", JSON),
    ("PUT", "/api/v1/awkward/full/awk", ZIP),
    # Read by the framework (tiled.server.bodies.BodyLimit): documents.
    ("POST", "/api/v1/metadata/", JSON),
    ("PUT", "/api/v1/metadata/arr", JSON),
    ("PATCH", "/api/v1/metadata/arr", JSON),
    ("POST", "/api/v1/auth/provider/toy/token", "application/x-www-form-urlencoded"),
    ("POST", "/api/v1/table/full/tab", JSON),
    ("POST", "/api/v1/awkward/buffers/awk", JSON),
]


@pytest.mark.parametrize(("method", "url", "media_type"), BODY_ROUTES + OTHER_BODY_ROUTES)
def test_a_declared_oversized_body_is_refused_at_once(live, storage, method, url, media_type):  # noqa: F811
    with live() as (server, http):
        before = _state(http, storage)
        started = time.monotonic()
        # A terabyte declared, none sent: the server answers without waiting for it.
        head = {"Content-Type": media_type, "Content-Length": str(10**12)}
        with _request_head(server, method, url, head) as connection:
            status, document = _answer(connection)
        assert time.monotonic() - started < 5
        assert status == 413 and document["detail"]
        assert _state(http, storage) == before


@pytest.mark.parametrize(
    ("method", "url", "media_type"),
    [
        ("PUT", "/api/v1/array/full/arr", OCTETS),  # held to its size, 64 bytes
        ("PUT", "/api/v1/table/full/tab", ARROW),  # held to write_max_bytes
        ("PUT", "/api/v1/array/full/sp", ARROW),
        ("POST", "/api/v1/metadata/", JSON),  # read by the framework
        ("POST", "/api/v1/table/full/tab", JSON),  # a read, with a body (a column list)
    ],
)
def test_a_streamed_body_is_refused_once_past_the_limit(live, storage, method, url, media_type):  # noqa: F811
    piece, total = 64 * 1024, 4 * 1024 * 1024
    with live(write_max_bytes=2 * piece) as (server, http):
        before = _state(http, storage)
        head = {"Content-Type": media_type, "Transfer-Encoding": "chunked"}
        sent = 0
        with _request_head(server, method, url, head) as connection:
            try:
                # Piece by piece until the server answers (before: once it had read them all).
                while sent < total and not select.select([connection.sock], [], [], 0.05)[0]:
                    connection.send(b"%x\r\n%s\r\n" % (piece, b"\xff" * piece))
                    sent += piece
                if sent == total:
                    connection.send(b"0\r\n\r\n")
            except (BrokenPipeError, ConnectionResetError):
                pass  # the server hung up after answering
            status, document = _answer(connection)
        assert status == 413 and document["detail"]
        assert sent < total  # answered while the body was still coming
        assert _state(http, storage) == before


@pytest.mark.parametrize(
    "body",
    [
        b"[[99999999999999999999999], [3]]",  # was a 500 (OverflowError)
        b"[[1.9, 2.7], [3.5]]",  # was stored truncated, as [[1, 2], [3]]
        b"[[true], [3]]",
        b'[["1"], [3]]',
        b"[[null], [3]]",
    ],
)
def test_ragged_values_that_do_not_fit_its_type_are_refused(live, storage, body):  # noqa: F811
    with live() as (server, http):
        before = _state(http, storage)
        for method, url in [
            ("PUT", "/api/v1/ragged/full/rag"),
            ("PUT", "/api/v1/ragged/block/rag?block=0"),
        ]:
            _refused(http.request(method, url, content=body, headers={"Content-Type": JSON}), 400)
        appended = http.patch(
            "/api/v1/ragged/full/rag",
            params={"offset": 2, "extend": True},
            content=body.replace(b"], [3]", b""),
            headers={"Content-Type": JSON},
        )
        _refused(appended, 400)
        assert _state(http, storage) == before


def _zip(buffers: dict[str, numpy.ndarray]) -> bytes:
    file = io.BytesIO()
    with zipfile.ZipFile(file, "w") as archive:
        for name, value in buffers.items():
            archive.writestr(name, numpy.asarray(value).tobytes())
    return file.getvalue()


@pytest.mark.parametrize(
    "offsets",
    [[0, 5, 1], [-1, -1, -1], [0, 3, 2], [1, 0, 3]],
    ids=["past-the-data", "negative", "decreasing", "start-after-stop"],
)
def test_awkward_buffers_that_do_not_form_an_array_are_refused(live, storage, offsets):  # noqa: F811
    with live() as (server, http):
        before = _state(http, storage)
        body = _zip({"node0-offsets": numpy.asarray(offsets, "int64"),
                     "node1-data": numpy.asarray([7, 8, 9], "int64")})  # fmt: skip
        response = http.put("/api/v1/awkward/full/awk", content=body, headers={"Content-Type": ZIP})
        _refused(response, 400)
        assert _state(http, storage) == before


def test_awkward_buffers_of_some_form_keys(live):
    with live() as (server, http):
        url = "/api/v1/awkward/buffers/awk"
        # An array encoding needs all buffers: a 400 (was a 500, KeyError), not a guess.
        for form_keys in (["node1"], ["node0"]):
            params = {"form_key": form_keys}
            _refused(http.get(url, params=params, headers={"Accept": JSON}), 400)
        whole = http.get(url, params={"form_key": ["node0", "node1"]}, headers={"Accept": JSON})
        assert whole.status_code == 200 and whole.json() == ROWS
        # The zip file of buffers holds those asked for, and only those.
        some = http.get(url, params={"form_key": "node1"}, headers={"Accept": ZIP})
        assert some.status_code == 200, some.text
        with zipfile.ZipFile(io.BytesIO(some.content)) as archive:
            assert archive.namelist() == ["node1-data"]
            assert numpy.frombuffer(archive.read("node1-data"), "int64").tolist() == [1, 2, 3]


@pytest.mark.parametrize(
    "columns",
    [
        {"dim0": [0, 0], "data": [1.0, 2.0]},  # was stored as one entry of 3.0
        {"dim0": [0, 1], "dim1": [0, 1], "data": [1.0, 2.0]},  # dim1 was ignored
        {"dim0": [0, 1], "data": [1.0, 2.0], "extra": [0, 0]},
    ],
    ids=["repeated", "rank-2-on-rank-1", "extra-column"],
)
@pytest.mark.parametrize("url", ["/api/v1/array/full/sp", "/api/v1/array/block/sp?block=0"])
def test_sparse_coordinates_must_be_unique_and_of_the_rank(live, storage, url, columns):  # noqa: F811
    with live() as (server, http):
        before = _state(http, storage)
        body = arrow_bytes(pandas.DataFrame(columns))
        _refused(http.put(url, content=body, headers={"Content-Type": ARROW}), 400)
        assert _state(http, storage) == before


@pytest.mark.parametrize(
    "url", ["/api/v1/array/full/arr?slice=0:1", "/api/v1/array/block/arr?block=0&slice=0:1"]
)
def test_a_slice_on_a_whole_array_write_is_refused(live, storage, url):  # noqa: F811
    with live() as (server, http):
        before = _state(http, storage)
        # The body is the whole array's: it was written whole, the slice ignored.
        body = (-ARRAY).tobytes()
        _refused(http.put(url, content=body, headers={"Content-Type": OCTETS}), 400)
        assert _state(http, storage) == before


@pytest.mark.parametrize(
    ("path", "root_path", "route"),
    [
        ("/api/v1/array/full/a", "", "/api/v1/array/full/a"),
        ("/tiled/api/v1/array/full/a", "/tiled", "/api/v1/array/full/a"),
        # A proxy that removed the root path already: the path is the route.
        ("/api/v1/table/full/t", "/a-rather-long-root-path", "/api/v1/table/full/t"),
        # Not a prefix of the path: not cut off (which made a metadata POST look like an
        # array write, exempt from the limit).
        ("/api/v1/metadata/xxxxxxx/api/v1/array/q", "/api/v1/metadata/x", None),
    ],
)
def test_body_limits_match_routes_as_the_framework_does(path, root_path, route):
    from tiled.server.middleware import route_path

    assert route_path({"path": path, "root_path": root_path}) == (route or path)


def test_table_values_arrow_cannot_cast_to_the_schema_are_refused(live, storage):  # noqa: F811
    from .test_catalog_http import table_request

    with live() as (server, http):
        # A column of None only: Arrow's null type, to which no text can be cast (a cast
        # Arrow does not implement, which was a 500).
        made = http.post(
            "/api/v1/metadata/", json=table_request("nulls", pandas.DataFrame({"a": [None]}))
        )
        assert made.status_code == 200, made.text
        before = _state(http, storage)
        body = arrow_bytes(pandas.DataFrame({"a": ["text"]}))
        response = http.put(
            "/api/v1/table/full/nulls", content=body, headers={"Content-Type": ARROW}
        )
        _refused(response, 400)
        assert "schema" in response.json()["detail"]
        assert _state(http, storage) == before
