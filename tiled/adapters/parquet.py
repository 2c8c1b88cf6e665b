"""Tables stored as Parquet files, one file per row partition.

Reading goes through the in-memory table adapter's partition interface, so the column
adapters and their zarr view (1-d arrays chunked along partitions) are shared; only
partitions a request touches are read, and lengths come from the Parquet footers.
A partition whose file does not exist yet reads as an empty frame of the table's schema.

Writes are validated against the table's Arrow schema before any file is touched, then the
files (or objects of a bucket) are replaced whole, through the node's storage (see
:mod:`tiled.adapters.node_storage`).
"""

from __future__ import annotations

import io
import threading
from collections.abc import Sequence
from typing import Any

import numpy
import pandas
import pyarrow
import pyarrow.parquet

from ..errors import BadRequest
from ..structures.table import TableStructure, index_columns
from .base import TableAdapterBase
from .files import path_from_uri
from .node_storage import NodeStorage, location_of
from .table import TableAdapter, _StoredPartitions

PARQUET_MIMETYPE = "application/x-parquet"


class _ParquetPartitions(_StoredPartitions):
    """Partitions read from Parquet files or objects when asked for; missing ones are empty."""

    def __init__(self, locations: Sequence[tuple[NodeStorage, str]], structure: TableStructure):
        self.locations = list(locations)
        self.structure = structure
        self.meta = structure.meta
        self._lengths: tuple[int, ...] | None = None
        self._lock = threading.Lock()

    @property
    def frames(self) -> list[tuple[NodeStorage, str]]:
        # What the column adapters inspect: locations, not frames in memory.
        return self.locations

    def _readable(self, index: int) -> Any | None:
        storage, key = self.locations[index]
        try:
            return storage.readable(key)
        except FileNotFoundError:
            return None

    def read(self, index: int, fields: Sequence[str] | None = None) -> pandas.DataFrame:
        columns = list(fields) if fields is not None else None
        source = self._readable(index)
        if source is None:
            return self.meta if columns is None else self.meta[columns]
        table = pyarrow.parquet.read_table(source, columns=columns, use_pandas_metadata=True)
        return table.to_pandas()

    def _compute_lengths(self) -> tuple[int, ...]:
        sources = (self._readable(i) for i in range(len(self.locations)))
        return tuple(
            0 if source is None else pyarrow.parquet.read_metadata(source).num_rows
            for source in sources
        )

    def forget_lengths(self) -> None:
        self._lengths = None


class _SchemaReadPartitions(_ParquetPartitions):
    """Partitions in files that hold no types of their own that pandas reads (CSV, Arrow
    IPC): each is read by :meth:`_table` with the table's schema; missing ones are empty."""

    def _table(
        self, source: Any, schema: pyarrow.Schema, columns: Sequence[str] | None
    ) -> pyarrow.Table:
        raise NotImplementedError

    def read(self, index: int, fields: Sequence[str] | None = None) -> pandas.DataFrame:
        source = self._readable(index)
        if source is None:
            return self.meta if fields is None else self.meta[list(fields)]
        schema = self.structure.arrow_schema_decoded
        columns = None
        if fields is not None:
            # The index columns too, so that the rows keep their index as whole reads do.
            columns = [*fields, *(c for c in index_columns(schema) if c not in fields)]
        return self._table(source, schema, columns).to_pandas()


