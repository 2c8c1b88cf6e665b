"""Live updates of a node: ``node.subscribe()`` on containers, arrays and tables.

A :class:`Subscription` holds a WebSocket to the server's ``/api/v1/stream/single/{path}``
(upstream Tiled's streaming protocol, msgpack envelopes). The first message of a connection is
the node's schema (an array's data type, a table's Arrow schema); each later message is one
update, read with that schema and handed to the callbacks registered for its kind, in the
order received, on the subscription's executor (one worker thread unless another is given).

A connection that drops is made again, resuming after the last update received, so no update
the server still holds is missed or repeated. When the writer closes the stream, the
``stream_closed`` callbacks run, then ``disconnected``.

Callbacks are held strongly (upstream's client holds weak references, so that a lambda
registered inline never runs there; code written for it runs here unchanged).
"""

from __future__ import annotations

import concurrent.futures
import logging
import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Generic, TypeVar

import httpx

from ..stream_messages import (
    ArrayData,
    ArrayPatch,
    ArrayRef,
    ChildCreated,
    ChildMetadataUpdated,
    Schema,
    TableData,
    UnparseableMessage,
    Update,
    read_schema,
    read_update,
)
from .utils import handle_error as raise_for_answer
from .utils import path_url, retry_context, should_retry

if TYPE_CHECKING:
    from .context import Context

logger = logging.getLogger(__name__)

__all__ = [
    "ArrayPatch",
    "ArraySubscription",
    "CallbackRegistry",
    "ContainerSubscription",
    "LiveArrayData",
    "LiveArrayRef",
    "LiveChildCreated",
    "LiveChildMetadataUpdated",
    "LiveTableData",
    "Subscription",
    "TableSubscription",
    "UnparseableMessage",
    "parse_schema",
    "parse_update",
]

# How often a waiting receive looks up to see whether the subscription was stopped.
RECEIVE_POLL_SECONDS = 0.1
# Lifetime of the API key a logged-in context makes to open the socket (revoked once open).
CONNECTING_KEY_SECONDS = 60
DEFAULT_MAX_MESSAGE_BYTES = 1_000_000
# The close code of a server whose writer ended the stream (a server going away, 1001, is
# connected to again).
STREAM_ENDED = 1000
# The close code a client sends when a message exceeds its max_size: reconnecting would only
# meet the same message again.
MESSAGE_TOO_BIG = 1009

T = TypeVar("T")


class CallbackRegistry(Generic[T]):
    """Callbacks for one kind of update, run on ``executor`` in registration order."""

    def __init__(self, executor: concurrent.futures.Executor):
        self._executor = executor
        self._callbacks: list[Callable[[T], Any]] = []

    @property
    def executor(self) -> concurrent.futures.Executor:
        return self._executor

    def add_callback(self, callback: Callable[[T], Any]) -> CallbackRegistry[T]:
        """Run ``callback(update)`` for each update of this kind; returns the registry, so
        that calls chain."""
        self._callbacks.append(callback)
        return self

    def remove_callback(self, callback: Callable[[T], Any]) -> CallbackRegistry[T]:
        self._callbacks.remove(callback)
        return self

    def process(self, update: T) -> None:
        """Hand ``update`` to every callback (through the executor)."""
        for callback in list(self._callbacks):
            try:
                self._executor.submit(_logging_failures, callback, update)
            except RuntimeError:  # the executor was shut down: the subscription has ended
                return


# Set on the thread running a callback: a callback that disconnects its subscription must
# not wait for the callbacks (itself among them) to finish.
_in_callback = threading.local()


def _logging_failures(callback: Callable[[Any], Any], update: Any) -> None:
    # An executor keeps a callback's exception in a future nobody reads: say it here.
    _in_callback.active = True
    try:
        callback(update)
    except Exception:
        logger.exception("A subscription callback %r failed on %r", callback, update)
    finally:
        _in_callback.active = False


# --- messages ---
# Upstream's message classes (tiled.stream_messages), with what a subscriber can do with them.


