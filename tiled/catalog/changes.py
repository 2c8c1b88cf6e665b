"""Writers' exclusion across the processes of one catalog database (how the processes learn of
each other's changes is :mod:`tiled.change_feeds`)."""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import functools
import hashlib
import logging
import math
import os
import weakref
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from sqlalchemy.engine import URL

from ..errors import ServiceUnavailable

logger = logging.getLogger(__name__)


# --- writers' exclusion across processes ------------------------------------------------------

# How often a writer waiting for another process's lock looks again, and for how long.
EXCLUSION_POLL_SECONDS = 0.002
EXCLUSION_TIMEOUT_SECONDS = 30.0
# Turns: a process whose writers have taken one lock again and again, without a pause, for this
# long lets it go for a while before taking it again if another process is waiting for it
# (waiters make themselves known), so that the other processes, which look every
# EXCLUSION_POLL_SECONDS, get it too (their writers would otherwise wait, then time out).
EXCLUSION_TURN_SECONDS = 0.25
EXCLUSION_YIELD_SECONDS = 0.02
# A lock taken again this soon after it was given back continues the turn.
EXCLUSION_PAUSE_SECONDS = 0.01
# The longest a statement on the lock session may take. Lock statements never wait for other
# sessions (they only try), so only a database out of reach makes one slow; giving up drops
# every lock of the session, which this process's other writers count on, so load alone
# (seconds, on a busy machine) must not be taken for that.
LOCK_ROUND_TRIP_SECONDS = 15.0
# The lock files of a SQLite catalog: names are hashed onto this many (two names that share
# one merely wait for each other).
SQLITE_LOCK_SLOTS = 1024


def _lock_key(name: str) -> int:
    """A stable 63-bit number for ``name`` (the same in every process)."""
    return int.from_bytes(hashlib.blake2b(name.encode(), digest_size=8).digest()) >> 1


def _granted(task: asyncio.Task) -> bool:
    """Whether a finished ``pg_try_advisory_lock*`` call (see ``_call``) took its lock."""
    return not task.cancelled() and task.exception() is None and bool(task.result()[0])


def _waiting_key(key: int) -> int:
    """The key on which writers waiting for ``key`` make themselves known (PostgreSQL)."""
    return key ^ (1 << 62)


class _Holders:
    """The locks one owner (a lock file's descriptions, a PostgreSQL session) holds: counted
    per key, since the owner's own locks do not exclude each other, and with the attempts
    under way, so that one key is taken once however many of the owner's writers want it."""

    def __init__(self) -> None:
        self.counts: dict[int, int] = {}
        self.taking: dict[int, asyncio.Future] = {}
        self.turn_started: dict[int, float] = {}  # when the owner's current turn began
        self.given_back: dict[int, float] = {}  # when the owner last gave the key back
        # Which counts are current: a new generation begins when the owner loses its locks
        # all at once (a PostgreSQL connection), and writers of the old one release nothing.
        self.generation = 0
        self.waiting: dict[int, int] = {}  # how many of the owner's writers wait, per key
        self.announced: set[int] = set()  # keys for which the owner has said it waits

    def lost_all(self) -> None:
        """The owner's locks and announcements went all at once (with a PostgreSQL
        connection): their counts go too, and a new generation begins."""
        self.counts.clear()
        self.announced.clear()
        self.generation += 1

    def turn_is_over(self, key: int, now: float) -> bool:
        return now - self.turn_started.get(key, now) > EXCLUSION_TURN_SECONDS

    def continues_turn(self, key: int, now: float) -> bool:
        return now - self.given_back.get(key, -math.inf) < EXCLUSION_PAUSE_SECONDS


