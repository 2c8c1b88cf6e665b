"""A cache of the client's HTTP answers, in one SQLite file: ``Context(uri, cache=Cache())``.

What is kept: answers to GET requests (200) that the server tagged with an ``ETag`` or gave a
freshness lifetime (``Cache-Control: max-age``). On the next identical request the stored answer
is revalidated with ``If-None-Match``: the server answers ``304 Not Modified`` without a body
and the stored one is used (a :class:`CachedResponse`). An answer still within its ``max-age`` is
used without asking. Answers that can be neither validated nor dated are not kept: there is no
way to tell when they change.

The file is bounded: bodies over ``max_item_size`` are not kept, and the least recently used
entries are evicted to keep the bodies' total under ``capacity`` (bytes). One file may be shared
by threads (a lock guards the connection) and by processes (SQLite's own locking); a ``readonly``
cache serves entries but never writes, down to a read-only connection.

The deciding of *what* to store and *when* to revalidate is in :mod:`tiled.client.transport`;
this module stores and retrieves.
"""

from __future__ import annotations

import base64
import enum
import functools
import hashlib
import json
import os
import sqlite3
import threading
import uuid
import weakref
from collections.abc import Callable
from contextlib import closing
from pathlib import Path
from typing import Any, TypeVar

import httpx

# The layout of the file; a file of another layout (an older one, or upstream Tiled's) is a
# disposable cache too, so it is emptied and laid out anew rather than migrated.
FORMAT_VERSION = 1
FORMAT_TABLE = "tiled_client_cache_format"
# Tables that mark a file as some Tiled's HTTP cache (and so safe to lay out anew).
KNOWN_CACHE_TABLES = frozenset({FORMAT_TABLE, "tiled_http_response_cache_version"})
DEFAULT_CAPACITY = 500_000_000
DEFAULT_MAX_ITEM_SIZE = 500_000
# Seconds a connection waits for another process' write to finish before giving up.
BUSY_TIMEOUT = 30.0

F = TypeVar("F", bound=Callable[..., Any])


class ThreadingMode(enum.IntEnum):
    """The values of ``sqlite3.threadsafety`` (how the SQLite library was built)."""

    SINGLE_THREAD = 0  # a connection may be used only by the thread that opened it
    MULTI_THREAD = 1  # a connection may be used by any thread, one at a time
    SERIALIZED = 3  # a connection may be used by threads at once


class CachedResponse(httpx.Response):
    """An answer served from a :class:`Cache`, not from the server (the server may have been
    asked whether it is still current)."""


class SerializableLock:
    """A lock that pickles: every copy unpickled in one process is the same lock.

    A cache pickled with a client and unpickled twice in another process must still serialize
    the use of the file there, so copies find their lock by a token in a process-wide registry.
    """

    _registry: weakref.WeakValueDictionary[str, Any] = weakref.WeakValueDictionary()
    _registry_lock = threading.Lock()

    def __init__(self, token: str | None = None):
        self.token = token or uuid.uuid4().hex
        with self._registry_lock:
            lock = self._registry.get(self.token)
            if lock is None:
                lock = threading.Lock()
                self._registry[self.token] = lock
        self.lock = lock

    def acquire(self, blocking: bool = True, timeout: float = -1) -> bool:
        return self.lock.acquire(blocking, timeout)

    def release(self) -> None:
        self.lock.release()

    def locked(self) -> bool:
        return self.lock.locked()

    def __enter__(self) -> SerializableLock:
        self.acquire()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.release()

    def __getstate__(self) -> str:
        return self.token

    def __setstate__(self, token: str) -> None:
        self.__init__(token)  # type: ignore[misc]

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.token}>"


def with_thread_lock(method: F) -> F:
    """Run ``method`` holding its object's ``_lock``: one thread at a time."""

    @functools.wraps(method)
    def locked(self: Any, *args: Any, **kwargs: Any) -> Any:
        with self._lock:
            return method(self, *args, **kwargs)

    return locked  # type: ignore[return-value]


