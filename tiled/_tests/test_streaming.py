"""Live streams (upstream 0.2.20's ``/api/v1/stream``): real servers on loopback, a real
WebSocket client, the memory datastore and Redis, and upstream's own ``subscribe()``."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import socket
import time

import httpx
import msgpack
import numpy
import pandas
import pyarrow
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from tiled.adapters.mapping import MapAdapter
from tiled.catalog import from_uri
from tiled.client import from_uri as client_from_uri
from tiled.config import ConfigError, construct_build_app_kwargs
from tiled.server.app import build_app
from tiled.server.authentication import UnscalableConfig
from tiled.streaming import MemoryDatastore

from .isolated_python import run_isolated
from .live_server import serve

KEY = "secretapikey"
HEADERS = {"Authorization": f"Apikey {KEY}"}
REDIS = ("127.0.0.1", 6379)


def _redis_uri() -> str:
    """A Redis database of this test process alone: the tests flush it, and catalogs made
    afresh number their nodes alike, so two pytest workers sharing one would mix their keys.
    (Databases 1-8; test_client_subscribe.py takes 9, upstream's own suite 10-13, and
    the neighbour test below 14.)"""
    worker = os.environ.get("PYTEST_XDIST_WORKER", "gw0")
    return f"redis://{REDIS[0]}:{REDIS[1]}/{1 + int(worker.removeprefix('gw')) % 8}"


def _redis_reachable() -> bool:
    try:
        socket.create_connection(REDIS, timeout=0.5).close()
        return True
    except OSError:
        return False


@pytest.fixture(params=["memory", "redis"])
def cache_uri(request):
    if request.param == "redis":
        if not _redis_reachable():
            pytest.skip(f"no Redis server at {REDIS[0]}:{REDIS[1]}")
        return _redis_uri()
    return "memory"


def _app(tmp_path, cache_uri="memory", authentication=None, cache_options=(), **settings):
    # A fresh database per test: node ids restart, so the Redis keys are emptied first.
    tree = from_uri(
        f"sqlite+aiosqlite:///{tmp_path / 'catalog.db'}",
        writable_storage=[tmp_path / "data", f"duckdb:///{tmp_path / 'tables.duckdb'}"],
        init_if_not_exists=True,
    )
    if cache_uri is not None:
        settings["streaming_cache"] = {"uri": cache_uri, "data_ttl": 60, **dict(cache_options)}
        if cache_uri.startswith("redis"):
            _flush_redis(cache_uri)
    return build_app(
        tree,
        authentication=authentication or {"single_user_api_key": KEY},
        server_settings=settings,
    )


def _flush_redis(uri: str) -> None:
    from redis import Redis

    client = Redis.from_url(uri)
    try:
        client.flushdb()
    finally:
        client.close()


def _ws(server, path: str, **query) -> str:
    params = "&".join(f"{k}={v}" for k, v in query.items())
    return f"{server.url.replace('http', 'ws', 1)}/api/v1/stream/single/{path}?{params}"


async def _messages(websocket, count: int, decode=msgpack.unpackb) -> list[dict]:
    return [decode(await asyncio.wait_for(websocket.recv(), 10)) for _ in range(count)]


async def _closed(websocket) -> ConnectionClosed:
    with pytest.raises(ConnectionClosed) as info:
        await asyncio.wait_for(websocket.recv(), 10)
    return info.value


def _close(server, path: str) -> None:
    httpx.delete(f"{server.url}/api/v1/stream/close/{path}", headers=HEADERS).raise_for_status()


def _in_thread(function, *args, **kwargs):
    return asyncio.to_thread(function, *args, **kwargs)


# --- arrays --------------------------------------------------------------------------------


def test_array_writes_replay_live_and_end_of_stream(tmp_path, cache_uri):
    with serve(_app(tmp_path, cache_uri)) as server:
        client = client_from_uri(server.url, api_key=KEY)
        array = client.write_array(numpy.zeros((4, 2)), key="a", dims=None)
        array.write(numpy.ones((4, 2)))  # sequence 2 (1: write_array's own write)

        async def scenario():
            async with connect(
                _ws(server, "a", envelope_format="msgpack", start=2), additional_headers=HEADERS
            ) as ws:
                schema, replayed = await _messages(ws, 2)
                assert schema == {
                    "type": "array-schema",
                    "version": 1,
                    "data_type": {
                        "endianness": "little",
                        "kind": "f",
                        "itemsize": 8,
                        "dt_units": None,
                    },
                }
                assert replayed["sequence"] == 2 and replayed["type"] == "array-data"
                assert numpy.frombuffer(replayed["payload"]).tolist() == [1.0] * 8
                await _in_thread(array.write_block, numpy.full((4, 2), 7.0), block=(0, 0))
                await _in_thread(array.patch, numpy.full((1, 2), 5.0), offset=(1, 0))
                block, patch = await _messages(ws, 2)
                assert (block["sequence"], block["block"], block["shape"]) == (3, [0, 0], [4, 2])
                assert numpy.frombuffer(block["payload"]).tolist() == [7.0] * 8
                assert (patch["sequence"], patch["offset"], patch["shape"]) == (4, [1, 0], [1, 2])
                assert patch["block"] is None and patch["mimetype"] == "application/octet-stream"
                await _in_thread(_close, server, "a")
                closed = await _closed(ws)
                assert (closed.rcvd.code, closed.rcvd.reason) == (1000, "Producer ended stream")

        asyncio.run(scenario())
        assert array.read()[1].tolist() == [5.0, 5.0]  # the writes were stored as well


def test_persist_false_reaches_subscribers_only(tmp_path):
    with serve(_app(tmp_path)) as server:
        client = client_from_uri(server.url, api_key=KEY)
        array = client.write_array(numpy.zeros(3), key="a")

        async def scenario():
            async with connect(_ws(server, "a"), additional_headers=HEADERS) as ws:
                await _messages(ws, 1, json.loads)  # the schema
                body = numpy.arange(3.0).tobytes()
                url = f"{server.url}/api/v1/array/full/a?persist=false"
                await _in_thread(httpx.put, url, content=body, headers=HEADERS)
                (update,) = await _messages(ws, 1, json.loads)
                assert update["payload"] == [0.0, 1.0, 2.0]  # JSON envelope: decoded
                assert update["content-type"] == "application/json"

        asyncio.run(scenario())
        assert array.read().tolist() == [0.0, 0.0, 0.0]


# --- containers and tables -----------------------------------------------------------------


def test_container_hears_children_and_their_metadata(tmp_path, cache_uri):
    with serve(_app(tmp_path, cache_uri)) as server:
        client = client_from_uri(server.url, api_key=KEY)
        box = client.create_container("box")

        async def scenario():
            async with connect(
                _ws(server, "box", envelope_format="msgpack"), additional_headers=HEADERS
            ) as ws:
                (schema,) = await _messages(ws, 1)
                assert schema == {"type": "container-schema", "version": 1}
                child = await _in_thread(
                    box.write_array, numpy.arange(3), key="x", metadata={"n": 1}
                )
                await _in_thread(child.update_metadata, {"n": 2})
                created, updated = await _messages(ws, 2)
                assert (created["type"], created["sequence"], created["key"]) == (
                    "container-child-created",
                    1,
                    "x",
                )
                assert created["metadata"] == {"n": 1} and created["structure_family"] == "array"
                (source,) = created["data_sources"]
                assert source["id"] is not None and source["structure"]["shape"] == [3]
                assert (updated["type"], updated["sequence"], updated["metadata"]) == (
                    "container-child-metadata-updated",
                    2,
                    {"n": 2},
                )

        asyncio.run(scenario())


def test_table_writes_and_appends(tmp_path):
    with serve(_app(tmp_path)) as server:
        client = client_from_uri(server.url, api_key=KEY)
        schema = pyarrow.Schema.from_pandas(pandas.DataFrame({"x": [1, 2]}), preserve_index=False)
        table = client.create_appendable_table(schema, key="t")

        async def scenario():
            async with connect(
                _ws(server, "t", envelope_format="json"), additional_headers=HEADERS
            ) as ws:
                (schema,) = await _messages(ws, 1, json.loads)
                assert schema["type"] == "table-schema" and schema["arrow_schema"]
                await _in_thread(table.append_partition, 0, pandas.DataFrame({"x": [1, 2]}))
                await _in_thread(table.append_partition, 0, pandas.DataFrame({"x": [3]}))
                first, second = await _messages(ws, 2, json.loads)
                assert (first["sequence"], first["append"], first["partition"]) == (1, True, 0)
                assert first["payload"] == {"x": [1, 2]} and second["payload"] == {"x": [3]}

        asyncio.run(scenario())


# --- refusals ------------------------------------------------------------------------------


def test_refusals_are_statuses_and_close_codes(tmp_path):
    app = _app(tmp_path, authentication={"single_user_api_key": KEY})
    with serve(app) as server:
        client_from_uri(server.url, api_key=KEY).write_array(numpy.zeros(2), key="a")

        async def status_of(url, headers=HEADERS) -> tuple[int, str]:
            with pytest.raises(InvalidStatus) as info:
                async with connect(url, additional_headers=headers):
                    pass
            response = info.value.response
            return response.status_code, json.loads(response.body)["detail"]

        async def scenario():
            assert (await status_of(_ws(server, "nope")))[0] == 404
            status, detail = await status_of(_ws(server, "a", envelope_format="xml"))
            assert status == 400 and "envelope_format" in detail
            assert (await status_of(_ws(server, "a", start="x")))[0] == 400
            wrong = {"Authorization": "Apikey wrong"}
            assert (await status_of(_ws(server, "a"), wrong))[0] == 401
            # Without credentials, upstream's first-message form: refused, then accepted.
            async with connect(_ws(server, "a")) as ws:
                await ws.send(json.dumps({"type": "auth", "api_key": "wrong"}))
                closed = await _closed(ws)
                assert (closed.rcvd.code, closed.rcvd.reason) == (4003, "Authentication failed")
            async with connect(_ws(server, "a")) as ws:
                await ws.send("not json")
                assert (await _closed(ws)).rcvd.code == 4001
            async with connect(_ws(server, "a")) as ws:
                await ws.send(json.dumps({"type": "auth", "api_key": KEY}))
                (schema,) = await _messages(ws, 1, json.loads)
                assert schema["type"] == "array-schema"
            async with connect(_ws(server, "nope")) as ws:  # refused once accepted: 4000 + 404
                await ws.send(json.dumps({"type": "auth", "api_key": KEY}))
                assert (await _closed(ws)).rcvd.code == 4404
            async with connect(_ws(server, "a", api_key=KEY)) as ws:  # the key in the query
                assert (await _messages(ws, 1, json.loads))[0]["type"] == "array-schema"

        asyncio.run(scenario())


def test_nodes_without_streams_are_refused_with_reasons(tmp_path):
    tree = MapAdapter({})
    app = build_app(
        tree,
        authentication={"single_user_api_key": KEY},
        server_settings={"streaming_cache": {"uri": "memory"}},
    )
    with serve(app) as server, serve(_app(tmp_path, cache_uri=None)) as plain:
        client_from_uri(plain.url, api_key=KEY).write_array(numpy.zeros(2), key="a")

        async def scenario():
            for url, message in (
                (_ws(server, ""), "does not support live streams"),
                (_ws(plain, "a"), "no streaming cache"),
            ):
                with pytest.raises(InvalidStatus) as info:
                    async with connect(url, additional_headers=HEADERS):
                        pass
                assert info.value.response.status_code == 405
                assert message in json.loads(info.value.response.body)["detail"]

        asyncio.run(scenario())
        answer = httpx.delete(f"{server.url}/api/v1/stream/close/", headers=HEADERS)
        assert answer.status_code == 405, answer.text


def test_redis_keys_are_upstreams(tmp_path):
    if not _redis_reachable():
        pytest.skip(f"no Redis server at {REDIS[0]}:{REDIS[1]}")
    from redis import Redis

    uri = _redis_uri()
    with serve(_app(tmp_path, uri)) as server:
        client = client_from_uri(server.url, api_key=KEY)
        client.write_array(numpy.zeros(2), key="a")
        redis = Redis.from_url(uri)
        try:
            sequences = sorted(k.decode() for k in redis.keys("sequence:*"))
            assert len(sequences) == 2  # the root (child created) and the array (its write)
            for key in sequences:
                node = key.split(":", 1)[1]
                stored = redis.hgetall(f"data:{node}:1")
                assert set(stored) >= {b"sequence", b"metadata"}
                assert 0 < redis.ttl(f"data:{node}:1") <= 60
        finally:
            redis.close()


# A database no other test uses: the neighbour below flushes it.
NEIGHBOUR_REDIS_DATABASE = 14


def test_a_neighbour_on_another_redis_database_is_not_heard(tmp_path):
    """Redis delivers a channel's messages to subscribers of every database: a deployment on
    database 14 whose node has the same id (and so the same channel, upstream's
    ``notify:{id}``) notifies this one's subscribers too. They must still get exactly their
    own node's updates, with their own data (they were skipped, or older ones sent again)."""
    if not _redis_reachable():
        pytest.skip(f"no Redis server at {REDIS[0]}:{REDIS[1]}")
    neighbour_uri = f"redis://{REDIS[0]}:{REDIS[1]}/{NEIGHBOUR_REDIS_DATABASE}"
    (tmp_path / "here").mkdir()
    (tmp_path / "there").mkdir()
    with (
        serve(_app(tmp_path / "here", _redis_uri())) as here,
        serve(_app(tmp_path / "there", neighbour_uri)) as there,
    ):
        ours = client_from_uri(here.url, api_key=KEY).write_array(numpy.zeros(2), key="a")
        # Both catalogs are new: the two arrays have the same node id.
        theirs = client_from_uri(there.url, api_key=KEY).write_array(numpy.zeros(2), key="a")

        async def scenario():
            async with connect(
                _ws(here, "a", envelope_format="msgpack"), additional_headers=HEADERS
            ) as ws:
                await _messages(ws, 1)  # the schema
                for value in (5.0, 6.0, 7.0):  # the neighbour's sequence 2, 3, 4
                    await _in_thread(theirs.write, numpy.full(2, value))
                await _in_thread(ours.write, numpy.ones(2))  # our sequence 2
                (update,) = await _messages(ws, 1)
                assert update["sequence"] == 2
                assert numpy.frombuffer(update["payload"]).tolist() == [1.0, 1.0]
                await _in_thread(ours.write, numpy.full(2, 3.0))
                (update,) = await _messages(ws, 1)
                assert update["sequence"] == 3
                assert numpy.frombuffer(update["payload"]).tolist() == [3.0, 3.0]

        asyncio.run(scenario())


