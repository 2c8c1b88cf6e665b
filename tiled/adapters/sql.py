"""Appendable tables: rows kept in a SQL database (SQLite, PostgreSQL or DuckDB).

The layout is upstream Tiled's, so that a storage database written by either server is read
by the other:

- all nodes whose tables have the same Arrow schema share one SQL table, named
  ``table_<md5 of the schema (and primary key)>`` unless the data source's
  ``parameters.table_name`` names it;
- each row carries ``_dataset_id`` (which node it belongs to: ``parameters.dataset_id``, drawn
  from the database's ``_dataset_id_counter``) and ``_partition_id`` before the table's own
  columns, whose names are stored lower-cased;
- column types follow one mapping per dialect (:data:`SQL_TYPES`).

Each append is one transaction, and each read one ``SELECT``: a reader sees the rows of the
appends committed before its query began, never part of one. The column arrays (and so the
zarr view) are the table adapter's, over partitions read with one query each.

Connections come from a pool per storage database (:class:`tiled.storage.SQLStorage`);
storage is found from an asset's ``data_uri`` through :func:`tiled.storage.get_storage`.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import re
import threading
from collections.abc import Sequence
from typing import Any, Literal

import numpy
import pandas
import pyarrow

from ..errors import BadRequest, Conflict
from ..mimetypes import SQL_TABLE_MIMETYPE
from ..storage import (
    EmbeddedSQLStorage,
    PreparedInSQLTransaction,
    RemoteSQLStorage,
    SQLStorage,
    get_storage,
    is_sql_uri,
    register_storage,
    strip_connection_parameters,
    strip_storage_uri_query_on_write,
)
from ..structures.data_source import Asset, DataSource
from ..structures.table import TableStructure
from ..utils import UnsafeIdentifier
from .base import TableAdapterBase
from .table import TableAdapter, _StoredPartitions

Dialect = Literal["sqlite", "duckdb", "postgresql"]

# --- identifiers ---------------------------------------------------------------------------------
#
# Names are put in statements quoted, so these rules (upstream's, so that the same names are
# accepted) keep them from ending a quoted identifier or carrying statements of their own.

TABLE_NAME_PATTERN = re.compile(r"^[a-z][a-z0-9_]*$")
COLUMN_NAME_PATTERN = re.compile(r"^[a-zA-Z_].*$")
# Quotes, statement separators, comment markers, escapes and operators: never in a name.
FORBIDDEN_CHARACTERS = re.compile(r"('|\"|`|;|--|/\*|\*/|\\|%|\(|\)|=|\+)")
# PostgreSQL's limit, the smallest of the three databases.
MAX_IDENTIFIER_BYTES = 63


def is_safe_identifier(
    identifier: str, pattern: re.Pattern[str], allow_reserved_words: bool = True
) -> bool:
    """True if ``identifier`` may name a SQL table (or column); else :class:`UnsafeIdentifier`
    saying why."""
    from sqlalchemy.sql.compiler import RESERVED_WORDS

    # The wording is upstream's (its callers and tests match on it).
    size = len(identifier.encode("utf-8"))
    if size > MAX_IDENTIFIER_BYTES:
        raise UnsafeIdentifier(
            f'Invalid SQL identifier "{identifier}": max bytes is {MAX_IDENTIFIER_BYTES}, '
            f"not {size}"
        )
    if not allow_reserved_words and identifier.lower() in RESERVED_WORDS:
        raise UnsafeIdentifier(
            f'Reserved SQL keywords are not allowed in identifiers: "{identifier}"'
        )
    if pattern.match(identifier) is None:
        raise UnsafeIdentifier(f'Malformed SQL identifier "{identifier}"')
    found = FORBIDDEN_CHARACTERS.findall(identifier)
    if found:
        raise UnsafeIdentifier(
            f'Invalid SQL identifier "{identifier}" contains forbidden character(s): '
            f"{', '.join(sorted(set(found)))}"
        )
    return True


# --- column types --------------------------------------------------------------------------------

SQL_TYPES: dict[str, dict[pyarrow.DataType, str]] = {
    "postgresql": {
        pyarrow.bool_(): "BOOLEAN",
        pyarrow.int8(): "SMALLINT",
        pyarrow.int16(): "SMALLINT",
        pyarrow.int32(): "INTEGER",
        pyarrow.int64(): "BIGINT",
        # No unsigned integers: the next wider signed type holds every value.
        pyarrow.uint8(): "SMALLINT",
        pyarrow.uint16(): "INTEGER",
        pyarrow.uint32(): "BIGINT",
        pyarrow.float32(): "REAL",
        pyarrow.float64(): "DOUBLE PRECISION",
        pyarrow.string(): "TEXT",
        pyarrow.large_string(): "TEXT",
    },
    "duckdb": {
        pyarrow.bool_(): "BOOLEAN",
        pyarrow.int8(): "TINYINT",
        pyarrow.uint8(): "UTINYINT",
        pyarrow.int16(): "SMALLINT",
        pyarrow.uint16(): "USMALLINT",
        pyarrow.int32(): "INTEGER",
        pyarrow.uint32(): "UINTEGER",
        pyarrow.int64(): "BIGINT",
        pyarrow.uint64(): "UBIGINT",
        pyarrow.float32(): "REAL",
        pyarrow.float64(): "DOUBLE",
        pyarrow.string(): "VARCHAR",
        pyarrow.large_string(): "VARCHAR",
    },
    "sqlite": {
        # SQLite has four storage classes; the Arrow schema restores the exact types.
        pyarrow.bool_(): "INTEGER",
        pyarrow.int8(): "INTEGER",
        pyarrow.uint8(): "INTEGER",
        pyarrow.int16(): "INTEGER",
        pyarrow.uint16(): "INTEGER",
        pyarrow.int32(): "INTEGER",
        pyarrow.uint32(): "INTEGER",
        pyarrow.int64(): "INTEGER",  # (uint64 may not fit SQLite's 64-bit signed integers)
        pyarrow.float32(): "REAL",
        pyarrow.float64(): "REAL",
        pyarrow.decimal128(38, 9): "TEXT",
        pyarrow.decimal256(76, 38): "TEXT",
        pyarrow.string(): "TEXT",
        pyarrow.large_string(): "TEXT",
    },
}


def _list_type(dialect: str, value_type: str) -> str | None:
    """Lists of a supported type: arrays in PostgreSQL and DuckDB; SQLite has none."""
    return {"postgresql": f"{value_type} ARRAY", "duckdb": f"{value_type}[]"}.get(dialect)


def sql_type(arrow_type: pyarrow.DataType, dialect: str) -> str:
    """The column type that holds values of ``arrow_type`` in ``dialect``; BadRequest if none."""
    is_list = (
        pyarrow.types.is_list(arrow_type)
        or pyarrow.types.is_large_list(arrow_type)
        or pyarrow.types.is_fixed_size_list(arrow_type)
    )
    found: str | None
    if is_list:
        found = _list_type(dialect, sql_type(arrow_type.value_type, dialect))
    elif dialect == "duckdb" and pyarrow.types.is_decimal(arrow_type):
        found = f"DECIMAL({arrow_type.precision}, {arrow_type.scale})"
    else:
        found = SQL_TYPES[dialect].get(arrow_type)
    if found is None:
        raise BadRequest(f"Columns of type {arrow_type} cannot be stored in {dialect}")
    return found


def column_definitions(schema: pyarrow.Schema, dialect: str) -> dict[str, str]:
    """``{lower-cased column name: "TYPE NULL" or "TYPE NOT NULL"}`` for ``schema``."""
    names = [field.name.lower() for field in schema]
    if len(set(names)) != len(names):
        raise BadRequest("Column names must be unique when converted to lower case")
    definitions = {}
    for field in schema:
        is_safe_identifier(field.name, COLUMN_NAME_PATTERN, allow_reserved_words=True)
        null = "NULL" if field.nullable else "NOT NULL"
        definitions[field.name.lower()] = f"{sql_type(field.type, dialect)} {null}"
    return definitions


def create_table_statement(schema: pyarrow.Schema, table_name: str, dialect: str) -> str:
    columns = column_definitions(schema, dialect)
    body = ",\n ".join(f'"{name}" {definition}' for name, definition in columns.items())
    return f'CREATE TABLE IF NOT EXISTS "{table_name}" ({body})'


def stored_schema(structure: TableStructure) -> pyarrow.Schema:
    """The SQL table's columns: the node's, after its dataset and partition numbers."""
    schema = structure.arrow_schema_decoded
    schema = schema.insert(0, pyarrow.field("_partition_id", pyarrow.int16()))
    return schema.insert(0, pyarrow.field("_dataset_id", pyarrow.int32()))


# --- rows in and out -----------------------------------------------------------------------------


def as_arrow(data: Any, schema: pyarrow.Schema) -> pyarrow.Table:
    """``data`` (pandas, Arrow table, record batch or list of batches) as an Arrow table of
    ``schema``'s columns, in its order; BadRequest for other columns or values that do not
    fit the types (casts must be safe)."""
    if isinstance(data, pandas.DataFrame):
        data = data.rename(columns=str)
        names = list(data.columns)
        _check_columns(names, schema)
        try:
            return pyarrow.Table.from_pandas(
                data[schema.names], schema=schema, safe=True, preserve_index=False
            )
        except (pyarrow.ArrowInvalid, pyarrow.ArrowTypeError, ValueError, TypeError) as err:
            raise BadRequest(f"The data do not fit the table's schema: {err}") from None
    if isinstance(data, pyarrow.RecordBatch):
        data = pyarrow.Table.from_batches([data])
    elif isinstance(data, list):
        data = pyarrow.Table.from_batches(data)
    if not isinstance(data, pyarrow.Table):
        raise BadRequest(f"Expected a table of rows, not {type(data).__name__}")
    _check_columns(data.column_names, schema)
    try:
        return data.select(schema.names).cast(schema, safe=True)
    except (pyarrow.ArrowInvalid, pyarrow.ArrowNotImplementedError, ValueError) as err:
        raise BadRequest(f"The data do not fit the table's schema: {err}") from None


def _check_columns(names: Sequence[str], schema: pyarrow.Schema) -> None:
    if sorted(names) != sorted(schema.names) or len(set(names)) != len(names):
        raise BadRequest(f"Expected the columns {schema.names}, got {list(names)}")


def is_unique_violation(err: Exception) -> bool:
    # SQLSTATE class 23: integrity constraints (PostgreSQL reports it as ProgrammingError).
    state = str(getattr(err, "sqlstate", "") or "")
    return state.startswith("23") or "UNIQUE constraint" in str(err)


# Insertion order, which SQL leaves undefined. The file databases number rows as inserted.
# PostgreSQL reuses the space of deleted rows, so its row locations (ctid) are not in insertion
# order; each append is one transaction, though, and the age of the inserting transaction
# (xmin) orders appends (up to 2**31 transactions apart), rows within one by location. The
# layout has no column to do better with: upstream's server could not append to a table
# having one more column.
ROW_ORDER = {"sqlite": "rowid", "duckdb": "rowid", "postgresql": "age(xmin) DESC, ctid"}


class _SQLPartitions(_StoredPartitions):
    """A node's partitions read from its rows, one query each; lengths counted on demand."""

    def __init__(self, adapter: SQLAdapter):
        self.adapter = adapter
        self.meta = adapter.structure().meta
        self._lengths: tuple[int, ...] | None = None
        self._lock = threading.Lock()

    @property
    def frames(self) -> list[int]:  # what the column adapters inspect: nothing in memory
        return list(range(self.adapter.structure().npartitions))

    def read(self, index: int, fields: Sequence[str] | None = None) -> pandas.DataFrame:
        return self.adapter._select(fields, index).to_pandas()

    def _compute_lengths(self) -> tuple[int, ...]:
        return self.adapter.partition_lengths()

    def forget_lengths(self) -> None:
        self._lengths = None


