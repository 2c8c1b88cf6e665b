"""The Python client's live updates (``subscribe()``) against a streaming server.

Each test runs against upstream Tiled 0.2.20's own server (``tiled serve catalog --temp``,
whose streaming cache is in memory), so that this client is held to the protocol as upstream
serves it, and against this server with the same command.
"""

from __future__ import annotations

import sys
import threading
import time
import uuid
from pathlib import Path

import numpy
import pandas
import pyarrow
import pytest

from tiled import stream_messages
from tiled.client import from_uri
from tiled.client.stream import (
    ArraySubscription,
    LiveArrayData,
    LiveChildCreated,
    LiveChildMetadataUpdated,
    LiveTableData,
)
from tiled.client.utils import AuthenticationRequired, ClientError

from .processes import server_process, without_pythonpath

API_KEY = "secret"
WAIT = 20  # seconds: generous, every wait ends as soon as the update arrives


@pytest.fixture(scope="module", params=["upstream", "this"])
def streaming_server(request, tmp_path_factory):
    """``tiled serve catalog --temp`` (a streaming cache in memory) of upstream's release, or
    of this package."""
    if request.param == "upstream":
        tiled, env = (
            request.getfixturevalue("upstream_tiled").parent / "tiled",
            without_pythonpath(),
        )
    else:
        tiled, env = Path(sys.executable).parent / "tiled", None
    command = [tiled, "serve", "catalog", "--temp", "--api-key", API_KEY]
    with server_process(command, tmp_path_factory.mktemp(request.param), env=env) as url:
        yield url


@pytest.fixture
def client(streaming_server):
    return from_uri(streaming_server, api_key=API_KEY)


def unique(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:8]}"


class Collected:
    """Updates handed to a callback, with a wait for the n-th."""

    def __init__(self):
        self.items: list = []
        self._changed = threading.Condition()

    def __call__(self, update) -> None:
        with self._changed:
            self.items.append(update)
            self._changed.notify_all()

    def wait_for(self, count: int) -> list:
        with self._changed:
            assert self._changed.wait_for(lambda: len(self.items) >= count, timeout=WAIT), (
                f"{len(self.items)} of {count} updates arrived: {self.items}"
            )
            return list(self.items)


def test_a_container_reports_children_created_and_their_metadata_updated(client):
    created, updated = Collected(), Collected()
    with client.subscribe() as subscription:
        subscription.child_created.add_callback(created)
        subscription.child_metadata_updated.add_callback(updated)
        subscription.start_in_thread()
        key = unique("x")
        node = client.write_array(numpy.arange(5), key=key, metadata={"color": "red"})
        node.update_metadata({"color": "blue"})
        (child,) = [u for u in created.wait_for(1) if u.key == key]
        (change,) = [u for u in updated.wait_for(1) if u.key == key]
    assert isinstance(child, LiveChildCreated)
    assert child.structure_family == "array"
    assert child.metadata == {"color": "red"}
    assert child.sequence >= 1 and child.timestamp is not None
    assert child.uri.endswith(f"/api/v1/metadata/{key}")
    numpy.testing.assert_array_equal(child.child().read(), numpy.arange(5))
    assert isinstance(change, LiveChildMetadataUpdated)
    assert change.metadata["color"] == "blue"
    assert change.sequence > child.sequence


def test_an_array_replays_from_the_start_then_streams_writes_and_patches(client):
    node = client.write_array(numpy.zeros(6, dtype="int32"), key=unique("a"))
    received = Collected()
    subscription = node.subscribe()
    subscription.new_data.add_callback(received)
    subscription.start_in_thread(1)
    try:
        node.write(numpy.arange(6, dtype="int32"))
        node.patch(numpy.array([7, 8], dtype="int32"), offset=(2,))
        first, second, third = received.wait_for(3)[:3]
    finally:
        subscription.disconnect()
    assert all(isinstance(u, LiveArrayData) for u in (first, second, third))
    assert all(isinstance(u, stream_messages.ArrayData) for u in (first, second, third))
    assert [u.sequence for u in (first, second, third)] == [1, 2, 3]
    numpy.testing.assert_array_equal(first.data(), numpy.zeros(6, dtype="int32"))
    numpy.testing.assert_array_equal(second.data(), numpy.arange(6, dtype="int32"))
    assert third.offset == (2,) and third.shape == (2,)
    numpy.testing.assert_array_equal(third.data(), [7, 8])
    assert third.data().dtype == numpy.dtype("int32")