@dataclass(kw_only=True)
class LiveChildCreated(ChildCreated):
    """A node was created in the container."""

    subscription: Subscription

    @property
    def uri(self) -> str:
        """The URL of the new node's metadata."""
        path = path_url([*self.subscription.segments, self.key])
        return self.subscription.context.url(f"metadata/{path}")

    def child(self) -> Any:
        """A client of the new node (read from the server)."""
        from .constructors import from_context

        subscription = self.subscription
        return from_context(
            subscription.context,
            getattr(subscription, "structure_clients", None) or "numpy",
            node_path_parts=[*subscription.segments, self.key],
        )


@dataclass(kw_only=True)
class LiveChildMetadataUpdated(ChildMetadataUpdated):
    """The metadata (or specs) of a node in the container changed."""

    subscription: Subscription


@dataclass(kw_only=True)
class LiveArrayData(ArrayData):
    """Values written to the array, carried in the message."""

    subscription: Subscription

    def data(self) -> Any:
        """The values written, as a numpy array of ``shape``."""
        dtype = self.data_type.to_numpy_dtype()
        if self.mimetype == OCTET_STREAM:
            import numpy

            return numpy.frombuffer(self.payload, dtype=dtype).reshape(self.shape)
        from ..serialization import default_deserialization_registry

        decode = default_deserialization_registry.dispatch("array", self.mimetype)
        return decode(self.payload, dtype, self.shape)


@dataclass(kw_only=True)
class LiveArrayRef(ArrayRef):
    """Values written to the array, to be read from ``uri`` (the region ``patch`` names, or
    the whole array)."""

    subscription: Subscription

    def data(self) -> Any:
        import numpy

        context = self.subscription.context
        for attempt in retry_context(context):
            with attempt:
                response = raise_for_answer(
                    context.http_client.get(self.uri, headers={"Accept": OCTET_STREAM})
                )
        shape = self.patch.shape if self.patch else self.shape
        dtype = self.data_type.to_numpy_dtype()
        return numpy.frombuffer(response.content, dtype=dtype).reshape(shape)


@dataclass(kw_only=True)
class LiveTableData(TableData):
    """Rows written to the table (a partition replaced, or appended to with ``append``)."""

    subscription: Subscription

    def data(self) -> Any:
        """The rows written, as a pandas DataFrame."""
        from ..serialization import default_deserialization_registry

        return default_deserialization_registry.dispatch("table", self.mimetype)(self.payload)


OCTET_STREAM = "application/octet-stream"
# The class each update is read as, by its message type.
LIVE_UPDATES: dict[str, type[Update]] = {
    cls.TYPE: cls
    for cls in (
        LiveChildCreated, LiveChildMetadataUpdated, LiveArrayData, LiveArrayRef, LiveTableData
    )
}  # fmt: skip


def _unpack(data: bytes | str) -> dict[str, Any]:
    import msgpack

    try:
        if isinstance(data, str):  # a JSON envelope
            import json

            message = json.loads(data)
        else:
            message = msgpack.unpackb(data, timestamp=3)
    except ValueError as error:
        raise UnparseableMessage(f"Not a message: {error}") from None
    if not isinstance(message, dict) or "type" not in message:
        raise UnparseableMessage(f"Message does not designate a 'type': {message!r}")
    return message


def parse_schema(data: bytes | str) -> Schema:
    """The schema message a connection begins with."""
    return read_schema(_unpack(data))


def parse_update(subscription: Subscription, data: bytes | str, schema: Schema) -> Update:
    """An update message, read with the connection's ``schema``."""
    return read_update(_unpack(data), schema, LIVE_UPDATES, subscription=subscription)


# --- connections ---


class _StreamEnded(Exception):
    """The server closed the socket normally: the writer ended the stream."""


class _Dropped(ConnectionError):
    """The socket closed otherwise than by the end of the stream."""

    def __init__(self, code: int | None, reason: str = "", sent_code: int | None = None):
        super().__init__(f"The stream's socket closed (code {code}): {reason}")
        self.code, self.reason, self.sent_code = code, reason, sent_code

    @property
    def refused(self) -> bool:
        # 4000-4999: the server's own refusals (credentials, a node it will not stream);
        # connecting again would be refused again.
        return self.code is not None and 4000 <= self.code < 5000