# --- configuration -------------------------------------------------------------------------


def test_configuration_and_environment(monkeypatch):
    trees = {"trees": [{"path": "/", "tree": "tiled.examples.generated_minimal:tree"}]}
    kwargs = construct_build_app_kwargs(
        {**trees, "streaming_cache": {"uri": "memory", "data_ttl": 5}}
    )
    assert kwargs["server_settings"]["streaming_cache"]["data_ttl"] == 5
    with pytest.raises(ConfigError, match="set only one of 'uri' or 'sentinels'"):
        construct_build_app_kwargs(
            {
                **trees,
                "streaming_cache": {"uri": "memory", "sentinels": ["h:1"], "service_name": "s"},
            }
        )
    with pytest.raises(ConfigError, match="streaming_cache.uri"):
        construct_build_app_kwargs({**trees, "streaming_cache": {"uri": "http://x"}})
    monkeypatch.setenv("TILED_STREAMING_CACHE_URI", "memory")
    monkeypatch.setenv("TILED_STREAMING_CACHE_SEQ_TTL", "7")
    app = build_app(MapAdapter({}), authentication={"single_user_api_key": KEY})
    options = app.state.tiled.settings.streaming_cache
    assert (options.uri, options.seq_ttl, options.data_ttl) == ("memory", 7, 3600)
    with pytest.raises(UnscalableConfig):
        build_app(MapAdapter({}), authentication={"single_user_api_key": KEY}, scalable=True)