class Exclusion:
    """Mutual exclusion of writers by name, across the processes of one database.

    This process's own writers of one name are excluded by the caller (an asyncio lock per
    name); this adds the other processes. The base class is for a database only one process
    uses.
    """

    def __init__(self) -> None:
        self._by_loop: weakref.WeakKeyDictionary[Any, Any] = weakref.WeakKeyDictionary()

    @contextlib.asynccontextmanager
    async def held(self, name: str) -> AsyncIterator[None]:
        yield

    async def stop(self) -> None:
        pass

    # --- for the subclasses ---

    def _holders(self) -> Any:
        """The holders of the running event loop (its futures and connections are its own)."""
        loop = asyncio.get_running_loop()
        holders = self._by_loop.get(loop)
        if holders is None:
            holders = self._by_loop[loop] = self._new_holders()
        return holders

    def _new_holders(self) -> _Holders:
        return _Holders()

    async def _take(self, key: int) -> bool:
        """Try once to take ``key`` (never waits for another holder)."""
        raise NotImplementedError

    async def _give_back(self, key: int) -> None:
        raise NotImplementedError

    def _still_held(self, holders: Any) -> bool:
        """Whether the owner's locks still stand (a PostgreSQL connection may be lost)."""
        return True

    async def _announce(self, holders: Any, key: int) -> bool:
        """Let the other processes see that a writer of ``holders`` waits for ``key``, if that
        can be done at once; whether it was."""
        return False

    def _withdraw(self, holders: Any, key: int) -> None:
        """Undo :meth:`_announce` (at once, or in the background: never awaited)."""

    async def _others_wait(self, key: int) -> bool:
        """Whether a writer of another process has announced that it waits for ``key``."""
        return False

    async def _take_turn(self, holders: _Holders, key: int) -> None:
        """Before taking ``key``: if this owner's writers have had it for a whole turn, pause
        for another process's writer that waits for it."""
        loop = asyncio.get_running_loop()
        if not holders.continues_turn(key, loop.time()):
            holders.turn_started[key] = loop.time()  # a new turn
        elif holders.turn_is_over(key, loop.time()):
            if await self._others_wait(key):
                await asyncio.sleep(EXCLUSION_YIELD_SECONDS)
            holders.turn_started[key] = loop.time()

    @contextlib.asynccontextmanager
    async def _counted(self, name: str) -> AsyncIterator[None]:
        key = _lock_key(name)
        holders = self._holders()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + EXCLUSION_TIMEOUT_SECONDS
        if key in holders.counts and not self._still_held(holders):
            holders.lost_all()
        holders.waiting[key] = holders.waiting.get(key, 0) + 1
        try:
            # Counted as soon as it is held (no await in between): a writer of ours that
            # looks meanwhile shares it rather than taking it again.
            while key not in holders.counts:
                pending = holders.taking.get(key)
                if pending is not None:
                    await asyncio.shield(pending)  # another writer of ours is taking it
                    continue
                attempt = holders.taking[key] = loop.create_future()
                try:
                    await self._take_turn(holders, key)
                    if await self._take(key):
                        holders.counts[key] = 0
                finally:
                    del holders.taking[key]
                    attempt.set_result(None)
                if key in holders.counts:
                    break
                if key not in holders.announced and await self._announce(holders, key):
                    holders.announced.add(key)
                if loop.time() > deadline:
                    raise ServiceUnavailable(
                        f"Another server process has held the write lock of {name!r} for "
                        f"{EXCLUSION_TIMEOUT_SECONDS:g} s; retry later"
                    )
                await asyncio.sleep(EXCLUSION_POLL_SECONDS)
            # Held by another writer of ours, it is shared: the caller serializes those, and
            # making them wait here could deadlock with the caller's own locks.
            holders.counts[key] += 1
            generation = holders.generation
        finally:
            holders.waiting[key] -= 1
            if not holders.waiting[key]:
                del holders.waiting[key]
            if key in holders.announced and (key in holders.counts or key not in holders.waiting):
                holders.announced.discard(key)
                self._withdraw(holders, key)  # not awaited: nothing may come between
        try:
            yield
        finally:
            if holders.generation == generation:  # else the lock went with its connection
                remaining = holders.counts[key] - 1
                if remaining > 0:
                    holders.counts[key] = remaining
                else:
                    del holders.counts[key]
                    holders.given_back[key] = loop.time()
                    await self._give_back(key)


