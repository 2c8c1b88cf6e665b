"""Nodes whose data the server keeps in SQL storage: appendable tables and ragged arrays.

A ragged array is always stored so (as upstream), in the first DuckDB or PostgreSQL storage
(see :mod:`tiled.adapters.ragged`; SQLite has no list columns). A table created with the data source mimetype ``application/x-tiled-sql-table`` (the client's
``create_appendable_table``) is stored in the catalog's first SQL ``writable_storage``
(``sqlite:///...``, ``duckdb:///...``, ``postgresql://...``) in upstream's layout (see
:mod:`tiled.adapters.sql`). Creating one draws its dataset id and creates the shared table in
a storage transaction that commits only once the node's rows are written, so a refused node
leaves neither rows nor a new table behind; deleting one deletes its rows once the catalog
has committed the deletion.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Iterable
from typing import Any

from sqlalchemy import select

from ..adapters.ragged import LIST_DIALECTS, RAGGED_SQL_MIMETYPE
from ..adapters.sql import SQL_TABLE_MIMETYPE, TABLE_NAME_PATTERN, SQLAdapter, is_safe_identifier
from ..errors import BadRequest, DataUnavailable, Unsupported
from ..storage import (
    EMBEDDED_DIALECTS,
    SQLStorage,
    get_storage,
    is_sql_uri,
    parse_storage,
    register_storage,
)
from ..structures.core import StructureFamily
from ..structures.data_source import DataSource, Management
from ..utils import run_sync
from .core import Catalog, NodeRecord
from .nodes import CatalogNode, _LockedWrites
from .orm import assets, data_source_asset_association, data_sources, nodes

logger = logging.getLogger(__name__)


class WritableCatalogSQLTableAdapter(_LockedWrites, CatalogNode, SQLAdapter):
    """An appendable table: each append is one storage transaction, readers see whole ones."""

    async def append_partition(self, data: Any, partition: int) -> None:  # type: ignore[override]
        self._check_partition(partition)
        await self._locked(self.append_frame, data, partition)

    async def write_partition(self, data: Any, partition: int) -> None:
        self._check_partition(partition)
        await self._locked(self.replace_partitions, {partition: data})

    async def write(self, data: Any) -> None:
        await self._locked(self.replace_all, data)


def open_sql_table(source: DataSource, record: NodeRecord) -> WritableCatalogSQLTableAdapter:
    """The adapter of a stored appendable table; DataUnavailable if its storage database is
    not configured here, or its parameters are not a stored table's."""
    parameters = source.parameters or {}
    if not source.assets or "table_name" not in parameters or "dataset_id" not in parameters:
        raise DataUnavailable("its SQL data source names no table, dataset or database")
    adapter = WritableCatalogSQLTableAdapter(
        source.assets[0].data_uri, source.structure, parameters["table_name"],
        parameters["dataset_id"], order_by_args=parameters.get("order_by_args"),
        primary_key=parameters.get("primary_key"), metadata=record.metadata,
    )  # fmt: skip
    adapter._storage = get_storage(adapter.data_uri)
    return adapter


# --- configuration -------------------------------------------------------------------------------


def sql_storage_uris(value: Any) -> list[str]:
    """The SQL database URIs among storage items (a path, a URI, or a list of them)."""
    if value is None:
        return []
    items = [value] if isinstance(value, str) or not isinstance(value, Iterable) else value
    return [str(item) for item in items if is_sql_uri(str(item))]


def configure_sql_storage(
    writable: Any, readable: Any, *, pool_size: int | None = None, max_overflow: int | None = None
) -> list[SQLStorage]:
    """Register the SQL databases among the writable and readable storage (so that nodes
    stored in them can be read) and return the writable ones, in order."""
    pools = {
        "pool_size": pool_size or 5,
        "max_overflow": 10 if max_overflow is None else max_overflow,
    }
    found = []
    for uri in sql_storage_uris(writable):
        storage = parse_storage(uri, **pools)
        register_storage(storage)
        if storage.path is not None:
            storage.path.parent.mkdir(parents=True, exist_ok=True)  # as writable directories are
        found.append(storage)
    for uri in sql_storage_uris(readable):
        register_storage(parse_storage(uri, **pools))
    return found


# --- creation ------------------------------------------------------------------------------------


def _table_preparer(storage: SQLStorage, source: DataSource, connection: Any) -> DataSource:
    if source.structure is None:
        raise BadRequest("An appendable table needs a structure (its Arrow schema)")
    return SQLAdapter.prepare_storage(storage, source, connection)


def _ragged_preparer(storage: SQLStorage, source: DataSource, connection: Any) -> DataSource:
    from ..adapters.ragged import RaggedSQLAdapter

    if source.structure is None:
        raise BadRequest("A ragged array needs a structure")
    return RaggedSQLAdapter.prepare_storage(storage, source, connection)