def test_memory_datastore_expires_and_restarts():
    async def scenario():
        store = MemoryDatastore(data_ttl=0.05, seq_ttl=60)
        assert await store.publish("n", {"type": "x"}) == 1
        assert (await store.fetch("n", 1)).message == {"type": "x", "sequence": 1}
        await asyncio.sleep(0.06)
        assert await store.fetch("n", 1) is None
        assert await store.end("n") == 2
        await asyncio.sleep(0.06)  # the counter outlives the end by data_ttl + 1 seconds
        assert await store.latest("n") == 2

    asyncio.run(scenario())


# --- upstream's client ---------------------------------------------------------------------

UPSTREAM_SUBSCRIBER = """
import json, sys, threading, httpx, numpy
from tiled.client import from_uri

url, key = sys.argv[1], sys.argv[2]
client = from_uri(url, api_key=key)
heard, done = [], threading.Event()

def on_child(update):
    heard.append(["child", update.sequence, update.key, type(update.child()).__name__])

def on_data(update):
    heard.append(["data", update.sequence, update.data().tolist()])

def on_closed(sub):
    done.set()

container = client.subscribe()
container.child_created.add_callback(on_child)
container.start_in_thread(1)
client.create_container("box")
array = client.write_array(numpy.arange(3.0), key="a")
sub = array.subscribe()
sub.new_data.add_callback(on_data)
sub.stream_closed.add_callback(on_closed)
sub.start_in_thread(1)
array.write(numpy.ones(3))
closing = httpx.delete(f"{url}/api/v1/stream/close/a", headers={"Authorization": "Apikey " + key})
closing.raise_for_status()
assert done.wait(20), "the stream did not close"
container.disconnect()
print(json.dumps(sorted(heard)))
"""