class _NetworkSocket:
    """A WebSocket to a server over the network."""

    def __init__(self, url: str, headers: dict[str, str], max_size: int):
        from websockets.exceptions import InvalidStatus
        from websockets.sync.client import connect

        try:
            # Entered as a context (a connection in every websockets release since 13):
            # calling connect() alone is deprecated.
            self._socket = connect(url, additional_headers=headers, max_size=max_size).__enter__()
        except InvalidStatus as refused:  # an HTTP answer instead of a socket: the API's error
            answer = refused.response
            raise_for_answer(
                httpx.Response(
                    answer.status_code,
                    headers=list(answer.headers.raw_items()),
                    content=bytes(answer.body or b""),
                    request=httpx.Request("GET", url),
                )
            )

    def receive(self, timeout: float) -> bytes | str | None:
        """The next message; None when none came within ``timeout``."""
        from websockets.exceptions import ConnectionClosed

        try:
            return self._socket.recv(timeout=timeout)
        except TimeoutError:
            return None
        except ConnectionClosed as closed:
            received, sent = closed.rcvd, closed.sent
            if received is not None and received.code == STREAM_ENDED:
                raise _StreamEnded from None
            raise _Dropped(
                received.code if received else None,
                received.reason if received else "",
                sent.code if sent else None,
            ) from None

    def close(self) -> None:
        self._socket.close()


class _AppSocket:
    """A WebSocket to an application in this process (``Context.from_app``).

    The test client's session only blocks on receive: a thread of its own receives into a
    queue, so that a receive can give up after a timeout like a network socket's."""

    def __init__(self, http_client: Any, url: str, headers: dict[str, str]):
        from starlette.testclient import WebSocketDenialResponse

        self._session = http_client.websocket_connect(url, headers=headers)
        try:
            self._session.__enter__()
        except WebSocketDenialResponse as refused:  # an httpx.Response too
            refused.request = httpx.Request("GET", url)
            raise_for_answer(refused)
        self._messages: queue.Queue = queue.Queue()
        self._pump = threading.Thread(target=self._receive_all, daemon=True)
        self._pump.start()

    def _receive_all(self) -> None:
        from starlette.websockets import WebSocketDisconnect

        while True:
            try:
                message = self._session.receive()
                if message["type"] == "websocket.close":
                    raise WebSocketDisconnect(message.get("code", 1000))
                self._messages.put(message.get("bytes") or message.get("text"))
            except WebSocketDisconnect as closed:
                ended = closed.code == STREAM_ENDED
                self._messages.put(
                    _StreamEnded() if ended else _Dropped(closed.code, closed.reason)
                )
                return
            except BaseException as error:  # noqa: BLE001 - the session was torn down
                self._messages.put(_Dropped(None, repr(error)))
                return

    def receive(self, timeout: float) -> bytes | str | None:
        try:
            item = self._messages.get(timeout=timeout)
        except queue.Empty:
            return None
        if isinstance(item, BaseException):
            raise item
        return item

    def close(self) -> None:
        try:
            self._session.__exit__(None, None, None)
        except Exception:  # noqa: BLE001 - closing an already closed session
            pass


# --- subscriptions ---


