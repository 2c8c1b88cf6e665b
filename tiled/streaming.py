"""Where live updates wait for their subscribers: the datastores of the ``streaming_cache``.

Every update of a node gets the next number of that node's sequence (1, 2, ...) and is kept,
as its message (JSON) and an optional payload (bytes), for ``data_ttl`` seconds, so that a
subscriber may replay what it missed; subscribers hear the numbers as they are assigned. A
stream is closed by an update that says ``end_of_stream``; the sequence then restarts from 1
once its last update has expired.

:class:`MemoryDatastore` keeps all this in the server process (``uri: memory``: one process
only). :class:`RedisDatastore` keeps it in Redis with upstream Tiled 0.2.20's keys, so servers
of both kinds may share one Redis: ``sequence:{node}`` (the counter), ``data:{node}:{n}`` (a
hash: ``sequence``, ``metadata``, ``payload``) and the channel ``notify:{node}``.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Protocol

import orjson

if TYPE_CHECKING:
    from .server.settings import StreamingOptions

logger = logging.getLogger(__name__)

# The memory datastore keeps at most this many updates (all nodes together; the oldest go
# first): upstream's bound, which keeps a forgotten stream from holding the process's memory.
MEMORY_MAX_UPDATES = 1000
# ...and the sequence counters of at most this many nodes (the least recently written go
# first: such a node's next update is numbered 1 again, as after its counter expired).
MEMORY_MAX_COUNTERS = 100_000
# How long a write waits for its update to be published: a datastore that hangs (not one
# that refuses: that fails at once) costs subscribers the update, not the writer its answer.
PUBLISH_TIMEOUT_SECONDS = 5.0


@dataclass(frozen=True)
class StoredUpdate:
    """One update as kept: its message and the bytes that go with it (None: none)."""

    message: dict[str, Any]
    payload: bytes | None = None

    @property
    def ends_stream(self) -> bool:
        return bool(self.message.get("end_of_stream"))


class StreamDatastore(Protocol):
    async def publish(
        self, node_id: str, message: dict[str, Any], payload: bytes | None = None
    ) -> int:
        """Keep ``message`` (its ``sequence`` set here) and tell subscribers; its number."""
        ...

    async def end(self, node_id: str) -> int:
        """Publish the end of the node's stream; its number."""
        ...

    async def latest(self, node_id: str) -> int:
        """The number of the node's last update (0: none kept)."""
        ...

    async def fetch(self, node_id: str, sequence: int) -> StoredUpdate | None:
        """Update ``sequence`` of the node, None if it expired or never was."""
        ...

    def listen(self, node_id: str) -> contextlib.AbstractAsyncContextManager[AsyncIterator[int]]:
        """The numbers of the node's updates from now on (subscribed on entry)."""
        ...

    async def aclose(self) -> None: ...


def _encoded(message: dict[str, Any]) -> bytes:
    # Numpy scalars and the like (shapes from arrays) become JSON numbers and lists.
    return orjson.dumps(message, option=orjson.OPT_SERIALIZE_NUMPY, default=_jsonable)


def _jsonable(value: Any) -> Any:
    if isinstance(value, tuple | set | frozenset):
        return list(value)
    if hasattr(value, "tolist"):
        return value.tolist()
    raise TypeError(f"{type(value).__name__} has no JSON form")


def _end_message() -> dict[str, Any]:
    return {"timestamp": datetime.now(UTC).isoformat(), "end_of_stream": True}


