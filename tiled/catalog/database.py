"""Connecting to the catalog database: URIs, engines, SQLite functions, schema and migrations.

``initialize_database`` and ``upgrade_database`` are what ``tiled catalog init`` and
``tiled catalog upgrade-database`` run. Both are coroutines because they share the async
engine code with the server; a command line calls them through ``asyncio.run``.
"""

from __future__ import annotations

import json
import os
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import event, inspect, select
from sqlalchemy.engine import URL, make_url
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine
from sqlalchemy.pool import StaticPool

from .. import database_pools
from ..access.blobs import PUBLIC_TAG
from ..queries import RegexBudget, regex_found
from .ddl import create_extensions, create_triggers
from .errors import DatabaseNotInitialized
from .orm import (
    ROOT_ID,
    TABLE_NAMES,
    access_tags,
    metadata_obj,
    node_access_tags_association,
    nodes,
)

MIGRATIONS = Path(__file__).parent / "migrations"
_MEMORY = "sqlite+aiosqlite:///:memory:"


def async_url(uri: str | Path) -> URL:
    """The SQLAlchemy URL with an async driver: sqlite -> aiosqlite, postgresql -> asyncpg.

    A plain path (no ``://``) is a SQLite file.
    """
    text = str(uri)
    if "://" not in text:
        return make_url(f"sqlite+aiosqlite:///{text}")
    url = make_url(text)
    if url.drivername == "sqlite":
        return url.set(drivername="sqlite+aiosqlite")
    if url.drivername in ("postgresql", "postgres", "postgresql+psycopg2"):
        return url.set(drivername="postgresql+asyncpg")
    if url.drivername not in ("sqlite+aiosqlite", "postgresql+asyncpg"):
        raise ValueError(f"Unsupported catalog database URI {url.render_as_string()!r}")
    return url


def is_memory(url: URL) -> bool:
    return url.get_backend_name() == "sqlite" and url.database in (None, "", ":memory:")


def sqlite_file_problem(uri: str | URL) -> str | None:
    """Why the SQLite file of ``uri`` cannot be opened or created, or None (other databases,
    in-memory ones). Asked before the driver, whose worker thread outlives a failed connect
    and then prints a traceback of its own."""
    url = make_url(uri) if isinstance(uri, str) else uri
    if url.get_backend_name() != "sqlite" or is_memory(url) or url.database.startswith("file:"):
        return None  # another database, or one SQLite reads by its own rules
    path = Path(url.database)
    try:
        path.stat()
    except FileNotFoundError:
        try:
            os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
        except OSError as err:
            return f"cannot create {path}: {err.strerror}"
        path.unlink()
    except OSError as err:  # a name too long, a folder not searchable
        return f"cannot use {path}: {err.strerror}"
    return None


# How long a SQLite connection waits for another's write lock before "database is locked".
SQLITE_LOCK_WAIT_SECONDS = 30.0


def create_engine(
    url: URL,
    pool_size: int = 5,
    max_overflow: int = 10,
    json_serializer: Any = None,
    durable: bool = True,
) -> AsyncEngine:
    """An engine for the catalog at ``url``. ``durable=False`` (SQLite: a catalog nobody
    would miss after a crash, such as the temporary index of ``tiled serve directory``)
    commits without waiting for the disk."""
    options: dict[str, Any] = {"json_serializer": json_serializer} if json_serializer else {}
    if is_memory(url):
        # One connection shared by everyone, or each connection would see its own empty database.
        options.update(poolclass=StaticPool, connect_args={"check_same_thread": False})
    elif url.get_backend_name() == "sqlite":
        # Writers of several processes take turns at the file's lock; sqlite3 gives up after
        # 5 s, which a turn (a large array's storage created in the transaction) may outlast.
        options.update(connect_args={"timeout": SQLITE_LOCK_WAIT_SECONDS})
    else:
        # Pre-ping: after the database restarted, a pooled connection that died with it is
        # replaced on checkout instead of failing the request that drew it.
        options.update(pool_size=pool_size, max_overflow=max_overflow, pool_pre_ping=True)
    engine = create_async_engine(url, **options)
    database_pools.announce(engine)
    if url.get_backend_name() == "sqlite":
        event.listen(engine.sync_engine, "connect", _prepare_sqlite)
        if not durable:
            event.listen(engine.sync_engine, "connect", _without_flushing)
    return engine