@pytest.mark.slow
def test_upstream_client_subscribes(upstream_tiled, tmp_path):
    with serve(_app(tmp_path)) as server:
        result = run_isolated(upstream_tiled, UPSTREAM_SUBSCRIBER, server.url, KEY)
    assert result.returncode == 0, result.stderr
    heard = json.loads(result.stdout.strip().splitlines()[-1])
    # Upstream's client cannot parse the creation of an array it wrote (its message model
    # requires an asset "num", which a written array's asset has as null, from upstream's
    # server too): the container's creation is the one it reads.
    assert ["child", 1, "box", "Container"] in heard
    assert ["data", 1, [0.0, 1.0, 2.0]] in heard
    assert ["data", 2, [1.0, 1.0, 1.0]] in heard


# --- found in review -------------------------------------------------------------------------


TOY_USERS = {"alice": "secret1", "admin": "secret2"}


def _policed_app(tmp_path):
    from tiled.access.policies import ALL_ACCESS, SimpleAccessPolicy

    authentication = {
        "secret_keys": ["0123456789abcdef0123456789abcdef"],
        "providers": [{"provider": "toy",
                       "authenticator": "tiled.authenticators:DictionaryAuthenticator",
                       "args": {"users_to_passwords": TOY_USERS}}],
    }  # fmt: skip
    tree = from_uri(
        f"sqlite:///{tmp_path / 'catalog.db'}", writable_storage=[tmp_path / "data"],
        init_if_not_exists=True, cache_config={"uri": "memory"},
    )  # fmt: skip
    policy = SimpleAccessPolicy({"alice": ["shared"], "admin": ALL_ACCESS})
    return build_app(tree, authentication, access_policy=policy)