class MemoryDatastore:
    """Updates kept in this process (``uri: memory``), for one server process."""

    def __init__(self, data_ttl: float, seq_ttl: float, max_updates: int = MEMORY_MAX_UPDATES):
        self.data_ttl = data_ttl
        self.seq_ttl = seq_ttl
        self.max_updates = max_updates
        # node -> (its last number, when the counter expires), least recently written first
        self._sequences: collections.OrderedDict[str, tuple[int, float]] = collections.OrderedDict()
        # (node, number) -> (update, when it expires); insertion order is expiry order, as
        # every update lives data_ttl seconds.
        self._updates: collections.OrderedDict[tuple[str, int], tuple[StoredUpdate, float]] = (
            collections.OrderedDict()
        )
        self._listeners: dict[str, set[asyncio.Queue[int]]] = collections.defaultdict(set)

    def _next(self, node_id: str, counter_ttl: float) -> int:
        now = time.monotonic()
        last, expires = self._sequences.get(node_id, (0, now))
        number = (last if expires > now else 0) + 1
        self._sequences[node_id] = (number, now + counter_ttl)
        self._sequences.move_to_end(node_id)
        # Counters of streams quiet since they expired, or beyond the bound, go: each write
        # removes what it finds at the front, so the cost stays flat.
        while self._sequences:
            (_, (_, expires)) = next(iter(self._sequences.items()))
            if expires > now and len(self._sequences) <= MEMORY_MAX_COUNTERS:
                break
            self._sequences.popitem(last=False)
        return number

    def _keep(self, node_id: str, number: int, update: StoredUpdate) -> None:
        now = time.monotonic()
        self._updates[(node_id, number)] = (update, now + self.data_ttl)
        while self._updates:
            (_, (_, expires)) = next(iter(self._updates.items()))
            if expires > now and len(self._updates) <= self.max_updates:
                break
            self._updates.popitem(last=False)
        for queue in self._listeners.get(node_id, ()):
            queue.put_nowait(number)

    async def publish(
        self, node_id: str, message: dict[str, Any], payload: bytes | None = None
    ) -> int:
        number = self._next(node_id, self.seq_ttl)
        message = {**message, "sequence": number}
        self._keep(node_id, number, StoredUpdate(orjson.loads(_encoded(message)), payload))
        return number

    async def end(self, node_id: str) -> int:
        # As in Redis: the counter outlives the last update, then the sequence restarts.
        number = self._next(node_id, 1 + self.data_ttl)
        self._keep(node_id, number, StoredUpdate({**_end_message(), "sequence": number}))
        return number

    async def latest(self, node_id: str) -> int:
        last, expires = self._sequences.get(node_id, (0, 0.0))
        return last if expires > time.monotonic() else 0

    async def fetch(self, node_id: str, sequence: int) -> StoredUpdate | None:
        kept = self._updates.get((node_id, sequence))
        if kept is None or kept[1] <= time.monotonic():
            return None
        return kept[0]

    @contextlib.asynccontextmanager
    async def listen(self, node_id: str) -> AsyncIterator[AsyncIterator[int]]:
        queue: asyncio.Queue[int] = asyncio.Queue()
        self._listeners[node_id].add(queue)

        async def numbers() -> AsyncIterator[int]:
            while True:
                yield await queue.get()

        try:
            yield numbers()
        finally:
            listeners = self._listeners.get(node_id)
            if listeners is not None:
                listeners.discard(queue)
                if not listeners:
                    del self._listeners[node_id]

    async def aclose(self) -> None:
        pass


# Numbers, stores and announces one update, atomically (upstream's keys and fields).
# KEYS[1]: the counter; ARGV: the data key's prefix, the channel, the update's and the
# counter's lifetimes, the message's JSON after its opening brace (with a leading comma),
# and the payload, if any.
_PUBLISH_SCRIPT = """
local number = redis.call('INCR', KEYS[1])
local key = ARGV[1] .. number
local metadata = '{"sequence":' .. number .. ARGV[5]
if ARGV[6] then
  redis.call('HSET', key, 'sequence', number, 'metadata', metadata, 'payload', ARGV[6])
else
  redis.call('HSET', key, 'sequence', number, 'metadata', metadata)
end
redis.call('EXPIRE', key, ARGV[3])
redis.call('EXPIRE', KEYS[1], ARGV[4])
redis.call('PUBLISH', ARGV[2], number)
return number
"""


class RedisDatastore:
    """Updates kept in Redis (``uri: redis://...`` or Sentinels), shared by server processes."""

    def __init__(self, client: Any, data_ttl: int, seq_ttl: int):
        self.client = client  # a redis.asyncio.Redis
        self.data_ttl = data_ttl
        self.seq_ttl = seq_ttl
        self._publish_script = client.register_script(_PUBLISH_SCRIPT)

    @classmethod
    def from_options(cls, options: StreamingOptions) -> RedisDatastore:
        return cls(redis_client(options), options.data_ttl, options.seq_ttl)

    async def publish(
        self, node_id: str, message: dict[str, Any], payload: bytes | None = None
    ) -> int:
        return await self._store(node_id, message, payload, self.seq_ttl)

    async def end(self, node_id: str) -> int:
        # The counter outlives the last update, then the sequence restarts from 1 (upstream's).
        return await self._store(node_id, _end_message(), None, 1 + self.data_ttl)

    async def _store(
        self, node_id: str, message: dict[str, Any], payload: bytes | None, counter_ttl: int
    ) -> int:
        # One script, so that the counter never names an update not stored yet: a subscriber
        # takes every number up to the counter for sent or expired.
        encoded = _encoded(message)
        after_sequence = b"," + encoded[1:] if encoded != b"{}" else b"}"
        args = [f"data:{node_id}:", f"notify:{node_id}", self.data_ttl, counter_ttl]
        args.append(after_sequence)
        if payload:
            args.append(payload)
        return int(await self._publish_script(keys=[f"sequence:{node_id}"], args=args))

    async def latest(self, node_id: str) -> int:
        value = await self.client.get(f"sequence:{node_id}")
        return int(value) if value is not None else 0

    async def fetch(self, node_id: str, sequence: int) -> StoredUpdate | None:
        payload, metadata = await self.client.hmget(
            f"data:{node_id}:{sequence}", "payload", "metadata"
        )
        if metadata is None:
            return None
        return StoredUpdate(orjson.loads(metadata), payload)

    @contextlib.asynccontextmanager
    async def listen(self, node_id: str) -> AsyncIterator[AsyncIterator[int]]:
        channel = f"notify:{node_id}"
        pubsub = self.client.pubsub()

        async def subscribed() -> None:
            await pubsub.subscribe(channel)
            # Subscribed once Redis confirms: numbers published after this are heard.
            while (await pubsub.get_message(timeout=1.0)) is None:
                pass

        # A Redis that hangs is out of reach as one that refuses is (a 503 to the subscriber).
        await asyncio.wait_for(subscribed(), PUBLISH_TIMEOUT_SECONDS)

        async def numbers() -> AsyncIterator[int]:
            async for message in pubsub.listen():
                if message.get("type") != "message":
                    continue
                try:
                    yield int(message["data"])
                except (TypeError, ValueError):
                    logger.warning("Ignored a notification on %s: %r", channel, message["data"])

        try:
            yield numbers()
        finally:
            with contextlib.suppress(Exception):  # the connection may be the thing that failed
                await pubsub.unsubscribe(channel)
            await pubsub.aclose()

    async def aclose(self) -> None:
        await self.client.aclose()