def test_closing_the_stream_ends_the_subscription(client):
    node = client.write_array(numpy.arange(3), key=unique("c"))
    events = Collected()
    subscription = node.subscribe()
    subscription.new_data.add_callback(lambda update: events(update.sequence))
    subscription.stream_closed.add_callback(lambda sub: events("stream_closed"))
    subscription.disconnected.add_callback(lambda sub: events("disconnected"))
    subscription.start_in_thread(1)
    node.close_stream()
    assert events.wait_for(3) == [1, "stream_closed", "disconnected"]
    subscription._thread.join(WAIT)
    assert not subscription._thread.is_alive()


def test_a_table_streams_appended_rows(client):
    frame = pandas.DataFrame({"count": [1, 2, 3], "label": ["a", "b", "c"]})
    table = client.create_appendable_table(pyarrow.Schema.from_pandas(frame), key=unique("t"))
    received = Collected()
    with table.subscribe() as subscription:
        subscription.new_data.add_callback(received)
        subscription.start_in_thread()
        table.append_partition(0, frame)
        (update,) = received.wait_for(1)
    assert isinstance(update, LiveTableData)
    assert update.append is True and update.partition == 0
    pandas.testing.assert_frame_equal(update.data().reset_index(drop=True), frame)


def test_disconnecting_stops_callbacks_and_reports_it_once(client):
    node = client.write_array(numpy.arange(3), key=unique("d"))
    events = Collected()
    subscription = node.subscribe()
    subscription.new_data.add_callback(events)
    subscription.stream_closed.add_callback(lambda sub: events("stream_closed"))
    subscription.disconnected.add_callback(lambda sub: events("disconnected"))
    subscription.start_in_thread()
    subscription.disconnect()
    subscription.disconnect()
    node.write(numpy.arange(3) + 1)
    time.sleep(0.5)
    assert events.items == ["disconnected"]
    with pytest.raises(RuntimeError, match="started once"):
        subscription.start_in_thread()


def test_a_callback_may_disconnect_its_own_subscription(client):
    node = client.write_array(numpy.arange(3), key=unique("e"))
    events = Collected()
    subscription = node.subscribe()
    subscription.new_data.add_callback(lambda update: subscription.disconnect())
    subscription.disconnected.add_callback(lambda sub: events("disconnected"))
    subscription.start_in_thread(1)
    assert events.wait_for(1) == ["disconnected"]
    subscription._thread.join(WAIT)
    assert not subscription._thread.is_alive()


def test_a_failing_callback_does_not_stop_the_others(client, caplog):
    node = client.write_array(numpy.arange(3), key=unique("f"))
    received = Collected()
    subscription = node.subscribe()
    subscription.new_data.add_callback(lambda update: 1 / 0)
    subscription.new_data.add_callback(received)
    with subscription:
        subscription.start_in_thread(1)
        node.write(numpy.arange(3) * 2)
        assert [u.sequence for u in received.wait_for(2)] == [1, 2]
    assert "ZeroDivisionError" in caplog.text


def test_refusals_are_the_clients_errors(client, streaming_server):
    with pytest.raises(ClientError) as missing:
        ArraySubscription(client.context, ["no", "such", "node"]).start_in_thread()
    assert missing.value.response.status_code == 404
    node = client.write_array(numpy.arange(3), key=unique("g"))
    stranger = from_uri(streaming_server, api_key=API_KEY)
    stranger.context.api_key = "wrong"
    with pytest.raises(AuthenticationRequired):
        ArraySubscription(stranger.context, node.path_parts).start_in_thread()


def test_an_application_in_this_process_streams_too(tmp_path):
    """``Context.from_app``: the socket goes through the in-process test client."""
    from tiled.catalog import from_uri as catalog_from_uri
    from tiled.client import Context, from_context
    from tiled.server.app import build_app

    tree = catalog_from_uri(
        f"sqlite:///{tmp_path / 'catalog.db'}", writable_storage=[tmp_path / "data"],
        init_if_not_exists=True,
    )  # fmt: skip
    app = build_app(
        tree,
        authentication={"single_user_api_key": API_KEY},
        server_settings={"streaming_cache": {"uri": "memory"}},
    )
    context = Context.from_app(app)
    try:
        client = from_context(context)
        node = client.write_array(numpy.arange(4), key="x")
        events = Collected()
        subscription = node.subscribe()
        subscription.new_data.add_callback(lambda update: events(update.data().tolist()))
        subscription.stream_closed.add_callback(lambda sub: events("stream_closed"))
        subscription.start_in_thread(1)
        node.write(numpy.arange(4) + 10)
        node.close_stream()
        assert events.wait_for(3) == [[0, 1, 2, 3], [10, 11, 12, 13], "stream_closed"]
        subscription.disconnect()
        with pytest.raises(ClientError) as missing:
            ArraySubscription(context, ["nope"]).start_in_thread()
        assert missing.value.response.status_code == 404
    finally:
        context.close()