def _logged_in(server, user: str):
    from tiled.client import Context, from_context

    context = Context(server.url)
    context.authenticate(username=user, password=TOY_USERS[user], remember_me=False)
    return from_context(context)


def test_subscribers_hear_only_of_members_they_may_see(tmp_path):
    """A container's subscriber hears of a member's creation and metadata only if it may see
    that member, as its listings would show it."""
    with serve(_policed_app(tmp_path)) as server:
        admin = _logged_in(server, "admin")
        admin.create_container("shared")
        alice = _logged_in(server, "alice")
        assert list(alice) == ["shared"]
        heard, admins_heard = [], []
        with alice.subscribe() as subscription, admin.subscribe() as admins:
            subscription.child_created.add_callback(lambda u: heard.append(("new", u.key)))
            subscription.child_metadata_updated.add_callback(lambda u: heard.append(("md", u.key)))
            admins.child_created.add_callback(lambda u: admins_heard.append(u.key))
            subscription.start_in_thread(1)
            admins.start_in_thread(1)
            admin.create_container("secret", metadata={"budget": 1})
            admin["secret"].update_metadata({"budget": 2})
            admin["shared"].update_metadata({"note": "visible"})
            deadline = time.monotonic() + 10
            while ("md", "shared") not in heard or "secret" not in admins_heard:
                assert time.monotonic() < deadline, (heard, admins_heard)
                time.sleep(0.05)
        assert heard == [("new", "shared"), ("md", "shared")]
        assert admins_heard == ["shared", "secret"]


