"""Open the authentication database: URI normalization, engine, tables, sessions."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

from sqlalchemy import event, inspect, text
from sqlalchemy.engine import URL, make_url
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker, create_async_engine
from sqlalchemy.pool import StaticPool

from ..config import Database
from .orm import Base

IN_MEMORY = "sqlite+aiosqlite://"
_MEMORY_FORMS = {"", ":memory:", "sqlite://", "sqlite:///:memory:", "sqlite+aiosqlite://"}


def async_url(uri: str | None) -> URL:
    """The SQLAlchemy async URL for ``uri``: sqlite -> aiosqlite, postgresql -> asyncpg.

    A bare path is a SQLite file; None (or ``:memory:``) is an in-memory SQLite database.
    """
    if uri is None or uri in _MEMORY_FORMS or uri == IN_MEMORY + "/:memory:":
        return make_url(IN_MEMORY)
    if "://" not in uri:
        return make_url(f"sqlite+aiosqlite:///{uri}")
    url = make_url(uri)
    if url.drivername == "sqlite":
        url = url.set(drivername="sqlite+aiosqlite")
    elif url.drivername in ("postgresql", "postgres"):
        url = url.set(drivername="postgresql+asyncpg")
    return url


class AuthnDatabase:
    """The engine and session factory, made at startup and disposed of at shutdown."""

    def __init__(self, settings: Database | None = None):
        self.settings = settings or Database()
        self.url = async_url(self.settings.uri)
        self.in_memory = self.url.get_backend_name() == "sqlite" and not self.url.database
        self.engine = None
        self._sessions: async_sessionmaker[AsyncSession] | None = None
        # One shared in-memory connection: transactions must not interleave on it.
        self._lock: asyncio.Lock | None = None

    @property
    def display_url(self) -> str:
        return self.url.render_as_string(hide_password=True)

    def _engine_options(self) -> dict:
        if self.in_memory:
            return {"poolclass": StaticPool, "connect_args": {"check_same_thread": False}}
        options = {
            "pool_size": self.settings.pool_size,
            "max_overflow": self.settings.max_overflow,
            "pool_pre_ping": self.settings.pool_pre_ping,
        }
        if self.settings.schema_:
            options["execution_options"] = {"schema_translate_map": {None: self.settings.schema_}}
        return options

    async def startup(self) -> None:
        self.engine = create_async_engine(self.url, **self._engine_options())
        if self.url.get_backend_name() == "sqlite":
            event.listen(self.engine.sync_engine, "connect", _sqlite_foreign_keys)
        self._sessions = async_sessionmaker(self.engine, expire_on_commit=False)
        self._lock = asyncio.Lock() if self.in_memory else None
        await self._ensure_tables()

    def _new_sqlite_file(self) -> bool:
        if self.url.get_backend_name() != "sqlite" or self.in_memory:
            return False
        path = Path(self.url.database)
        return not path.exists() or path.stat().st_size == 0

    async def _ensure_tables(self) -> None:
        """Create the tables in a new database; refuse an existing one that lacks them
        unless ``init_if_not_exists`` says so (it may be the wrong database)."""
        schema = self.settings.schema_
        create = self.in_memory or self.settings.init_if_not_exists or self._new_sqlite_file()
        async with self.engine.begin() as connection:
            if schema and create:
                await connection.execute(text(f'CREATE SCHEMA IF NOT EXISTS "{schema}"'))
            exists = await connection.run_sync(
                lambda sync: inspect(sync).has_table("principals", schema=schema)
            )
            if exists:
                return
            if not create:
                raise RuntimeError(
                    f"The authentication database {self.display_url} has no tables. "
                    "Set 'init_if_not_exists: true' under 'database' to create them."
                )
            await connection.run_sync(Base.metadata.create_all)

    async def shutdown(self) -> None:
        if self.engine is not None:
            await self.engine.dispose()
            self.engine = None

    @contextlib.asynccontextmanager
    async def session(self) -> AsyncIterator[AsyncSession]:
        if self._sessions is None:
            raise RuntimeError("The authentication database is not started")
        async with contextlib.AsyncExitStack() as stack:
            if self._lock is not None:
                await stack.enter_async_context(self._lock)
            yield await stack.enter_async_context(self._sessions())


def _sqlite_foreign_keys(dbapi_connection, _record) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()
