"""The client's HTTP response cache (tiled.client.cache), its transport (tiled.client.transport),
client profiles (tiled.profiles) and the simple server (tiled.server.simple), against real
servers: the Tiled app over HTTP, or a small Starlette app that counts the requests it serves."""

from __future__ import annotations

import concurrent.futures
import hashlib
import itertools
import pickle
import sqlite3
import threading
import time

import httpx
import numpy
import pytest
import yaml
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from tiled.adapters.array import ArrayAdapter
from tiled.adapters.mapping import MapAdapter
from tiled.client import Context, from_context, from_uri, record_history
from tiled.client.cache import Cache, CachedResponse, SerializableLock, cache_key
from tiled.client.transport import Transport
from tiled.server.app import build_app
from tiled.server.simple import SimpleTiledServer

from .live_server import serve

TREE = MapAdapter(
    {
        f"a{i:02}": ArrayAdapter.from_array(numpy.arange(10) * i, metadata={"i": i})
        for i in range(12)
    },
    metadata={"top": True},
)


def cached_flags(history) -> list[bool]:
    return [isinstance(response, CachedResponse) for response in history.responses]


@pytest.fixture(scope="module")
def tiled_server():
    with serve(build_app(TREE, authentication={"single_user_api_key": "secret"})) as server:
        yield server


@pytest.fixture
def cache(tmp_path):
    cache = Cache(tmp_path / "responses.db")
    yield cache
    cache.close()


@pytest.fixture
def client(tiled_server, cache):
    with Context(tiled_server.url, api_key="secret", cache=cache) as context:
        yield from_context(context)


# --- a server that counts what it serves ---


class Counting:
    """A Starlette app whose answers carry chosen caching headers; counts each path's hits."""

    def __init__(self):
        self.hits: dict[str, int] = {}
        self.version = 1
        self.app = Starlette(
            routes=[
                Route("/etag", self.etag),
                Route("/fresh", self.fresh),
                Route("/plain", self.plain),
                Route("/nostore", self.nostore),
                Route("/big", self.big),
                Route("/accept", self.accept),
            ]
        )

    def count(self, request: Request) -> None:
        self.hits[request.url.path] = self.hits.get(request.url.path, 0) + 1

    async def etag(self, request: Request) -> Response:
        self.count(request)
        body = f"version {self.version}".encode()
        tag = '"' + hashlib.sha1(body).hexdigest() + '"'
        if request.headers.get("if-none-match") == tag:
            return Response(status_code=304, headers={"ETag": tag})
        return Response(body, headers={"ETag": tag})

    async def fresh(self, request: Request) -> Response:
        self.count(request)
        return Response(f"version {self.version}", headers={"Cache-Control": "max-age=600"})

    async def plain(self, request: Request) -> Response:
        self.count(request)
        return Response(f"version {self.version}")

    async def nostore(self, request: Request) -> Response:
        self.count(request)
        return Response("secret", headers={"ETag": '"x"', "Cache-Control": "no-store"})

    async def big(self, request: Request) -> Response:
        self.count(request)
        return Response(b"x" * 2000, headers={"ETag": '"big"'})

    async def accept(self, request: Request) -> Response:
        self.count(request)
        wanted = request.headers.get("accept", "")
        return Response(wanted, headers={"ETag": f'"{len(wanted)}"'})


@pytest.fixture(scope="module")
def counting_server():
    counting = Counting()
    with serve(counting.app) as server:
        counting.url = server.url
        yield counting


@pytest.fixture
def counting(counting_server):
    counting_server.hits.clear()
    counting_server.version = 1
    return counting_server


def http_client(cache) -> httpx.Client:
    return httpx.Client(transport=Transport(cache=cache, trust_env=False))


# --- the cache through a Tiled client ---


def test_second_reads_are_revalidated_and_served_from_the_cache(client, cache):
    with record_history() as first:
        list(client)
        client["a03"].read()
    assert first.responses and not any(cached_flags(first))
    assert cache.count() > 0 and cache.size() > 0
    with record_history() as second:
        list(client)
        numpy.testing.assert_array_equal(client["a03"].read(), numpy.arange(10) * 3)
    assert second.responses and all(cached_flags(second))
    # Each was confirmed by the server (If-None-Match), not taken on trust.
    assert all("if-none-match" in request.headers for request in second.requests)