def test_a_datastore_out_of_reach_costs_no_write_and_is_a_503(tmp_path):
    from .processes import free_port

    unreachable = f"redis://127.0.0.1:{free_port()}/0"  # nothing listens there
    tree = from_uri(
        f"sqlite:///{tmp_path / 'catalog.db'}", writable_storage=[tmp_path / "data"],
        init_if_not_exists=True,
    )  # fmt: skip
    settings = {"streaming_cache": {"uri": unreachable, "socket_connect_timeout": 1}}
    app = build_app(tree, {"single_user_api_key": KEY}, server_settings=settings)
    with serve(app) as server:
        client = client_from_uri(server.url, api_key=KEY)
        array = client.write_array(numpy.arange(3), key="a")  # published to no one: stored
        numpy.testing.assert_array_equal(array.read(), numpy.arange(3))

        async def scenario():
            with pytest.raises(InvalidStatus) as refused:
                await connect(_ws(server, "a", envelope_format="json"), additional_headers=HEADERS)
            answer = refused.value.response
            assert answer.status_code == 503
            assert "streaming cache is out of reach" in json.loads(answer.body)["detail"]

        asyncio.run(scenario())


def test_the_json_envelope_sends_what_json_cannot_hold_as_it_came(tmp_path):
    """Times and complex numbers have no JSON form: their payload goes base64, and the
    subscriber stays connected."""
    with serve(_app(tmp_path)) as server:
        client = client_from_uri(server.url, api_key=KEY)
        frame = pandas.DataFrame({"t": pandas.date_range("2020-01-01", periods=2)})
        client.write_dataframe(frame, key="times")
        client.write_array(numpy.array([1 + 2j]), key="complex")

        async def scenario():
            for key in ("times", "complex"):
                url = _ws(server, key, envelope_format="json", start=1)
                async with connect(url, additional_headers=HEADERS) as ws:
                    schema, update = await _messages(ws, 2, decode=json.loads)
                    assert update["payload_encoding"] == "base64", update
                    assert base64.b64decode(update["payload"])

        asyncio.run(scenario())


def test_leaving_before_the_auth_message_is_no_error(tmp_path, capfd):
    """uvicorn logs to standard error what escapes the application: a subscriber that leaves
    (or breaks its connection) while the server waits for its credentials is no error."""
    with serve(_app(tmp_path, authentication={"single_user_api_key": KEY})) as server:
        client_from_uri(server.url, api_key=KEY).write_array(numpy.arange(3), key="a")

        async def scenario():
            async with connect(_ws(server, "a", envelope_format="json")):
                pass  # no credentials, no auth message: gone
            websocket = await connect(_ws(server, "a", envelope_format="json"))
            websocket.transport.abort()
            await asyncio.sleep(0.5)

        asyncio.run(scenario())
    errors = capfd.readouterr().err
    assert "Exception in ASGI application" not in errors
    assert "Traceback" not in errors