# How each family kept in SQL storage makes its storage (on an uncommitted connection), and
# the mimetype it is stored as.
PREPARERS = {
    StructureFamily.table: (_table_preparer, SQL_TABLE_MIMETYPE),
    StructureFamily.ragged: (_ragged_preparer, RAGGED_SQL_MIMETYPE),
}


class _PendingTable:
    """A storage transaction creating one table's storage, kept open until the catalog's rows
    are written; the storage's write lock (file databases) is held meanwhile."""

    def __init__(self, storage: SQLStorage):
        self.storage = storage
        self.connection: Any = None
        self.locked = False

    def begin(self, source: DataSource) -> DataSource:
        prepare, _ = PREPARERS[StructureFamily(source.structure_family)]
        if self.storage.dialect in EMBEDDED_DIALECTS:
            self.storage.write_lock.acquire()
            self.locked = True
        try:
            self.connection = self.storage.connect()
            return prepare(self.storage, source, self.connection)
        except BaseException:
            self.end(commit=False)
            raise

    def end(self, commit: bool) -> None:
        try:
            if self.connection is not None:
                if commit:
                    self.connection.commit()
                else:
                    with contextlib.suppress(Exception):
                        self.connection.rollback()
                self.connection.close()
        finally:
            self.connection = None
            if self.locked:
                self.locked = False
                self.storage.write_lock.release()


def _storage_for(catalog: Catalog, family: StructureFamily) -> SQLStorage:
    """The first SQL storage that can hold ``family`` (ragged arrays need list columns)."""
    usable = [
        storage
        for storage in catalog.writable_sql_storage
        if family != StructureFamily.ragged or storage.dialect in LIST_DIALECTS
    ]
    if usable:
        return usable[0]
    what = {
        StructureFamily.table: "appendable tables: add a sqlite:///, duckdb:/// or postgresql://",
        StructureFamily.ragged: "ragged arrays (DuckDB or PostgreSQL; SQLite has no list "
        "columns): add a duckdb:/// or postgresql://",
    }[family]
    raise Unsupported(f"This catalog has no SQL storage for {what} URI to its writable_storage")


@contextlib.asynccontextmanager
async def new_sql_table(catalog: Catalog, source: DataSource) -> AsyncIterator[DataSource]:
    """The data source of a new appendable table or ragged array, its storage made in a
    transaction that commits when the block ends without error (rolled back otherwise)."""
    family = StructureFamily(source.structure_family)
    if family not in PREPARERS:
        raise BadRequest(f"{source.mimetype} stores tables or ragged arrays, not {family.value}")
    mimetype = PREPARERS[family][1]
    if source.mimetype not in (None, mimetype):
        raise BadRequest(
            f"Data of family {family.value} are stored as {mimetype}, not {source.mimetype}"
        )
    storage = _storage_for(catalog, family)
    pending = _PendingTable(storage)
    described = await run_sync(pending.begin, source)
    try:
        yield DataSource(
            structure_family=family, structure=described.structure,
            mimetype=mimetype, parameters=described.parameters,
            properties=described.properties, assets=described.assets,
            management=Management.writable,
        )  # fmt: skip
    except BaseException:
        pending.end(commit=False)  # synchronously: a cancellation must not skip it
        raise
    # Synchronously too (it is short): a worker thread might not be free while others wait
    # for this storage's lock.
    pending.end(commit=True)


# --- deletion ------------------------------------------------------------------------------------


async def stored_datasets(connection: Any, condition: Any) -> list[tuple[str, dict[str, Any]]]:
    """``(data_uri, parameters)`` of the appendable tables among the nodes of ``condition``."""
    association = data_source_asset_association
    query = (
        select(assets.c.data_uri, data_sources.c.parameters)
        .select_from(
            nodes.join(data_sources, data_sources.c.node_id == nodes.c.id)
            .join(association, association.c.data_source_id == data_sources.c.id)
            .join(assets, assets.c.id == association.c.asset_id)
        )
        .where(
            condition,
            data_sources.c.mimetype.in_([mimetype for _, mimetype in PREPARERS.values()]),
            data_sources.c.management == Management.writable.value,
        )
    )
    return [(row.data_uri, dict(row.parameters or {})) for row in await connection.execute(query)]


def delete_datasets(datasets: list[tuple[str, dict[str, Any]]]) -> None:
    """Delete the rows of deleted nodes' tables (the shared SQL tables stay)."""
    for data_uri, parameters in datasets:
        try:
            storage = get_storage(data_uri)
            table_name, dataset_id = parameters["table_name"], int(parameters["dataset_id"])
            is_safe_identifier(table_name, TABLE_NAME_PATTERN)
            with storage.transaction() as connection, connection.cursor() as cursor:
                cursor.execute(f'DELETE FROM "{table_name}" WHERE _dataset_id = {dataset_id}')
        except Exception:
            # The node is gone already; rows left behind are unreachable, not wrong.
            logger.exception("Could not delete the rows of dataset %s in %s", parameters, data_uri)