def test_a_changed_node_is_not_served_stale(tmp_path):
    cache = Cache(tmp_path / "responses.db")
    with SimpleTiledServer(tmp_path / "server") as server:
        writer = from_uri(server.uri)  # another client, without the cache
        writer.write_array(numpy.arange(3), key="x", metadata={"color": "red"})
        assert from_uri(server.uri, cache=cache)["x"].metadata["color"] == "red"
        writer["x"].update_metadata({"color": "blue"})
        with record_history() as history:
            again = from_uri(server.uri, cache=cache)["x"]
        assert again.metadata["color"] == "blue"
        by_url = dict(zip(history.requests, cached_flags(history), strict=True))
        assert [flag for request, flag in by_url.items() if request.url.path.endswith("/x")] == [
            False
        ]
    cache.close()


def test_the_cache_is_bounded_and_evicts_the_least_recently_used(client, cache):
    # Room for about five of the nodes' documents, whatever their encoding's size.
    client["a00"]
    cache.clear()
    client["a00"]
    capacity = cache.capacity = 5 * cache.size() // max(cache.count(), 1)
    for key in list(client):
        assert client[key].metadata["i"] == int(key[1:])
        assert cache.size() <= capacity
    assert 0 < cache.count() < len(TREE)
    with record_history() as recent:
        client[f"a{len(TREE) - 1:02}"]
    assert all(cached_flags(recent))
    with record_history() as oldest:
        client["a00"]
    assert not any(cached_flags(oldest))


def test_a_body_larger_than_max_item_size_is_not_kept(counting, cache):
    cache.max_item_size = 1000
    with http_client(cache) as http:
        http.get(f"{counting.url}/big")
        assert cache.count() == 0
        cache.max_item_size = 5000
        http.get(f"{counting.url}/big")
        assert cache.count() == 1 and cache.size() == 2000


def test_no_cache_when_none_given_or_set_to_none(tiled_server, client):
    with Context(tiled_server.url, api_key="secret") as context:
        assert context.cache is None
        plain = from_context(context)
        list(plain)
        with record_history() as history:
            list(plain)
        assert not any(cached_flags(history))
    client.context.cache = None
    list(client)
    with record_history() as history:
        list(client)
    assert history.responses and not any(cached_flags(history))


# --- what is kept and when it is used (the counting server) ---


def test_etag_answers_are_revalidated_and_replaced_when_they_change(counting, cache):
    with http_client(cache) as http:
        assert http.get(f"{counting.url}/etag").text == "version 1"
        second = http.get(f"{counting.url}/etag")
        assert isinstance(second, CachedResponse) and second.text == "version 1"
        assert counting.hits["/etag"] == 2  # asked each time, a body sent once
        counting.version = 2
        third = http.get(f"{counting.url}/etag")
        assert not isinstance(third, CachedResponse) and third.text == "version 2"
        assert http.get(f"{counting.url}/etag").text == "version 2"
        assert cache.count() == 1


def test_max_age_answers_are_used_without_asking(counting, cache):
    with http_client(cache) as http:
        http.get(f"{counting.url}/fresh")
        counting.version = 2
        again = http.get(f"{counting.url}/fresh")
        assert isinstance(again, CachedResponse) and again.text == "version 1"
        assert counting.hits["/fresh"] == 1
        # A request refusing caches goes to the server.
        forced = http.get(f"{counting.url}/fresh", headers={"Cache-Control": "no-cache"})
        assert forced.text == "version 2" and counting.hits["/fresh"] == 2


def test_answers_that_cannot_be_validated_or_may_not_be_stored_are_not_kept(counting, cache):
    with http_client(cache) as http:
        for path in ("/plain", "/nostore"):
            http.get(f"{counting.url}{path}")
            second = http.get(f"{counting.url}{path}")
            assert not isinstance(second, CachedResponse)
            assert counting.hits[path] == 2
        http.post(f"{counting.url}/etag")  # not a GET: never kept
    assert cache.count() == 0