class SQLAdapter(PreparedInSQLTransaction, TableAdapter):
    """A table whose rows are those of dataset ``dataset_id`` in SQL table ``table_name`` of
    the storage database ``data_uri`` (upstream's signature)."""

    def __init__(
        self,
        data_uri: str,
        structure: TableStructure,
        table_name: str,
        dataset_id: int,
        *,
        order_by_args: list[dict[str, str]] | None = None,
        primary_key: list[str] | None = None,
        metadata: dict[str, Any] | None = None,
        specs: list[Any] | None = None,
    ):
        TableAdapterBase.__init__(self, structure, metadata=metadata, specs=specs)
        is_safe_identifier(table_name, TABLE_NAME_PATTERN)  # it is put in every statement
        self.data_uri = data_uri
        self.table_name = table_name
        self.dataset_id = int(dataset_id)
        self.order_by_args = list(order_by_args or [])
        self.primary_key = list(primary_key or [])
        schema = structure.arrow_schema_decoded
        for arg in self.order_by_args:
            if arg.get("column") not in schema.names:
                raise ValueError(f"order_by column {arg.get('column')!r} is not a column")
            if arg.get("direction") not in ("asc", "desc"):
                raise ValueError(f"order_by direction must be 'asc' or 'desc', not {arg!r}")
            if not _orderable(schema.field(arg["column"]).type):
                raise ValueError(f"order_by column {arg['column']!r} cannot be sorted in SQL")
        _check_primary_key(self.primary_key, schema)
        self._storage: SQLStorage | None = None
        self._partitions = _SQLPartitions(self)
        self._columns = {}

    @property
    def storage(self) -> SQLStorage:
        if self._storage is None:
            self._storage = get_storage(self.data_uri)
        return self._storage

    @classmethod
    def supported_storage(cls) -> set[type]:
        return {SQLStorage}

    @classmethod
    def from_catalog(cls, data_source: Any, node: Any, /, **kwargs: Any) -> SQLAdapter:
        parameters = data_source.parameters
        return cls(
            data_source.assets[0].data_uri, data_source.structure, parameters["table_name"],
            parameters["dataset_id"], order_by_args=parameters.get("order_by_args"),
            primary_key=parameters.get("primary_key"),
            metadata=getattr(node, "metadata_", None), specs=getattr(node, "specs", None),
        )  # fmt: skip

    # --- creating storage (blocking) ---

    @classmethod
    def get_table_name(cls, data_source: DataSource) -> str:
        """``parameters.table_name``, checked; by default (and then set) one per schema."""
        suffix = "".join(data_source.parameters.get("primary_key") or ())
        digest = hashlib.md5((data_source.structure.arrow_schema + suffix).encode()).hexdigest()
        name = data_source.parameters.setdefault("table_name", f"table_{digest}")
        if not isinstance(name, str):
            raise UnsafeIdentifier(f"table_name must be a string, not {name!r}")
        is_safe_identifier(name, TABLE_NAME_PATTERN, allow_reserved_words=False)
        return name

    @classmethod
    def prepare_storage(
        cls, storage: SQLStorage, data_source: DataSource, connection: Any
    ) -> DataSource:
        """Create the shared table if it is new and draw a dataset id, on ``connection``
        (uncommitted); return the data source as stored: parameters and asset filled in."""
        data_source = copy.deepcopy(data_source)  # the caller's stays as it was
        if not isinstance(data_source.parameters, dict):
            raise BadRequest("A data source's parameters must be a JSON object")
        table_name = cls.get_table_name(data_source)
        schema = data_source.structure.arrow_schema_decoded
        primary_key = data_source.parameters.get("primary_key") or []
        _check_primary_key(primary_key, schema)
        statements = [
            create_table_statement(stored_schema(data_source.structure), table_name,
                                   storage.dialect),
            "CREATE INDEX IF NOT EXISTS dataset_and_partition_index "
            f'ON "{table_name}"(_dataset_id, _partition_id)',
        ]  # fmt: skip
        if primary_key:
            keys = ", ".join(f'"{column.lower()}"' for column in primary_key)
            statements.append(
                "CREATE UNIQUE INDEX IF NOT EXISTS unique_ordering_per_dataset_index "
                f'ON "{table_name}"(_dataset_id, {keys})'
            )
        statements += COUNTER_STATEMENTS[storage.dialect]
        with connection.cursor() as cursor:
            for statement in statements:
                cursor.execute(statement)
            (dataset_id,) = cursor.fetchone()
            if storage.dialect == "duckdb":
                cursor.fetchall()  # DuckDB fails the commit after a cursor closed on unread rows
        data_source.parameters["dataset_id"] = int(dataset_id)
        # Without credentials (the storage's URI holds none); with the flag set, without
        # connection options either. Either way get_storage matches it to the database.
        uri = (
            strip_connection_parameters(storage.uri)
            if strip_storage_uri_query_on_write()
            else storage.uri
        )
        data_source.assets.append(Asset(uri, False, parameter="data_uri", num=None))
        return data_source

    # --- reading (blocking) ---

    def _select(self, fields: Sequence[str] | None, partition: int | None) -> pyarrow.Table:
        schema = self.structure().arrow_schema_decoded
        if fields is not None:
            for field in fields:
                if field not in schema.names:
                    raise BadRequest(f"No such field {field!r}; the columns are {schema.names}")
        names = list(fields) if fields else schema.names  # none named: all (as upstream)
        where = f"_dataset_id = {self.dataset_id}"
        order = [f'"{a["column"].lower()}" {a["direction"].upper()}' for a in self.order_by_args]
        if partition is None:
            order.append("_partition_id")
        else:
            where += f" AND _partition_id = {int(partition)}"
        order.append(ROW_ORDER[self.storage.dialect])
        columns = ", ".join(f'"{name.lower()}"' for name in names)
        query = (
            f'SELECT {columns} FROM "{self.table_name}" WHERE {where} ORDER BY {", ".join(order)}'
        )
        with contextlib.closing(self.storage.connect()) as connection:
            with connection.cursor() as cursor:
                cursor.execute(query)
                found = cursor.fetch_arrow_table()
        # Stored lower-cased, and perhaps in a wider type (uint8 as SMALLINT): restore both.
        target = pyarrow.schema([schema.field(name) for name in names])
        return found.rename_columns(names).cast(target)

    def read(self, fields: Sequence[str] | None = None) -> pandas.DataFrame:
        """All rows (in partition order), as of one moment: one query."""
        return self._select(fields, None).to_pandas()

    def read_partition(
        self, partition: int, fields: Sequence[str] | None = None
    ) -> pandas.DataFrame:
        self._check_partition(partition)
        return self._select(fields, partition).to_pandas()

    def partition_lengths(self) -> tuple[int, ...]:
        query = (
            f'SELECT _partition_id, COUNT(*) FROM "{self.table_name}" '
            f"WHERE _dataset_id = {self.dataset_id} GROUP BY _partition_id"
        )
        with contextlib.closing(self.storage.connect()) as connection:
            with connection.cursor() as cursor:
                cursor.execute(query)
                counts = dict(cursor.fetchall())
        return tuple(int(counts.get(i, 0)) for i in range(self.structure().npartitions))

    # --- writing (blocking: callers run these on a worker thread) ---

    def _check_partition(self, partition: int) -> None:
        if not 0 <= partition < self.structure().npartitions:
            raise BadRequest(
                f"Partition {partition} out of range: the table has "
                f"{self.structure().npartitions} partition(s)"
            )

    def _rows(self, data: Any, partition: int) -> pyarrow.Table:
        """``data`` as the stored table's rows: numbered for this dataset and partition."""
        table = as_arrow(data, self.structure().arrow_schema_decoded)
        table = table.add_column(
            0, pyarrow.field("_partition_id", pyarrow.int16()),
            [numpy.full(len(table), partition, dtype=numpy.int16)],
        )  # fmt: skip
        table = table.add_column(
            0, pyarrow.field("_dataset_id", pyarrow.int32()),
            [numpy.full(len(table), self.dataset_id, dtype=numpy.int32)],
        )  # fmt: skip
        return table.rename_columns([name.lower() for name in table.column_names])

    def _ingest(self, rows: dict[int, pyarrow.Table], replace: bool) -> None:
        """Add ``rows`` per partition (after deleting the partitions' rows, with ``replace``),
        all in one transaction."""
        try:
            with self.storage.transaction() as connection, connection.cursor() as cursor:
                for partition, table in rows.items():
                    if replace:
                        cursor.execute(
                            f'DELETE FROM "{self.table_name}" WHERE _dataset_id = '
                            f"{self.dataset_id} AND _partition_id = {int(partition)}"
                        )
                    if len(table):
                        cursor.adbc_ingest(self.table_name, table, mode="append")
        except Exception as err:
            if is_unique_violation(err):
                raise Conflict(
                    f"The rows repeat a primary key {self.primary_key} of this table: {err}"
                ) from None
            raise
        finally:
            self._partitions.forget_lengths()

    def append_frame(self, data: Any, partition: int) -> None:
        """Add rows at the end of one partition, in one transaction."""
        self._check_partition(partition)
        self._ingest({partition: self._rows(data, partition)}, replace=False)

    def append_partition(self, partition: int, data: Any) -> None:
        """Upstream's signature: add rows (pandas, Arrow table, batch or batches)."""
        self.append_frame(data, partition)

    def replace_partitions(self, frames: dict[int, Any]) -> None:
        """Replace the rows of the given partitions, all of them or (on failure) none."""
        for partition in frames:
            self._check_partition(partition)
        rows = {partition: self._rows(data, partition) for partition, data in frames.items()}
        self._ingest(rows, replace=True)

    def replace_all(self, data: Any) -> None:
        """Replace the whole table, splitting rows evenly over the partitions."""
        count = self.structure().npartitions
        if count < 1:
            raise BadRequest("This table has no partitions to write to")
        table = as_arrow(data, self.structure().arrow_schema_decoded)
        bounds = numpy.linspace(0, len(table), count + 1).astype(int)
        self.replace_partitions(
            {i: table.slice(bounds[i], bounds[i + 1] - bounds[i]) for i in range(count)}
        )

    def delete_rows(self) -> None:
        """Remove this dataset's rows (the node is gone); the shared table stays."""
        with self.storage.transaction() as connection, connection.cursor() as cursor:
            cursor.execute(f'DELETE FROM "{self.table_name}" WHERE _dataset_id = {self.dataset_id}')

    def __repr__(self) -> str:
        return f"<SQLAdapter {self.table_name}[{self.dataset_id}] {list(self.structure().columns)}>"


