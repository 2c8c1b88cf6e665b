"""The edge of the application: what every request gets (request ids, CORS, client version
checks, CSRF) whether a shortcut (zarr keys, node metadata, health checks) or FastAPI's routes
answer it, and that the shortcuts answer as the routes they stand for."""

from __future__ import annotations

import httpx
import numpy
import pytest

from tiled.adapters.array import ArrayAdapter
from tiled.adapters.mapping import MapAdapter
from tiled.server import middleware
from tiled.server.app import build_app
from tiled.server.middleware import EdgeMiddleware, TelemetryProbe

from .live_server import serve

KEY = "secretforedgetests"
ORIGIN = "https://viewer.example"

# One path per kind of handler behind the edge, and one refusal of each.
ANSWERED = [
    "/zarr/v3/a/zarr.json",
    "/zarr/v3/a/c/0",
    "/zarr/v2/a/.zarray",
    "/api/v1/metadata/a",
    "/api/v1/array/full/a",
    "/healthz",
    "/api/v1/",
]
REFUSED = ["/zarr/v3/missing/zarr.json", "/api/v1/metadata/missing", "/api/v1/array/full/missing"]


@pytest.fixture(scope="module")
def server():
    tree = MapAdapter({"a": ArrayAdapter.from_array(numpy.arange(10))})
    app = build_app(
        tree,
        authentication={"single_user_api_key": KEY},
        server_settings={"allow_origins": [ORIGIN]},
    )
    with serve(app) as live:
        yield live


@pytest.fixture
def client(server):
    with httpx.Client(base_url=server.url, headers={"Authorization": f"Apikey {KEY}"}) as c:
        yield c


@pytest.mark.parametrize("path", ANSWERED + REFUSED)
def test_every_answer_carries_a_fresh_request_id(client, path):
    ids = {client.get(path).headers["x-tiled-request-id"] for _ in range(3)}
    assert len(ids) == 3
    assert all(len(i) == 16 and int(i, 16) >= 0 for i in ids)


@pytest.mark.parametrize("path", REFUSED)
def test_refusals_are_json_with_a_detail(client, path):
    response = client.get(path)
    assert response.status_code == 404
    assert response.json()["detail"]


def test_credentials_are_checked_on_every_shortcut(server):
    for path in ANSWERED[:-3]:
        assert httpx.get(server.url + path).status_code == 401, path
        bad = httpx.get(server.url + path, headers={"Authorization": "Apikey wrong"})
        assert bad.status_code == 401, path
        malformed = httpx.get(server.url + path, headers={"Authorization": "Nonsense"})
        assert malformed.status_code == 400, path
        assert httpx.get(server.url + path, params={"api_key": KEY}).status_code == 200, path


@pytest.mark.parametrize("path", ANSWERED)
def test_cors_on_every_handler_and_shared_responses_stay_unchanged(client, path):
    plain = client.get(path)  # the about document sets a CSRF cookie on the first visit
    for _ in range(3):
        response = client.get(path, headers={"Origin": ORIGIN})
        assert response.status_code == 200
        assert response.headers["access-control-allow-origin"] == ORIGIN
    # A response object answered many times (health checks) does not collect CORS headers.
    again = client.get(path)
    names = [name for name, _ in again.headers.raw if name != b"set-cookie"]
    assert names == [name for name, _ in plain.headers.raw if name != b"set-cookie"]
    assert "access-control-allow-origin" not in again.headers


def test_preflights_for_shortcut_paths(client):
    asks = {"Origin": ORIGIN, "Access-Control-Request-Method": "GET"}
    assert client.options("/zarr/v3/a/zarr.json", headers=asks).status_code == 200
    assert client.options("/api/v1/metadata/a", headers=asks).status_code == 200
    other = {**asks, "Origin": "https://elsewhere.example"}
    assert client.options("/zarr/v3/a/zarr.json", headers=other).status_code == 400
    # Zarr clients in a browser write from an allowed origin (the server decides per node).
    for method in ("PUT", "DELETE", "PROPFIND"):
        writing = {**asks, "Access-Control-Request-Method": method}
        answer = client.options("/zarr/v3/a/c/0", headers=writing)
        assert (
            answer.status_code == 200 and method in answer.headers["access-control-allow-methods"]
        )
        refused = client.options("/zarr/v3/a/c/0", headers={**writing, "Origin": other["Origin"]})
        assert refused.status_code == 400


