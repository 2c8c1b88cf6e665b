"""``/api/v1/stream``: live updates of catalog nodes over WebSockets (upstream 0.2.20's routes
and wire format; the messages are those of :mod:`tiled.catalog.streams`).

``WS /stream/single/{path}`` sends the node's schema, then its updates from sequence number
``start`` on (by default, from the first published since the connection opened) as far as
they are kept, then each new one as it is published; the
producer's ``DELETE /stream/close/{path}`` ends the stream, and subscribers are closed with
code 1000. ``envelope_format=msgpack`` sends each message as one msgpack map, a payload as
bytes (what upstream's client asks for); ``json`` sends JSON text, a payload decoded.

A subscriber needs ``read:data`` and ``read:metadata`` on the node, found by the same lookup
as every other route. Credentials come as over HTTP (``api_key`` in the query, an
``Authorization`` header, upstream's ``access_token`` query parameter) or, where the server
requires credentials and none came, as the first message: ``{"type": "auth", "api_key": ...}``
or ``{"type": "auth", "access_token": ...}`` (closed with 4001 if no such message comes, 4003
if its credentials are refused). A subscription refused before the connection is accepted is
answered with the HTTP status and JSON body of the same refusal over HTTP; once accepted (the
first-message form), with close code 4000 + that status and its message as the reason.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Annotated, Any

import msgpack
import orjson
from fastapi import APIRouter, Request, WebSocket
from starlette.requests import HTTPConnection
from starlette.websockets import WebSocketDisconnect, WebSocketState

from ...access.identity import Identity
from ...adapters.protocols import HasLiveStream, supports
from ...errors import BadRequest, ServiceUnavailable, TiledError, Unauthenticated, Unsupported
from ...stream_messages import schema_message
from ...streaming import CatalogStreams, NodeStream, StoredUpdate, datastore_for
from ..credentials import read_credentials
from ..dependencies import Node, capable, node_dependency, require_scope, resolve_node, split_path
from ..errors import error_response, served_tree
from ..responses import document_response
from ..settings import StreamingOptions
from ..state import tiled_state
from .webhooks import served_catalogs

logger = logging.getLogger(__name__)

router = APIRouter(prefix="/stream", tags=["streams"])

ClosingNode = Annotated[Node, node_dependency("write:data")]

# Seconds a connection without credentials is given to send its first ("auth") message.
AUTH_MESSAGE_TIMEOUT = 10.0
# Close codes: upstream's, then this server's for a refusal after the connection is accepted.
CLOSE_ENDED = 1000  # the producer ended the stream
CLOSE_SUBSCRIPTION_LOST = 1012  # the datastore dropped the subscription: reconnect and resume
CLOSE_BAD_AUTH_MESSAGE = 4001
CLOSE_AUTH_REFUSED = 4003
CLOSE_REFUSED_BASE = 4000  # + the HTTP status of the refusal
REASON_MAX_BYTES = 123  # what a close frame holds

CACHE_OUT_OF_REACH = "The streaming cache is out of reach; try again later."
NO_CACHE = (
    "This server has no streaming cache: live streams need the streaming_cache setting "
    "(see the configuration reference)."
)


# --- the datastore of a server ---------------------------------------------------------------


@dataclass
class StreamService:
    """The live streams of every catalog a server serves, in one datastore."""

    options: StreamingOptions
    datastore: Any
    catalogs: list[CatalogStreams] = field(default_factory=list)

    @classmethod
    def for_tree(cls, tree: Any, options: StreamingOptions) -> StreamService:
        service = cls(options, datastore_for(options))
        for index, (_, root) in enumerate(served_catalogs(tree)):
            # Node ids are a catalog's own: the streams of a second catalog are kept apart.
            namespace = "" if index == 0 else f"{index}."
            streams = CatalogStreams(service.datastore, namespace)
            root.catalog.streams = streams
            service.catalogs.append(streams)
        return service

    @staticmethod
    def options_for(tree: Any, configured: StreamingOptions | None) -> StreamingOptions | None:
        """The server's ``streaming_cache``, else the one given with a catalog it serves
        (upstream's ``tiled.catalog.from_uri(..., cache_config=...)``), else None."""
        if configured is not None:
            return configured
        for _, root in served_catalogs(tree):
            requested = root.catalog.requested_streaming_cache
            if requested:
                return StreamingOptions.from_value(requested)
        return None

    async def startup(self) -> None:
        pass

    async def shutdown(self) -> None:
        await self.datastore.aclose()


async def publish_update(adapter: Any, message: dict[str, Any], payload: bytes | None) -> None:
    """Send an update of ``adapter``'s node to its live subscribers, where it has a stream.
    Never raises (see :meth:`~tiled.catalog.streams.NodeStream.publish`)."""
    stream = adapter.live_stream() if supports(adapter, HasLiveStream) else None
    if stream is not None:
        await stream.publish(message, payload)


# --- closing ---------------------------------------------------------------------------------


@router.delete("/close/{path:path}")
async def close_stream(request: Request, node: ClosingNode):
    """End the node's live stream (its subscribers are closed with code 1000)."""
    await capable(node.adapter, HasLiveStream, "live streams").close_stream()
    return document_response(request, None)


# --- subscribing -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Subscription:
    """What one subscriber asked for, checked."""

    envelope: str
    start: int | None

    @classmethod
    def from_query(cls, connection: HTTPConnection) -> Subscription:
        envelope = connection.query_params.get("envelope_format", "json")
        if envelope not in ENVELOPES:
            raise BadRequest(
                f"envelope_format must be one of {sorted(ENVELOPES)}, not {envelope!r}"
            )
        start = connection.query_params.get("start")
        if start is None:
            return cls(envelope, None)
        try:
            number = int(start)
        except ValueError:
            raise BadRequest(
                f"start must be a sequence number (an integer), not {start!r}"
            ) from None
        if number < 0:
            raise BadRequest(f"start must be 0 or more, not {number}")
        return cls(envelope, number)


@router.websocket("/single/{path:path}")
async def subscribe(websocket: WebSocket, path: str) -> None:
    opened = datetime.now(UTC)
    accepted = False
    try:
        subscription = Subscription.from_query(websocket)
        identity, accepted = await _identify(websocket)
        if identity is None:
            return  # refused and closed already
        node = await resolve_node(websocket, identity, split_path(path), "read:data")
        require_scope(identity, "read:metadata", websocket)
        node.require("read:metadata")
        stream = capable(node.adapter, HasLiveStream, "live streams").live_stream()
        if stream is None:
            raise Unsupported(NO_CACHE)
        schema = schema_message(node.adapter, "/" + node.path)
    except TiledError as err:
        await _refuse(websocket, err, accepted)
        return
    sender = Sender(websocket, ENVELOPES[subscription.envelope], node, _array_uri(websocket, path))
    try:
        async with stream.listen() as numbers:
            if not accepted:
                await websocket.accept()
                accepted = True
            await sender.send(schema, None)
            await _relay(websocket, sender, stream, numbers, subscription.start, opened)
    except WebSocketDisconnect:
        pass
    except Exception:
        logger.exception("The live stream of /%s failed", node.path)
        if websocket.application_state == WebSocketState.CONNECTING:
            # The datastore is out of reach (where it is, is the server's business): a 503,
            # which clients try again later.
            await _refuse(websocket, ServiceUnavailable(CACHE_OUT_OF_REACH), accepted=False)
        elif websocket.application_state == WebSocketState.CONNECTED:
            with contextlib.suppress(Exception):
                await websocket.close(code=CLOSE_SUBSCRIPTION_LOST, reason="Live subscription lost")


# Markers the relay's queue holds besides sequence numbers.
_GONE = "gone"  # the subscriber disconnected (or the server is stopping)
_LOST = "lost"  # the datastore's subscription failed


async def _relay(
    websocket: WebSocket,
    sender: Sender,
    stream: NodeStream,
    numbers: Any,
    start: int | None,
    opened: datetime,
) -> None:
    """Replay from ``start`` (by default, from the first update published since the
    connection ``opened``: one authenticated by its first message subscribes only after that
    message came, and the updates between are not lost), then send each new update until the
    stream ends or the subscriber goes.

    A notification is only a hint: Redis delivers a channel's messages to subscribers of every
    database of the server, so another deployment's node of the same id (one sharing the Redis
    server under another database number, say) is heard too. An update is sent only if it is
    newer than the last one sent and kept in this stream's own datastore; updates of this
    stream before it, not sent yet, go first. A sequence that restarts (its counter expired
    while the subscriber stayed) is followed from its new start."""
    queue: asyncio.Queue[int | str] = asyncio.Queue()

    async def pump() -> None:
        try:
            async for number in numbers:
                queue.put_nowait(number)
        except asyncio.CancelledError:
            raise
        except Exception:
            logger.exception("The datastore's subscription of a live stream failed")
            queue.put_nowait(_LOST)

    async def watch() -> None:
        # Nothing is read from a subscriber; a disconnect arrives as a message to receive.
        try:
            while (await websocket.receive())["type"] != "websocket.disconnect":
                pass
        finally:
            queue.put_nowait(_GONE)

    async def send_through(newest: int, newest_update: StoredUpdate | None) -> bool:
        """Send the updates after ``last`` up to ``newest``; True if the stream ended."""
        nonlocal last
        for number in range(last + 1, newest + 1):
            update = newest_update if number == newest else await stream.fetch(number)
            last = number
            if await sender.send_update(update):
                await websocket.close(code=CLOSE_ENDED, reason="Producer ended stream")
                return True
        return False

    tasks = [asyncio.create_task(pump()), asyncio.create_task(watch())]
    try:
        # Read once subscribed: what is published after this is heard.
        current = await stream.latest()
        if start is None:
            start = await _first_published_since(stream, current, opened)
        last = min(max(start, 1) - 1, current)
        if last < current and await send_through(current, await stream.fetch(current)):
            return
        while True:
            item = await queue.get()
            if item == _GONE:
                return
            if item == _LOST:
                await websocket.close(code=CLOSE_SUBSCRIPTION_LOST, reason="Live subscription lost")
                return
            if item <= last:
                if not item <= await stream.latest() < last:
                    continue  # sent already (or replayed, or another stream's)
                # The counter went back and has counted to ``item`` again: it expired (seq_ttl
                # without an update) or was evicted, and the sequence restarted from 1. Its
                # updates are all new to this subscriber. (Updates of the old sequence may be
                # kept still, under the numbers not reached yet: those are not sent.)
                last = 0
            update = await stream.fetch(item)
            if update is None:  # not this stream's (or already expired): nothing to send
                continue
            if await send_through(item, update):
                return
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


# How far back a subscription looks for updates published since its connection opened.
CATCH_UP_MAX = 100


async def _first_published_since(stream: NodeStream, current: int, since: datetime) -> int:
    """The sequence number of the first kept update published at or after ``since`` (this
    server's clock against the publisher's), or ``current + 1`` if there is none."""
    first = current + 1
    for number in range(current, max(current - CATCH_UP_MAX, 0), -1):
        update = await stream.fetch(number)
        if update is None or _published(update) < since:
            break
        first = number
    return first


def _published(update: StoredUpdate) -> datetime:
    try:
        return datetime.fromisoformat(update.message["timestamp"])
    except (KeyError, TypeError, ValueError):
        return datetime.min.replace(tzinfo=UTC)  # not known: taken for old


@dataclass
class Sender:
    """Sends messages to one subscriber in its envelope format."""

    websocket: WebSocket
    envelope: Callable[[Sender, dict[str, Any], bytes | None], Awaitable[None]]
    node: Node
    array_uri: str

    async def send(self, message: dict[str, Any], payload: bytes | None) -> None:
        await self.envelope(self, message, payload)

    async def send_update(self, update: StoredUpdate | None) -> bool:
        """Send ``update`` (None: expired, skipped); True if it ends the stream."""
        if update is None:
            return False
        if update.ends_stream:
            return True
        message = dict(update.message)
        if message.get("type") in CHILD_MESSAGES and not await self.may_see(message["key"]):
            return False
        if message.get("type") == "array-ref":
            message["uri"] = f"{self.array_uri}?slice={_ref_slice(message)}"
        await self.send(message, update.payload)
        return False

    async def may_see(self, key: str) -> bool:
        """Whether the subscriber may see the container's member ``key``: news of a member
        hidden from it (or gone since) is not sent, as its listings would not show it."""
        view = self.node.view
        if view is None or view.policy is None:
            return True
        return await view.child_visible(self.node.chain, key)

    def decode(self, family: str, mimetype: str, payload: bytes, *args: Any) -> Any:
        registry = tiled_state(self.websocket).deserialization_registry
        return registry.decode(family, mimetype, payload, *args)


def _ref_slice(message: dict[str, Any]) -> str:
    """The slice of an array-ref's URI: its patch, or the whole array (upstream's form)."""
    patch = message.get("patch")
    if patch:
        pairs = zip(patch["offset"], patch["shape"], strict=False)
        return ",".join(f"{offset}:{offset + size}" for offset, size in pairs)
    return ",".join(f":{size}" for size in message["shape"])


async def _msgpack_envelope(sender: Sender, message: dict[str, Any], payload: bytes | None) -> None:
    if payload is not None:
        message = {**message, "payload": payload}
    await sender.websocket.send_bytes(msgpack.packb(message))


def _array_payload(sender: Sender, message: dict[str, Any], payload: bytes) -> Any:
    dtype = sender.node.adapter.structure().data_type.to_numpy_dtype()
    return sender.decode("array", message["mimetype"], payload, dtype, message["shape"]).tolist()


def _table_payload(sender: Sender, message: dict[str, Any], payload: bytes) -> Any:
    frame = sender.decode("table", message["mimetype"], payload)
    return {str(column): frame[column].tolist() for column in frame}


def _ragged_payload(sender: Sender, message: dict[str, Any], payload: bytes) -> Any:
    structure = sender.node.adapter.structure()
    return sender.decode("ragged", message["mimetype"], payload, structure).tolist()


# How a payload becomes JSON, by the type of the message that carries it.
JSON_PAYLOADS: dict[str, Callable[[Sender, dict[str, Any], bytes], Any]] = {
    "array-data": _array_payload,
    "table-data": _table_payload,
    "ragged-data": _ragged_payload,
}


async def _json_envelope(sender: Sender, message: dict[str, Any], payload: bytes | None) -> None:
    text = None
    if payload is not None:
        transcode = JSON_PAYLOADS.get(message.get("type", ""))
        try:
            if transcode is None:
                raise ValueError("no JSON form")
            decoded = {**message, "payload": transcode(sender, message, payload)}
            decoded["content-type"] = "application/json"
            text = orjson.dumps(decoded, option=orjson.OPT_SERIALIZE_NUMPY)
        except Exception:
            # A body this server cannot read back (a sparse array's) or whose values JSON
            # cannot hold (times, complex numbers): sent as it came.
            message = {**message, "payload": base64.b64encode(payload).decode()}
            message["payload_encoding"] = "base64"
    if text is None:
        text = orjson.dumps(message, option=orjson.OPT_SERIALIZE_NUMPY, default=str)
    await sender.websocket.send_text(text.decode())


ENVELOPES = {"json": _json_envelope, "msgpack": _msgpack_envelope}
# Messages about a container's member, sent only to subscribers who may see that member.
CHILD_MESSAGES = frozenset({"container-child-created", "container-child-metadata-updated"})


def _array_uri(websocket: WebSocket, path: str) -> str:
    """Where an array-ref's data is read: this node's /array/full (over HTTP)."""
    url = websocket.url
    scheme = "https" if url.scheme == "wss" else "http"
    api = url.path.rsplit("/stream/single/", 1)[0]
    return f"{scheme}://{url.netloc}{api}/array/full/{'/'.join(split_path(path))}"


# --- authentication and refusals -------------------------------------------------------------


async def _identify(websocket: WebSocket) -> tuple[Identity | None, bool]:
    """``(identity, accepted)``: who subscribes, and whether the connection was accepted to
    read credentials from a first message; ``(None, True)`` if it was refused and closed."""
    authenticator = tiled_state(websocket).authenticator
    token = websocket.query_params.get("access_token")
    if token:
        return await authenticator.identify(_with_credentials(websocket, "Bearer", token)), False
    if read_credentials(websocket) is not None or not authenticator.required:
        return await authenticator.identify(websocket), False
    await websocket.accept()
    try:
        message = await asyncio.wait_for(websocket.receive_json(), AUTH_MESSAGE_TIMEOUT)
    except WebSocketDisconnect:
        return None, True  # gone before saying who it is
    except (TimeoutError, ValueError, KeyError):
        await websocket.close(code=CLOSE_BAD_AUTH_MESSAGE, reason="Expected JSON auth message")
        return None, True
    if not isinstance(message, dict) or message.get("type") != "auth":
        await websocket.close(code=CLOSE_BAD_AUTH_MESSAGE, reason='Expected {"type": "auth", ...}')
        return None, True
    api_key, access_token = message.get("api_key"), message.get("access_token")
    credentials = None
    if isinstance(api_key, str) and api_key:
        credentials = ("Apikey", api_key)
    elif isinstance(access_token, str) and access_token:
        credentials = ("Bearer", access_token)
    try:
        if credentials is None:
            raise Unauthenticated("No credentials in the auth message")
        identity = await authenticator.identify(_with_credentials(websocket, *credentials))
    except TiledError:
        await websocket.close(code=CLOSE_AUTH_REFUSED, reason="Authentication failed")
        return None, True
    return identity, True


def _with_credentials(websocket: WebSocket, scheme: str, secret: str) -> HTTPConnection:
    """The connection as if its ``Authorization`` header carried ``scheme secret`` alone."""
    headers = [
        (k, v) for k, v in websocket.scope["headers"] if k not in (b"authorization", b"cookie")
    ]
    headers.append((b"authorization", f"{scheme} {secret}".encode("latin-1")))
    query = b"&".join(
        part for part in websocket.scope.get("query_string", b"").split(b"&")
        if not part.startswith((b"api_key=", b"access_token="))
    )  # fmt: skip
    scope = {**websocket.scope, "headers": headers, "query_string": query}
    return HTTPConnection(scope)


async def _refuse(websocket: WebSocket, error: TiledError, accepted: bool) -> None:
    """Refuse a subscription as the same refusal is answered over HTTP: before the handshake
    completes, with its status and body; after, by closing with 4000 + the status."""
    response = error_response(error, served_tree(websocket))
    if accepted:
        reason = orjson.loads(response.body).get("detail", "")
        text = str(reason).encode()[:REASON_MAX_BYTES].decode(errors="ignore")
        await websocket.close(code=CLOSE_REFUSED_BASE + response.status_code, reason=text)
    elif "websocket.http.response" in websocket.scope.get("extensions", {}):
        await websocket.send_denial_response(response)
    else:  # a server without denial responses: the handshake fails with 403
        await websocket.close(code=1008, reason=str(error)[:REASON_MAX_BYTES])
