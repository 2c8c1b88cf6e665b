"""One async SQLAlchemy engine per database, shared by everything in the process that uses it.

Engines are looked up by their :class:`~tiled.server.settings.DatabaseSettings` (a hashable
dataclass), so two callers handing over equal settings share one connection pool. They are
made by the catalog's engine factory (:func:`tiled.catalog.database.create_engine`), which
picks the async driver and prepares SQLite connections (foreign keys on, the SQL functions
the catalog's queries call).

These names are upstream Tiled's, so that scripts written for upstream (such as its
``compile_tags.py``) run unchanged::

    engine = get_database_engine(settings)
    ...
    await close_database_connection_pool(settings)

An async engine's connections belong to the event loop that opened them: close the pool in
that loop before the loop ends.
"""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncEngine

from .settings import DatabaseSettings

_engines: dict[DatabaseSettings, AsyncEngine] = {}


def get_database_engine(database_settings: DatabaseSettings) -> AsyncEngine | None:
    """The engine for these settings, made on first use; None when they name no database.

    ``pool_size`` and ``max_overflow`` size a server's pool (PostgreSQL); SQLite files and
    in-memory databases get the pools the catalog uses for them.
    """
    if database_settings.uri is None:
        return None
    engine = _engines.get(database_settings)
    if engine is None:
        from ..catalog.database import async_url, create_engine

        engine = create_engine(
            async_url(database_settings.uri),
            pool_size=database_settings.pool_size,
            max_overflow=database_settings.max_overflow,
        )
        _engines[database_settings] = engine
    return engine


async def close_database_connection_pool(database_settings: DatabaseSettings) -> None:
    """Close every connection of the engine for these settings and forget it (no-op if none)."""
    engine = _engines.pop(database_settings, None)
    if engine is not None:
        await engine.dispose()
