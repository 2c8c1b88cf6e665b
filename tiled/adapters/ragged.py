"""Ragged arrays as nodes: in memory, and stored in SQL one chunk (a run of rows) per row.

Storage is upstream's layout (``application/x-ragged+sql``), so that a storage database written
by either server is read by the other: a ragged array is a dataset of an appendable table (see
:mod:`tiled.adapters.sql`) with one row per chunk, holding each buffer of the chunk's canonical
awkward layout (``node0-offsets``, ``node1-data``, ...) as a list column, and its
``chunk_index`` (ordered by it, unique within the dataset). Arrays of the same form share one
SQL table. List columns need DuckDB or PostgreSQL: SQLite storage cannot hold ragged arrays
(nor can upstream's). Appending rows (``patch`` with ``extend``) inserts a chunk in one
transaction and never rewrites one; a read loads, in one query, only the chunks its
first-dimension slice touches, of the structure it was opened with, so a reader sees the array
as it was before or after an append, never part of one.

Zarr view: as for awkward nodes (:class:`~tiled.adapters.awkward.BuffersZarrGroup`), a group
of the whole array's buffers with the form and length under ``"awkward"`` and the ragged
structure under ``"ragged"`` in the attributes.
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Any

import numpy

from ..errors import BadRequest, Conflict, DataUnavailable, InvalidSlice, Unsupported
from ..ndslice import NDSlice, block_for_slice
from ..storage import PreparedInSQLTransaction, SQLStorage
from ..structures.core import StructureFamily
from ..structures.data_source import DataSource
from ..structures.ragged import RaggedStructure, make_ragged_array
from .awkward import BuffersZarrGroup, as_flat
from .core import Adapter

if TYPE_CHECKING:
    import pyarrow

    from .sql import SQLAdapter

RAGGED_SQL_MIMETYPE = "application/x-ragged+sql"
CHUNK_INDEX = "chunk_index"
# Dialects with list columns, which the layout needs.
LIST_DIALECTS = ("duckdb", "postgresql")


class AppendOnly(Unsupported, NotImplementedError):
    """A patch other than appending rows at the end (a NotImplementedError, as upstream's)."""


def buffers_of(array: Any, structure: RaggedStructure) -> tuple[int, dict[str, numpy.ndarray]]:
    """Length and buffers of ``array`` (canonical), refused unless its form is the node's."""
    import awkward

    form, length, buffers = awkward.to_buffers(array._impl)
    if form != structure.awkward_form:
        raise BadRequest(
            "The structure (awkward form) of the data does not match the array's: "
            f"expected {structure.awkward_form.to_dict()}, got {form.to_dict()}"
        )
    return length, {name: numpy.asarray(value).reshape(-1) for name, value in buffers.items()}


def _check_data_type(array: Any, structure: RaggedStructure) -> None:
    expected = structure.data_type.to_numpy_dtype()
    if array.dtype != expected:
        raise BadRequest(f"The data have dtype {array.dtype}; the array holds {expected}")


class _RaggedBase(BuffersZarrGroup, Adapter):
    structure_family = StructureFamily.ragged

    def structure(self) -> RaggedStructure:
        return self._structure

    def read(self, slice: NDSlice | None = None) -> Any:
        raise NotImplementedError

    def zarr_buffer_dtypes(self) -> dict[str, numpy.dtype]:
        return self.structure().buffer_dtypes()

    def zarr_buffer(self, name: str) -> numpy.ndarray:
        import awkward

        _, _, buffers = awkward.to_buffers(self.read()._impl)
        return as_flat(numpy.asarray(buffers[name]), self.zarr_buffer_dtypes()[name])

    def zarr_group_attributes(self) -> dict[str, Any]:
        structure = self.structure()
        awkward_part = {"form": structure.awkward_form.to_dict(), "length": structure.shape[0]}
        return {"awkward": awkward_part, "ragged": structure.to_json()}

    def __repr__(self) -> str:
        s = self.structure()
        return f"<{type(self).__name__} shape={list(s.shape)} chunks={len(s.chunks[0])}>"


class RaggedAdapter(_RaggedBase):
    """A ragged array held in memory."""

    def __init__(
        self,
        array: Any,
        structure: RaggedStructure,
        *,
        metadata: Mapping | None = None,
        specs: Any = None,
    ):
        super().__init__(structure, metadata=metadata, specs=specs)
        self._array = array

    @classmethod
    def from_array(
        cls, array: Any, *, dims: Any = None, metadata: Mapping | None = None, specs: Any = None
    ) -> RaggedAdapter:
        array = make_ragged_array(array)
        structure = RaggedStructure.from_array(array, dims=dims)
        return cls(array, structure, metadata=metadata, specs=specs)

    def read(self, slice: NDSlice | None = None) -> Any:
        return make_ragged_array(self._array, slice=slice)


def tabular_data_source(data_source: DataSource) -> DataSource:
    """The appendable table holding a ragged data source's chunks (upstream's layout): a list
    column per buffer and ``chunk_index``, ordered by and unique on ``chunk_index``."""
    from ..structures.table import TableStructure
    from .sql import SQL_TABLE_MIMETYPE

    structure = data_source.structure
    columns: dict[str, list[Any]] = {
        name: [numpy.empty(0, dtype=dtype)] for name, dtype in structure.buffer_dtypes().items()
    }
    columns[CHUNK_INDEX] = [numpy.int64(0)]
    try:
        table = TableStructure.from_dict(columns)
    except Exception as err:  # a buffer type Arrow has no list of (complex numbers)
        raise BadRequest(
            f"A ragged array of {structure.data_type} cannot be stored: {err}"
        ) from None
    parameters = {
        **(data_source.parameters or {}),
        "order_by_args": [{"column": CHUNK_INDEX, "direction": "asc"}],
        "primary_key": [CHUNK_INDEX],
    }
    return DataSource(
        structure_family=StructureFamily.table, structure=table, parameters=parameters,
        properties=data_source.properties, mimetype=SQL_TABLE_MIMETYPE,
        assets=list(data_source.assets), management=data_source.management,
    )  # fmt: skip


def _chunk_indexes(indexes: Sequence[int]) -> str:
    return ", ".join(str(int(i)) for i in indexes)


class RaggedSQLAdapter(PreparedInSQLTransaction, _RaggedBase):
    """A ragged array stored in SQL: the rows of dataset ``dataset_id`` of a shared table, read
    through ``tabular_adapter`` (upstream's signature)."""

    def __init__(
        self,
        tabular_adapter: SQLAdapter,
        structure: RaggedStructure,
        *,
        metadata: Mapping | None = None,
        specs: Any = None,
    ):
        super().__init__(structure, metadata=metadata, specs=specs)
        self._tabular_adapter = tabular_adapter

    @classmethod
    def supported_storage(cls) -> set[type]:
        return {SQLStorage}

    @classmethod
    def prepare_storage(
        cls, storage: SQLStorage, data_source: DataSource, connection: Any
    ) -> DataSource:
        """Create the shared table if it is new and draw a dataset id, on ``connection``
        (uncommitted); return the data source as stored."""
        from .sql import SQLAdapter

        if storage.dialect not in LIST_DIALECTS:
            raise Unsupported(
                f"Ragged arrays are stored in DuckDB or PostgreSQL storage, not {storage.dialect} "
                "(it has no list columns)"
            )
        check_ragged_structure(data_source.structure)
        table = SQLAdapter.prepare_storage(storage, tabular_data_source(data_source), connection)
        stored = copy.deepcopy(data_source)  # the caller's stays as it was
        stored.parameters = {
            **(stored.parameters or {}),
            "table_name": table.parameters["table_name"],
            "dataset_id": table.parameters["dataset_id"],
        }
        stored.assets.extend(table.assets[len(data_source.assets) :])
        stored.mimetype = RAGGED_SQL_MIMETYPE
        return stored

    @classmethod
    def from_catalog(cls, data_source: DataSource, node: Any, /, **kwargs: Any) -> RaggedSQLAdapter:
        from .sql import SQLAdapter

        parameters = data_source.parameters or {}
        if (
            not data_source.assets
            or "table_name" not in parameters
            or "dataset_id" not in parameters
        ):
            raise DataUnavailable("The ragged array's data source names no table or dataset")
        table = SQLAdapter.from_catalog(tabular_data_source(data_source), node)
        metadata = kwargs.get("metadata", getattr(node, "metadata_", None))
        specs = getattr(node, "specs", None)
        return cls(table, data_source.structure, metadata=metadata, specs=specs)

    # --- reading (blocking) ---

    def _where(self, condition: str) -> str:
        table = self._tabular_adapter
        return f'FROM "{table.table_name}" WHERE _dataset_id = {table.dataset_id} AND {condition}'

    def _load_chunks(self, indexes: Sequence[int]) -> dict[int, dict[str, numpy.ndarray]]:
        """The buffers of the given chunks, read in one query."""
        if not indexes:
            return {}
        dtypes = self.structure().buffer_dtypes()
        names = [*dtypes, CHUNK_INDEX]
        query = (
            f"SELECT {', '.join(chr(34) + n + chr(34) for n in names)} "
            f"{self._where(f'{CHUNK_INDEX} IN ({_chunk_indexes(indexes)})')} "
            f"ORDER BY {CHUNK_INDEX}"
        )
        storage = self._tabular_adapter.storage
        with contextlib.closing(storage.connect()) as connection, connection.cursor() as cursor:
            cursor.execute(query)
            found: pyarrow.Table = cursor.fetch_arrow_table()
        chunks = {}
        for row, index in enumerate(found[CHUNK_INDEX].to_pylist()):
            chunks[int(index)] = {
                name: _as_buffer(found[name][row], dtype) for name, dtype in dtypes.items()
            }
        missing = sorted(set(indexes) - set(chunks))
        if missing:
            raise DataUnavailable(
                f"Chunk(s) {missing} of this ragged array have not been written yet"
            )
        return chunks

    def _chunks_for(self, slice: NDSlice) -> tuple[list[int], NDSlice]:
        """The chunks the first part of ``slice`` touches, and the slice to apply to them."""
        sizes = self.structure().chunks[0]
        everything = list(range(len(sizes)))
        if not sizes or not slice or not NDSlice(slice[0]) or slice[0] is Ellipsis:
            return everything, slice
        try:
            block, adjusted = block_for_slice((sizes,), NDSlice(slice[0]))
        except (IndexError, InvalidSlice):
            return everything, slice  # out of range: the slicing itself says so
        first = block[0]
        chosen = [first] if isinstance(first, int) else list(range(*first.indices(len(sizes))))
        if not chosen:
            return everything, slice
        return chosen, NDSlice(adjusted[0], *slice[1:])

    def read(self, slice: NDSlice | None = None) -> Any:
        import awkward

        structure = self.structure()
        slice = NDSlice(slice) if slice is not None else NDSlice()
        chosen, adjusted = self._chunks_for(slice)
        form, dtypes = structure.awkward_form, structure.buffer_dtypes()
        chunks = self._load_chunks(chosen)
        pieces = [awkward.from_buffers(form, structure.chunks[0][i], chunks[i]) for i in chosen]
        if not pieces:
            whole = awkward.from_buffers(form, 0, _empty_buffers(dtypes, form))
        else:
            whole = awkward.concatenate(pieces) if len(pieces) != 1 else pieces[0]
        return make_ragged_array(whole, slice=adjusted if adjusted else None)

    # --- writing (blocking: callers run these on a worker thread) ---

    def write(self, array: Any) -> None:
        self.write_whole(array)

    def write_block(self, array: Any, block: Sequence[int]) -> None:
        self.write_chunk(array, block)

    def patch(self, array: Any, offset: Sequence[int], extend: bool = False) -> RaggedStructure:
        return self.append_chunk(array, offset, extend)

    def write_whole(self, array: Any) -> None:
        sizes = self.structure().chunks[0]
        if len(sizes) != 1:
            raise BadRequest(
                f"This array has {len(sizes)} chunks: write them one at a time (write_block)"
            )
        self.write_chunk(array, (0,))

    def write_chunk(self, array: Any, block: Sequence[int]) -> None:
        """Write (or rewrite) one chunk."""
        structure = self.structure()
        index = _block_index(block, len(structure.chunks[0]))
        array = make_ragged_array(array)
        _check_data_type(array, structure)
        length, buffers = buffers_of(array, structure)
        if length != structure.chunks[0][index]:
            raise BadRequest(f"Chunk {index} holds {structure.chunks[0][index]} rows, not {length}")
        self._store(index, buffers, replace_existing=True)

    def append_chunk(self, array: Any, offset: Sequence[int], extend: bool) -> RaggedStructure:
        """Append ``array``'s rows as a new chunk at ``offset`` (which must be the current
        length); returns the structure after the append. Overwriting is not supported."""
        structure = self.structure()
        if not extend:
            raise AppendOnly("Overwriting existing rows of a ragged array is not supported")
        if not offset:
            raise BadRequest("`offset` must contain at least one dimension")
        if offset[0] != structure.shape[0] or any(offset[1:]) or len(offset) > structure.ndim_fixed:
            raise AppendOnly(
                "Only appending to the end of the leftmost dimension is supported "
                f"(offset {structure.shape[0]})"
            )
        array = make_ragged_array(array)
        _check_data_type(array, structure)
        fixed = structure.ndim_fixed
        if tuple(array.shape[1:fixed]) != tuple(structure.shape[1:fixed]):
            raise BadRequest(
                f"The data have shape {array.shape}; the array's fixed dimensions are "
                f"{structure.shape[1:fixed]}"
            )
        length, buffers = buffers_of(array, structure)
        index = len(structure.chunks[0])
        self._store(index, buffers, replace_existing=False)
        grown = replace(
            structure,
            shape=(structure.shape[0] + length, *structure.shape[1:]),
            chunks=((*structure.chunks[0], length), *structure.chunks[1:]),
            size=structure.size + int(array.size),
        )
        self._structure = grown
        return grown

    def _store(self, index: int, buffers: Mapping[str, numpy.ndarray], replace_existing: bool):
        """Insert chunk ``index`` in one transaction: after deleting its row (rewriting), or
        refusing (Conflict) if it exists (appending: another producer appended first)."""
        import pyarrow

        from .sql import is_unique_violation

        table = self._tabular_adapter
        columns = {name: pyarrow.array([value]) for name, value in buffers.items()}
        columns[CHUNK_INDEX] = pyarrow.array([index], type=pyarrow.int64())
        rows = table._rows(pyarrow.table(columns), 0)
        condition = self._where(f"{CHUNK_INDEX} = {int(index)}")
        try:
            with table.storage.transaction() as connection, connection.cursor() as cursor:
                if replace_existing:
                    cursor.execute(f"DELETE {condition}")
                else:
                    # DuckDB's bulk insert does not check unique indexes: look first (the
                    # transaction of a file database is this process' only writer).
                    cursor.execute(f"SELECT COUNT(*) {condition}")
                    ((count,),) = cursor.fetchall()
                    if count:
                        raise _taken(index)
                cursor.adbc_ingest(table.table_name, rows, mode="append")
        except Exception as err:
            if isinstance(err, Conflict) or not is_unique_violation(err):
                raise
            raise _taken(index) from None

    def remove_chunk(self, index: int) -> None:
        """Undo an append whose catalog update failed (blocking)."""
        condition = self._where(f"{CHUNK_INDEX} = {int(index)}")
        with (
            self._tabular_adapter.storage.transaction() as connection,
            connection.cursor() as cursor,
        ):
            cursor.execute(f"DELETE {condition}")


def _taken(index: int) -> Conflict:
    return Conflict(
        f"Cannot append chunk with chunk_index={index}: a chunk with this index already "
        "exists (another writer appended first; a ragged array has one producer at a time)"
    )


def _as_buffer(value: Any, dtype: numpy.dtype) -> numpy.ndarray:
    """One stored list (an Arrow list scalar; an empty one may come back null) as a buffer."""
    if not value.is_valid:
        return numpy.zeros(0, dtype=dtype)
    return numpy.asarray(value.values.to_numpy(zero_copy_only=False), dtype=dtype)


def _block_index(block: Sequence[int], count: int) -> int:
    block = tuple(block)
    if len(block) != 1:
        raise InvalidSlice(f"A ragged array is chunked along one dimension; got block {block}")
    index = int(block[0])
    if not 0 <= index < count:
        raise InvalidSlice(f"Block {index} is out of range: the array has {count} chunks")
    return index


def _empty_buffers(dtypes: Mapping[str, numpy.dtype], form: Any) -> dict[str, numpy.ndarray]:
    # Offsets of an empty list hold one zero; data buffers hold nothing.
    return {
        name: numpy.zeros(1 if name.endswith("-offsets") else 0, dtype=dtype)
        for name, dtype in dtypes.items()
    }


__all__ = ["RAGGED_SQL_MIMETYPE", "RaggedAdapter", "RaggedSQLAdapter"]


def check_ragged_structure(structure: RaggedStructure) -> None:
    """Refuse (InvalidStructure) a structure whose data type awkward cannot hold."""
    from ..errors import InvalidStructure

    try:
        structure.awkward_form  # noqa: B018 (building the form is the check)
    except Exception as err:  # awkward refuses types it has no primitive for
        raise InvalidStructure(f"A ragged array cannot hold {structure.data_type}: {err}") from None