def test_entries_are_per_representation_and_per_credentials(counting, cache):
    with http_client(cache) as http:
        url = f"{counting.url}/accept"
        assert http.get(url, headers={"Accept": "text/csv"}).text == "text/csv"
        assert http.get(url, headers={"Accept": "application/json"}).text == "application/json"
        assert http.get(url, headers={"Accept": "text/csv"}).text == "text/csv"
        http.get(url, headers={"Accept": "text/csv", "Authorization": "Apikey other"})
    assert cache.count() == 3
    one = httpx.Request("GET", url, headers={"Authorization": "Apikey a"})
    other = httpx.Request("GET", url, headers={"Authorization": "Apikey b"})
    assert cache_key(one) != cache_key(other)
    assert "Apikey a" not in cache_key(one)  # credentials are digested, not stored


def test_a_readonly_cache_serves_but_never_writes(counting, tmp_path):
    path = tmp_path / "shared.db"
    writer = Cache(path)
    with http_client(writer) as http:
        http.get(f"{counting.url}/etag")
    size = writer.size()
    reader = Cache(path, readonly=True)
    with http_client(reader) as http:
        assert isinstance(http.get(f"{counting.url}/etag"), CachedResponse)
        http.get(f"{counting.url}/big")
        assert not isinstance(http.get(f"{counting.url}/big"), CachedResponse)
    assert reader.size() == size and reader.count() == 1
    with pytest.raises(RuntimeError, match="read-only"):
        reader.clear()
    with pytest.raises(sqlite3.OperationalError):
        reader._conn.execute("DELETE FROM responses")
    writer.close()
    reader.close()


def test_a_failing_cache_file_does_not_fail_requests(counting, tmp_path):
    broken = Cache(tmp_path / "broken.db")
    broken.close()  # every use of the file now fails
    with http_client(broken) as http:
        for _ in range(2):
            response = http.get(f"{counting.url}/etag")
            assert response.text == "version 1" and not isinstance(response, CachedResponse)


def test_many_threads_share_one_cache(counting, cache):
    cache.capacity = 20_000
    cache.max_item_size = 3000
    with http_client(cache) as http:
        paths = ["/etag", "/big", "/fresh"] * 20

        def get(path):
            return http.get(f"{counting.url}{path}").content

        with concurrent.futures.ThreadPoolExecutor(max_workers=8) as pool:
            bodies = list(pool.map(get, paths))
    assert {len(body) for body in bodies} == {len(b"version 1"), 2000}
    assert cache.count() == 3 and cache.size() <= cache.capacity


def test_single_threaded_sqlite_refuses_writes_from_other_threads(cache, monkeypatch):
    monkeypatch.setattr(sqlite3, "threadsafety", 0)
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        with pytest.raises(RuntimeError, match="single-threaded"):
            pool.submit(cache.clear).result(timeout=5)
        # Reads from another thread are misses, not errors.
        assert pool.submit(cache.get, httpx.Request("GET", "http://x/")).result() is None
    cache.clear()  # the thread that made it may


def test_files_that_are_not_this_cache(tmp_path):
    other = tmp_path / "other.db"
    with sqlite3.connect(other) as conn:
        conn.execute("CREATE TABLE precious (x)")
    with pytest.raises(RuntimeError, match="not a Tiled HTTP response cache"):
        Cache(other)
    with sqlite3.connect(other) as conn:
        assert conn.execute("SELECT name FROM sqlite_master").fetchall() == [("precious",)]
    # Another layout of Tiled's cache (upstream's) is disposable: laid out anew.
    old = tmp_path / "old.db"
    with sqlite3.connect(old) as conn:
        conn.execute("CREATE TABLE responses (cache_key TEXT)")
        conn.execute("CREATE TABLE tiled_http_response_cache_version (version INTEGER)")
    assert Cache(old).count() == 0
    with pytest.raises(ValueError, match="capacity"):
        Cache(tmp_path / "x.db", capacity=10, max_item_size=10)


def test_caches_and_contexts_pickle(tiled_server, cache):
    copy = pickle.loads(pickle.dumps(cache))
    assert copy.filepath == cache.filepath and copy._lock.lock is cache._lock.lock
    assert pickle.loads(pickle.dumps(SerializableLock("t"))).lock is SerializableLock("t").lock
    with Context(tiled_server.url, api_key="secret", cache=cache) as context:
        node = from_context(context)["a01"]
        node.read()
        restored = pickle.loads(pickle.dumps(node))
        assert restored.context.cache.filepath == cache.filepath
        with record_history() as history:
            restored.read()
        assert all(cached_flags(history))