def test_the_store_root_with_and_without_a_slash(client):
    for path in ("/zarr/v3", "/zarr/v3/", "/zarr/v2", "/zarr/v2/"):
        response = client.get(path)
        assert response.status_code == 200, path
        assert [url.rsplit("/", 1)[-1] for url in response.json()] == ["a"]


def test_a_prefix_names_whole_segments_only(client):
    # /zarr/v30 is not the v3 store, /api/v1/metadatax not the metadata route.
    assert client.get("/zarr/v30/a").status_code == 404
    assert client.get("/api/v1/metadatax/a").status_code == 404


def test_metadata_shortcut_answers_as_the_route(client):
    document = client.get("/api/v1/metadata/a", params={"root_path": "true"}).json()
    assert document["data"]["id"] == "a"
    assert document["data"]["attributes"]["structure"]["shape"] == [10]
    assert document["meta"] == {"root_path": "/"}
    assert client.get("/api/v1/metadata/a").json()["meta"] == {}
    packed = client.get("/api/v1/metadata/a", headers={"Accept": "application/x-msgpack"})
    assert packed.headers["content-type"] == "application/x-msgpack"
    etag = client.get("/api/v1/metadata/a").headers["etag"]
    assert client.get("/api/v1/metadata/a", headers={"If-None-Match": etag}).status_code == 304
    bad = client.get("/api/v1/metadata/a", params={"fields": "nonsense"})
    assert bad.status_code == 400 and "nonsense" in bad.json()["detail"]


def test_cookie_requests_reach_the_shortcuts(server):
    cookies = {"tiled_api_key": KEY}
    with httpx.Client(base_url=server.url, cookies=cookies) as client:
        assert client.get("/zarr/v3/a/zarr.json").status_code == 200
        assert client.get("/api/v1/metadata/a").status_code == 200
        # Changing state with the cookie and without the CSRF token: a JSON 403.
        refused = client.post("/api/v1/metadata/", json={})
        assert refused.status_code == 403
        assert "csrf" in refused.json()["detail"]


def test_old_python_clients_are_refused_on_shortcuts_too(client):
    for path in ("/zarr/v3/a/zarr.json", "/api/v1/metadata/a"):
        response = client.get(path, headers={"User-Agent": "python-tiled/0.1.0a50"})
        assert response.status_code == 400
        assert "too old" in response.json()["detail"]
        assert response.headers["x-tiled-request-id"]


def test_the_edge_is_in_front_of_the_framework():
    # The shortcuts pass none of FastAPI's layers; the edge is not among them either.
    app = build_app(MapAdapter({}), authentication={"allow_anonymous_access": True})
    assert app.edge is not None
    assert all(m.cls is not EdgeMiddleware for m in app.user_middleware)


def _failing_app(monkeypatch):
    tree = MapAdapter({"a": ArrayAdapter.from_array(numpy.arange(10))})
    app = build_app(tree, authentication={"allow_anonymous_access": True})

    async def broken(scope, receive, send):
        raise RuntimeError("a bug")

    monkeypatch.setattr(app.edge, "shortcuts", (("/zarr/v3", broken),))
    return app


def test_an_error_escaping_a_shortcut_is_a_json_500(monkeypatch):
    app = _failing_app(monkeypatch)
    with serve(app) as live:
        response = httpx.get(live.url + "/zarr/v3/a/zarr.json")
    assert response.status_code == 500
    assert response.json() == {"detail": "Internal server error"}
    assert response.headers["x-tiled-request-id"]
    assert response.headers["connection"] == "close"


class _FaultyArray(ArrayAdapter):
    """An adapter with a bug: its reads raise what no error of the data explains."""

    def read(self, *args, **kwargs):
        raise RuntimeError("a bug in a custom adapter")


