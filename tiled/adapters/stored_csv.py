"""Tables the server stores as CSV, one file per row partition (upstream's ``text/csv``
writable tables): ``partition-{i}.csv``, a header row, then the rows; appending adds rows
without a header, as upstream's pandas ``to_csv(mode="a", header=False)`` does.

Everything else is the Parquet-stored table's (:mod:`tiled.adapters.parquet`): the node's
storage, staged writes, the schema check. CSV holds no types: each file is parsed with the
column types of the table's Arrow schema, so the table reads back with the types it was made
with (empty text and missing text cannot be told apart: both read as empty text). Columns of
types CSV cannot hold (lists, structs) are refused when the table is made
(:func:`check_csv_storable`).
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from typing import Any

import pandas
import pyarrow
import pyarrow.csv

from ..errors import BadRequest
from ..structures.table import TableStructure
from .parquet import ParquetTableAdapter, _ParquetPartitions

CSV_MIMETYPE = "text/csv"


def _source(readable: Any) -> Any:
    # A node's storage gives a path, or (an object of a bucket) the bytes.
    return readable if isinstance(readable, str) else io.BytesIO(bytes(readable))


def _parsed(readable: Any, schema: pyarrow.Schema, columns: Sequence[str] | None) -> Any:
    options = pyarrow.csv.ConvertOptions(
        column_types={field.name: _parsed_type(field.type) for field in schema},
        include_columns=list(columns) if columns is not None else None,
        strings_can_be_null=False,
    )
    # Quoted text may hold line breaks: without this, the reader cuts the file into blocks
    # at line breaks, inside such values.
    parsing = pyarrow.csv.ParseOptions(newlines_in_values=True)
    try:
        return pyarrow.csv.read_csv(
            _source(readable), parse_options=parsing, convert_options=options
        )
    except pyarrow.ArrowInvalid as err:
        # A file changed outside the server (or written by another program): say so.
        raise BadRequest(f"A stored CSV partition does not parse as the table: {err}") from None


def _parsed_type(type_: pyarrow.DataType) -> pyarrow.DataType:
    # Categories (pandas' categoricals) are parsed as their values, then cast (the CSV reader
    # makes dictionaries of int32 indices only).
    return type_.value_type if pyarrow.types.is_dictionary(type_) else type_


class _CSVPartitions(_ParquetPartitions):
    """Partitions parsed from CSV files when asked for; missing ones are empty."""

    def read(self, index: int, fields: Sequence[str] | None = None) -> pandas.DataFrame:
        columns = list(fields) if fields is not None else None
        source = self._readable(index)
        if source is None:
            return self.meta if columns is None else self.meta[columns]
        schema = self.structure.arrow_schema_decoded
        table = _parsed(source, schema, columns)
        if columns is None:
            # The schema's pandas metadata: named index columns become the index again.
            table = table.select(schema.names).cast(schema)
        else:
            table = table.select(list(columns)).cast(
                pyarrow.schema(schema.field(c) for c in columns)
            )
        return table.to_pandas()

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
    pyarrow.csv.write_csv(table, sink, write_options=options)
    return sink.getvalue()


class StoredCSVTableAdapter(ParquetTableAdapter):
    """A table whose partitions are CSV files written by the server (``data_uris``)."""

    _partitions_class = _CSVPartitions

    def _encoded(self, table: pyarrow.Table) -> bytes:
        return _csv_bytes(table)

    def _appended(self, stored: Any, table: pyarrow.Table) -> bytes:
        existing = bytes(stored)
        if existing and not existing.endswith(b"\n"):
            existing += b"\n"  # a file written by another program may lack the last newline
        return existing + _csv_bytes(table, header=False)

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
    except (pyarrow.ArrowInvalid, pyarrow.ArrowNotImplementedError, BadRequest) as err:
        raise BadRequest(f"A table stored as CSV cannot hold these columns: {err}") from None