def test_caches_from_profiles(tiled_server, tmp_path, profiles_dir):
    profiles_dir.mkdir(parents=True)
    (profiles_dir / "cached.yml").write_text(
        yaml.safe_dump(
            {
                "cached": {
                    "uri": tiled_server.url,
                    "api_key": "secret",
                    "cache": {"filepath": str(tmp_path / "p.db"), "capacity": 1_000_000},
                }
            }
        )
    )
    from tiled.client import from_profile

    client = from_profile("cached")
    assert client.context.cache.filepath == tmp_path / "p.db"
    assert client.context.cache.capacity == 1_000_000


# --- proxies ---


PROXY_VARIABLES = [
    "".join(name) for name in itertools.product(["HTTP", "HTTPS", "ALL", "NO"], ["_PROXY"])
]


@pytest.fixture
def no_proxies(monkeypatch):
    for name in PROXY_VARIABLES:
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.lower(), raising=False)


def test_proxies_of_the_environment(no_proxies, monkeypatch):
    monkeypatch.setenv("all_proxy", "http://127.0.0.1:9998")
    monkeypatch.setenv("HTTPS_PROXY", "http://127.0.0.1:9999")
    monkeypatch.setenv("NO_PROXY", "internal.example.com,localhost:8000")
    transport = Transport()
    https = transport._transport_for_url(httpx.URL("https://example.com/"))
    http = transport._transport_for_url(httpx.URL("http://example.com/"))
    assert https._pool._proxy_url.port == 9999 and http._pool._proxy_url.port == 9998
    for direct in ("https://a.internal.example.com/", "http://localhost:8000/"):
        assert transport._transport_for_url(httpx.URL(direct)) is transport.transport
    assert transport._transport_for_url(httpx.URL("http://localhost:9000/")) is http
    transport.close()


def test_requests_reach_a_server_directly_without_proxies(no_proxies, counting, cache):
    with http_client(cache) as http:
        assert http.get(f"{counting.url}/plain").status_code == 200


# --- profiles ---


@pytest.fixture
def profiles_dir(tmp_path, monkeypatch):
    from tiled import profiles

    directory = tmp_path / "profiles"
    monkeypatch.setattr(profiles, "paths", [tmp_path / "site", directory])
    profiles.load_profiles.cache_clear()
    yield directory
    profiles.load_profiles.cache_clear()


def test_profiles_are_created_listed_defaulted_and_deleted(profiles_dir):
    from tiled import profiles

    path = profiles.create_profile(name="here", uri="http://localhost:8000")
    assert profiles.list_profiles() == {"here": path}
    assert profiles.load_profiles()["here"][1] == {"uri": "http://localhost:8000", "verify": True}
    with pytest.raises(profiles.ProfileExists):
        profiles.create_profile("http://elsewhere", "here")
    profiles.create_profile("http://elsewhere", "here", overwrite=True)
    assert profiles.load_profiles()["here"][1]["uri"] == "http://elsewhere"
    with pytest.raises(profiles.ProfileNotFound):
        profiles.set_default_profile_name("nope")
    profiles.set_default_profile_name("here")
    assert profiles.get_default_profile_name() == "here"
    assert profiles.delete_profile("here") == path
    assert profiles.delete_profile("here") is None
    assert profiles.list_profiles() == {}


def test_profile_files_that_cannot_be_used_are_skipped_with_a_warning(profiles_dir, tmp_path):
    from tiled import profiles

    profiles_dir.mkdir(parents=True)
    (profiles_dir / "bad.yml").write_text("x: {uri: 1, nonsense: true}\n")
    (profiles_dir / "neither.yml").write_text("y: {verify: false}\n")
    (profiles_dir / "direct.yml").write_text(
        "d: {direct: {trees: [{path: /, tree: tiled.examples.generated_minimal:tree}]}}\n"
    )
    (profiles_dir / "one.yml").write_text("twice: {uri: http://a}\n")
    (profiles_dir / "two.yaml").write_text("twice: {uri: http://b}\n")
    with pytest.warns(UserWarning) as warned:
        found = profiles.list_profiles()
    assert set(found) == {"d"}
    messages = " ".join(str(w.message) for w in warned)
    assert "bad.yml" in messages and "neither.yml" in messages and "'twice'" in messages
    # A later directory settles the ambiguity.
    (tmp_path / "site").mkdir()
    profiles.paths.reverse()  # the site directory now has precedence
    (tmp_path / "site" / "twice.yml").write_text("twice: {uri: http://c}\n")
    with pytest.warns(UserWarning):
        assert profiles.list_profiles()["twice"] == tmp_path / "site" / "twice.yml"