def test_a_catalog_given_a_cache_config_streams_and_so_does_the_simple_server(tmp_path):
    """Upstream's Python forms: ``tiled.catalog.from_uri(..., cache_config=...)`` turns
    streaming on for the server built on it; ``SimpleTiledServer`` streams from memory."""
    from tiled.catalog import from_uri as catalog_from_uri
    from tiled.server import SimpleTiledServer
    from tiled.server.app import build_app

    tree = catalog_from_uri(
        f"sqlite:///{tmp_path / 'catalog.db'}", writable_storage=[tmp_path / "data"],
        init_if_not_exists=True, cache_config={"uri": "memory", "data_ttl": 60},
    )  # fmt: skip
    app = build_app(tree, authentication={"single_user_api_key": API_KEY})
    assert app.state.tiled.streams.options.data_ttl == 60
    with SimpleTiledServer(directory=tmp_path / "simple") as server:
        client = from_uri(server.uri)
        node = client.write_array(numpy.arange(3), key="x")
        received = Collected()
        with node.subscribe() as subscription:
            subscription.new_data.add_callback(received)
            subscription.start_in_thread(1)
            (update,) = received.wait_for(1)
        numpy.testing.assert_array_equal(update.data(), numpy.arange(3))


@pytest.mark.parametrize("disconnect_first", [False, True])
def test_closing_a_server_with_a_subscription_open_does_not_hang(tmp_path, disconnect_first):
    """The server closes its sockets (1012) and stops; the subscription then tries to connect
    again until it is disconnected, which ends it promptly."""
    from tiled.server import SimpleTiledServer

    server = SimpleTiledServer(directory=tmp_path)
    node = from_uri(server.uri).write_array(numpy.arange(3), key="x")
    events = Collected()
    subscription = node.subscribe()
    subscription.disconnected.add_callback(lambda sub: events("disconnected"))
    subscription.start_in_thread()
    if disconnect_first:
        subscription.disconnect()
    closer = threading.Thread(target=server.close, daemon=True)
    closer.start()
    closer.join(WAIT)
    assert not closer.is_alive(), "the server did not stop with a subscription open"
    started = time.monotonic()
    subscription.disconnect()
    assert time.monotonic() - started < 10
    assert not subscription._thread.is_alive()
    assert events.wait_for(1) == ["disconnected"]


def test_a_subscription_resumes_after_its_server_restarts(tmp_path):
    """Updates kept in Redis outlive the server process: a subscription whose server restarts
    connects again and resumes after the last update it received, none missed or repeated."""
    import socket

    from .processes import free_port

    try:
        socket.create_connection(("127.0.0.1", 6379), timeout=0.5).close()
    except OSError:
        pytest.skip("no Redis server at 127.0.0.1:6379")
    redis_uri = "redis://127.0.0.1:6379/9"  # test_streaming.py takes 1-8 (one per worker)
    from redis import Redis

    Redis.from_url(redis_uri).flushdb()
    (tmp_path / "data").mkdir()
    command = [Path(sys.executable).parent / "tiled", "serve", "catalog", "catalog.db", "--init",
               "-w", "data", "--api-key", API_KEY, "--cache", redis_uri]  # fmt: skip
    port = free_port()
    received = Collected()
    with server_process(command, tmp_path, port=port) as url:
        node = from_uri(url, api_key=API_KEY).write_array(numpy.zeros(3), key="x")
        subscription = node.subscribe()
        subscription.new_data.add_callback(received)
        subscription.start_in_thread(1)
        node.write(numpy.ones(3))
        assert [u.sequence for u in received.wait_for(2)] == [1, 2]
    try:
        with server_process(command, tmp_path, port=port) as url:
            node = from_uri(url, api_key=API_KEY)["x"]
            node.write(numpy.full(3, 2.0))
            updates = received.wait_for(3)
    finally:
        subscription.disconnect()
        Redis.from_url(redis_uri).flushdb()
    assert [u.sequence for u in updates] == [1, 2, 3]
    numpy.testing.assert_array_equal(updates[2].data(), [2.0, 2.0, 2.0])