def test_updates_between_connecting_and_the_auth_message_are_sent(tmp_path, cache_uri):
    """A subscriber that authenticates by its first message is subscribed only once that
    message came: the updates published since it connected are sent first, not lost (upstream's
    test_first_message_auth_with_api_key writes right after sending it, and waited forever
    when the write won the race); older ones are not."""
    with serve(_app(tmp_path, cache_uri)) as server:
        array = client_from_uri(server.url, api_key=KEY).write_array(numpy.zeros(2), key="a")
        array.write(numpy.full(2, 9.0))  # before the connection: not sent

        async def scenario():
            async with connect(_ws(server, "a", envelope_format="msgpack")) as ws:
                await _in_thread(array.write, numpy.ones(2))
                await _in_thread(array.write, numpy.full(2, 2.0))
                await ws.send(json.dumps({"type": "auth", "api_key": KEY}))
                schema, first, second = await _messages(ws, 3)
                assert schema["type"] == "array-schema"
                assert [first["sequence"], second["sequence"]] == [3, 4]
                assert numpy.frombuffer(first["payload"]).tolist() == [1.0, 1.0]
                assert numpy.frombuffer(second["payload"]).tolist() == [2.0, 2.0]
                await _in_thread(array.write, numpy.full(2, 3.0))
                (live,) = await _messages(ws, 1)
                assert live["sequence"] == 5

        asyncio.run(scenario())


def _notify_from_another_database(tmp_path, key: str, numbers: list[int]) -> None:
    """Publish ``numbers`` on the channel of the node ``key`` of the catalog in ``tmp_path``
    from the neighbour's Redis database (channels are shared by all databases)."""
    import sqlite3

    from redis import Redis

    with contextlib.closing(sqlite3.connect(tmp_path / "catalog.db")) as catalog:
        (node_id,) = catalog.execute("SELECT id FROM nodes WHERE key = ?", (key,)).fetchone()
    client = Redis.from_url(f"redis://{REDIS[0]}:{REDIS[1]}/{NEIGHBOUR_REDIS_DATABASE}")
    try:
        for number in numbers:
            assert client.publish(f"notify:{node_id}", number) >= 1  # our subscriber hears it
    finally:
        client.close()


def test_a_sequence_restarted_while_subscribed_is_followed(tmp_path, cache_uri):
    """A node's counter expires seq_ttl after its last update (upstream's), and its next
    update is number 1 again: a subscriber that stayed connected hears it and the ones after,
    where it took them for updates it had sent."""
    with serve(_app(tmp_path, cache_uri, cache_options={"seq_ttl": 1})) as server:
        array = client_from_uri(server.url, api_key=KEY).write_array(numpy.zeros(2), key="a")

        async def scenario():
            url = _ws(server, "a", envelope_format="msgpack")
            async with connect(url, additional_headers=HEADERS) as ws:
                (schema,) = await _messages(ws, 1)
                assert schema["type"] == "array-schema"
                for value in (1.0, 2.0, 3.0):
                    await _in_thread(array.write, numpy.full(2, value))
                assert [m["sequence"] for m in await _messages(ws, 3)] == [2, 3, 4]
                await asyncio.sleep(2.5)  # the counter expires
                if cache_uri != "memory":
                    # Numbers of another database's stream of the same node id, heard in the
                    # gap: they restart nothing (the old updates they name are kept still).
                    await _in_thread(_notify_from_another_database, tmp_path, "a", [1, 2])
                    await asyncio.sleep(0.2)
                await _in_thread(array.write, numpy.full(2, 4.0))
                await _in_thread(array.write, numpy.full(2, 5.0))
                restarted = await _messages(ws, 2)
                assert [m["sequence"] for m in restarted] == [1, 2]
                assert [numpy.frombuffer(m["payload"])[0] for m in restarted] == [4.0, 5.0]

        asyncio.run(scenario())


def test_a_zarr_attribute_update_is_heard_as_an_api_one_is(tmp_path):
    """Replacing an array's attributes through /zarr announces the metadata update (with the
    revision kept), as PATCH /api/v1/metadata does."""
    with serve(_app(tmp_path)) as server:
        client = client_from_uri(server.url, api_key=KEY)
        client.write_array(numpy.arange(3), key="a", metadata={"color": "red"})
        document = httpx.get(f"{server.url}/zarr/v3/a/zarr.json", headers=HEADERS).json()
        document["attributes"] = {"color": "blue"}

        async def scenario():
            async with connect(
                _ws(server, "", envelope_format="json"), additional_headers=HEADERS
            ) as ws:
                await _messages(ws, 1, decode=json.loads)  # the schema
                answer = await _in_thread(
                    httpx.put, f"{server.url}/zarr/v3/a/zarr.json", json=document,
                    headers=HEADERS,
                )  # fmt: skip
                assert answer.status_code < 300, answer.text
                (update,) = await _messages(ws, 1, decode=json.loads)
            assert update["type"] == "container-child-metadata-updated"
            assert update["key"] == "a" and update["metadata"]["color"] == "blue"
            assert update["revision_number"] == 1

        asyncio.run(scenario())