def test_profile_commands(profiles_dir):
    from typer.testing import CliRunner

    from tiled.commandline.main import cli_app as app

    runner = CliRunner()
    created = runner.invoke(app, ["profile", "create", "http://h:8000", "--name", "h"])
    assert created.exit_code == 0, created.output
    assert runner.invoke(app, ["profile", "get-default"]).output.strip() == "h"
    again = runner.invoke(app, ["profile", "create", "http://h:8000", "--name", "h"])
    assert again.exit_code == 1 and "overwrite" in again.output
    assert runner.invoke(app, ["profile", "set-default", "nope"]).exit_code == 1
    assert runner.invoke(app, ["profile", "delete", "h"]).exit_code == 0
    assert "No default" in runner.invoke(app, ["profile", "get-default"]).output
    assert runner.invoke(app, ["profile", "delete", "h"]).exit_code == 1
    # A name is a file name in the profiles directory: a path would write or delete elsewhere.
    victim = profiles_dir.parent / "victim.yml"
    victim.write_text("v: {uri: http://v}\n")
    for name in ("../victim", "a/b", "", ".hidden"):
        made = runner.invoke(app, ["profile", "create", "http://h:8000", "--name", name])
        assert made.exit_code == 1 and "plain file name" in made.output, (name, made.output)
        gone = runner.invoke(app, ["profile", "delete", name])
        assert gone.exit_code == 1 and "plain file name" in gone.output, (name, gone.output)
    assert victim.exists() and not (profiles_dir.parent / "a").exists()


# --- the simple server ---


def test_simple_server_page_storage_and_servers_list(tmp_path):
    from tiled.client import SERVERS, simple

    readable = tmp_path / "readable"
    readable.mkdir()
    with SimpleTiledServer(tmp_path / "s", readable_storage=str(readable)) as server:
        assert server.directory == (tmp_path / "s").resolve()
        page = httpx.get(server.web_ui_link)
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
        assert server.api_key not in page.text
        assert "<a href=" in server._repr_html_() and server.webhook_secret_key is None
        # One directory given as itself (a str here) is readable storage: files register.
        import asyncio

        import h5py

        from tiled.client.register import register

        with h5py.File(readable / "data.h5", "w") as file:
            file["x"] = numpy.arange(4)
        client = from_uri(server.uri)
        asyncio.run(register(client, readable))
        numpy.testing.assert_array_equal(client["data"]["x"].read(), numpy.arange(4))
    client = simple(quiet=True)
    assert SERVERS[-1] is client.server
    SERVERS.pop().close()
    assert not client.server.directory.exists()
    with SimpleTiledServer(tmp_path / "w", enable_webhooks=True) as server:
        # A local server's webhooks may target local receivers over plain HTTP.
        response = httpx.post(
            f"http://127.0.0.1:{server.port}/api/v1/webhooks/target/",
            headers={"Authorization": f"Apikey {server.api_key}"},
            json={"url": "http://localhost:19999/hook"},
        )
        assert response.status_code == 200, response.text
        assert server.webhook_secret_key is not None


def test_requests_to_the_server_root_are_never_500(tiled_server):
    for path in ("/", "/?api_key=x", "/nope"):
        response = httpx.get(f"{tiled_server.url}{path}")
        assert response.status_code < 500


def test_with_thread_lock_lets_one_thread_in_at_a_time():
    from tiled.client.cache import with_thread_lock

    inside, overlaps = [], []

    class Guarded:
        _lock = threading.Lock()

        @with_thread_lock
        def work(self):
            inside.append(1)
            overlaps.append(len(inside))
            time.sleep(0.002)  # long enough for the other threads to try to enter
            inside.pop()

    guarded = Guarded()
    threads = [threading.Thread(target=guarded.work) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert overlaps == [1] * 8