def default_cache_path() -> Path:
    """``$TILED_CACHE_DIR/http_response_cache.db``, else in the user's cache directory."""
    from .auth import cache_directory

    return cache_directory() / "http_response_cache.db"


def _principal_of(authorization: str) -> str:
    """What distinguishes one set of credentials from another, as a digest.

    A bearer token is a JWT whose ``sub`` names the principal; keying on that (not the token)
    keeps entries across token refreshes. Anything else is keyed on a digest of the value.
    """
    scheme, _, value = authorization.partition(" ")
    if scheme.lower() == "bearer" and value.count(".") == 2:
        payload = value.split(".")[1]
        try:
            claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
            authorization = f"bearer-sub:{claims['sub']}"
        except (ValueError, KeyError, TypeError):
            pass
    return hashlib.sha256(authorization.encode()).hexdigest()[:24]


def cache_key(request: httpx.Request) -> str:
    """The entry of ``request``: what selects the answer the server gives.

    Besides the URL, the representation asked for (``Accept``), the encodings this client can
    decode (``Accept-Encoding``; bodies are kept encoded) and whose credentials ask (the server
    filters listings by access) select different answers.
    """
    headers = request.headers
    parts = [
        f"{request.method} {request.url}",
        f"accept={headers.get('accept', '')}",
        f"accept-encoding={headers.get('accept-encoding', '')}",
    ]
    authorization = headers.get("authorization")
    if authorization:
        parts.append(f"principal={_principal_of(authorization)}")
    return "\n".join(parts)


def _lay_out(conn: sqlite3.Connection) -> None:
    with closing(conn.cursor()) as cur:
        cur.execute("BEGIN IMMEDIATE")
        if _format_of(conn) == FORMAT_VERSION:  # another process laid it out meanwhile
            cur.execute("COMMIT")
            return
        for (table,) in cur.execute(
            "SELECT name FROM sqlite_master WHERE type='table' AND name NOT LIKE 'sqlite_%'"
        ).fetchall():
            cur.execute(f'DROP TABLE IF EXISTS "{table}"')
        # ``accessed`` is a logical clock (one more than the latest access), so that the
        # order of uses is exact however close in time they are, across processes too.
        cur.execute(
            """CREATE TABLE responses (
                key TEXT PRIMARY KEY,
                status_code INTEGER NOT NULL,
                headers TEXT NOT NULL,
                body BLOB NOT NULL,
                size INTEGER NOT NULL,
                accessed INTEGER NOT NULL
            )"""
        )
        cur.execute("CREATE INDEX responses_by_access ON responses (accessed)")
        cur.execute(f"CREATE TABLE {FORMAT_TABLE} (version INTEGER NOT NULL)")
        cur.execute(f"INSERT INTO {FORMAT_TABLE} (version) VALUES (?)", (FORMAT_VERSION,))
        cur.execute("COMMIT")


