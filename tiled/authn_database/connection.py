"""Open the authentication database: URI normalization, engine, schema check, sessions."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

from sqlalchemy import event, text
from sqlalchemy.engine import URL, make_url
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.orm import Session
from sqlalchemy.pool import StaticPool

from .. import database_pools
from ..change_feeds import ChangeFeed, change_feed
from ..config import Database
from ..utils import ASYNC_SQL_DRIVERS

IN_MEMORY = "sqlite+aiosqlite://"
# The PostgreSQL notification channel of writes to the authentication database.
CHANNEL = "tiled_authn_changes"
_MEMORY_FORMS = {"", ":memory:", "sqlite://", "sqlite:///:memory:", "sqlite+aiosqlite://"}
_ASYNC_DRIVERS = ASYNC_SQL_DRIVERS


def async_url(uri: str | None) -> URL:
    """The SQLAlchemy async URL for ``uri``: sqlite -> aiosqlite, postgresql -> asyncpg.

    A bare path is a SQLite file; None (or ``:memory:``) is an in-memory SQLite database.
    Raises ValueError for anything else.
    """
    if uri is None or uri in _MEMORY_FORMS or uri == IN_MEMORY + "/:memory:":
        return make_url(IN_MEMORY)
    if "://" not in uri:
        return make_url(f"sqlite+aiosqlite:///{uri}")
    try:
        url = make_url(uri)
    except Exception:  # noqa: BLE001 - SQLAlchemy raises several kinds for one problem
        raise ValueError(f"{uri!r} is not a database URI") from None
    url = url.set(drivername=_ASYNC_DRIVERS.get(url.drivername, url.drivername))
    if url.drivername not in ("sqlite+aiosqlite", "postgresql+asyncpg"):
        raise ValueError(
            f"Unsupported database URI {url.render_as_string(hide_password=True)!r}: use "
            "sqlite:///path/to/file.db or postgresql://user@host/database"
        )
    return url


def is_memory(url: URL) -> bool:
    """An in-memory SQLite database, including SQLite URI filenames with ``mode=memory``
    (upstream's default ``sqlite:///file:authdb?mode=memory&cache=shared&uri=true``)."""
    if url.get_backend_name() != "sqlite":
        return False
    return url.database in (None, "", ":memory:") or url.query.get("mode") == "memory"


def sqlite_file_missing(url: URL) -> bool:
    """Whether ``url`` names a SQLite file that does not exist (connecting would create it)."""
    if url.get_backend_name() != "sqlite" or is_memory(url):
        return False
    database = url.database or ""
    if database.startswith("file:"):  # an SQLite URI filename: leave it to SQLite
        return False
    return not Path(database).exists()


def create_engine(url: URL, settings: Database | None = None) -> AsyncEngine:
    """An engine for the authentication database (``settings`` for pooling and schema)."""
    settings = settings or Database()
    if is_memory(url):
        # One connection shared by everyone, or each connection would see its own database.
        options = {"poolclass": StaticPool, "connect_args": {"check_same_thread": False}}
    elif url.get_backend_name() == "sqlite":
        # As the catalog's (tiled.catalog.database): sqlite3's 5 s is short for a busy server.
        options = {"connect_args": {"timeout": 30.0}}
    else:
        options = {
            "pool_size": settings.pool_size,
            "max_overflow": settings.max_overflow,
            "pool_pre_ping": settings.pool_pre_ping,
        }
        if settings.schema_:
            # Every table, type and the alembic stamp live in that schema.
            options["connect_args"] = {"server_settings": {"search_path": settings.schema_}}
    engine = create_async_engine(url, **options)
    database_pools.announce(engine)
    if url.get_backend_name() == "sqlite":
        event.listen(engine.sync_engine, "connect", _sqlite_foreign_keys)
    return engine


class AuthnDatabase:
    """The engine and session factory, made at startup and disposed of at shutdown.

    At startup the database must be at upstream's newest revision
    (:data:`~tiled.authn_database.migration.HEAD`); an empty one is created only when
    ``init_if_not_exists`` says so (or when it lives in memory).
    """

    def __init__(self, settings: Database | None = None):
        self.settings = settings or Database()
        self.url = async_url(self.settings.uri)
        self.in_memory = is_memory(self.url)
        self.engine: AsyncEngine | None = None
        self._sessions: async_sessionmaker[AsyncSession] | None = None
        # One shared in-memory connection: transactions must not interleave on it.
        self._lock: asyncio.Lock | None = None
        # How this process learns of other processes' writes (see generation), and its own.
        self._changes = _change_feed(self.url)
        self._commits = 0

    @property
    def display_url(self) -> str:
        return self.url.render_as_string(hide_password=True)

    async def startup(self) -> None:
        from .migration import uninitialized

        create = self.in_memory or self.settings.init_if_not_exists
        if sqlite_file_missing(self.url) and not create:
            raise uninitialized(self.display_url)
        self.engine = create_engine(self.url, self.settings)
        self._sessions = async_sessionmaker(
            self.engine, expire_on_commit=False, sync_session_class=self._session_class()
        )
        self._lock = asyncio.Lock() if self.in_memory else None
        try:
            await check_schema(self.engine, self.display_url, create, self.settings.schema_)
        except BaseException:
            await self.shutdown()
            raise
        if self._changes is not None:
            await self._changes.start()

    async def shutdown(self) -> None:
        if self._changes is not None:
            await self._changes.stop()
        if self.engine is not None:
            await self.engine.dispose()
            self.engine = None
            self._sessions = None

    def _session_class(self) -> type[Session]:
        """Sessions that make their commits known: to PostgreSQL listeners (other processes)
        by a notification in the transaction, and to this process by a count."""

        class AuthnSession(Session):
            pass

        def before_commit(session: Session) -> None:
            # Within the transaction: the notification is delivered if, and only if, it commits.
            if self.url.get_backend_name() == "postgresql" and not _records_activity(session):
                session.execute(text("SELECT pg_notify(:channel, '')"), {"channel": CHANNEL})

        def after_commit(session: Session) -> None:
            if not session.info.pop(RECORDS_ACTIVITY_ONLY, False):
                self._commits += 1

        event.listen(AuthnSession, "before_commit", before_commit)
        event.listen(AuthnSession, "after_commit", after_commit)
        return AuthnSession

    async def generation(self) -> tuple[int, object] | None:
        """A value that differs whenever the database may have changed since it was last
        asked (by any process's commit), or None when that cannot be told: what was read from
        the database before it was asked may be reused while it answers the same."""
        if self._changes is None:
            return None
        commits = self._commits
        # A round trip on every call, even within one task (an application driven in-process
        # serves many requests from one): every commit until now must count.
        self._changes.resynchronize()
        changes = await self._changes.current()
        return None if changes is None else (commits, changes)

    @contextlib.asynccontextmanager
    async def session(self) -> AsyncIterator[AsyncSession]:
        if self._sessions is None:
            raise RuntimeError("The authentication database is not started")
        async with contextlib.AsyncExitStack() as stack:
            if self._lock is not None:
                await stack.enter_async_context(self._lock)
            yield await stack.enter_async_context(self._sessions())


def _change_feed(url: URL) -> ChangeFeed | None:
    """What tells of the commits of other processes to the database at ``url``; None where
    nothing can. A private in-memory database has no other writers; one named in a SQLite URI
    (upstream's ``file:authdb?mode=memory&cache=shared``) may have others in this process."""
    if not is_memory(url):
        return change_feed(url, CHANNEL)
    return ChangeFeed() if url.database in (None, "", ":memory:") else None


# Set in a session's ``info`` by whoever knows that its transaction only records when a key
# was last used: that changes no identity, so it is not made known as a change.
RECORDS_ACTIVITY_ONLY = "tiled.records_activity_only"


def _records_activity(session: Session) -> bool:
    return bool(session.info.get(RECORDS_ACTIVITY_ONLY))


async def check_schema(
    engine: AsyncEngine, display_url: str, create: bool, schema: str | None = None
) -> bool:
    """Refuse a database not at the newest revision; create an empty one if ``create``.

    Returns True if the database was created.
    """
    from .migration import check

    async with engine.begin() as connection:
        if schema and create and engine.dialect.name == "postgresql":
            await connection.execute(text(f'CREATE SCHEMA IF NOT EXISTS "{schema}"'))
        return await connection.run_sync(check, display_url, create)


def _sqlite_foreign_keys(dbapi_connection, _record) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()
