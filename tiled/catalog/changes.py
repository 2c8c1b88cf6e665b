"""How one server process learns that another one changed the catalog.

Several worker processes share one catalog database, and each keeps the nodes it resolved
lately (:meth:`Catalog.cached_lookup`). A cached node may be reused only while the database
is known not to have changed since it was resolved. Each kind of database tells that its own
way, and a :class:`ChangeFeed` turns it into a *generation*: a value that differs whenever the
database may have changed, or ``None`` when the feed cannot tell (then nothing cached is used).

- A SQLite file counts its commits itself (in its header, or in ``PRAGMA data_version`` in
  WAL mode): reading the count costs a microsecond or a few, so it is read at every cached
  lookup.
- PostgreSQL tells its listeners: every write transaction of the catalog sends a notification
  on :data:`CHANNEL` (delivered when, and only if, it commits), and each process listens on a
  connection of its own, counting them. Before a request first reuses a cached node, one round
  trip on that connection makes sure that every notification committed until then has
  arrived (concurrent requests share one round trip; later lookups of the same request need
  none): cheaper than the lookup it saves, which may open files. While the listening
  connection is down (the database restarted), the feed cannot tell, and it reports a new
  generation once it listens again.
- An in-memory SQLite database belongs to one process: its generation never changes (the
  process's own writes drop the cache themselves).

Writers that are not Tiled (a script writing the database directly) send no notification to
PostgreSQL listeners: their changes show within ``lookup_cache_ttl``.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import itertools
import logging
import os
import sqlite3
import threading
import uuid
import weakref
from collections.abc import AsyncIterator
from typing import Any

from sqlalchemy import text
from sqlalchemy.engine import URL

from ..errors import ServiceUnavailable

logger = logging.getLogger(__name__)

# The PostgreSQL notification channel of catalog writes (one per database: every catalog
# served from the database shares it).
CHANNEL = "tiled_catalog_changes"
# Between attempts to listen again after the connection was lost.
RELISTEN_SECONDS = 0.5
# How often a listening connection is looked at besides being told it ended.
LIVENESS_SECONDS = 5.0


class ChangeFeed:
    """A process that is the only writer: nothing else can change the database."""

    def generation(self) -> Any:
        """The generation as last known, without asking the database again."""
        return 0

    async def current(self) -> Any:
        """The generation now: every change committed before this call counts."""
        return self.generation()

    async def announce(self, connection: Any) -> None:
        """Run in each write transaction, before it commits, so that others learn of it."""

    def resynchronize(self) -> None:
        """The running task must see everything committed until now."""

    async def start(self) -> None:
        pass

    async def stop(self) -> None:
        pass


class SQLiteChangeFeed(ChangeFeed):
    """The generation of a SQLite file.

    In rollback-journal mode (the catalog's), every commit increments the file change counter
    in the database header (bytes 24-27), so reading those four bytes tells it (a microsecond;
    the counter lies in the first page, which no write tears). In WAL mode the counter stays,
    and ``PRAGMA data_version`` on a connection of our own (which never writes) tells it
    instead: it changes whenever any other connection, of any process, commits. The file's
    identity is part of the generation, so a database replaced by another is noticed too.
    """

    def __init__(self, path: str):
        self._path = path
        self._lock = threading.Lock()  # test clients use the catalog from several threads
        self._file: tuple[int, int, int] | None = None  # (fd, device, inode)
        self._connection: sqlite3.Connection | None = None

    def generation(self) -> Any:
        # Reading the file is as cheap as remembering it: always the count of now.
        with self._lock:
            try:
                identity = os.stat(self._path)
                if self._file is None or self._file[1:] != (identity.st_dev, identity.st_ino):
                    self._close()
                    fd = os.open(self._path, os.O_RDONLY)
                    self._file = (fd, identity.st_dev, identity.st_ino)
                header = os.pread(self._file[0], 28, 0)
                if len(header) < 28:
                    return None  # not a database yet: the schema check says so
                if header[18] == 2:  # WAL
                    return (identity.st_ino, "wal", self._data_version())
                return (identity.st_ino, header[24:28])
            except (OSError, sqlite3.Error):
                # The file went away or cannot be read: a lookup will say why.
                self._close()
                return None

    def _data_version(self) -> int:
        if self._connection is None:
            # mode=rw: a missing file is not created here (the schema check reports it).
            self._connection = sqlite3.connect(
                f"file:{self._path}?mode=rw", uri=True, check_same_thread=False,
                isolation_level=None,
            )  # fmt: skip
        return self._connection.execute("PRAGMA data_version").fetchone()[0]

    def _close(self) -> None:
        if self._file is not None:
            with contextlib.suppress(OSError):
                os.close(self._file[0])
            self._file = None
        if self._connection is not None:
            with contextlib.suppress(sqlite3.Error):
                self._connection.close()
            self._connection = None

    async def stop(self) -> None:
        with self._lock:
            self._close()


class PostgreSQLChangeFeed(ChangeFeed):
    """The generation of a PostgreSQL catalog: notifications counted by a listener."""

    def __init__(self, url: URL):
        self._url = url
        # Unique per listening session, so that a generation of an earlier session is never
        # mistaken for the present one (notifications may have been missed in between).
        self._session: str | None = None
        self._count = itertools.count()
        self._generation: tuple[str, int] | None = None
        self._task: asyncio.Task | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._connection: Any = None
        # Callers waiting for the next round trip on the listening connection (see current).
        self._next_round: asyncio.Future | None = None
        # The tasks (requests) that made a round trip already.
        self._synchronized: weakref.WeakSet[asyncio.Task] = weakref.WeakSet()
        self._rounds: asyncio.Task | None = None

    def generation(self) -> Any:
        return self._generation

    async def current(self) -> Any:
        """The generation after a round trip on the listening connection.

        PostgreSQL hands a listening session every notification committed before it answers
        a query on that session, so once the round trip is over, each write committed before
        this call has been counted. Callers that arrive while a round trip is under way wait
        for the next one (that one was sent too early for them), and share it.
        """
        if self._generation is None or asyncio.get_running_loop() is not self._loop:
            return None  # not listening, or asked from another loop (test clients' threads)
        task = asyncio.current_task()
        if task is not None and task in self._synchronized:
            # One round trip per request (a task) is enough: writes committed before the
            # request came are counted already; later ones may count as having come after it.
            return self._generation
        round_ = self._next_round
        if round_ is None:
            round_ = self._next_round = self._loop.create_future()
            if self._rounds is None or self._rounds.done():
                self._rounds = self._loop.create_task(self._round_trips())
        try:
            await asyncio.shield(round_)
        except Exception:  # noqa: BLE001 - the connection failed: a lookup will say why
            return None
        if task is not None:
            self._synchronized.add(task)
        return self._generation

    def resynchronize(self) -> None:
        """The running task must see everything committed until now (it holds a lock under
        which another process may just have written): its next :meth:`current` asks again."""
        with contextlib.suppress(RuntimeError):
            self._synchronized.discard(asyncio.current_task())

    async def _round_trips(self) -> None:
        while self._next_round is not None:
            round_, self._next_round = self._next_round, None
            try:
                await self._connection.execute("SELECT 1")
                # The notifications read with the answer were handed to _changed by
                # call_soon, before this task resumed; yield once more to be sure.
                await asyncio.sleep(0)
            except Exception as err:  # noqa: BLE001 - handed to the waiters
                round_.set_exception(err)
                round_.exception()  # retrieved: waiters that were cancelled see none
            else:
                round_.set_result(None)

    async def announce(self, connection: Any) -> None:
        await connection.execute(text("SELECT pg_notify(:channel, '')"), {"channel": CHANNEL})

    def _changed(self, *_: Any) -> None:
        if self._session is not None:
            self._generation = (self._session, next(self._count))

    def _lost(self) -> None:
        self._generation = None
        self._session = None

    def _ended(self, lost: asyncio.Event, _connection: Any) -> None:
        self._lost()
        lost.set()

    async def start(self) -> None:
        if self._task is None:
            ready = asyncio.Event()
            self._loop = asyncio.get_running_loop()
            self._task = self._loop.create_task(self._listen(ready))
            # The first request should find the cache usable; a database that is down now is
            # the first request's business (it answers 503), not the startup's.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(ready.wait(), 5)

    async def _listen(self, ready: asyncio.Event) -> None:
        import asyncpg

        dsn = self._url.set(drivername="postgresql").render_as_string(hide_password=False)
        while True:
            try:
                connection = await asyncpg.connect(dsn)
                self._connection = connection
                lost = asyncio.Event()
                connection.add_termination_listener(functools.partial(self._ended, lost))
                await connection.add_listener(CHANNEL, self._changed)
                # Anything may have changed while nobody listened.
                self._session = f"{os.getpid()}-{uuid.uuid4().hex}"
                self._generation = (self._session, next(self._count))
                ready.set()
                while not connection.is_closed():
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(lost.wait(), LIVENESS_SECONDS)
            except asyncio.CancelledError:
                raise
            except Exception as err:  # noqa: BLE001 - down is a state here, not a failure
                logger.debug("Not listening for catalog changes: %s", err)
            self._lost()
            await asyncio.sleep(RELISTEN_SECONDS)

    async def stop(self) -> None:
        for task in (self._task, self._rounds):
            if task is not None:
                task.cancel()
                with contextlib.suppress(BaseException):
                    await task
        self._task = self._rounds = None
        connection, self._connection = self._connection, None
        if connection is not None and not connection.is_closed():
            with contextlib.suppress(Exception):
                await connection.close(timeout=2)
        self._lost()
        self._loop = None
        self._next_round = None


def change_feed(url: URL) -> ChangeFeed:
    """The feed that tells this process of the changes made to the catalog at ``url``."""
    backend = url.get_backend_name()
    if backend == "postgresql":
        return PostgreSQLChangeFeed(url)
    if backend == "sqlite" and url.database not in (None, "", ":memory:"):
        return SQLiteChangeFeed(url.database)
    return ChangeFeed()


# --- writers' exclusion across processes ------------------------------------------------------

# How often a writer waiting for another process's lock looks again, and for how long.
EXCLUSION_POLL_SECONDS = 0.002
EXCLUSION_TIMEOUT_SECONDS = 30.0


def _lock_key(name: str) -> int:
    """A stable 63-bit number for ``name`` (the same in every process)."""
    return int.from_bytes(hashlib.blake2b(name.encode(), digest_size=8).digest()) >> 1


class Exclusion:
    """Mutual exclusion of writers by name, across the processes of one database.

    This process's own writers are excluded by the caller (an asyncio lock per name); this
    adds the other processes. The base class is for a database only one process uses.
    """

    @contextlib.asynccontextmanager
    async def held(self, name: str) -> AsyncIterator[None]:
        yield

    async def stop(self) -> None:
        pass


class _Counted:
    """Locks taken once per process however many holders share them: names may share a key,
    and a process's own locks do not exclude each other (fcntl, PostgreSQL sessions)."""

    def __init__(self) -> None:
        self._holders: dict[int, int] = {}

    async def _take(self, key: int) -> bool:
        raise NotImplementedError

    async def _give_back(self, key: int) -> None:
        raise NotImplementedError

    @contextlib.asynccontextmanager
    async def held(self, name: str) -> AsyncIterator[None]:
        key = _lock_key(name)
        if not self._holders.get(key):
            deadline = asyncio.get_running_loop().time() + EXCLUSION_TIMEOUT_SECONDS
            # Another coroutine of this process may be taking the same key now.
            while not self._holders.get(key) and not await self._take(key):
                if asyncio.get_running_loop().time() > deadline:
                    raise ServiceUnavailable(
                        f"Another server process has held the write lock of {name!r} for "
                        f"{EXCLUSION_TIMEOUT_SECONDS:g} s; retry later"
                    )
                await asyncio.sleep(EXCLUSION_POLL_SECONDS)
        self._holders[key] = self._holders.get(key, 0) + 1
        try:
            yield
        finally:
            # (A lost PostgreSQL connection took the locks, and the counts, with it.)
            remaining = self._holders.get(key, 1) - 1
            if remaining > 0:
                self._holders[key] = remaining
            else:
                self._holders.pop(key, None)
                await self._give_back(key)


class SQLiteExclusion(_Counted, Exclusion):
    """Byte-range locks (fcntl) in a file beside the database: one byte per key. The kernel
    drops them with the process, so a writer that dies holds nothing."""

    def __init__(self, database: str):
        super().__init__()
        self._path = f"{database}.tiled-locks"
        self._fd: int | None = None

    def _file(self) -> int:
        if self._fd is None:
            self._fd = os.open(self._path, os.O_RDWR | os.O_CREAT, 0o644)
        return self._fd

    async def _take(self, key: int) -> bool:
        import fcntl

        try:
            fcntl.lockf(self._file(), fcntl.LOCK_EX | fcntl.LOCK_NB, 1, key)
        except (BlockingIOError, PermissionError):
            return False
        return True

    async def _give_back(self, key: int) -> None:
        import fcntl

        with contextlib.suppress(OSError):
            fcntl.lockf(self._file(), fcntl.LOCK_UN, 1, key)

    async def stop(self) -> None:
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.close(self._fd)
            self._fd = None
            self._holders.clear()


class PostgreSQLExclusion(_Counted, Exclusion):
    """PostgreSQL session advisory locks, on a connection of this process's own: the database
    drops them with the connection, so a writer that dies holds nothing."""

    def __init__(self, url: URL):
        super().__init__()
        self._dsn = url.set(drivername="postgresql").render_as_string(hide_password=False)
        self._connection: Any = None
        self._calls: asyncio.Lock | None = None

    async def _call(self, statement: str, key: int) -> Any:
        import asyncpg

        if self._calls is None:
            self._calls = asyncio.Lock()
        async with self._calls:  # one statement at a time on the connection
            if self._connection is None or self._connection.is_closed():
                # Locks of a lost connection are gone with it: so are our counts.
                self._holders.clear()
                self._connection = await asyncpg.connect(self._dsn)
            return await self._connection.fetchval(statement, key)

    async def _take(self, key: int) -> bool:
        return bool(await self._call("SELECT pg_try_advisory_lock($1)", key))

    async def _give_back(self, key: int) -> None:
        with contextlib.suppress(Exception):
            await self._call("SELECT pg_advisory_unlock($1)", key)

    async def stop(self) -> None:
        connection, self._connection = self._connection, None
        if connection is not None and not connection.is_closed():
            with contextlib.suppress(Exception):
                await connection.close(timeout=2)
        self._holders.clear()


def exclusion(url: URL) -> Exclusion:
    """How writers of the catalog at ``url`` exclude those of other processes."""
    backend = url.get_backend_name()
    if backend == "postgresql":
        return PostgreSQLExclusion(url)
    if backend == "sqlite" and url.database not in (None, "", ":memory:"):
        return SQLiteExclusion(url.database)
    return Exclusion()