def _format_of(conn: sqlite3.Connection) -> int | None:
    """The layout version of an opened file: None if it is empty; -1 if it is some Tiled's
    cache of another layout; raises if it is something else (it is not ours to empty)."""
    tables = {name for (name,) in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    if not tables:
        return None
    if FORMAT_TABLE in tables:
        row = conn.execute(f"SELECT version FROM {FORMAT_TABLE}").fetchone()
        return row[0] if row else -1
    if tables & KNOWN_CACHE_TABLES:
        return -1
    raise RuntimeError(
        "The file is a database but not a Tiled HTTP response cache; not touching it"
    )


def _open(filepath: Path, readonly: bool) -> sqlite3.Connection:
    """A connection to the cache file, laid out if it is new (or of another layout)."""
    if readonly:
        # Read-only down to SQLite: even a bug here cannot change a shared cache.
        conn = sqlite3.connect(
            f"{filepath.absolute().as_uri()}?mode=ro", uri=True, timeout=BUSY_TIMEOUT,
            check_same_thread=False, isolation_level=None,
        )  # fmt: skip
        if _format_of(conn) != FORMAT_VERSION:
            conn.close()
            raise RuntimeError(f"{filepath} is not a cache this client can read")
        return conn
    filepath.parent.mkdir(parents=True, exist_ok=True)
    # Autocommit (isolation_level=None): transactions are explicit where they are needed.
    conn = sqlite3.connect(
        filepath, timeout=BUSY_TIMEOUT, check_same_thread=False, isolation_level=None
    )
    try:
        if _format_of(conn) != FORMAT_VERSION:
            _lay_out(conn)
    except BaseException:
        conn.close()
        raise
    return conn


def _stored_form(response: httpx.Response, content: bytes | None) -> tuple[list, bytes]:
    """The headers and body to keep: the body as it came over the wire (still encoded) when
    ``content`` gives it, else the response's decoded content with its encoding dropped."""
    headers = response.headers.multi_items()
    if content is not None:
        return headers, content
    body = response.content  # raises httpx.ResponseNotRead for an unread stream
    dropped = {"content-encoding", "content-length"}
    headers = [(name, value) for name, value in headers if name.lower() not in dropped]
    headers.append(("content-length", str(len(body))))
    return headers, body


class Cache:
    """HTTP answers kept in the SQLite file ``filepath`` (default: ``http_response_cache.db``
    in ``$TILED_CACHE_DIR`` or the user's cache directory).

    ``capacity``: most bytes of bodies kept (least recently used evicted first);
    ``max_item_size``: largest body kept; ``readonly``: serve entries, never write.
    """

    def __init__(
        self,
        filepath: str | os.PathLike[str] | None = None,
        capacity: int = DEFAULT_CAPACITY,
        max_item_size: int = DEFAULT_MAX_ITEM_SIZE,
        readonly: bool = False,
    ):
        if capacity <= max_item_size:
            raise ValueError("capacity must be greater than max_item_size")
        self._set_up(
            Path(filepath) if filepath is not None else default_cache_path(),
            capacity, max_item_size, readonly, SerializableLock(),
        )  # fmt: skip

    def _set_up(
        self,
        filepath: Path,
        capacity: int,
        max_item_size: int,
        readonly: bool,
        lock: SerializableLock,
    ) -> None:
        self._filepath = filepath
        self._capacity = capacity
        self._max_item_size = max_item_size
        self._readonly = readonly
        self._lock = lock
        # SQLite built single-threaded allows a connection only in the thread that opened it.
        self._owner_thread = threading.get_ident()
        self._conn = _open(filepath, readonly)
        self._finalizer = weakref.finalize(self, self._conn.close)

    # --- settings ---

    @property
    def filepath(self) -> Path:
        """The SQLite file holding the entries."""
        return self._filepath

    @property
    def readonly(self) -> bool:
        """Whether entries are served but never added, removed or updated."""
        return self._readonly

    @property
    def capacity(self) -> int:
        """Most bytes of response bodies kept (headers are not counted)."""
        return self._capacity

    @capacity.setter
    def capacity(self, capacity: int) -> None:
        self._capacity = int(capacity)

    @property
    def max_item_size(self) -> int:
        """Largest response body kept, in bytes."""
        return self._max_item_size

    @max_item_size.setter
    def max_item_size(self, max_item_size: int) -> None:
        self._max_item_size = int(max_item_size)

    def write_safe(self) -> bool:
        """Whether this thread may use the connection: the thread that opened it always may;
        others may when SQLite was built for threads (the lock makes their uses one at a
        time, which is all a multi-threaded build asks)."""
        return (
            threading.get_ident() == self._owner_thread
            or sqlite3.threadsafety != ThreadingMode.SINGLE_THREAD
        )

    def _check_writable(self) -> None:
        if self._readonly:
            raise RuntimeError("This cache is read-only")
        if not self.write_safe():
            raise RuntimeError(
                "SQLite here is built single-threaded: the cache may be written only from "
                "the thread that created it"
            )

    # --- entries ---

    @with_thread_lock
    def get(self, request: httpx.Request) -> CachedResponse | None:
        """The kept answer to ``request``, read and ready, or None (also from a thread that
        may not use the connection)."""
        if not self.write_safe():
            return None
        key = cache_key(request)
        row = self._conn.execute(
            "SELECT status_code, headers, body FROM responses WHERE key = ?", (key,)
        ).fetchone()
        if row is None:
            return None
        if not self._readonly:
            self._conn.execute(
                "UPDATE responses SET accessed = "
                "(SELECT COALESCE(MAX(accessed), 0) + 1 FROM responses) WHERE key = ?",
                (key,),
            )
        status_code, headers, body = row
        response = CachedResponse(
            status_code, headers=json.loads(headers), stream=httpx.ByteStream(body),
            request=request,
        )  # fmt: skip
        response.read()  # decoded here, as a fresh answer would be
        return response

    @with_thread_lock
    def set(
        self,
        *,
        request: httpx.Request,
        response: httpx.Response,
        content: bytes | None = None,
    ) -> bool:
        """Keep ``response`` as the answer to ``request``; False if it is too large to keep.

        ``content`` is the body as received (still encoded); without it the response must
        have been read.
        """
        self._check_writable()
        headers, body = _stored_form(response, content)
        size = len(body)
        if size > self._max_item_size or size > self._capacity:
            return False
        key = cache_key(request)
        with closing(self._conn.cursor()) as cur:
            # One transaction: the room made and the entry added are seen together by other
            # processes sharing the file.
            cur.execute("BEGIN IMMEDIATE")
            try:
                (kept,) = cur.execute(
                    "SELECT COALESCE(SUM(size), 0) FROM responses WHERE key != ?", (key,)
                ).fetchone()
                excess = kept + size - self._capacity
                if excess > 0:
                    victims = []
                    for victim, victim_size in cur.execute(
                        "SELECT key, size FROM responses WHERE key != ? ORDER BY accessed",
                        (key,),
                    ):
                        victims.append((victim,))
                        excess -= victim_size
                        if excess <= 0:
                            break
                    cur.executemany("DELETE FROM responses WHERE key = ?", victims)
                cur.execute(
                    "INSERT OR REPLACE INTO responses "
                    "(key, status_code, headers, body, size, accessed) VALUES (?, ?, ?, ?, ?, "
                    "(SELECT COALESCE(MAX(accessed), 0) + 1 FROM responses))",
                    (key, response.status_code, json.dumps(headers), body, size),
                )
            except BaseException:
                cur.execute("ROLLBACK")
                raise
            cur.execute("COMMIT")
        return True

    @with_thread_lock
    def delete(self, request: httpx.Request) -> None:
        """Forget the answer to ``request``."""
        self._check_writable()
        self._conn.execute("DELETE FROM responses WHERE key = ?", (cache_key(request),))

    @with_thread_lock
    def clear(self) -> None:
        """Forget every answer."""
        self._check_writable()
        self._conn.execute("DELETE FROM responses")

    @with_thread_lock
    def size(self) -> int:
        """Bytes of response bodies kept (headers are not counted)."""
        (total,) = self._conn.execute("SELECT COALESCE(SUM(size), 0) FROM responses").fetchone()
        return total

    @with_thread_lock
    def count(self) -> int:
        """Number of answers kept."""
        (total,) = self._conn.execute("SELECT COUNT(*) FROM responses").fetchone()
        return total

    def close(self) -> None:
        """Close the file (also done when the cache is garbage collected)."""
        with self._lock:
            self._finalizer()

    # --- pickling: a copy opens the same file and shares the lock within a process ---

    def __getstate__(self) -> dict[str, Any]:
        return {
            "filepath": str(self._filepath), "capacity": self._capacity,
            "max_item_size": self._max_item_size, "readonly": self._readonly,
            "lock": self._lock,
        }  # fmt: skip

    def __setstate__(self, state: dict[str, Any]) -> None:
        self._set_up(
            Path(state["filepath"]), state["capacity"], state["max_item_size"],
            state["readonly"], state["lock"],
        )  # fmt: skip

    def __repr__(self) -> str:
        mode = " read-only" if self._readonly else ""
        return f"<{type(self).__name__}{mode} {str(self._filepath)!r}>"


__all__ = [
    "Cache",
    "CachedResponse",
    "SerializableLock",
    "ThreadingMode",
    "cache_key",
    "default_cache_path",
    "with_thread_lock",
]