@pytest.mark.parametrize("path", ["/api/v1/array/full/bad", "/zarr/v3/bad/c/0"])
def test_a_500_closes_its_connection_and_the_next_request_gets_a_new_one(path):
    """The server drops the connection after a 500 (the framework re-raises for uvicorn to
    log): saying ``Connection: close`` lets a client send its next request, a POST that
    clients do not retry above all, on a new connection instead of the dropped one."""
    tree = MapAdapter(
        {
            "bad": _FaultyArray.from_array(numpy.arange(3)),
            "a": ArrayAdapter.from_array(numpy.arange(3)),
        }
    )
    app = build_app(tree, authentication={"allow_anonymous_access": True})
    with serve(app) as live, httpx.Client(base_url=live.url) as client:
        for _ in range(5):
            failed = client.get(path)
            assert failed.status_code == 500 and failed.headers["connection"] == "close"
            assert failed.json() == {"detail": "Internal server error"}
            # A POST read, on the same client: a new connection, not the dropped one.
            response = client.post("/api/v1/search/", json={})
            assert response.status_code in (200, 405, 422), response.text


def test_traced_requests_pass_through_the_framework(monkeypatch):
    """With telemetry on, shortcut requests take the framework's way (which traces them),
    answered by the same handlers."""
    tree = MapAdapter({"a": ArrayAdapter.from_array(numpy.arange(10))})
    app = build_app(tree, authentication={"allow_anonymous_access": True})
    entered = []
    framework = app.edge.inner

    async def counting(scope, receive, send):
        entered.append(scope["path"])
        await framework(scope, receive, send)

    monkeypatch.setattr(app.edge, "csrf", counting)
    with serve(app) as live, httpx.Client(base_url=live.url) as client:
        assert client.get("/zarr/v3/a/zarr.json").status_code == 200
        assert entered == []
        monkeypatch.setattr(app.edge, "traced", lambda: True)
        response = client.get("/zarr/v3/a/zarr.json")
        assert response.status_code == 200 and response.json()["shape"] == [10]
        assert client.get("/api/v1/metadata/a").json()["data"]["id"] == "a"
        assert entered == ["/zarr/v3/a/zarr.json", "/api/v1/metadata/a"]


class _Telemetry:
    def __init__(self):
        self.asked, self.on = 0, False

    def enabled(self):
        self.asked += 1
        return self.on


def test_the_telemetry_probe_asks_at_most_once_per_interval(monkeypatch):
    telemetry = _Telemetry()
    app = type("App", (), {"_native_telemetry": telemetry})()
    now = [100.0]
    monkeypatch.setattr(middleware.time, "monotonic", lambda: now[0])
    probe = TelemetryProbe(app, interval=1.0)
    assert not probe() and not probe()
    assert telemetry.asked == 1
    telemetry.on = True
    assert not probe()  # noticed at the next check
    now[0] += 1.0
    assert probe()
    telemetry.on = False  # providers are never removed: the answer is kept
    now[0] += 5.0
    assert probe() and telemetry.asked == 2
    assert not TelemetryProbe(object())()  # a FastAPI without native telemetry


@pytest.mark.parametrize(
    "body, media_type, headers",
    [
        (b'{"a": 1}', "application/json", {"ETag": '"x"'}),
        (b"a,b\n1,2\n", "text/csv", {"Content-Disposition": 'attachment; filename="t.csv"'}),
        (b"<p/>", "text/html; charset=latin-1", {}),
        (b"\x00" * 10, "application/octet-stream", {"Content-Encoding": "gzip", "Vary": "x"}),
    ],
)
def test_prepared_responses_send_what_starlette_responses_send(body, media_type, headers):
    from starlette.responses import Response

    from tiled.server.responses import PreparedResponse

    prepared = PreparedResponse(body, media_type, headers)
    plain = Response(body, media_type=media_type, headers=headers)
    assert sorted(prepared.raw_headers) == sorted(plain.raw_headers)
    assert (prepared.status_code, prepared.body) == (plain.status_code, plain.body)


def test_the_header_map_answers_as_starlette_headers_do():
    from starlette.requests import Request

    from tiled.server.headers import header, header_map

    raw = [(b"accept", b"application/json"), (b"x-forwarded-host", b"a"), (b"accept", b"*/*")]
    request = Request({"type": "http", "headers": raw})
    for name in ("accept", "x-forwarded-host", "host"):
        assert header(request, name) == request.headers.get(name, "")
    assert header_map(request) is header_map(request)  # made once per request