class Subscription:
    """Updates of the node at ``segments``, from ``context``'s server.

    Register callbacks, then :meth:`start` (blocks) or :meth:`start_in_thread`;
    :meth:`disconnect` (or leaving a ``with`` block) ends it. A subscription is started once.
    """

    def __init__(
        self,
        context: Context,
        segments: list[str] | None = None,
        executor: concurrent.futures.Executor | None = None,
    ):
        self._context = context
        self._segments = [segment for segment in segments or () if segment not in ("", "/")]
        self._executor = executor or concurrent.futures.ThreadPoolExecutor(max_workers=1)
        self.stream_closed: CallbackRegistry[Subscription] = CallbackRegistry(self._executor)
        self.disconnected: CallbackRegistry[Subscription] = CallbackRegistry(self._executor)
        self._stopping = threading.Event()
        self._connected = threading.Event()
        self._start_failure: BaseException | None = None
        self._socket: Any = None
        self._socket_lock = threading.Lock()
        self._ended = False
        self._end_lock = threading.Lock()
        self._last_sequence: int | None = None
        self._thread: threading.Thread | None = None
        self._started = False

    def __repr__(self) -> str:
        return f"<{type(self).__name__} /{'/'.join(self._segments)}>"

    @property
    def context(self) -> Context:
        return self._context

    @property
    def segments(self) -> list[str]:
        return list(self._segments)

    @property
    def executor(self) -> concurrent.futures.Executor:
        return self._executor

    def process(self, update: Update) -> None:
        """Hand ``update`` to the callbacks of its kind."""
        raise NotImplementedError

    # --- running ---

    def start(self, start: int | None = None, max_size: int = DEFAULT_MAX_MESSAGE_BYTES) -> None:
        """Receive updates until the stream ends or :meth:`disconnect` (blocks; Ctrl-C too).

        ``start``: None begins with the next update; 1 with the first; 0 with the oldest the
        server still holds; any other number with that update. ``max_size``: the largest
        message accepted, in bytes (a larger one ends the subscription, logged).
        """
        self._claim_start()
        try:
            self._run(start, max_size)
        finally:
            self._end()

    def start_in_thread(
        self, start: int | None = None, max_size: int = DEFAULT_MAX_MESSAGE_BYTES
    ) -> Subscription:
        """:meth:`start` on a thread of its own; returns once connected (raising what kept
        the first connection from being made)."""
        self._claim_start()

        def run() -> None:
            try:
                self._run(start, max_size)
            except BaseException as error:  # noqa: BLE001 - reported to the starter or logged
                if not self._connected.is_set():
                    self._start_failure = error
                else:
                    logger.exception("Subscription %r failed", self)
            finally:
                self._connected.set()
                self._end()

        self._thread = threading.Thread(target=run, daemon=True, name=f"tiled-{self!r}")
        self._thread.start()
        self._connected.wait()
        if self._start_failure is not None:
            raise self._start_failure
        return self

    def disconnect(self, wait: bool = True) -> None:
        """Close the connection and stop receiving; with ``wait``, until callbacks ran."""
        self._stopping.set()
        self._close_socket()
        if getattr(_in_callback, "active", False):
            # From a callback: the receiving thread ends by itself, then the executor, after
            # this callback (waiting here for either would wait for this very callback).
            return
        thread = self._thread
        if wait and thread is not None and thread is not threading.current_thread():
            thread.join()
        self._end(wait)

    def __enter__(self) -> Subscription:
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.disconnect()

    def _claim_start(self) -> None:
        if self._started or self._stopping.is_set():
            raise RuntimeError("A subscription is started once; make a new one to start again.")
        self._started = True

    def _run(self, start: int | None, max_size: int) -> None:
        while not self._stopping.is_set():
            resume = start if self._last_sequence is None else self._last_sequence + 1
            try:
                self._open(resume, max_size)
            except Exception:
                if self._stopping.is_set():  # disconnected while connecting again
                    return
                raise
            self._connected.set()
            try:
                self._receive_updates()
            except _StreamEnded:
                if not self._stopping.is_set():  # the writer's end, not our own disconnect
                    self.stream_closed.process(self)
                return
            except _Dropped as dropped:
                if self._stopping.is_set():
                    return
                if dropped.sent_code == MESSAGE_TOO_BIG:
                    logger.error(
                        "An update of %r is larger than max_size=%d bytes; the subscription "
                        "ends (start it with a larger max_size to receive it)",
                        self, max_size,
                    )  # fmt: skip
                    return
                if dropped.refused:
                    raise
                logger.info("Subscription %r lost its connection; connecting again", self)
            except OSError:
                if self._stopping.is_set():
                    return
                logger.info("Subscription %r lost its connection; connecting again", self)
            finally:
                self._close_socket()

    def _open(self, start: int | None, max_size: int) -> None:
        def retryable(error: BaseException) -> bool | float:
            # A refusal (401, 404) is final; a server not up (yet), or busy, is not, unless
            # the subscription was stopped meanwhile.
            if self._stopping.is_set():
                return False
            return isinstance(error, OSError) or should_retry(error)

        for attempt in retry_context(self._context, on=retryable):
            with attempt:
                socket = self._connect(start, max_size)
        with self._socket_lock:
            self._socket = socket
        if self._stopping.is_set():  # disconnected while connecting
            self._close_socket()

    def _connect(self, start: int | None, max_size: int) -> Any:
        query = "envelope_format=msgpack" + (f"&start={int(start)}" if start is not None else "")
        path = path_url(self._segments)
        url = self._context.url(f"stream/single/{path}") + "?" + query
        headers, revoke = self._credentials()
        url = "ws" + url[len("http") :]  # http -> ws, https -> wss
        try:
            if self._context.app is not None:
                return _AppSocket(self._context.http_client, url, headers)
            return _NetworkSocket(url, headers, max_size)
        finally:
            if revoke is not None:
                revoke()

    def _credentials(self) -> tuple[dict[str, str], Callable[[], None] | None]:
        """The headers that open the socket, and how to withdraw a key made for it.

        A logged-in context's tokens are refreshed by the HTTP client as they expire, which a
        socket cannot do: as upstream's client does, a short-lived API key opens it and is
        revoked once it is open."""
        context = self._context
        if context.api_key or context.tokens is None:
            return context.auth_headers(), None
        key = context.create_api_key(expires_in=CONNECTING_KEY_SECONDS, note="websocket")
        return {"Authorization": f"Apikey {key['secret']}"}, lambda: _revoke(context, key)

    def _receive_updates(self) -> None:
        schema = None
        while not self._stopping.is_set():
            with self._socket_lock:
                socket = self._socket
            if socket is None:
                return
            data = socket.receive(RECEIVE_POLL_SECONDS)
            if data is None:
                continue
            try:
                if schema is None:
                    schema = parse_schema(data)
                    continue
                update = parse_update(self, data, schema)
            except UnparseableMessage:
                logger.exception("A message of %r could not be read; it is skipped", self)
                continue
            if self._last_sequence is not None and update.sequence <= self._last_sequence:
                continue  # already handed over before a reconnection
            self._last_sequence = update.sequence
            self.process(update)

    def _close_socket(self) -> None:
        with self._socket_lock:
            socket, self._socket = self._socket, None
        if socket is not None:
            try:
                socket.close()
            except Exception:  # noqa: BLE001 - a socket that broke closes as it can
                logger.debug("Closing the socket of %r failed", self, exc_info=True)

    def _end(self, wait: bool = True) -> None:
        """Once: the ``disconnected`` callbacks, then the executor stops (after them)."""
        with self._end_lock:
            if self._ended:
                return
            self._ended = True
        self._stopping.set()
        self._close_socket()
        self.disconnected.process(self)
        self._executor.shutdown(wait=wait)