def _without_flushing(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA synchronous=OFF")
    cursor.close()


# --- SQLite: settings and the Python functions the query translation calls ---------------------


# Budgets of the searches a connection ran last: more than one statement's at a time only for
# the regular expressions of one statement (each has its own search number).
_BUDGETS_KEPT = 16


def _regexp_function() -> Callable[[Any, Any, int, int | None], int | None]:
    """A connection's ``tiled_regexp(pattern, value, ignore_case, search)``: ``search`` numbers
    one run of a statement (tiled.queries.new_regex_search), whose values share one
    :class:`~tiled.queries.RegexBudget`; NULL: no limit. A spent budget raises, which SQLite
    reports as "user-defined function raised exception", answered 400 (tiled.server.errors)."""
    budgets: dict[int, RegexBudget] = {}

    def regexp(pattern: Any, value: Any, ignore_case: int, search: int | None) -> int | None:
        if pattern is None or not isinstance(value, str):
            return None
        if search is None:
            return int(regex_found(pattern, value, bool(ignore_case)))
        budget = budgets.get(search)
        if budget is None:
            if len(budgets) >= _BUDGETS_KEPT:
                del budgets[next(iter(budgets))]  # the oldest: its statement has ended
            budget = budgets[search] = RegexBudget()
        return int(budget.found(pattern, value, bool(ignore_case)))

    return regexp


def metadata_words(metadata: Any) -> set[str]:
    """The lower-cased words of every string value in a metadata document."""
    if isinstance(metadata, str):
        return set(metadata.lower().split())
    if isinstance(metadata, dict):
        metadata = list(metadata.values())
    if isinstance(metadata, list):
        return set().union(*(metadata_words(v) for v in metadata)) if metadata else set()
    return set()


def _fulltext(metadata_json: str | None, text: str) -> int:
    if metadata_json is None:
        return 0
    wanted = set(text.lower().split())
    return int(not wanted.isdisjoint(metadata_words(json.loads(metadata_json))))


def _prepare_sqlite(dbapi_connection: Any, _record: Any) -> None:
    # SQLite has no regular expressions nor word search of JSON; these are Python functions.
    regexp = _regexp_function()
    dbapi_connection.create_function("tiled_regexp", 4, regexp, deterministic=True)
    dbapi_connection.create_function("tiled_fulltext", 2, _fulltext, deterministic=True)
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA foreign_keys=ON")  # SQLite ignores ON DELETE CASCADE without it
    cursor.close()


# --- schema ------------------------------------------------------------------------------------


def _alembic_config(url: URL) -> Any:
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    # configparser reads "%" as interpolation.
    rendered = url.render_as_string(hide_password=False).replace("%", "%%")
    config.set_main_option("sqlalchemy.url", rendered)
    return config


def _stamp(connection: Any, url: URL, revision: str) -> None:
    from alembic import command

    config = _alembic_config(url)
    config.attributes["connection"] = connection
    command.stamp(config, revision)


def _upgrade(connection: Any, url: URL, revision: str) -> None:
    from alembic import command

    config = _alembic_config(url)
    config.attributes["connection"] = connection
    command.upgrade(config, revision)


def _current_revision(connection: Any) -> str | None:
    from alembic.runtime.migration import MigrationContext

    return MigrationContext.configure(connection).get_current_revision()


def head_revision() -> str:
    from alembic.script import ScriptDirectory

    config = _alembic_config(make_url(_MEMORY))
    return ScriptDirectory.from_config(config).get_current_head()


def _has_tables(connection: Any) -> bool:
    existing = set(inspect(connection).get_table_names())
    return all(name in existing for name in TABLE_NAMES)


def _create_schema(connection: Any) -> None:
    """Tables, triggers, the root node (id 0) and upstream's ``public`` tag on the root."""
    create_extensions(connection)
    metadata_obj.create_all(connection)
    create_triggers(connection)
    connection.execute(
        nodes.insert().values(
            id=ROOT_ID, parent=None, key="", structure_family="container", metadata={}, specs=[]
        )
    )
    # The tag compiler may have made the tag tables, ``public`` included, before the catalog.
    tag_id = connection.execute(
        select(access_tags.c.id).where(access_tags.c.name == PUBLIC_TAG)
    ).scalar_one_or_none()
    if tag_id is None:
        tag_id = connection.execute(
            access_tags.insert().values(name=PUBLIC_TAG, is_public=True).returning(access_tags.c.id)
        ).scalar_one()
    connection.execute(node_access_tags_association.insert().values(node_id=ROOT_ID, tag_id=tag_id))


def _initialize(connection: Any, url: URL) -> None:
    if _current_revision(connection) is not None:
        _upgrade(connection, url, "head")  # already managed by alembic: only move forward
        return
    _create_schema(connection)
    _stamp(connection, url, "head")


async def initialize_database(uri: str | Path | AsyncEngine) -> None:
    """Create the catalog's tables and mark the database as being at the newest revision.

    Idempotent: on a database that already has the schema it only upgrades to the newest.
    """
    async with _engine_for(uri) as (engine, url):
        async with engine.begin() as connection:
            await connection.run_sync(_initialize, url)


async def upgrade_database(uri: str | Path | AsyncEngine, revision: str = "head") -> None:
    """Apply the migrations up to ``revision`` (on an empty database, all of them)."""
    async with _engine_for(uri) as (engine, url):
        async with engine.begin() as connection:
            await connection.run_sync(_upgrade, url, revision)


async def check_schema(connection: AsyncConnection, url: URL, init_if_not_exists: bool) -> None:
    """Refuse to run on a database without the catalog schema, or create it if asked to."""
    revision = await connection.run_sync(_current_revision)
    if revision is None and not await connection.run_sync(_has_tables):
        if not init_if_not_exists:
            raise DatabaseNotInitialized(
                f"The database {url.render_as_string()} has no catalog. Create it with "
                "`tiled catalog init URI` or pass init_if_not_exists=True."
            )
        await connection.run_sync(_initialize, url)
        return
    head = head_revision()
    if revision != head:
        raise DatabaseNotInitialized(
            f"The catalog database is at revision {revision!r}, this version of tiled needs "
            f"{head!r}. Run `tiled catalog upgrade-database URI`."
        )


@asynccontextmanager
async def _engine_for(uri: str | Path | AsyncEngine) -> AsyncIterator[tuple[AsyncEngine, URL]]:
    if isinstance(uri, AsyncEngine):
        yield uri, uri.url
        return
    url = async_url(uri)
    engine = create_engine(url)
    try:
        yield engine, url
    finally:
        await engine.dispose()
