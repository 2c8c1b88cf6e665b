"""Several processes on one catalog database: what one writes, the others see at once.

Each catalog here stands for one server process (each has its own lookup cache and its own
connections); the caches are given an hour to live, so that only the change feeds
(tiled/catalog/changes.py) can make a reader see a write.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import sqlite3
import subprocess
import sys
from collections.abc import Callable

import pytest

from tiled.catalog import from_uri
from tiled.catalog.changes import EXCLUSION_TURN_SECONDS
from tiled.change_feeds import ChangeFeed, PostgreSQLChangeFeed, SQLiteChangeFeed

from .test_catalog import database_uri, make, postgres_database, storage  # noqa: F401 (fixtures)

HOUR = 3600.0


async def _request(root, key: str):
    """The node at ``key`` as a new request finds it (each request is a task of its own)."""
    return await asyncio.create_task(root.lookup_adapter([key]))


async def _metadata_of(root, key: str) -> dict:
    return dict((await _request(root, key)).metadata())


@pytest.mark.asyncio
async def test_a_write_through_one_process_is_seen_by_the_next_lookup_of_another(
    database_uri,  # noqa: F811
    storage,  # noqa: F811
):
    writer = from_uri(database_uri, writable_storage=storage, init_if_not_exists=True)
    reader = from_uri(database_uri, writable_storage=storage, lookup_cache_ttl=HOUR)
    await writer.startup()
    await reader.startup()
    try:
        await make(writer, "x", metadata={"n": 1})
        await _request(reader, "x")  # (found; maybe tagged before the creation was heard of)
        first = await _request(reader, "x")
        # Nothing changed: the reader reuses what it resolved (the cache is not just off).
        assert await _request(reader, "x") is first
        node = await writer.lookup_adapter(["x"])
        await node.replace_metadata(metadata={"n": 2})
        assert (await _metadata_of(reader, "x"))["n"] == 2
        # A node deleted by another process is gone for the reader too.
        await node.delete()
        with pytest.raises(KeyError):
            await _request(reader, "x")
    finally:
        await reader.shutdown()
        await writer.shutdown()


@pytest.mark.asyncio
async def test_a_sqlite_file_written_by_any_program_is_noticed(tmp_path, storage):  # noqa: F811
    database = tmp_path / "catalog.db"
    reader = from_uri(
        f"sqlite+aiosqlite:///{database}", writable_storage=storage, init_if_not_exists=True,
        lookup_cache_ttl=HOUR,
    )  # fmt: skip
    await reader.startup()
    try:
        await make(reader, "x", metadata={"n": 1})
        assert (await _metadata_of(reader, "x"))["n"] == 1
        # A program that is not Tiled at all: SQLite counts its commit all the same.
        with sqlite3.connect(database) as connection:
            connection.execute("UPDATE nodes SET metadata = '{\"n\": 3}' WHERE key = 'x'")
        assert (await _metadata_of(reader, "x"))["n"] == 3
        # The same in WAL mode, where the header's counter stays and data_version tells.
        with sqlite3.connect(database) as connection:
            assert connection.execute("PRAGMA journal_mode=WAL").fetchone()[0] == "wal"
        assert (await _metadata_of(reader, "x"))["n"] == 3
        with sqlite3.connect(database) as connection:
            connection.execute("UPDATE nodes SET metadata = '{\"n\": 4}' WHERE key = 'x'")
        assert (await _metadata_of(reader, "x"))["n"] == 4
    finally:
        await reader.shutdown()


@pytest.mark.asyncio
async def test_postgresql_lookups_are_not_reused_while_nobody_listens(postgres_database):  # noqa: F811
    from .test_catalog import _reset_postgres

    await _reset_postgres(postgres_database)
    root = from_uri(postgres_database, init_if_not_exists=True, lookup_cache_ttl=HOUR)
    await root.startup()
    try:
        await make(root, "x")
        feed = root.catalog._changes
        assert isinstance(feed, PostgreSQLChangeFeed)
        assert feed.generation() is not None
        await _request(root, "x")
        first = await _request(root, "x")
        assert await _request(root, "x") is first
        # The listening connection is gone (the database restarted, say): notifications
        # may be missed from now on, so nothing resolved is reused.
        await _terminate(postgres_database, feed._connection.get_server_pid())
        await _until(lambda: feed.generation() is None)
        assert await _request(root, "x") is not first
        assert await _request(root, "x") is not await _request(root, "x")
        # It listens again by itself, in a new session whose generations are new.
        await _until(lambda: feed.generation() is not None)
        await _request(root, "x")
        again = await _request(root, "x")
        assert again is not first
        assert await _request(root, "x") is again
    finally:
        await root.shutdown()


@pytest.mark.asyncio
async def test_a_listener_that_cannot_reach_the_database_says_so_once_per_outage(
    postgres_database,  # noqa: F811
    caplog,
):
    """A change feed whose database does not answer warns once (it retries quietly), and says
    when it listens again; a later outage is told again."""
    import logging

    from sqlalchemy.engine import make_url

    real = make_url(postgres_database)
    # Bound but not listening: connections to the port are refused until the relay listens on
    # this very socket, and no other process (a parallel test) can take the port meanwhile.
    reserved = socket.socket()
    reserved.bind(("127.0.0.1", 0))
    port = reserved.getsockname()[1]
    feed = PostgreSQLChangeFeed(real.set(host="127.0.0.1", port=port), "tiled_test_channel")
    caplog.set_level(logging.DEBUG, logger="tiled.change_feeds")

    def told(level: int, words: str) -> int:
        return sum(r.levelno == level and words in r.getMessage() for r in caplog.records)

    async def until(condition) -> None:
        async with asyncio.timeout(10):
            while not condition():
                await asyncio.sleep(0.02)

    listening = asyncio.create_task(feed._listen(asyncio.Event()))
    try:
        await until(lambda: told(logging.DEBUG, "Not listening") >= 2)  # retried twice
        assert told(logging.WARNING, "Not listening for changes on tiled_test_channel") == 1
        assert feed.generation() is None
        relay = await _relay(reserved, real.host or "127.0.0.1", real.port or 5432)
        try:
            await until(lambda: feed.generation() is not None)
            assert told(logging.WARNING, "Listening for changes on tiled_test_channel from") == 1
        finally:
            relay.close()  # stops accepting at once (wait_closed would wait for the relayed)
        feed._connection.terminate()  # the next attempt finds nothing listening: a new outage
        await until(lambda: told(logging.WARNING, "Not listening") == 2)
        retried = told(logging.DEBUG, "Not listening")
        await until(lambda: told(logging.DEBUG, "Not listening") > retried)
        assert told(logging.WARNING, "Not listening") == 2
    finally:
        reserved.close()  # the relay's, if it was made
        listening.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await listening
    # Stopped while out of touch and listening anew, the feed reports its outage anew.
    await feed.stop()
    caplog.clear()
    listening = asyncio.create_task(feed._listen(asyncio.Event()))
    try:
        await until(lambda: any("Not listening" in r.getMessage() for r in caplog.records))
        assert told(logging.WARNING, "Not listening for changes on tiled_test_channel") == 1
    finally:
        listening.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await listening


async def _relay(bound: socket.socket, host: str, target_port: int) -> asyncio.Server:
    """A TCP server listening on the ``bound`` socket that forwards each connection to
    ``host:target_port``."""

    async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError):
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        writer.close()

    async def forward(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        upstream_reader, upstream_writer = await asyncio.open_connection(host, target_port)
        await asyncio.gather(pipe(reader, upstream_writer), pipe(upstream_reader, writer))

    return await asyncio.start_server(forward, sock=bound)


async def _terminate(uri: str, pid: int, gone: bool = False) -> None:
    """End the server process ``pid`` of the database at ``uri`` (and, if ``gone``, wait until
    it has exited: its connection's socket is closed then)."""
    import asyncpg

    connection = await asyncpg.connect(uri.replace("+asyncpg", ""))
    try:
        assert await connection.fetchval("SELECT pg_terminate_backend($1)", pid)
        query = "SELECT count(*) FROM pg_stat_activity WHERE pid = $1"
        async with asyncio.timeout(10):
            while gone and await connection.fetchval(query, pid):
                await asyncio.sleep(0.01)
    finally:
        await connection.close()


def test_which_feed_each_database_gets(tmp_path):
    from tiled.catalog.database import async_url
    from tiled.change_feeds import change_feed

    assert type(change_feed(async_url("sqlite:///:memory:"))) is ChangeFeed
    assert isinstance(change_feed(async_url(str(tmp_path / "c.db"))), SQLiteChangeFeed)
    feed = change_feed(async_url("postgresql://u@127.0.0.1/db"))
    assert isinstance(feed, PostgreSQLChangeFeed)
    assert feed.generation() is None  # not listening (yet): nothing is reused
    assert SQLiteChangeFeed(str(tmp_path / "missing.db")).generation() is None
    assert not (tmp_path / "missing.db").exists()  # looking did not create it


async def test_a_stopped_sqlite_feed_opens_no_connection_until_started_again(tmp_path):
    import sqlite3

    path = tmp_path / "c.db"
    sqlite3.connect(path).close()
    feed = SQLiteChangeFeed(str(path))
    assert feed.generation() is not None  # usable before start(), as catalogs are
    await feed.stop()
    assert feed.generation() is None  # a late request after shutdown reuses nothing...
    assert feed._connection is None  # ...and leaves no connection open behind it
    await feed.start()
    assert feed.generation() is not None


def test_a_sqlite_file_whose_path_holds_uri_characters_is_watched(tmp_path):
    directory = tmp_path / "run#1?x=%20"
    directory.mkdir()
    path = directory / "c.db"
    with contextlib.closing(sqlite3.connect(path)) as connection:
        connection.execute("CREATE TABLE t (x)")
        connection.commit()
        feed = SQLiteChangeFeed(str(path))
        before = feed.generation()
        connection.execute("INSERT INTO t VALUES (1)")
        connection.commit()
        assert before is not None and feed.generation() != before
    assert sorted(p.name for p in tmp_path.iterdir()) == [directory.name]  # nothing else made


# Holds the write lock of "a/b" in a process of its own until told to let go (or killed).
HOLDER = """
import asyncio, sys
from tiled.catalog import from_uri

async def main():
    root = from_uri(sys.argv[1])
    async with root.catalog.exclusive("a/b"):
        print("held", flush=True)
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
    print("released", flush=True)
    await root.shutdown()

asyncio.run(main())
"""


def _holder(uri: str) -> subprocess.Popen:
    process = subprocess.Popen(
        [sys.executable, "-c", HOLDER, uri], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    assert process.stdout.readline().strip() == "held"
    return process


@pytest.mark.asyncio
async def test_writers_of_a_node_exclude_each_other_across_processes(database_uri, storage):  # noqa: F811
    root = from_uri(database_uri, writable_storage=storage, init_if_not_exists=True)
    await root.startup()
    holder = _holder(database_uri)
    try:
        taken = asyncio.Event()

        async def take() -> None:
            async with root.catalog.exclusive("a/b"):
                taken.set()

        waiting = asyncio.create_task(take())
        await asyncio.sleep(0.3)
        assert not taken.is_set()  # the other process holds it
        async with asyncio.timeout(5):
            async with root.catalog.exclusive("a/c"):
                pass  # another node's lock is free meanwhile
        holder.stdin.write("\n")
        holder.stdin.flush()
        async with asyncio.timeout(10):
            await waiting
        assert holder.stdout.readline().strip() == "released"
        holder.wait(timeout=10)

        # A process that dies holding the lock holds nothing any more.
        killed = _holder(database_uri)
        killed.kill()
        killed.wait(timeout=10)
        async with asyncio.timeout(10):
            async with root.catalog.exclusive("a/b"):
                pass
    finally:
        holder.kill()
        holder.wait(timeout=10)
        await root.shutdown()


@pytest.mark.asyncio
async def test_two_catalogs_of_one_process_exclude_each_other_too(database_uri, storage):  # noqa: F811
    first = from_uri(database_uri, writable_storage=storage, init_if_not_exists=True)
    second = from_uri(database_uri, writable_storage=storage)
    await first.startup()
    await second.startup()
    try:
        async with first.catalog.exclusive("a/b"):
            waiting = asyncio.create_task(_hold(second, "a/b"))
            await asyncio.sleep(0.3)
            assert not waiting.done()
        async with asyncio.timeout(10):
            await waiting
        # Writers of one catalog that want one name at once take it once, and give it back
        # once: afterwards, another process takes it at once.
        entered = 0

        async def writer() -> None:
            nonlocal entered
            async with first.catalog.exclusive("a/b"):
                entered += 1
                await asyncio.sleep(0.05)

        await asyncio.gather(*(writer() for _ in range(5)))
        assert entered == 5
        holder = _holder(database_uri)
        holder.stdin.write("\n")
        holder.stdin.flush()
        assert holder.stdout.readline().strip() == "released"
        holder.wait(timeout=10)
    finally:
        await second.shutdown()
        await first.shutdown()


async def _hold(root, name: str) -> None:
    async with root.catalog.exclusive(name):
        pass


@pytest.mark.asyncio
async def test_a_process_that_keeps_a_lock_busy_lets_the_others_have_turns(
    database_uri,  # noqa: F811
    storage,  # noqa: F811
):
    """Writers of one process that follow each other without pause (serialized in the process,
    as the server's are, by the node's lock) would keep a lock that another process only ever
    takes when it finds it free; they give it up now and then, and a writer of another
    process gets it within a few turns, not a timeout."""
    busy = from_uri(database_uri, writable_storage=storage, init_if_not_exists=True)
    other = from_uri(database_uri, writable_storage=storage)
    await busy.startup()
    await other.startup()
    stop = asyncio.Event()

    async def keep_writing() -> None:
        while not stop.is_set():
            async with busy.catalog.node_lock("a/b"), busy.catalog.exclusive("a/b"):
                await asyncio.sleep(0.002)

    writers = [asyncio.create_task(keep_writing()) for _ in range(4)]
    try:
        await asyncio.sleep(0.3)  # the busy process's turn is well under way
        waits = []
        for _ in range(3):
            started = asyncio.get_running_loop().time()
            async with asyncio.timeout(10):
                await _hold(other, "a/b")
            waits.append(asyncio.get_running_loop().time() - started)
        # Some turns, not starved (a starved writer waits the 10 s above out). Not one turn, nor
        # a few: a holder lets go for EXCLUSION_YIELD_SECONDS, a window a loaded machine (a
        # slow PostgreSQL round trip, this process stopped a second or two) may miss again
        # and again, each miss costing a turn.
        assert max(waits) < 20 * EXCLUSION_TURN_SECONDS, waits
    finally:
        stop.set()
        await asyncio.gather(*writers)
        await other.shutdown()
        await busy.shutdown()


@pytest.mark.asyncio
async def test_the_sqlite_change_feed_leaves_sqlites_own_locks_alone(tmp_path, storage):  # noqa: F811
    database = tmp_path / "catalog.db"
    root = from_uri(
        f"sqlite+aiosqlite:///{database}", writable_storage=storage, init_if_not_exists=True
    )
    await root.startup()
    writer = sqlite3.connect(database, isolation_level=None)
    try:
        writer.execute("BEGIN IMMEDIATE")  # this process holds the write lock
        root.catalog._changes.generation()
        await root.shutdown()  # the feed closes what it opened
        other = subprocess.run(
            [sys.executable, "-c", "import sqlite3, sys\n"
             "c = sqlite3.connect(sys.argv[1], timeout=0)\n"
             "try:\n    c.execute('BEGIN IMMEDIATE')\nexcept sqlite3.OperationalError as e:\n"
             "    print(e)\n", str(database)],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert "locked" in other.stdout, other.stdout + other.stderr
    finally:
        writer.execute("ROLLBACK")
        writer.close()


@pytest.mark.asyncio
async def test_a_writer_waiting_in_another_process_is_seen_by_the_holder(
    database_uri,  # noqa: F811
    storage,  # noqa: F811
):
    """The holder gives a turn away only when someone waits (a lone writer never pauses):
    waiters say so while they wait, and stop saying so when they stop waiting."""
    from tiled.catalog.changes import _lock_key

    holder = from_uri(database_uri, writable_storage=storage, init_if_not_exists=True)
    other = from_uri(database_uri, writable_storage=storage)
    await holder.startup()
    await other.startup()
    exclusion = holder.catalog._exclusion
    key = _lock_key("a/b")
    try:
        async with holder.catalog.exclusive("a/b"):
            assert not await exclusion._others_wait(key)
            waiting = asyncio.create_task(_hold(other, "a/b"))
            await _starts_waiting(exclusion, key)
            waiting.cancel()
            with pytest.raises(asyncio.CancelledError):
                await waiting
            await _stops_waiting(exclusion, key)
            waiting = asyncio.create_task(_hold(other, "a/b"))
            await _starts_waiting(exclusion, key)
        async with asyncio.timeout(10):
            await waiting  # it got the lock: it waits no more
        await _stops_waiting(exclusion, key)
    finally:
        await other.shutdown()
        await holder.shutdown()


async def _until(condition: Callable[[], bool], seconds: float = 10) -> None:
    async with asyncio.timeout(seconds):
        while not condition():
            await asyncio.sleep(0.005)


async def _starts_waiting(exclusion, key: int) -> None:
    """Until ``exclusion`` sees a writer waiting for ``key``."""
    async with asyncio.timeout(10):
        while not await exclusion._others_wait(key):
            await asyncio.sleep(0.01)


async def _stops_waiting(exclusion, key: int) -> None:
    """Until ``exclusion`` sees no writer waiting for ``key`` (withdrawing an announcement
    is done in the background, at once but not instantly)."""
    async with asyncio.timeout(5):
        while await exclusion._others_wait(key):
            await asyncio.sleep(0.01)


@pytest.mark.asyncio
async def test_writers_that_take_the_locks_in_either_order_never_deadlock(tmp_path, storage):  # noqa: F811
    """A document write holds the cross-process lock, then the node's lock; a patch the other
    way around. Within one process the cross-process lock is shared, so neither waits for the
    other's, even when the lock has been busy long enough to be given up for a turn."""
    root = from_uri(
        f"sqlite:///{tmp_path / 'catalog.db'}", writable_storage=storage, init_if_not_exists=True
    )
    await root.startup()
    catalog = root.catalog
    try:

        async def chunk_writer() -> None:  # keeps the lock busy, as /zarr chunk PUTs do
            for _ in range(40):
                async with catalog.exclusive("a"):
                    await asyncio.sleep(0.01)

        async def document_write() -> None:
            await asyncio.sleep(0.1)
            async with catalog.exclusive("a"):
                await asyncio.sleep(0.2)  # the patch holds the node's lock meanwhile
                async with catalog.node_lock("a"):
                    pass

        async def patch() -> None:
            await asyncio.sleep(0.15)
            async with catalog.node_lock("a"):
                await asyncio.sleep(0.2)  # past EXCLUSION_TURN_SECONDS of the chunk writers
                async with catalog.exclusive("a"):
                    pass

        async with asyncio.timeout(10):
            await asyncio.gather(document_write(), patch(), *(chunk_writer() for _ in range(3)))
    finally:
        await root.shutdown()


@pytest.mark.asyncio
async def test_writers_of_one_process_waiting_together_take_the_lock_once(
    database_uri,  # noqa: F811
    storage,  # noqa: F811
):
    """Writers of one process that wait for a lock another process holds take it once when
    it is free (a PostgreSQL session's locks are reentrant: a second take would need a
    second give-back) and give it back once, for good."""
    first = from_uri(database_uri, writable_storage=storage, init_if_not_exists=True)
    second = from_uri(database_uri, writable_storage=storage)
    await first.startup()
    await second.startup()

    async def hold_a_while() -> None:
        async with second.catalog.exclusive("a/b"):
            await asyncio.sleep(0.02)

    try:
        async with first.catalog.exclusive("a/b"):
            waiters = [asyncio.create_task(hold_a_while()) for _ in range(5)]
            await asyncio.sleep(0.3)  # they wait, and say so
        async with asyncio.timeout(10):
            await asyncio.gather(*waiters)
        async with asyncio.timeout(10):
            await _hold(first, "a/b")  # given back for good
    finally:
        await second.shutdown()
        await first.shutdown()


@pytest.mark.asyncio
async def test_a_lock_session_the_database_closed_unheard_is_opened_again(postgres_database):  # noqa: F811
    """The database closes the lock session's connection; the driver hears of it only while a
    writer is already on its way to use the connection (the race of a database restart under
    load): the writer takes its lock on a new connection, not an error (a 500 before)."""
    from sqlalchemy.engine import make_url

    from tiled.catalog.changes import PostgreSQLExclusion

    exclusion = PostgreSQLExclusion(make_url(postgres_database))
    try:
        async with exclusion.held("a/b"):
            pass
        session = exclusion._holders()
        connection = session.connection
        _end_unheard(postgres_database, connection)
        async with asyncio.timeout(10):
            async with exclusion.held("a/b"):
                assert connection.is_closed()
                assert session.connection is not connection
    finally:
        await exclusion.stop()


def _end_unheard(uri: str, connection) -> None:
    """End the database session of ``connection`` from another thread, with this event loop
    blocked meanwhile: the close reaches the socket (the server process is gone), unheard of
    by the driver."""
    from concurrent.futures import ThreadPoolExecutor

    pid = connection.get_server_pid()
    with ThreadPoolExecutor(1) as thread:
        thread.submit(asyncio.run, _terminate(uri, pid, gone=True)).result()
    assert not connection.is_closed()


@pytest.mark.asyncio
async def test_a_lock_of_a_lost_lock_session_is_never_given_back_on_the_next(postgres_database):  # noqa: F811
    """A give-back that runs after the session which granted its lock was replaced gives back
    nothing: the same key may be held on the new session, by another writer of the process."""
    import asyncpg
    from sqlalchemy.engine import make_url

    from tiled.catalog.changes import PostgreSQLExclusion, _lock_key

    exclusion = PostgreSQLExclusion(make_url(postgres_database))
    key = _lock_key("a/b")
    other = await asyncpg.connect(postgres_database.replace("+asyncpg", ""))
    try:
        session = exclusion._holders()
        taken, first = await exclusion._call(session, "SELECT pg_try_advisory_lock($1)", key)
        assert taken
        _end_unheard(postgres_database, session.connection)
        # Taken again, on the session that replaces the lost one.
        taken, second = await exclusion._call(session, "SELECT pg_try_advisory_lock($1)", key)
        assert taken and second != first
        await exclusion._release(session, key, first)  # the lost session's give-back
        assert not await other.fetchval("SELECT pg_try_advisory_lock($1)", key)
        await exclusion._release(session, key, second)
        assert await other.fetchval("SELECT pg_try_advisory_lock($1)", key)
    finally:
        await other.close()
        await exclusion.stop()


@pytest.mark.asyncio
async def test_a_statement_on_a_connection_the_database_closed_is_503(postgres_database):  # noqa: F811
    import asyncpg

    from tiled.server.errors import error_response

    connection = await asyncpg.connect(postgres_database.replace("+asyncpg", ""))
    await _terminate(postgres_database, connection.get_server_pid())
    async with asyncio.timeout(10):
        while not connection.is_closed():
            await asyncio.sleep(0.01)
    with pytest.raises(asyncpg.InterfaceError) as raised:
        await connection.fetchval("SELECT 1")
    response = error_response(raised.value)
    assert response.status_code == 503
    assert response.headers["retry-after"] == "1"