def test_a_patch_that_does_not_fit_is_refused_without_persist_too(tmp_path):
    with serve(_app(tmp_path)) as server:
        client = client_from_uri(server.url, api_key=KEY)
        client.write_array(numpy.arange(10), key="a")
        answer = httpx.patch(
            f"{server.url}/api/v1/array/full/a",
            params={"offset": "9", "shape": "3", "persist": "false"},
            content=numpy.arange(3).tobytes(),
            headers={**HEADERS, "Content-Type": "application/octet-stream"},
        )
        assert answer.status_code == 409, answer.text

        async def scenario():  # nothing was published after the array's own write
            async with connect(
                _ws(server, "a", envelope_format="msgpack", start=2), additional_headers=HEADERS
            ) as ws:
                await _messages(ws, 1)  # the schema
                with pytest.raises(TimeoutError):
                    await asyncio.wait_for(ws.recv(), 0.5)

        asyncio.run(scenario())


def test_a_hung_datastore_delays_a_write_by_the_publish_timeout_at_most(tmp_path, monkeypatch):
    """A Redis server that stops answering (stopped, not gone): the write is answered once
    publishing gives up, and closing the stream is a 503."""
    import shutil
    import signal
    import subprocess

    from tiled import streaming

    from .processes import free_port

    redis_server = shutil.which("redis-server")
    if redis_server is None:
        pytest.skip("redis-server is not installed")
    port = free_port()
    process = subprocess.Popen(
        [redis_server, "--port", str(port), "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                assert time.monotonic() < deadline, "redis-server did not start"
                time.sleep(0.05)
        monkeypatch.setattr(streaming, "PUBLISH_TIMEOUT_SECONDS", 1.0)
        tree = from_uri(
            f"sqlite:///{tmp_path / 'catalog.db'}", writable_storage=[tmp_path / "data"],
            init_if_not_exists=True,
        )  # fmt: skip
        settings = {"streaming_cache": {"uri": f"redis://127.0.0.1:{port}/0"}}
        app = build_app(tree, {"single_user_api_key": KEY}, server_settings=settings)
        with serve(app) as server:
            client = client_from_uri(server.url, api_key=KEY)
            array = client.write_array(numpy.arange(3), key="a")
            process.send_signal(signal.SIGSTOP)
            started = time.monotonic()
            array.write(numpy.arange(3) + 1)
            assert time.monotonic() - started < 5
            numpy.testing.assert_array_equal(array.read(), numpy.arange(3) + 1)
            closing = httpx.delete(f"{server.url}/api/v1/stream/close/a", headers=HEADERS)
            assert closing.status_code == 503, closing.text
            process.send_signal(signal.SIGCONT)
    finally:
        process.send_signal(signal.SIGCONT)
        process.kill()
        process.wait()


def test_memory_counters_are_bounded_and_cheap(monkeypatch):
    """Counters of the least recently written nodes go beyond the bound (their sequence
    restarts): the dictionary never grows past it (each write removes from the front)."""
    from tiled import streaming

    monkeypatch.setattr(streaming, "MEMORY_MAX_COUNTERS", 1000)
    datastore = MemoryDatastore(data_ttl=3600, seq_ttl=2_592_000)

    async def scenario():
        for node in range(3000):
            await datastore.publish(str(node), {"type": "x"})
        assert len(datastore._sequences) == 1000
        assert await datastore.latest("2999") == 1 and await datastore.latest("0") == 0
        assert await datastore.publish("2999", {"type": "x"}) == 2

    asyncio.run(scenario())
