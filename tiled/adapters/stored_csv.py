"""Tables the server stores as CSV, one file per row partition (upstream's ``text/csv``
writable tables): ``partition-{i}.csv``, a header row, then the rows; appending adds rows
without a header, as upstream's pandas ``to_csv(mode="a", header=False)`` does, in the order
of the file's header.

Everything else is the Parquet-stored table's (:mod:`tiled.adapters.parquet`): the node's
storage, staged writes, the schema check. CSV holds no types: each file is parsed with the
column types of the table's Arrow schema, so the table reads back with the types it was made
with, but for what CSV cannot tell apart: empty and missing text both read as empty text.
A file without the table's index columns (as upstream writes them: ``index=False``) reads
without its index. Columns of types CSV cannot hold (lists, structs) are refused when the
table is made (:func:`check_csv_storable`).
"""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from typing import Any

import pyarrow
import pyarrow.csv

from ..errors import BadRequest, DataUnavailable
from ..mimetypes import CSV_MIMETYPE
from ..structures.table import TableStructure, index_columns
from .parquet import ParquetTableAdapter, _SchemaReadPartitions

__all__ = ["CSV_MIMETYPE", "StoredCSVTableAdapter", "check_csv_storable"]


def _source(readable: Any) -> Any:
    # A node's storage gives a path, or a reader of an object in a bucket; bytes are wrapped.
    return io.BytesIO(bytes(readable)) if isinstance(readable, bytes | memoryview) else readable


def _parsed_type(type_: pyarrow.DataType) -> pyarrow.DataType:
    # Categories (pandas' categoricals) are parsed as their values, then encoded (the CSV
    # reader makes dictionaries of int32 indices only).
    return type_.value_type if pyarrow.types.is_dictionary(type_) else type_


def header_of(data: bytes) -> list[str]:
    """The column names in the first line of a CSV file's ``data`` (empty for no line)."""
    first = data.split(b"\n", 1)[0].decode("utf-8-sig").rstrip("\r")
    return next(csv.reader([first]), []) if first else []


def _parsed(readable: Any, schema: pyarrow.Schema, columns: Sequence[str] | None) -> Any:
    """The table in a CSV file, with the schema's types (the index columns that the file
    lacks left out); DataUnavailable when the file does not hold the table."""
    options = pyarrow.csv.ConvertOptions(
        column_types={field.name: _parsed_type(field.type) for field in schema},
        include_columns=list(columns) if columns is not None else None,
        include_missing_columns=False,
        strings_can_be_null=False,
    )
    parsing = pyarrow.csv.ParseOptions(
        # Quoted text may hold line breaks: without this, the reader cuts the file into
        # blocks at line breaks, inside such values.
        newlines_in_values=True,
        # One column: a missing value is written as an empty line, which is a row then.
        ignore_empty_lines=len(schema) > 1,
    )
    try:
        table = pyarrow.csv.read_csv(
            _source(readable), parse_options=parsing, convert_options=options
        )
    except (pyarrow.ArrowInvalid, pyarrow.ArrowKeyError) as err:
        # A file changed outside the server, or written by another program.
        raise DataUnavailable(f"A stored CSV partition does not hold the table: {err}") from None
    wanted = list(columns) if columns is not None else schema.names
    index = set(index_columns(schema))
    present = [name for name in wanted if name in table.column_names or name not in index]
    missing = [name for name in present if name not in table.column_names]
    if missing:
        raise DataUnavailable(f"A stored CSV partition lacks the columns {missing}")
    fields = [schema.field(name) for name in present]
    try:
        return pyarrow.table(
            [_as_type(table[field.name], field.type) for field in fields],
            schema=pyarrow.schema(fields, metadata=schema.metadata),
        )
    except (pyarrow.ArrowInvalid, pyarrow.ArrowNotImplementedError) as err:
        raise DataUnavailable(f"A stored CSV partition does not hold the table: {err}") from None


def _as_type(column: Any, type_: pyarrow.DataType) -> Any:
    if pyarrow.types.is_dictionary(type_):
        return column.dictionary_encode().cast(type_)
    return column.cast(type_)


class _CSVPartitions(_SchemaReadPartitions):
    """Partitions parsed from CSV files when asked for; missing ones are empty."""

    def _table(self, source: Any, schema: pyarrow.Schema, columns: Any) -> pyarrow.Table:
        return _parsed(source, schema, columns)

    def _compute_lengths(self) -> tuple[int, ...]:
        schema = self.structure.arrow_schema_decoded
        lengths = []
        for index in range(len(self.locations)):
            source = self._readable(index)
            lengths.append(0 if source is None else _parsed(source, schema, None).num_rows)
        return tuple(lengths)


def _csv_bytes(table: pyarrow.Table, header: bool = True) -> bytes:
    sink = io.BytesIO()
    options = pyarrow.csv.WriteOptions(include_header=header)
    try:
        pyarrow.csv.write_csv(table, sink, write_options=options)
    except (pyarrow.ArrowInvalid, pyarrow.ArrowNotImplementedError) as err:
        raise BadRequest(f"These data cannot be written as CSV: {err}") from None
    return sink.getvalue()


class StoredCSVTableAdapter(ParquetTableAdapter):
    """A table whose partitions are CSV files written by the server (``data_uris``)."""

    _partitions_class = _CSVPartitions

    def _encoded(self, table: pyarrow.Table) -> bytes:
        return _csv_bytes(table)

    def _appended(self, stored: Any, table: pyarrow.Table) -> bytes:
        existing = bytes(stored)
        header = header_of(existing)
        if not header:  # an empty file: the rows start it
            return _csv_bytes(table)
        # The file's columns, in its order (a file written by upstream follows the order of
        # the frame its client sent; its index columns may be absent).
        index = set(index_columns(table.schema))
        if sorted(header) != sorted(n for n in table.column_names if n in header) or any(
            name not in header and name not in index for name in table.column_names
        ):
            raise BadRequest(
                f"The stored partition has the columns {header}, which the table's "
                f"{table.column_names} do not match: rows cannot be added to it"
            )
        if not existing.endswith(b"\n"):
            existing += b"\n"  # a file written by another program may lack the last newline
        return existing + _csv_bytes(table.select(header), header=False)

    def __repr__(self) -> str:
        return (
            f"<StoredCSVTableAdapter {list(self.structure().columns)} "
            f"npartitions={len(self.locations)}>"
        )


def check_csv_storable(structure: TableStructure) -> None:
    """Refuse (400) a table with columns of types CSV cannot hold, before anything is made."""
    schema = structure.arrow_schema_decoded
    try:
        _parsed(_csv_bytes(schema.empty_table()), schema, None)
    except (BadRequest, DataUnavailable) as err:
        raise BadRequest(f"A table stored as CSV cannot hold these columns: {err}") from None
