"""Tables stored as Arrow IPC files (Feather v2), one file per row partition: upstream Tiled
0.2.20's ``application/vnd.apache.arrow.file`` tables, ``partition-{i}.arrow``, and ``.arrow``
files registered with a catalog.

Everything but the file format is the Parquet-stored table's (:mod:`tiled.adapters.parquet`):
the node's storage (a directory or a bucket), staged writes, the schema check, partitions
read only when a request touches them, a missing partition read as an empty one. A file is
read with only the columns asked for, cast to the table's types (a file written by another
program may spell them otherwise: ``string`` for ``large_string``); a file that is no Arrow IPC
file, or lacks the table's columns, answers :class:`~tiled.errors.DataUnavailable`. Lengths
come from the files' footers and batch headers. Appending rewrites the partition's file with
the rows added (upstream cannot append to these tables).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pyarrow
import pyarrow.ipc

from ..errors import BadRequest, DataUnavailable
from ..structures.table import TableStructure, index_columns
from ..utils import APACHE_ARROW_FILE_MIME_TYPE
from .node_storage import location_of
from .parquet import ParquetTableAdapter, _SchemaReadPartitions

__all__ = ["APACHE_ARROW_FILE_MIME_TYPE", "ArrowAdapter"]

# What a file that is not the table raises while it is opened or read.
_UNREADABLE = (
    pyarrow.ArrowInvalid,
    pyarrow.ArrowNotImplementedError,
    pyarrow.ArrowKeyError,
    pyarrow.ArrowTypeError,
    pyarrow.ArrowIOError,
)


def _contents(readable: Any) -> str | pyarrow.Buffer:
    """A path, or the bytes of the file (which a reader may be opened on more than once)."""
    if isinstance(readable, str):
        return readable
    if isinstance(readable, pyarrow.NativeFile):  # an object of a bucket
        return readable.read_buffer()
    return pyarrow.py_buffer(readable)


def _opened(contents: str | pyarrow.Buffer) -> pyarrow.NativeFile:
    # Read, not memory-mapped: a registered file truncated in place by another program would
    # crash the server (SIGBUS) through a mapping.
    return pyarrow.OSFile(contents) if isinstance(contents, str) else pyarrow.BufferReader(contents)


def read_schema(readable: Any) -> pyarrow.Schema:
    """The schema of an Arrow IPC file (a path, a reader or the bytes)."""
    try:
        with _opened(_contents(readable)) as file:
            return pyarrow.ipc.open_file(file).schema
    except _UNREADABLE as err:
        raise DataUnavailable(f"Not a readable Arrow IPC file: {err}") from None


def _present(found: pyarrow.Schema, schema: pyarrow.Schema, wanted: Sequence[str]) -> list[str]:
    """The ``wanted`` columns of the table (``schema``) to read from a file of schema
    ``found``: all but the index columns the file lacks; DataUnavailable if it lacks another
    (the file of another table), or names two columns alike."""
    if len(set(found.names)) != len(found.names):
        raise DataUnavailable("A stored Arrow partition has columns of the same name")
    index = set(index_columns(schema))
    present = [name for name in wanted if name in found.names or name not in index]
    missing = [name for name in present if name not in found.names]
    if missing:
        raise DataUnavailable(f"A stored Arrow partition lacks the columns {missing}")
    return present


def count_rows(readable: Any, schema: pyarrow.Schema) -> int:
    """The number of rows of an Arrow IPC file holding the table of ``schema``, from its
    footer and its batches' headers."""
    try:
        with _opened(_contents(readable)) as file:
            reader = pyarrow.ipc.open_file(file)
            _present(reader.schema, schema, schema.names)
            if hasattr(reader, "count_rows"):  # pyarrow >= 16
                return reader.count_rows()
            return sum(reader.get_batch(i).num_rows for i in range(reader.num_record_batches))
    except _UNREADABLE as err:
        raise DataUnavailable(f"A stored Arrow partition is not readable: {err}") from None


