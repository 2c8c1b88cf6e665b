"""How one server process learns that another one changed a database (the catalog, the
authentication database).

Several worker processes share one catalog database, and each keeps the nodes it resolved
lately (:meth:`Catalog.cached_lookup`); they share one authentication database too, and each
keeps the API keys it checked lately. What is kept may be reused only while the database is
known not to have changed since it was read. Each kind of database tells that its own way, and
a :class:`ChangeFeed` turns it into a *generation*: a value that differs whenever the database
may have changed, or ``None`` when the feed cannot tell (then nothing kept is used).

- A SQLite file counts its commits: ``PRAGMA data_version``, read on a connection of our own
  that never writes, changes whenever any other connection of any process commits. Reading
  it costs a few microseconds, so it is read at every cached lookup.
- PostgreSQL tells its listeners: every write transaction of Tiled's sends a notification on
  the database's channel (the catalog's is :data:`CHANNEL`), delivered when, and only if, it
  commits, and each process listens on a connection of its own, counting them. Before a
  request first reuses what it kept, one round trip on that connection makes sure that every
  notification committed until then has arrived (concurrent requests share one round trip;
  later lookups of the same request, an asyncio task, need none): cheaper than the lookup it
  saves, which may open files. While the listening connection is down or silent (the
  database restarted, the network failed), the feed cannot tell, and it reports a new
  generation once it listens again.
- An in-memory SQLite database belongs to one process: its generation never changes (the
  process's own writes drop what it kept themselves).

Writers that are not Tiled (a script writing the database directly) send no notification to
PostgreSQL listeners: their changes show when what was kept expires (the catalog's
``lookup_cache_ttl``; API keys are checked again at least every few seconds).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import itertools
import logging
import os
import sqlite3
import threading
import uuid
import weakref
from pathlib import Path
from typing import Any

from sqlalchemy import text
from sqlalchemy.engine import URL

logger = logging.getLogger(__name__)

# The PostgreSQL notification channel of catalog writes (one per database: every catalog
# served from the database shares it); the authentication database has its own.
CHANNEL = "tiled_catalog_changes"
# Between attempts to listen again after the connection was lost.
RELISTEN_SECONDS = 0.5
# How often a listening connection is looked at besides being told it ended.
LIVENESS_SECONDS = 5.0
# The longest a round trip on the listening connection may take: longer, and the database is
# taken for out of reach (a silent peer never closes the connection by itself).
ROUND_TRIP_TIMEOUT = 2.0


class ChangeFeed:
    """A process that is the only writer: nothing else can change the database."""

    def generation(self) -> Any:
        """The generation as last known, without asking the database again."""
        return 0

    async def current(self) -> Any:
        """The generation now: every change committed before the running task (a request)
        first asked counts."""
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
    """The generation of a SQLite file: ``PRAGMA data_version`` on a connection of our own.

    Read through SQLite, never from the file directly: SQLite keeps the locks of all of this
    process's connections to one file together, and a descriptor of the file closed behind
    its back would drop them (POSIX locks belong to the process). The file's identity is part
    of the generation, so that a database replaced by another is noticed.
    """

    def __init__(self, path: str):
        self._path = path
        self._lock = threading.Lock()  # test clients use the catalog from several threads
        self._connection: sqlite3.Connection | None = None
        self._inode: int | None = None
        self._stopped = False  # after stop(), until start(): no connection is opened again

    def generation(self) -> Any:
        with self._lock:
            if self._stopped:
                return None  # a late caller after shutdown: nothing is reused
            try:
                inode = os.stat(self._path).st_ino
                if self._connection is None or inode != self._inode:
                    self._close()
                    # mode=rw: a missing file is not created here (the schema check reports
                    # it); timeout=0: a writer holding the file is a reason to look it up.
                    # As a URI of the escaped path: "#", "?" or "%" in a plain path would
                    # end it early (and mode=rw with it).
                    self._connection = sqlite3.connect(
                        Path(self._path).absolute().as_uri() + "?mode=rw", uri=True,
                        timeout=0, check_same_thread=False, isolation_level=None,
                    )  # fmt: skip
                    self._inode = inode
                return (inode, self._connection.execute("PRAGMA data_version").fetchone()[0])
            except (OSError, sqlite3.Error):
                # Gone, unreadable or busy: a lookup will say which, or wait its turn.
                return None

    def _close(self) -> None:
        if self._connection is not None:
            with contextlib.suppress(sqlite3.Error):
                self._connection.close()
            self._connection = None

    async def start(self) -> None:
        with self._lock:
            self._stopped = False

    async def stop(self) -> None:
        with self._lock:
            self._stopped = True
            self._close()


def _resolve(future: asyncio.Future | None, error: BaseException | None) -> None:
    if future is None or future.done():
        return
    if error is None:
        future.set_result(None)
    else:
        future.set_exception(error)
        future.exception()  # retrieved: waiters that were cancelled see none


class PostgreSQLChangeFeed(ChangeFeed):
    """The generation of a PostgreSQL database: notifications on ``channel`` counted by a
    listener."""

    def __init__(self, url: URL, channel: str = CHANNEL):
        self._url = url
        self._channel = channel
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
        self._round: asyncio.Future | None = None  # the one under way
        self._rounds: asyncio.Task | None = None
        # The tasks (requests) that made a round trip already.
        self._synchronized: weakref.WeakSet[asyncio.Task] = weakref.WeakSet()
        self._out_of_touch = False  # an outage has been reported and has not ended yet

    def generation(self) -> Any:
        return self._generation

    async def current(self) -> Any:
        """The generation after a round trip on the listening connection.

        PostgreSQL hands a listening session every notification committed before it answers
        a query on that session, so once the round trip is over, each write committed before
        this call has been counted. Callers that arrive while a round trip is under way wait
        for the next one (that one was sent too early for them), and share it. A task that
        made a round trip already makes none again: the writes committed before it (a
        request) began are counted; later ones may count as having come after it.
        """
        if self._generation is None or asyncio.get_running_loop() is not self._loop:
            return None  # not listening, or asked from another loop (test clients' threads)
        task = asyncio.current_task()
        if task is not None and task in self._synchronized:
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
        error: BaseException | None = None
        try:
            while self._next_round is not None:
                self._round, self._next_round = self._next_round, None
                connection = self._connection
                try:
                    await asyncio.wait_for(connection.execute("SELECT 1"), ROUND_TRIP_TIMEOUT)
                    # The notifications read with the answer were handed to _changed by
                    # call_soon, before this task resumed; yield once more to be sure.
                    await asyncio.sleep(0)
                except TimeoutError as err:
                    # Silent, not closed: drop it, so that the listener connects anew.
                    self._lost()
                    with contextlib.suppress(Exception):
                        connection.terminate()
                    _resolve(self._round, err)
                except Exception as err:  # noqa: BLE001 - handed to the waiters
                    _resolve(self._round, err)
                else:
                    _resolve(self._round, None)
        except BaseException as err:  # cancelled (stop): nobody may wait forever
            error = err
            raise
        finally:
            stopped = ConnectionError("no longer listening for changes")
            _resolve(self._round, error and stopped)
            if error is not None:
                _resolve(self._next_round, stopped)
                self._next_round = None
            self._round = None

    async def announce(self, connection: Any) -> None:
        await connection.execute(text("SELECT pg_notify(:channel, '')"), {"channel": self._channel})

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
            connection = None
            try:
                connection = await asyncpg.connect(dsn, timeout=ROUND_TRIP_TIMEOUT * 5)
                self._connection = connection
                lost = asyncio.Event()
                connection.add_termination_listener(functools.partial(self._ended, lost))
                await connection.add_listener(self._channel, self._changed)
                # Anything may have changed while nobody listened.
                self._session = f"{os.getpid()}-{uuid.uuid4().hex}"
                self._generation = (self._session, next(self._count))
                ready.set()
                if self._out_of_touch:
                    self._out_of_touch = False
                    logger.warning("Listening for changes on %s from now on", self._channel)
                while not connection.is_closed():
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(lost.wait(), LIVENESS_SECONDS)
            except asyncio.CancelledError:
                raise
            except Exception as err:  # noqa: BLE001 - down is a state here, not a failure
                # Told once per outage (then retried quietly): meanwhile nothing learnt from
                # the database is kept between requests, which is safe but slower.
                report = logger.debug if self._out_of_touch else logger.warning
                report(
                    "Not listening for changes on %s (%s: %s); until it listens, every request "
                    "asks the database, and it tries again %s s after each failed attempt",
                    self._channel, type(err).__name__, err, RELISTEN_SECONDS,
                )  # fmt: skip
                self._out_of_touch = True
            finally:
                if connection is not None and not connection.is_closed():
                    connection.terminate()
            self._lost()
            await asyncio.sleep(RELISTEN_SECONDS)

    async def stop(self) -> None:
        for task in (self._task, self._rounds):
            if task is not None:
                task.cancel()
                with contextlib.suppress(BaseException):
                    await task
        self._task = self._rounds = None
        stopped = ConnectionError("no longer listening for changes")
        _resolve(self._next_round, stopped)
        self._next_round = None
        self._connection = None
        self._lost()
        self._loop = None
        self._out_of_touch = False  # a new start reports its own outage


def change_feed(url: URL, channel: str = CHANNEL) -> ChangeFeed:
    """The feed that tells this process of the changes made to the database at ``url`` (a
    PostgreSQL database's writers notify ``channel``)."""
    backend = url.get_backend_name()
    if backend == "postgresql":
        return PostgreSQLChangeFeed(url, channel)
    if backend == "sqlite" and url.database not in (None, "", ":memory:"):
        return SQLiteChangeFeed(url.database)
    return ChangeFeed()