def redis_client(options: StreamingOptions) -> Any:
    """The asyncio Redis client of the options: one node (``uri``) or the current primary of a
    Sentinel cluster (followed through failovers)."""
    from redis import asyncio as redis
    from redis.asyncio.sentinel import Sentinel

    timeouts = {
        "socket_timeout": options.socket_timeout,
        "socket_connect_timeout": options.socket_connect_timeout,
    }
    if options.sentinels:
        hosts = [
            (host, int(port)) for host, _, port in (s.rpartition(":") for s in options.sentinels)
        ]
        tls = {"ssl": True} if options.ssl else {}
        sentinel = Sentinel(
            hosts,
            password=options.password,
            sentinel_kwargs=tls or None,
            # A stalled connection after a failover is noticed by these pings.
            health_check_interval=options.health_check_interval,
            **timeouts,
            **tls,
        )
        return sentinel.master_for(options.service_name)
    return redis.from_url(options.uri, **timeouts)


def datastore_for(options: StreamingOptions) -> StreamDatastore:
    """The datastore the ``streaming_cache`` options name."""
    if options.in_memory:
        return MemoryDatastore(options.data_ttl, options.seq_ttl)
    return RedisDatastore.from_options(options)


# --- the streams of one catalog --------------------------------------------------------------


class CatalogStreams:
    """The live streams of one catalog's nodes, kept in one datastore."""

    def __init__(self, datastore: StreamDatastore, namespace: str = ""):
        self.datastore = datastore
        # Before each node id in the datastore's keys: "" (upstream's keys) unless catalogs
        # of one server share the datastore.
        self.namespace = namespace

    def of_node(self, node_id: int) -> NodeStream:
        return NodeStream(self.datastore, f"{self.namespace}{node_id}")

    async def announce(self, node_id: int, *messages: dict[str, Any]) -> None:
        """Publish each message to the subscribers of node ``node_id``. Never raises: the
        change they tell of is already made."""
        stream = self.of_node(node_id)
        for message in messages:
            await stream.publish(message)


@dataclass(frozen=True)
class NodeStream:
    """The live stream of one node."""

    datastore: StreamDatastore
    node_id: str  # the node's key in the datastore

    async def publish(self, message: dict[str, Any], payload: bytes | None = None) -> None:
        """Publish ``message`` (with ``payload``) to the node's subscribers. Never raises: a
        datastore out of reach costs the subscribers this update, not the writer its write."""
        try:
            await asyncio.wait_for(
                self.datastore.publish(self.node_id, message, payload), PUBLISH_TIMEOUT_SECONDS
            )
        except Exception:
            logger.exception(
                "A %s update of node %s was not published", message.get("type"), self.node_id
            )

    async def end(self) -> None:
        """Close the stream: subscribers are told, and disconnected (TimeoutError if the
        datastore hangs)."""
        await asyncio.wait_for(self.datastore.end(self.node_id), PUBLISH_TIMEOUT_SECONDS)

    async def latest(self) -> int:
        return await self.datastore.latest(self.node_id)

    async def fetch(self, sequence: int) -> StoredUpdate | None:
        return await self.datastore.fetch(self.node_id, sequence)

    def listen(self) -> Any:
        return self.datastore.listen(self.node_id)
