"""What all nodes of one catalog share: the database, the storage roots and the write locks.

The engine is created on first use, in the event loop that uses it (asyncpg connections
belong to one loop; a test client or a second server loop gets its own engine). An in-memory
SQLite database lives on one shared connection, so its transactions are serialized; a SQLite
file admits one writer at a time, so writes are serialized in-process rather than left to
fail with "database is locked".
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import weakref
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy.engine import URL
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from ..change_feeds import change_feed
from ..errors import NodeAt, NotFound
from ..structures.core import Spec, StructureFamily
from ..structures.data_source import DataSource
from ..structures.json import dumps_text, refuse
from .changes import exclusion
from .database import check_schema, create_engine, is_memory
from .mimetypes import AdapterRegistry
from .queries import DIALECTS


def _stored_json(value: Any) -> str:
    return dumps_text(value, refuse)


def as_utc(moment: datetime) -> datetime:
    # SQLite keeps no time zone; every time the catalog writes is UTC.
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def join_path(parent: str, key: str) -> str:
    return f"{parent}/{key}" if parent else key


@dataclass
class NodeRecord:
    """One row of ``nodes`` with its data sources: everything an adapter is built from."""

    id: int
    parent_id: int | None
    parent: str  # the parent's path ("" for children of the root)
    key: str
    structure_family: StructureFamily
    metadata: dict[str, Any]
    specs: list[Spec]
    access_blob: dict[str, Any] | None
    time_created: datetime
    time_updated: datetime
    data_sources: list[DataSource] = field(default_factory=list)
    child_count: int | None = None

    @property
    def path(self) -> str:
        return join_path(self.parent, self.key)

    @property
    def segments(self) -> tuple[str, ...]:
        return tuple(self.path.split("/"))


class NodeLock:
    """An asyncio lock that the task holding it may take again (a writer holding a node's
    lock calls code that takes it too: a zarr document write deleting or resizing the node)."""

    __slots__ = ("_lock", "_owner", "_depth", "__weakref__")

    def __init__(self) -> None:
        self._lock = asyncio.Lock()
        self._owner: asyncio.Task | None = None
        self._depth = 0

    def locked(self) -> bool:
        return self._lock.locked()

    async def __aenter__(self) -> None:
        task = asyncio.current_task()
        if self._owner is not task or task is None:
            await self._lock.acquire()
            self._owner = task
        self._depth += 1

    async def __aexit__(self, *exc_info: Any) -> None:
        self._depth -= 1
        if self._depth == 0:
            self._owner = None
            self._lock.release()


class _LoopState:
    """Engine and locks belonging to one event loop."""

    def __init__(self, engine: AsyncEngine):
        self.engine = engine
        self.write_lock = asyncio.Lock()
        self.node_locks: weakref.WeakValueDictionary[str, NodeLock] = weakref.WeakValueDictionary()


_LOOKUP_CACHE_ENTRIES = 10_000
_NOT_SEEN = object()


class Catalog:
    """The shared context of the adapters of one catalog."""

    def __init__(
        self,
        url: URL,
        *,
        writable_storage: list[Path],
        readable_storage: list[Path],
        init_if_not_exists: bool = False,
        adapters_by_mimetype: AdapterRegistry | dict[str, Any] | None = None,
        pool_options: dict[str, Any] | None = None,
        lookup_cache_ttl: float = 1.0,
        writable_sql_storage: list[Any] | None = None,
        writable_locations: list[Any] | None = None,
    ):
        self.url = url
        # SQL databases for appendable tables (tiled.adapters.sql.SQLStorage); new ones go in
        # the first.
        self.writable_sql_storage = list(writable_sql_storage or [])
        self._holding_storage = False  # between startup() and dispose()
        # Resolved nodes by path, reused for at most ``lookup_cache_ttl`` seconds, and only
        # while the database's generation is the one they were resolved in (see .changes):
        # writes through any process of this server are seen by the next lookup.
        self.lookup_cache_ttl = lookup_cache_ttl
        self._lookups: dict[str, tuple[float, Any, Any]] = {}
        self._changes = change_feed(url)
        # Writers that check a condition before they change a node exclude each other across
        # the processes of this database too (see .changes.Exclusion).
        self._exclusion = exclusion(url)
        self.dialect = DIALECTS[url.get_backend_name()]
        self.writable_storage = writable_storage
        # Where new nodes' data go (tiled.storage FileStorage and ObjectStorage), in the
        # configured order: each node in the first that can hold its family.
        if writable_locations is None:
            from ..storage import FileStorage

            writable_locations = [FileStorage(str(path)) for path in writable_storage]
        self.writable_locations = list(writable_locations)
        self.readable_storage = readable_storage
        self.init_if_not_exists = init_if_not_exists
        # Loaded on first use per mimetype (see .mimetypes): copying it would import them all.
        self.adapters_by_mimetype = (
            adapters_by_mimetype
            if isinstance(adapters_by_mimetype, AdapterRegistry)
            else AdapterRegistry.default(adapters_by_mimetype)
        )
        self.pool_options = dict(pool_options or {})
        self._states: weakref.WeakKeyDictionary[Any, _LoopState] = weakref.WeakKeyDictionary()
        self._shared_engine: AsyncEngine | None = None  # SQLite: one engine for every loop
        self._schema_checked = False
        # A catalog served from one of its nodes (mount_node): the keys of its path, and the
        # id of the node found there, looked for again whenever the database has changed.
        self.mount_path: tuple[str, ...] = ()
        self.mount_id: int | None = None
        # Its webhooks (tiled.catalog.webhooks.CatalogWebhooks), where the server delivers them.
        self.webhooks: Any = None
        # Its live streams (tiled.catalog.streams.CatalogStreams), where the server has a
        # streaming cache.
        self.streams: Any = None
        # The streaming cache given with the catalog (upstream's from_uri(cache_config=...)).
        self.requested_streaming_cache: Any = None
        self._mount_seen_in: Any = _NOT_SEEN
        # The adapter that serves this catalog as a tree (its CatalogRootAdapter, which sets
        # it): errors name nodes below it, and the server places that where it serves it.
        self.root: Any = None

    def node_at(self, path: str | Sequence[str]) -> NodeAt:
        """The node at ``path`` of the database (``"a/b"`` or its keys) as errors name it: by
        its keys below the node this catalog is served from (mount_node), in the tree of its
        root adapter. A client never sees where that node lies in the database."""
        if isinstance(path, str):
            path = [part for part in path.split("/") if part]
        segments = tuple(path)
        if segments[: len(self.mount_path)] == self.mount_path:
            segments = segments[len(self.mount_path) :]
        return NodeAt(segments, self.root)

    @property
    def is_sqlite(self) -> bool:
        return self.dialect.name == "sqlite"

    @property
    def serialize_all(self) -> bool:
        """Whether every transaction must wait its turn (one shared in-memory connection)."""
        return is_memory(self.url)

    def _new_engine(self) -> AsyncEngine:
        if self.is_sqlite and self._shared_engine is not None:
            return self._shared_engine
        # Metadata is stored as every route writes it (tiled.structures.json); a value with no
        # JSON form is refused, not stored as its text.
        engine = create_engine(self.url, **self.pool_options, json_serializer=_stored_json)
        if self.is_sqlite:
            self._shared_engine = engine
        return engine

    def _state(self) -> _LoopState:
        loop = asyncio.get_running_loop()
        state = self._states.get(loop)
        if state is None:
            state = self._states[loop] = _LoopState(self._new_engine())
        return state

    def current_engine(self) -> AsyncEngine:
        """The engine of the running event loop (e.g. to attach SQLAlchemy event listeners)."""
        return self._state().engine

    @property
    def readable_roots(self) -> list[Path]:
        """Where registered files may lie: the readable storage, and the writable (as upstream)."""
        return [*self.readable_storage, *self.writable_storage]

    @property
    def writable_root(self) -> Path | None:
        return self.writable_storage[0] if self.writable_storage else None

    def node_lock(self, path: str) -> NodeLock:
        """The lock serializing writes to node ``path`` within this process (the task that
        holds it may take it again)."""
        locks = self._state().node_locks
        lock = locks.get(path)
        if lock is None:
            lock = NodeLock()
            locks[path] = lock
        return lock

    @contextlib.asynccontextmanager
    async def exclusive(self, path: str) -> AsyncIterator[None]:
        """Held by one writer of node ``path`` at a time, in this process (its node lock) and
        in all other processes of this database. Lookups made while it is held see what the
        previous holder, of any process, wrote."""
        async with self.node_lock(path), self._exclusion.held(path):
            self._changes.resynchronize()
            yield

    async def _ensure_schema(self, connection: AsyncConnection) -> None:
        if not self._schema_checked:
            await check_schema(connection, self.url, self.init_if_not_exists)
            await connection.commit()
            self._schema_checked = True

    async def cached_lookup(self, path: str) -> tuple[Any | None, Any]:
        """The node resolved at ``path`` if it may be reused, and the database's generation:
        pass it to :meth:`remember_lookup` (known before the lookup's query, so that a change
        made during the query leaves the entry stale, never wrongly fresh)."""
        if self.lookup_cache_ttl <= 0:
            return None, None
        entry = self._lookups.get(path)
        if entry is None or entry[0] < time.monotonic():
            # Nothing to reuse: the generation last known will do (an older one only makes
            # the entry stale sooner).
            return None, self._changes.generation()
        generation = await self._changes.current()
        if generation is None or entry[1] != generation:
            return None, generation
        return entry[2], generation

    def remember_lookup(self, path: str, adapter: Any, generation: Any) -> None:
        if self.lookup_cache_ttl <= 0 or generation is None:
            return
        if len(self._lookups) >= _LOOKUP_CACHE_ENTRIES:
            self._lookups.clear()
        self._lookups[path] = (time.monotonic() + self.lookup_cache_ttl, generation, adapter)

    def forget_lookups(self) -> None:
        self._lookups.clear()

    @contextlib.asynccontextmanager
    async def connect(
        self, write: bool = False, nodes_changed: bool = True
    ) -> AsyncIterator[AsyncConnection]:
        """A connection in a transaction, committed on success and rolled back on error.

        ``nodes_changed=False``: a write of rows that no lookup reads (webhook bookkeeping),
        which keeps this process's resolved nodes, tells no other process, and does not follow
        the mounted node."""
        state = self._state()
        serialize = self.serialize_all or (write and self.is_sqlite) or not self._schema_checked
        try:
            async with state.write_lock if serialize else contextlib.nullcontext():
                async with state.engine.connect() as connection:
                    await self._ensure_schema(connection)
                    async with connection.begin():
                        if write and self.is_sqlite:
                            # pysqlite begins a transaction at the first INSERT/UPDATE only,
                            # so a writer's reads (the next revision number, the assets to
                            # delete) would run outside it, racing other processes. IMMEDIATE
                            # takes the write lock first: writers of every process take turns.
                            await connection.exec_driver_sql("BEGIN IMMEDIATE")
                        if self.mount_id is not None and nodes_changed:
                            await self._follow_mount(connection)
                        yield connection
                        if write and nodes_changed:
                            await self._changes.announce(connection)
        finally:
            if write and nodes_changed:
                self.forget_lookups()

    async def _follow_mount(self, connection: AsyncConnection) -> None:
        """Find the mounted node at its path again if the database changed since it was last
        found: a node deleted there is a 404, one made there anew is served (a deleted node's
        id may be another node's now)."""
        from .orm import ROOT_ID
        from .records import path_ids

        generation = self._changes.generation()
        if generation is not None and generation == self._mount_seen_in:
            return
        ids = (await connection.execute(path_ids(ROOT_ID, self.mount_path))).one_or_none()
        found = ids[-1] if ids is not None else None
        if found is None:
            # Not NoSuchEntry: its path would say where the node was in the database.
            raise NotFound("The node this tree is served from (mount_node) was deleted")
        self.mount_id, self._mount_seen_in = found, generation

    async def startup(self) -> None:
        async with self.connect():
            pass  # a missing schema is reported when the server starts, not on first request
        await self._changes.start()
        if not self._holding_storage:
            # Counted per catalog, so that the last one using a database closes its pool.
            from ..storage import acquire_storage

            self.writable_sql_storage = [acquire_storage(s) for s in self.writable_sql_storage]
            self._holding_storage = True

    async def dispose(self) -> None:
        await self._changes.stop()
        await self._exclusion.stop()
        if self._holding_storage:
            from ..storage import release_storage

            self._holding_storage = False
            for storage in self.writable_sql_storage:
                release_storage(storage)
        for state in list(self._states.values()):
            with contextlib.suppress(Exception):
                await state.engine.dispose()
        self._states.clear()
        self._shared_engine = None