def _revoke(context: Context, key: dict[str, Any]) -> None:
    try:
        context.revoke_api_key(key["first_eight"])
    except Exception:  # noqa: BLE001 - it expires soon anyway
        logger.warning("Could not revoke the API key made to open a stream", exc_info=True)


class ContainerSubscription(Subscription):
    """Updates of a container: ``child_created`` and ``child_metadata_updated``."""

    def __init__(
        self,
        context: Context,
        segments: list[str] | None = None,
        executor: concurrent.futures.Executor | None = None,
        structure_clients: Any = None,
    ):
        super().__init__(context, segments, executor)
        self.structure_clients = structure_clients
        self.child_created: CallbackRegistry[LiveChildCreated] = CallbackRegistry(self.executor)
        self.child_metadata_updated: CallbackRegistry[LiveChildMetadataUpdated] = CallbackRegistry(
            self.executor
        )

    def process(self, update: Update) -> None:
        registry = {
            LiveChildCreated: self.child_created,
            LiveChildMetadataUpdated: self.child_metadata_updated,
        }.get(type(update))
        if registry is None:
            logger.warning("%r received an update it does not expect: %r", self, update)
            return
        registry.process(update)


class _NewDataSubscription(Subscription):
    """Updates of a node that holds data: ``new_data``, for every update."""

    def __init__(
        self,
        context: Context,
        segments: list[str] | None = None,
        executor: concurrent.futures.Executor | None = None,
    ):
        super().__init__(context, segments, executor)
        self.new_data: CallbackRegistry[Update] = CallbackRegistry(self.executor)

    def process(self, update: Update) -> None:
        self.new_data.process(update)


class ArraySubscription(_NewDataSubscription):
    """Updates of an array: ``new_data`` (:class:`LiveArrayData` or :class:`LiveArrayRef`)."""


class TableSubscription(_NewDataSubscription):
    """Updates of a table: ``new_data`` (:class:`LiveTableData`)."""