class ParquetTableAdapter(TableAdapter):
    """A table whose partitions are Parquet files (``data_uris``, one per partition).

    The format of the files is three methods (:meth:`_encoded`, :meth:`_appended` and the
    partitions' reader): :class:`tiled.adapters.stored_csv.StoredCSVTableAdapter` stores the
    same tables as CSV."""

    _partitions_class: type[_ParquetPartitions] = _ParquetPartitions

    def __init__(
        self, data_uris: Sequence[str], structure: TableStructure, *, metadata=None, specs=None
    ):
        TableAdapterBase.__init__(self, structure, metadata=metadata, specs=specs)
        locations = [location_of(uri) for uri in data_uris]
        if len(locations) != structure.npartitions:
            raise BadRequest(
                f"A table of {structure.npartitions} partitions needs as many files, "
                f"got {len(locations)}"
            )
        self._partitions = self._partitions_class(locations, structure)
        self._columns = {}

    @classmethod
    def from_uris(
        cls, *data_uris: str, structure: TableStructure | None = None, **kwargs: Any
    ) -> ParquetTableAdapter:
        if structure is None:
            schema = pyarrow.parquet.read_schema(path_from_uri(data_uris[0]))
            structure = TableStructure.from_arrow_schema(schema, len(data_uris))
        return cls(data_uris, structure, **kwargs)

    @classmethod
    def from_catalog(cls, data_source: Any, node: Any, /, **kwargs: Any) -> ParquetTableAdapter:
        """What a catalog registered: one partition per asset, in their order."""
        from .files import asset_uris

        return cls.from_uris(
            *asset_uris(data_source), structure=data_source.structure,
            metadata=getattr(node, "metadata_", None), specs=getattr(node, "specs", None),
        )  # fmt: skip

    @property
    def locations(self) -> list[tuple[NodeStorage, str]]:
        """``(storage, key)`` of each partition's file or object."""
        return self._partitions.locations

    @property
    def node_storage(self) -> NodeStorage:
        """Where the table's partitions are written: the storage of the first (a node's
        directory or bucket prefix holds all of them)."""
        return self.locations[0][0]

    def read(self, fields: Sequence[str] | None = None) -> pandas.DataFrame:
        frame = super().read(fields)
        index = (self.structure().arrow_schema_decoded.pandas_metadata or {}).get("index_columns")
        if not any(isinstance(column, str) for column in index or ()):
            # Unnamed row numbers are not stored; number the rows of the whole table instead
            # of repeating each partition's 0..n.
            frame = frame.reset_index(drop=True)
        return frame

    # --- writing (blocking: callers run these on a worker thread) ---

    def write_frames(self, frames: dict[int, pandas.DataFrame]) -> None:
        """Replace the given partitions, all of them or (on any failure) none."""
        for partition in frames:
            self._check_partition(partition)
        tables = {i: to_arrow(frame, self.structure()) for i, frame in frames.items()}
        payloads = {i: self._encoded(table) for i, table in tables.items()}
        storage = self.node_storage
        with storage.locked(), storage.staged() as transaction:
            for i, payload in payloads.items():
                transaction.write(self.locations[i][1], payload)
        self._partitions.forget_lengths()

    def write_all(self, frame: pandas.DataFrame) -> None:
        """Replace the whole table, splitting rows evenly over the partitions."""
        count = self.structure().npartitions
        if count < 1:
            raise BadRequest("This table has no partitions to write to")
        bounds = numpy.linspace(0, len(frame), count + 1).astype(int)
        frames = {i: frame.iloc[bounds[i] : bounds[i + 1]] for i in range(count)}
        self.write_frames(frames)

    def append_frame(self, frame: pandas.DataFrame, partition: int) -> None:
        """Add rows at the end of one partition."""
        self._check_partition(partition)
        table = to_arrow(frame, self.structure())
        storage, key = self.locations[partition]
        with storage.locked(), storage.staged() as transaction:
            existing = storage.get(key)
            payload = (
                self._encoded(table) if existing is None else self._appended(existing.data, table)
            )
            transaction.write(key, payload)
        self._partitions.forget_lengths()

    def _encoded(self, table: pyarrow.Table) -> Any:
        """The bytes of a partition file holding ``table``."""
        return _parquet_bytes(table)

    def _appended(self, stored: Any, table: pyarrow.Table) -> Any:
        """The bytes of partition file ``stored`` with the rows of ``table`` added."""
        existing = pyarrow.parquet.read_table(pyarrow.BufferReader(stored))
        return _parquet_bytes(pyarrow.concat_tables([existing, table.cast(existing.schema)]))

    def _check_partition(self, partition: int) -> None:
        if not 0 <= partition < self.structure().npartitions:
            raise BadRequest(f"Partition {partition} out of range")

    def __repr__(self) -> str:
        return (
            f"<ParquetTableAdapter {list(self.structure().columns)} "
            f"npartitions={len(self.locations)}>"
        )


def to_arrow(frame: pandas.DataFrame, structure: TableStructure) -> pyarrow.Table:
    """``frame`` as Arrow in the table's schema; refuses other columns or unsafe casts."""
    names = [str(c) for c in frame.columns]
    if sorted(names) != sorted(structure.columns) or len(set(names)) != len(names):
        raise BadRequest(f"Expected the columns {list(structure.columns)}, got {names}")
    schema = structure.arrow_schema_decoded
    try:
        # Inside: columns of several levels (a MultiIndex) are no names a schema holds.
        frame = frame.rename(columns=str)[list(structure.columns)]
        table = pyarrow.Table.from_pandas(frame, schema=schema, safe=True)
    except (pyarrow.ArrowException, KeyError, TypeError, ValueError) as err:
        # ArrowException: also casts Arrow does not implement (text to the null type).
        raise BadRequest(f"The data do not fit the table's schema: {err}") from None
    if not table.schema.equals(schema, check_metadata=False):
        raise BadRequest(f"The data have the schema {table.schema}, expected {schema}")
    return table


def _parquet_bytes(table: pyarrow.Table) -> memoryview:
    sink = io.BytesIO()
    pyarrow.parquet.write_table(table, sink)
    return sink.getbuffer()


ParquetDatasetAdapter = ParquetTableAdapter  # upstream's name

__all__ = ["PARQUET_MIMETYPE", "ParquetDatasetAdapter", "ParquetTableAdapter", "to_arrow"]