# Drawing the next dataset id: a sequence where there are sequences, else a one-row table.
COUNTER_STATEMENTS = {
    "sqlite": [
        "CREATE TABLE IF NOT EXISTS _dataset_id_counter (value INTEGER NOT NULL)",
        "INSERT INTO _dataset_id_counter (value) "
        "SELECT 0 WHERE NOT EXISTS (SELECT 1 FROM _dataset_id_counter)",
        "UPDATE _dataset_id_counter SET value = value + 1 RETURNING value",
    ],
    "duckdb": [
        "CREATE SEQUENCE IF NOT EXISTS _dataset_id_counter",
        "SELECT nextval('_dataset_id_counter')",
    ],
    "postgresql": [
        "CREATE SEQUENCE IF NOT EXISTS _dataset_id_counter",
        "SELECT nextval('_dataset_id_counter')",
    ],
}


def _orderable(arrow_type: pyarrow.DataType) -> bool:
    nested = (
        pyarrow.types.is_list, pyarrow.types.is_large_list, pyarrow.types.is_fixed_size_list,
        pyarrow.types.is_struct, pyarrow.types.is_map,
    )  # fmt: skip
    return not any(test(arrow_type) for test in nested)


def _check_primary_key(primary_key: Any, schema: pyarrow.Schema) -> None:
    if not isinstance(primary_key, list) or not all(isinstance(k, str) for k in primary_key):
        raise BadRequest(f"primary_key must be a list of column names, not {primary_key!r}")
    for column in primary_key:
        if column not in schema.names:
            raise BadRequest(f"primary_key column {column!r} is not a column")
        kind = schema.field(column).type
        if not _orderable(kind) or pyarrow.types.is_floating(kind):
            raise BadRequest(f"primary_key column {column!r} of type {kind} cannot be a key")


__all__ = [
    "COLUMN_NAME_PATTERN",
    "SQL_TABLE_MIMETYPE",
    "TABLE_NAME_PATTERN",
    "SQLAdapter",
    "EmbeddedSQLStorage",
    "RemoteSQLStorage",
    "SQLStorage",
    "get_storage",
    "is_unique_violation",
    "is_safe_identifier",
    "is_sql_uri",
    "register_storage",
]