class SQLiteExclusion(Exclusion):
    """``flock`` locks on files beside the database (``<database>.tiled-locks/``): owned by
    the open file, so that two catalogs of one process exclude each other like two
    processes, and dropped by the kernel with the process, so a writer that dies holds
    nothing."""

    def __init__(self, database: str):
        super().__init__()
        self._directory = Path(f"{database}.tiled-locks")
        self._files: dict[int, int] = {}  # key -> descriptor of the file holding its lock
        # (owner, key) -> descriptor of the key's ".waiting" file, held while the owner waits
        self._waiting: dict[tuple[int, int], int] = {}

    @contextlib.asynccontextmanager
    async def held(self, name: str) -> AsyncIterator[None]:
        async with self._counted(name):
            yield

    def _locked_file(self, name: str, operation: int) -> int | None:
        """A descriptor of lock file ``name`` holding ``flock(operation | LOCK_NB)``; None
        if another holds a conflicting lock. (Opening is not excused: a lock file this
        process may not open is a fault of the deployment, not a lock held by another.)"""
        self._directory.mkdir(exist_ok=True)
        fd = os.open(self._directory / name, os.O_RDWR | os.O_CREAT)
        try:
            fcntl.flock(fd, operation | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return None
        except BaseException:
            os.close(fd)
            raise
        return fd

    async def _take(self, key: int) -> bool:
        fd = self._locked_file(f"{key % SQLITE_LOCK_SLOTS:04d}", fcntl.LOCK_EX)
        if fd is None:
            return False
        self._files[key] = fd
        return True

    async def _give_back(self, key: int) -> None:
        fd = self._files.pop(key, None)
        if fd is not None:
            os.close(fd)  # closing the file drops its lock

    # Waiters hold a shared lock on the slot's ".waiting" file; a holder sees them by failing
    # to take it exclusively (and lets go at once when it succeeds).

    async def _announce(self, holders: Any, key: int) -> bool:
        fd = self._locked_file(f"{key % SQLITE_LOCK_SLOTS:04d}.waiting", fcntl.LOCK_SH)
        if fd is None:  # a holder is looking: say it next time
            return False
        self._waiting[(id(holders), key)] = fd
        return True

    def _withdraw(self, holders: Any, key: int) -> None:
        fd = self._waiting.pop((id(holders), key), None)
        if fd is not None:
            os.close(fd)

    async def _others_wait(self, key: int) -> bool:
        fd = self._locked_file(f"{key % SQLITE_LOCK_SLOTS:04d}.waiting", fcntl.LOCK_EX)
        if fd is None:
            return True
        os.close(fd)
        return False

    async def stop(self) -> None:
        for fd in [*self._files.values(), *self._waiting.values()]:
            with contextlib.suppress(OSError):
                os.close(fd)
        self._files.clear()
        self._waiting.clear()
        self._by_loop = weakref.WeakKeyDictionary()


class _Session(_Holders):
    """One PostgreSQL session of advisory locks, for the writers of one event loop."""

    def __init__(self) -> None:
        super().__init__()
        self.connection: Any = None
        self.calls = asyncio.Lock()  # one statement at a time on the connection
        self.retired = False  # stopped: never connects again


def _session_lost_errors() -> tuple[type[BaseException], ...]:
    import asyncpg

    # A connection closed under a statement (the database's farewell is its cause); one
    # whose close was heard of just before the statement was sent; one that received the
    # farewell but not yet the close (the driver is stuck reading the farewell).
    return (
        asyncpg.PostgresConnectionError,
        asyncpg.InterfaceError,
        asyncpg.InternalClientError,
        OSError,
        # A statement cancelled by the database (statement_timeout, pg_cancel_backend; the
        # session lives, but whether the lock was granted is unknown, as on a timeout), or
        # the database's farewell should it ever come unwrapped (shutdown, crash).
        asyncpg.OperatorInterventionError,
    )


class PostgreSQLExclusion(Exclusion):
    """PostgreSQL session advisory locks, on a connection of this process's own (one per
    event loop: a connection belongs to one); the database drops them with the connection,
    so a writer that dies holds nothing.

    Taking and giving back run to their end even when the writer is cancelled meanwhile: a
    lock granted to a writer that is gone is given back at once, and a lock that cannot be
    given back is dropped with its connection.
    """

    def __init__(self, url: URL):
        super().__init__()
        self._dsn = url.set(drivername="postgresql").render_as_string(hide_password=False)
        self._background: set[asyncio.Task] = set()

    def _new_holders(self) -> _Session:
        return _Session()

    @contextlib.asynccontextmanager
    async def held(self, name: str) -> AsyncIterator[None]:
        async with self._counted(name):
            yield

    async def _call(self, session: _Session, statement: str, key: int) -> tuple[Any, int]:
        """``statement``'s value, and the generation of the session that answered it (a lock
        it granted is given back only while that generation lasts)."""
        import asyncpg

        async with session.calls:
            for attempt in range(2):
                if session.connection is None or session.connection.is_closed():
                    if session.retired:
                        raise ConnectionResetError("The catalog's lock sessions are closed")
                    session.lost_all()  # what the lost connection held went with it
                    session.connection = await asyncpg.connect(
                        self._dsn, timeout=LOCK_ROUND_TRIP_SECONDS
                    )
                connection = session.connection
                try:
                    value = await asyncio.wait_for(
                        connection.fetchval(statement, key), LOCK_ROUND_TRIP_SECONDS
                    )
                    return value, session.generation
                # TimeoutError first: it is an OSError too, but is not retried (a database
                # that does not answer in time would only keep the writer waiting longer).
                except TimeoutError:
                    # Whether the lock was granted is unknown: drop every lock of the
                    # connection.
                    connection.terminate()
                    raise
                except _session_lost_errors() as err:
                    # The database ended the session (a restart, an administrator), heard of
                    # by the driver only now, in any of its states: whatever the statement did
                    # went with the session, so it is sent again on a new one, once.
                    connection.terminate()
                    logger.warning("The catalog's lock session was lost: %r", err)
                    if attempt:
                        raise ConnectionResetError("The catalog's lock session was lost") from err
        raise AssertionError("unreachable")  # for type checkers: the loop returns or raises

    def _finish(self, work: Any) -> asyncio.Task:
        """Run ``work`` to its end whatever happens to the task that asked for it."""
        task = asyncio.get_running_loop().create_task(work)
        self._background.add(task)
        task.add_done_callback(self._background.discard)
        return task

    async def _take(self, key: int) -> bool:
        session = self._holders()
        taking = self._finish(self._call(session, "SELECT pg_try_advisory_lock($1)", key))
        try:
            taken, _ = await asyncio.shield(taking)
            return bool(taken)
        except asyncio.CancelledError:
            taking.add_done_callback(functools.partial(self._release_if_granted, session, key))
            raise

    def _still_held(self, holders: Any) -> bool:
        return holders.connection is not None and not holders.connection.is_closed()

    # Waiters hold a shared advisory lock on a second key; a holder sees them by failing to
    # take it exclusively (and gives it back at once when it succeeds). A session's own locks
    # never conflict with each other.

    async def _announce(self, holders: Any, key: int) -> bool:
        statement = "SELECT pg_try_advisory_lock_shared($1)"
        announcing = self._finish(self._call(holders, statement, _waiting_key(key)))
        try:
            announced, _ = await asyncio.shield(announcing)
            return bool(announced)
        except asyncio.CancelledError:
            # Granted to a writer that is gone: withdrawn at once, never left behind.
            announcing.add_done_callback(
                lambda done: _granted(done) and self._withdraw(holders, key, done.result()[1])
            )
            raise

    def _withdraw(self, holders: Any, key: int, generation: int | None = None) -> None:
        # An announcement the owner still records is of the session's current generation.
        generation = holders.generation if generation is None else generation
        unlock = "pg_advisory_unlock_shared"
        self._finish(self._release(holders, _waiting_key(key), generation, unlock))

    async def _others_wait(self, key: int) -> bool:
        statement = (
            "SELECT CASE WHEN pg_try_advisory_lock($1) THEN pg_advisory_unlock($1) ELSE false END"
        )
        free, _ = await self._completed(self._call(self._holders(), statement, _waiting_key(key)))
        return not free

    async def _completed(self, work: Any) -> Any:
        """``work``'s result; run to its end even if the writer is cancelled meanwhile (a
        lock taken on the connection is never left behind unknown)."""
        return await asyncio.shield(self._finish(work))

    def _release_if_granted(self, session: _Session, key: int, taking: asyncio.Task) -> None:
        if _granted(taking):
            self._finish(self._release(session, key, taking.result()[1]))

    async def _release(
        self, session: _Session, key: int, generation: int, unlock: str = "pg_advisory_unlock"
    ) -> None:
        """Give back ``key``, granted in the session's ``generation``: nothing if that session
        is gone by the time the release runs (its locks went with it; the same key may be held
        on the new session now, by another writer of ours)."""
        async with session.calls:
            connection = session.connection
            if session.generation != generation or connection is None or connection.is_closed():
                return
            try:
                await asyncio.wait_for(
                    connection.fetchval(f"SELECT {unlock}($1)", key), LOCK_ROUND_TRIP_SECONDS
                )
            except Exception:  # noqa: BLE001 - see below
                # A lock we cannot give back is dropped with its connection (and so are the
                # session's other locks: their counts are cleared when it reconnects).
                connection.terminate()

    async def _give_back(self, key: int) -> None:
        # Called as soon as the holder saw its generation still current (nothing in between).
        holders = self._holders()
        await asyncio.shield(self._finish(self._release(holders, key, holders.generation)))

    async def stop(self) -> None:
        for task in list(self._background):
            with contextlib.suppress(BaseException):
                await asyncio.wait_for(asyncio.shield(task), 2)
        for session in list(self._by_loop.values()):
            session.retired = True
            connection, session.connection = session.connection, None
            if connection is not None and not connection.is_closed():
                with contextlib.suppress(Exception):
                    await connection.close(timeout=2)
        self._by_loop = weakref.WeakKeyDictionary()


def exclusion(url: URL) -> Exclusion:
    """How writers of the catalog at ``url`` exclude those of other processes."""
    backend = url.get_backend_name()
    if backend == "postgresql":
        return PostgreSQLExclusion(url)
    if backend == "sqlite" and url.database not in (None, "", ":memory:"):
        return SQLiteExclusion(url.database)
    return Exclusion()