def read_stored(
    readable: Any, schema: pyarrow.Schema, columns: Sequence[str] | None = None
) -> pyarrow.Table:
    """The table in an Arrow IPC file: ``columns`` (all the schema's when None), in that order,
    with the schema's types; the index columns the file lacks are left out, any other column
    it lacks is :class:`DataUnavailable`, as is a file that is not Arrow."""
    contents = _contents(readable)
    try:
        with _opened(contents) as file:
            found = pyarrow.ipc.open_file(file).schema
        present = _present(found, schema, schema.names if columns is None else columns)
        # Only the columns asked for are read from the file (none listed: all of them).
        included = sorted(found.get_field_index(name) for name in present)
        options = pyarrow.ipc.IpcReadOptions(included_fields=included) if included else None
        with _opened(contents) as file:
            table = pyarrow.ipc.open_file(file, options=options).read_all().select(present)
        for position, name in enumerate(present):
            field = schema.field(name)
            if table.schema.field(position).type != field.type:
                table = table.set_column(position, field, table[position].cast(field.type))
        # The file's own pandas metadata (the index it was written with), as Parquet's.
        return table.replace_schema_metadata(
            found.metadata if found.pandas_metadata is not None else schema.metadata
        )
    except _UNREADABLE as err:
        raise DataUnavailable(f"A stored Arrow partition does not hold the table: {err}") from None


def arrow_file_bytes(table: pyarrow.Table) -> memoryview:
    """``table`` as an Arrow IPC file (uncompressed, as upstream writes them)."""
    sink = pyarrow.BufferOutputStream()
    # A file holds one dictionary per column: the batches of appended rows share it.
    options = pyarrow.ipc.IpcWriteOptions(unify_dictionaries=True)
    with pyarrow.ipc.new_file(sink, table.schema, options=options) as writer:
        writer.write_table(table)
    return memoryview(sink.getvalue())


class _ArrowPartitions(_SchemaReadPartitions):
    """Partitions read from Arrow IPC files or objects when asked for; missing ones are empty."""

    def _table(self, source: Any, schema: pyarrow.Schema, columns: Any) -> pyarrow.Table:
        return read_stored(source, schema, columns)

    def _compute_lengths(self) -> tuple[int, ...]:
        schema = self.structure.arrow_schema_decoded
        sources = (self._readable(i) for i in range(len(self.locations)))
        return tuple(0 if source is None else count_rows(source, schema) for source in sources)


class ArrowAdapter(ParquetTableAdapter):
    """A table whose partitions are Arrow IPC files (``data_uris``, one per partition)."""

    _partitions_class = _ArrowPartitions

    @classmethod
    def from_uris(
        cls, *data_uris: str, structure: TableStructure | None = None, **kwargs: Any
    ) -> ArrowAdapter:
        """The files ``data_uris`` as the partitions of one table, in order; without a
        ``structure``, the first file's schema is the table's."""
        if not data_uris:
            raise BadRequest("An Arrow table needs at least one file")
        if structure is None:
            storage, key = location_of(data_uris[0])
            structure = TableStructure.from_arrow_schema(
                read_schema(storage.readable(key)), len(data_uris)
            )
        return cls(data_uris, structure, **kwargs)

    def _encoded(self, table: pyarrow.Table) -> memoryview:
        return arrow_file_bytes(table)

    def _appended(self, stored: Any, table: pyarrow.Table) -> memoryview:
        existing = read_stored(stored, table.schema)
        if existing.column_names != table.column_names:
            raise BadRequest(
                f"The stored partition has the columns {existing.column_names}, which the "
                f"table's {table.column_names} do not match: rows cannot be added to it"
            )
        # The stored rows' batches, then the new rows' (no copy of the stored values).
        return arrow_file_bytes(pyarrow.concat_tables([existing, table.cast(existing.schema)]))

    def __repr__(self) -> str:
        return f"<ArrowAdapter {list(self.structure().columns)} npartitions={len(self.locations)}>"
