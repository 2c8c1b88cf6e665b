"""Catalog nodes with data: storage adapters extended with the node's row, history and writes.

A node's adapter is the storage adapter of its data source (zarr array, Parquet, CSV or Arrow
table, Parquet sparse blocks) with :class:`CatalogNode` mixed in: metadata, specs and access
blob from the row; ``replace_metadata``, ``revisions`` and ``delete``. Nodes whose storage the
server manages (``writable``) also have the write methods of their family; registered
(``external``) nodes are read-only, so they do not have them at all.

Registered nodes are opened through the catalog's adapter registry (:mod:`.registered`);
a registered container (an HDF5 file, a zarr group) is its adapter, members and all. A
listing shows registered nodes from their rows (:class:`ListedNode`) without opening files;
a node that cannot be opened, or whose files fail when read, answers 4xx saying why.
"""

from __future__ import annotations

import contextlib
import enum
import functools
import json
import types
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, replace
from functools import cache
from typing import Any

import numpy
from sqlalchemy import delete, func, select, update

from .. import stream_messages
from ..adapters.arrow import APACHE_ARROW_FILE_MIME_TYPE, ArrowAdapter
from ..adapters.awkward import AWKWARD_BUFFERS_MIMETYPE, AwkwardBuffersAdapter
from ..adapters.base import ArrayAdapterBase
from ..adapters.conditions import WriteCondition
from ..adapters.files import uri_from_path
from ..adapters.node_storage import NodeStorage, node_storage_for_uri
from ..adapters.parquet import ParquetTableAdapter
from ..adapters.ragged import RAGGED_SQL_MIMETYPE, RaggedSQLAdapter
from ..adapters.sparse_parquet import ParquetSparseAdapter, blocks_directory
from ..adapters.stored_csv import CSV_MIMETYPE, StoredCSVTableAdapter
from ..adapters.zarr import ZarrArrayAdapter
from ..adapters.zarr_writable import (
    ZARR_MIMETYPE,
    open_readonly,
    patch_region,
    regular_chunk_shape,
    resize_stored,
    stored_chunk_files,
    write_region,
)
from ..errors import (
    BadRequest,
    Conflict,
    DataUnavailable,
    InvalidDtype,
    InvalidZarrDocument,
    NodeAt,
    NoSuchEntry,
    NotFound,
    TiledError,
    UnfinishedWrite,
    ZarrKeyNotFound,
    naming,
)
from ..mimetypes import SQL_TABLE_MIMETYPE
from ..ndslice import NDBlock, patched_region
from ..structures.array import ArrayStructure
from ..structures.core import normalize_specs
from ..structures.data_source import DataSource, Management
from ..utils import run_sync
from ..zarr_format.model import check_chunk_counts, grid_counts, regular_chunks
from ..zarr_format.stored import passable_codecs
from . import webhooks as webhook_events
from .access import set_node_tags, tags_of_node
from .core import Catalog, NodeRecord
from .creation import replace_structure, stored_structure
from .data_sources import asset_of, delete_asset, put_data_source
from .errors import WouldDeleteData
from .orm import (
    assets,
    data_source_asset_association,
    data_sources,
    nodes,
    nodes_closure,
    revisions,
    utcnow,
)
from .registered import NodeView, open_external, outside_readable_storage, why_unopenable
from .storage import destroy_storages, node_storages
from .streams import close_stream


def subtree_condition(node_id: int) -> Any:
    """Rows of the node ``node_id`` and of all its descendants (from the closure table)."""
    below = select(nodes_closure.c.descendant).where(nodes_closure.c.ancestor == node_id)
    return nodes.c.id.in_(below)


class CatalogNode:
    """Mixin for adapters of catalog rows: attributes from the row, history, deletion."""

    _catalog: Catalog
    _record: NodeRecord

    def bind(self, catalog: Catalog, record: NodeRecord) -> Any:
        self._catalog = catalog
        self._record = record
        self._metadata = record.metadata
        self._specs = list(record.specs)
        self.access_blob = record.access_blob
        return self

    @property
    def access_tags(self) -> frozenset[str]:
        return tags_of_node(self.access_blob)

    def metadata(self) -> dict[str, Any]:
        """The node's metadata is its row's, whatever its adapter would add (notes about the
        files): a listing and the node itself show the same, as upstream's catalog does."""
        return self._metadata

    @property
    def key(self) -> str:
        return self._record.key

    @property
    def segments(self) -> tuple[str, ...]:
        return self._record.segments

    @property
    def _named(self) -> NodeAt:
        """This node as its errors name it (below the node the catalog is served from)."""
        return self._catalog.node_at(self.segments)

    def exclusive(self, *below: str) -> contextlib.AbstractAsyncContextManager[None]:
        """Writers of this node (or of its descendant ``below``) one at a time, in every
        process (see :class:`~tiled.adapters.protocols.ExcludesWriters`)."""
        return self._catalog.exclusive("/".join((*self.segments, *below)))

    def webhooks(self) -> Any:
        """This node's webhooks (see :class:`~tiled.adapters.protocols.HasWebhooks`)."""
        hooks = self._catalog.webhooks
        return None if hooks is None else hooks.of_node(self._record.id)

    @property
    def time_created(self) -> Any:
        return self._record.time_created

    @property
    def time_updated(self) -> Any:
        return self._record.time_updated

    def data_sources(self) -> list[DataSource]:
        return list(self._record.data_sources)

    # Upstream's adapter methods behind /data_source and /asset (see .data_sources).
    async def asset_by_id(self, asset_id: int) -> Any:
        return asset_of(self._record, asset_id)

    async def put_data_source(self, data_source: Any, patch: Any = None) -> DataSource:
        stored = await put_data_source(self._catalog, self._record, data_source, patch)
        # As upstream, only an array's: an array-ref carries the shape its slice URI needs.
        if self._catalog.streams is not None and stored.structure_family == "array":
            message = stream_messages.array_ref(stored, stored.structure.shape, patch)
            await self._catalog.streams.announce(self._record.id, message)
        return stored

    def live_stream(self) -> Any:
        """This node's live stream (see :class:`~tiled.adapters.protocols.HasLiveStream`)."""
        streams = self._catalog.streams
        return None if streams is None else streams.of_node(self._record.id)

    async def close_stream(self) -> None:
        """End this node's live stream and tell its webhooks (upstream's ``stream-closed``)."""
        await close_stream(self._catalog, self._record.id, self._record.segments)

    async def delete_asset(self, asset_id: int, external_only: bool = True) -> Any:
        return await delete_asset(self._catalog, self._record, asset_id, external_only)

    async def stored_record(self) -> NodeRecord:
        """This node's row as stored now: NoSuchEntry (404) if it was deleted since it was
        looked up, or if its id now names another node (SQLite reuses the ids of deleted
        rows: another node of that name holds other storage)."""
        from .records import fetch_records, records_query

        query = records_query([nodes.c.id == self._record.id])
        async with self._catalog.connect() as connection:
            found = await fetch_records(connection, query, self._record.parent)
        if not found or (found[0].parent_id, found[0].key, _asset_uris(found[0])) != (
            self._record.parent_id, self._record.key, _asset_uris(self._record),
        ):  # fmt: skip
            raise NoSuchEntry(self._named)
        return found[0]

    @contextlib.asynccontextmanager
    async def updating(self) -> AsyncIterator[None]:
        """Held around a read-modify-write of this node's metadata, specs and access tags
        (a PATCH): one at a time in every process, and inside it the node shows what is
        stored now, not what its lookup (perhaps a cached one) saw."""
        async with self.exclusive():
            stored = await self.stored_record()
            self._record.metadata = self._metadata = stored.metadata
            self._record.specs = stored.specs
            self._specs = list(stored.specs)
            self._record.access_blob = self.access_blob = stored.access_blob
            yield

    async def replace_metadata(
        self,
        metadata: dict[str, Any] | None = None,
        specs: Sequence[Any] | None = None,
        access_blob: dict[str, Any] | None = None,
        drop_revision: bool = False,
    ) -> None:
        """Replace the given parts (None = unchanged), keeping the old version as a revision."""
        if metadata is not None and not isinstance(metadata, dict):
            raise BadRequest("metadata must be a JSON object")
        try:
            new_specs = normalize_specs(specs) if specs is not None else None
        except (ValueError, TypeError, KeyError) as err:
            raise BadRequest(str(err)) from None
        values: dict[str, Any] = {"time_updated": utcnow()}
        if metadata is not None:
            values["metadata"] = metadata
        if new_specs is not None:
            values["specs"] = [s.to_json() for s in new_specs]
        async with self._catalog.connect(write=True) as connection:
            revision = await self._save_revision(connection, drop_revision)
            await connection.execute(
                update(nodes).where(nodes.c.id == self._record.id).values(values)
            )
            if access_blob is not None:
                await set_node_tags(connection, self._record.id, access_blob)
        self._record.time_updated = values["time_updated"]
        if metadata is not None:
            self._record.metadata = self._metadata = metadata
        if new_specs is not None:
            self._record.specs = self._specs = new_specs
        if access_blob is not None:
            self._record.access_blob = self.access_blob = access_blob
        await self._announce_metadata_updated(revision)

    async def _announce_metadata_updated(self, revision: int | None) -> None:
        """Tell this node's webhooks, and its parent's live subscribers (where upstream's hear
        of it, as of a child's creation), that its metadata or specs were replaced."""
        if self._catalog.webhooks is not None:  # as upstream: whatever the update changed
            event = webhook_events.metadata_updated(self._record)
            await self._catalog.webhooks.announce(self._record.id, event)
        if self._catalog.streams is not None and self._record.parent_id is not None:
            message = stream_messages.metadata_updated(self._record, revision)
            await self._catalog.streams.announce(self._record.parent_id, message)

    async def _save_revision(self, connection: Any, drop_revision: bool) -> int | None:
        """Keep the current metadata as a revision; its number (None with ``drop_revision``)."""
        query = select(nodes.c.metadata, nodes.c.specs, nodes.c.time_updated)
        current = (
            # FOR NO KEY UPDATE: children may be inserted meanwhile (their key-share lock).
            await connection.execute(
                query.where(nodes.c.id == self._record.id).with_for_update(key_share=True)
            )
        ).one_or_none()
        if current is None:
            raise NoSuchEntry(self._named)
        if drop_revision:
            return None
        latest = select(func.coalesce(func.max(revisions.c.revision_number), 0)).where(
            revisions.c.node_id == self._record.id
        )
        number = (await connection.execute(latest)).scalar_one() + 1
        await connection.execute(
            revisions.insert().values(
                node_id=self._record.id, revision_number=number, metadata=current.metadata,
                specs=current.specs, time_created=utcnow(),
                time_updated=current.time_updated or utcnow(),
            )
        )  # fmt: skip
        return number

    async def revisions(
        self, offset: int = 0, limit: int = 100
    ) -> tuple[list[dict[str, Any]], int]:
        """Earlier versions, oldest first, and how many there are."""
        mine = revisions.c.node_id == self._record.id
        async with self._catalog.connect() as connection:
            count = (await connection.execute(select(func.count()).where(mine))).scalar_one()
            rows = await connection.execute(
                select(revisions).where(mine).order_by(revisions.c.revision_number)
                .offset(offset).limit(limit)
            )  # fmt: skip
        return [_revision_json(row) for row in rows], count

    async def delete_revision(self, number: int) -> None:
        async with self._catalog.connect(write=True) as connection:
            result = await connection.execute(
                delete(revisions).where(
                    revisions.c.node_id == self._record.id, revisions.c.revision_number == number
                )
            )
        if result.rowcount == 0:
            raise naming(NotFound, self._named, "No revision {number} of {path}", number=number)

    async def delete(self, recursive: bool = False, external_only: bool = True) -> None:
        """Delete this node (and, with ``recursive``, its descendants) and their stored data.

        With ``external_only`` (the default) nodes whose data the server manages are refused
        (:class:`WouldDeleteData`): their data would be lost, not just unregistered.
        """
        # Under the node's lock in every process, as its writers: none of them stores data in
        # its place after that place is removed (leaving objects no node refers to).
        async with self.exclusive():
            await self._delete(recursive, external_only)

    async def _delete(self, recursive: bool, external_only: bool) -> None:
        await self.stored_record()  # deleted (or replaced) since it was looked up: 404
        node_id = self._record.id
        async with self._catalog.connect(write=True) as connection:
            total = len(await _lock_subtree(connection, node_id))
            if total == 0:
                raise NoSuchEntry(self._named)
            if total > 1 and not recursive:
                raise naming(
                    Conflict, self._named,
                    "{path} has children; pass recursive=True to delete them too",
                )  # fmt: skip
            writable, asset_ids = await _stored_assets(connection, node_id)
            if writable and external_only:
                raise naming(
                    WouldDeleteData, self._named,
                    "Deleting {path} would delete data the server manages; "
                    "pass external_only=False to delete it",
                )  # fmt: skip
            from .sql_tables import delete_datasets, stored_datasets

            rows = await stored_datasets(connection, subtree_condition(node_id))
            await connection.execute(delete(nodes).where(subtree_condition(node_id)))
            await _delete_orphan_assets(connection, asset_ids)
        # Only after the commit: a failed transaction must leave the files (and rows) in place.
        places = node_storages(writable, self._catalog.writable_locations)
        await run_sync(destroy_storages, places)
        if rows:
            await run_sync(delete_datasets, rows)

    async def _touch(self) -> None:
        now = utcnow()
        async with self._catalog.connect(write=True) as connection:
            await connection.execute(
                update(nodes).where(nodes.c.id == self._record.id).values(time_updated=now)
            )
        self._record.time_updated = now


def _asset_uris(record: NodeRecord) -> list[str]:
    return [asset.data_uri for source in record.data_sources for asset in source.assets]


def _revision_json(row: Any) -> dict[str, Any]:
    from .core import as_utc

    return {
        "revision_number": row.revision_number,
        "attributes": {
            "metadata": row.metadata,
            "specs": row.specs,
            "time_updated": as_utc(row.time_updated).isoformat(),
        },
    }


async def _lock_subtree(connection: Any, node_id: int) -> set[int]:
    """The ids of the node and its descendants, each row locked until the transaction ends
    (PostgreSQL; a SQLite writer holds the whole database already).

    Locked again until no new row appears: a child inserted meanwhile (its parent's row was
    not locked yet, or its insert was waiting on it) is locked too, and once every row is
    locked no child can be inserted below, so what is read and deleted next is the whole
    subtree (its storage included: none is left behind with no row)."""
    # In id order, so that two deletions of overlapping subtrees lock rows in one order.
    query = (
        select(nodes.c.id).where(subtree_condition(node_id)).order_by(nodes.c.id)
        .with_for_update(of=nodes)
    )  # fmt: skip
    locked: set[int] = set()
    while True:
        found = set((await connection.execute(query)).scalars())
        if found <= locked or connection.dialect.name == "sqlite":  # no row locks there
            return found
        locked |= found


async def _stored_assets(connection: Any, node_id: int) -> tuple[list[tuple[str, bool]], list[int]]:
    """Writable assets ``(data_uri, is_directory)`` and all asset ids of the subtree."""
    association = data_source_asset_association
    query = (
        select(assets.c.id, assets.c.data_uri, assets.c.is_directory, data_sources.c.management)
        .select_from(
            nodes.join(data_sources, data_sources.c.node_id == nodes.c.id)
            .join(association, association.c.data_source_id == data_sources.c.id)
            .join(assets, assets.c.id == association.c.asset_id)
        )
        .where(subtree_condition(node_id))
    )
    rows = (await connection.execute(query)).all()
    writable = [(r.data_uri, bool(r.is_directory)) for r in rows if r.management == "writable"]
    return writable, [r.id for r in rows]


async def _delete_orphan_assets(connection: Any, asset_ids: list[int]) -> None:
    if not asset_ids:
        return
    still_used = select(data_source_asset_association.c.asset_id)
    await connection.execute(
        delete(assets).where(assets.c.id.in_(asset_ids), assets.c.id.not_in(still_used))
    )


# --- writable leaves -----------------------------------------------------------------------------


def _validated_array(data: Any, dtype: numpy.dtype, shape: tuple[int, ...]) -> numpy.ndarray:
    """``data`` as ``dtype`` and ``shape``, refusing unsafe casts and other shapes."""
    data = numpy.asarray(data)
    if data.dtype != dtype:
        if not numpy.can_cast(data.dtype, dtype, "safe"):
            raise InvalidDtype(data.dtype.str, f"cannot be cast safely to {dtype.str}")
        data = data.astype(dtype)
    if data.shape != tuple(shape):
        raise BadRequest(f"Expected data of shape {list(shape)}, got {list(data.shape)}")
    return data


# A chunk up to this size is checked and stored on the event loop: creating the file costs
# about as much as the hop to a worker thread and back (measured: +28% small PUTs per second).
INLINE_CHUNK_WRITE_BYTES = 64 * 1024


class Unchanged(enum.Enum):
    """A part not given to an update (where None is a value)."""

    UNCHANGED = "unchanged"


class _LockedWrites:
    """Writes run one at a time per node, in every process: they read what they change (a
    partition appended to, the rest of a chunk), and a bucket has no lock of its own."""

    async def _locked(self, function: Any, *args: Any) -> None:
        async with self.exclusive():
            # Deleted (or replaced) while this write waited: 404, and nothing written where
            # its storage was.
            await self.stored_record()
            await run_sync(function, *args)
        await self._touch()


class WritableCatalogArrayAdapter(_LockedWrites, CatalogNode, ZarrArrayAdapter):
    """An array the server stores as zarr v3 (in a directory or a bucket prefix); chunks are
    passed through to zarr clients.

    The stored array is opened when first needed, not when the node is looked up: a listing
    needs only the catalog's row, and opening costs one request per array in a bucket (and,
    while the bucket is down, metadata stays readable). Async hooks open it on a worker
    thread; sync ones (reads) already run on one.
    """

    def __init__(
        self, storage: NodeStorage, structure: ArrayStructure, *, metadata: Any = None
    ) -> None:
        ArrayAdapterBase.__init__(self, structure, metadata=metadata)
        self._storage = storage
        self._opened: Any = None
        self._codecs: Any = Unchanged.UNCHANGED  # passable_codecs of the opened array

    @property
    def _array(self) -> Any:  # type: ignore[override]
        if self._opened is None:
            self._opened = _open_stored(self._storage)
        return self._opened

    @_array.setter
    def _array(self, value: Any) -> None:
        self._opened = value
        self._codecs = Unchanged.UNCHANGED

    @property
    def _passthrough(self) -> Any:  # type: ignore[override]
        if self._codecs is Unchanged.UNCHANGED:
            self._codecs = passable_codecs(self._array.metadata)
        return self._codecs

    async def _open(self) -> None:
        if self._opened is None:
            await run_sync(lambda: self._array)

    async def to_zarr_meta(self, options: Any = None) -> Any:
        await self._open()
        return await super().to_zarr_meta(options)

    async def to_zarr_chunk(self, coords: Sequence[int], meta: Any) -> Any:
        await self._open()
        return await super().to_zarr_chunk(coords, meta)

    @property
    def node_storage(self) -> NodeStorage:
        # Fixed for the node's life (its place is named once, by a random id).
        return self._storage

    async def write(self, data: Any) -> None:
        structure = self.structure()
        data = _validated_array(data, structure.data_type.to_numpy_dtype(), structure.shape)
        region = tuple(slice(0, n) for n in structure.shape)
        await self._locked(write_region, self.node_storage, region, data)

    async def write_block(self, data: Any, block: Sequence[int]) -> None:
        structure = self.structure()
        region = NDBlock(*block).slices(structure.chunks)  # raises InvalidSlice off the grid
        shape = tuple(r.stop - r.start for r in region)
        data = _validated_array(data, structure.data_type.to_numpy_dtype(), shape)
        await self._locked(write_region, self.node_storage, region, data)

    async def patch(self, data: Any, offset: Sequence[int], extend: bool) -> ArrayStructure:
        """Write ``data`` at ``offset``; with ``extend``, grow the array (the stored zarr array
        and the catalog's structure, in one step) so that it holds it."""
        data = numpy.asarray(data)
        source = self._record.data_sources[0]
        # Other processes may patch the array too: the structure is read again under their
        # common lock, in the transaction that changes it.
        async with self.exclusive():
            await self.stored_record()  # deleted since it was looked up: 404
            # The catalog's row changes in the transaction that the file replacement runs in:
            # if the files cannot be written, the structure stays as it was.
            async with self._catalog.connect(write=True) as connection:
                structure = await stored_structure(connection, source.id)
                region, shape = patched_region(structure.shape, offset, data.shape, extend)
                data = _validated_array(data, structure.data_type.to_numpy_dtype(), data.shape)
                grown = structure
                if shape != structure.shape:
                    grown = _resized(structure, shape)
                    await replace_structure(connection, source.id, grown)
                await connection.execute(
                    update(nodes).where(nodes.c.id == self._record.id).values(time_updated=utcnow())
                )
                unfinished = await _storing(patch_region, self.node_storage, region, data, shape)
            if grown != self._structure:
                self._record.data_sources[0] = replace(source, structure=grown)
                self._structure = grown
                self._array = await run_sync(open_readonly, self.node_storage)
        if unfinished is not None:
            raise unfinished
        return grown

    # --- writing through /zarr: the stored chunks and documents are the client's ---

    def _chunk_key(self, coords: Sequence[int]) -> str:
        return self._array.metadata.encode_chunk_key(tuple(coords))

    async def write_zarr_chunk(
        self, coords: Sequence[int], payload: bytes, condition: WriteCondition
    ) -> tuple[str, bool]:
        """Store ``payload`` as chunk ``coords`` as it is (it must decode to a whole chunk);
        returns its ETag and whether the chunk is new."""
        meta = await self.to_zarr_meta()
        meta.chunk_region(coords)  # refuses coordinates off the grid (checked again below)
        storage = self.node_storage
        write = _ChunkWrite(meta, storage, self._array.metadata.zarr_format, coords)
        arguments = (write, self._chunk_key(coords), payload, condition)
        try:
            if storage.inline_writes and meta.chunk_bytes <= INLINE_CHUNK_WRITE_BYTES:
                with contextlib.suppress(BlockingIOError):  # lock held elsewhere: in a thread
                    return _store_checked_chunk(*arguments, blocking=False)
            async with self._storage_exclusive():
                return await run_sync(_store_checked_chunk, *arguments)
        except FileNotFoundError:
            raise ZarrKeyNotFound("The array was deleted during this write") from None

    async def delete_zarr_chunk(self, coords: Sequence[int], condition: WriteCondition) -> bool:
        """Remove chunk ``coords`` (readers then get the fill value); whether it was stored."""
        (await self.to_zarr_meta()).chunk_region(coords)
        try:
            async with self._storage_exclusive():
                return await run_sync(
                    self.node_storage.remove, self._chunk_key(coords), condition.check
                )
        except FileNotFoundError:
            raise ZarrKeyNotFound("The array was deleted") from None

    @contextlib.asynccontextmanager
    async def _storage_exclusive(self) -> AsyncIterator[None]:
        """What a chunk write holds besides the storage's own lock: the node's lock in every
        process, where the storage's lock does not span them (a bucket), so that a chunk
        never lands beside a resize of another process, nor before a write it left
        unfinished is completed. (In the order every writer takes them: this process's lock
        of the node first.)"""
        if self.node_storage.locks_across_processes:
            yield
            return
        async with self.exclusive():
            yield

    def stored_zarr_chunks(self) -> list[tuple[tuple[int, ...], int, float, str]]:
        """``(coords, size, modification time, ETag)`` of every stored chunk (blocking: a
        walk of the node's directory, or a listing of its prefix)."""
        return list(stored_chunk_files(self.node_storage, self._array.metadata))

    async def update_zarr_array(
        self,
        *,
        shape: tuple[int, ...] | None = None,
        dims: tuple[str, ...] | None | Unchanged = Unchanged.UNCHANGED,
        attributes: dict[str, Any] | None = None,
    ) -> None:
        """Resize (stored array and catalog structure), rename the dimensions and replace the
        attributes (keeping the old ones as a revision), in one transaction: all or none."""
        async with self.exclusive():
            structure = self.structure()
            changed = structure
            if shape is not None and tuple(shape) != structure.shape:
                changed = _resized(changed, tuple(shape))
            if dims is not Unchanged.UNCHANGED and dims != structure.dims:
                changed = replace(changed, dims=dims)
            if attributes is not None and attributes == dict(self.metadata()):
                attributes = None
            if changed == structure and attributes is None:
                return
            source = self._record.data_sources[0]
            now = utcnow()
            revision = None
            async with self._catalog.connect(write=True) as connection:
                values: dict[str, Any] = {"time_updated": now}
                if attributes is not None:
                    revision = await self._save_revision(connection, drop_revision=False)
                    values["metadata"] = attributes
                await connection.execute(
                    update(nodes).where(nodes.c.id == self._record.id).values(values)
                )
                if changed != structure:
                    await replace_structure(connection, source.id, changed)
                unfinished = None
                if changed.shape != structure.shape:
                    # Inside the transaction: if the files cannot be changed, nothing is.
                    unfinished = await _storing(resize_stored, self.node_storage, changed.shape)
            self._record.time_updated = now
            if attributes is not None:
                self._record.metadata = self._metadata = attributes
            if changed != structure:
                self._record.data_sources[0] = replace(source, structure=changed)
                self._structure = changed
                self._array = await run_sync(open_readonly, self.node_storage)
        if attributes is not None:  # as a metadata update through /api/v1 is announced
            await self._announce_metadata_updated(revision)
        if unfinished is not None:
            raise unfinished


async def _storing(function: Any, *args: Any) -> UnfinishedWrite | None:
    """Run a storage write that the catalog's transaction records: raise if nothing of it was
    stored (the transaction rolls back), return the error if it was stored whole but is not
    visible yet (the transaction commits: the storage finishes it later)."""
    try:
        await run_sync(function, *args)
    except UnfinishedWrite as err:
        return err
    return None


@dataclass(frozen=True)
class _ChunkWrite:
    """What a chunk write checks: the array as the request saw it, and where it is stored."""

    meta: Any  # ZarrArrayMeta
    storage: NodeStorage
    zarr_format: int
    coords: Sequence[int]

    def check_grid(self) -> None:
        """Refuse coordinates off the grid of the array as stored now (under the directory's
        lock: a resize by another request or process is either before or after)."""
        document = "zarr.json" if self.zarr_format == 3 else ".zarray"
        stored = self.storage.get(document)
        if stored is None:
            raise FileNotFoundError(document)  # the array was deleted
        shape = json.loads(stored.data)["shape"]
        replace(self.meta, shape=tuple(shape)).chunk_region(self.coords)


def _store_checked_chunk(
    write: _ChunkWrite, key: str, payload: bytes, condition: WriteCondition,
    blocking: bool = True,
) -> tuple[str, bool]:  # fmt: skip
    meta = write.meta
    try:
        meta.decode_chunk(payload)
    except Exception as err:  # noqa: BLE001 - the codecs raise many kinds on bad input
        raise InvalidZarrDocument(
            f"The chunk does not decode to {list(meta.chunk_shape)} {meta.dtype} with the "
            f"array's codecs: {err or type(err).__name__}"
        ) from None

    def check(current: str | None) -> None:
        write.check_grid()
        condition.check(current)

    return write.storage.put(key, payload, check, blocking)


def _resized(structure: ArrayStructure, shape: tuple[int, ...]) -> ArrayStructure:
    """``structure`` given ``shape``, its chunks the stored regular grid over it; a grid or a
    size beyond what the server stores is refused (400) before anything is built for it."""
    chunk_shape = regular_chunk_shape(structure.chunks)
    check_chunk_counts(grid_counts(shape, chunk_shape))
    return replace(structure, shape=shape, chunks=regular_chunks(shape, chunk_shape))


class _TableWrites(_LockedWrites):
    """Writes of a table stored as one file per partition (see ParquetTableAdapter)."""

    async def write(self, data: Any) -> None:
        await self._locked(self.write_all, data)

    async def write_partition(self, data: Any, partition: int) -> None:
        self._check_partition(partition)
        await self._locked(self.write_frames, {partition: data})

    async def append_partition(self, data: Any, partition: int) -> None:
        self._check_partition(partition)
        await self._locked(self.append_frame, data, partition)


class WritableCatalogTableAdapter(_TableWrites, CatalogNode, ParquetTableAdapter):
    """A table the server stores as one Parquet file per partition."""


class WritableCatalogCSVTableAdapter(_TableWrites, CatalogNode, StoredCSVTableAdapter):
    """A table the server stores as one CSV file per partition (upstream's ``text/csv``)."""


class WritableCatalogArrowTableAdapter(_TableWrites, CatalogNode, ArrowAdapter):
    """A table the server stores as one Arrow IPC file per partition (upstream's
    ``application/vnd.apache.arrow.file``)."""


class WritableCatalogSparseAdapter(_LockedWrites, CatalogNode, ParquetSparseAdapter):
    """A sparse array the server stores as one Parquet file of COO entries per block."""

    async def write(self, coords: Any, data: Any) -> None:
        await self._locked(self.write_entries, coords, data)

    async def write_block(self, coords: Any, data: Any, block: Sequence[int]) -> None:
        NDBlock(*block).slices(self.structure().chunks)  # refuse a bad block before any I/O
        await self._locked(self.write_block_entries, coords, data, block)


class WritableCatalogAwkwardAdapter(_LockedWrites, CatalogNode, AwkwardBuffersAdapter):
    """An awkward array the server stores as one file per buffer (upstream's layout)."""

    async def write(self, buffers: Any) -> None:
        await self._locked(self.write_buffers, buffers)


class WritableCatalogRaggedAdapter(_LockedWrites, CatalogNode, RaggedSQLAdapter):
    """A ragged array the server stores in SQL, one row per chunk (upstream's layout)."""

    async def write(self, array: Any) -> None:
        await self._locked(self.write_whole, array)

    async def write_block(self, array: Any, block: Sequence[int]) -> None:
        await self._locked(self.write_chunk, array, block)

    async def patch(self, array: Any, offset: Sequence[int], extend: bool) -> Any:
        """Append rows as a new chunk; the chunk's row and the catalog's structure change
        together (the row is deleted again if the catalog cannot be updated)."""
        async with self.exclusive():
            source = self._record.data_sources[0]
            before = self.structure()
            grown = await run_sync(self.append_chunk, array, offset, extend)
            try:
                async with self._catalog.connect(write=True) as connection:
                    await replace_structure(connection, source.id, grown)
                    await connection.execute(
                        update(nodes).where(nodes.c.id == self._record.id)
                        .values(time_updated=utcnow())
                    )  # fmt: skip
            except BaseException:
                self._structure = before
                self.remove_chunk(len(before.chunks[0]))
                raise
            self._record.data_sources[0] = replace(source, structure=grown)
        return grown


def _open_stored(storage: NodeStorage) -> Any:
    try:
        return open_readonly(storage)
    except FileNotFoundError:  # zarr-python's "no array here" too
        raise DataUnavailable(f"The stored array at {storage.uri} is missing") from None


def _open_array(source: DataSource, record: NodeRecord) -> Any:
    storage = node_storage_for_uri(source.assets[0].data_uri)
    return WritableCatalogArrayAdapter(storage, source.structure, metadata=record.metadata)


def _table_opener(adapter_class: type) -> Any:
    """The opener of tables stored as one file per partition, by ``adapter_class``."""

    def open_table(source: DataSource, record: NodeRecord) -> Any:
        uris = [a.data_uri for a in sorted(source.assets, key=lambda a: a.num or 0)]
        return adapter_class(uris, source.structure, metadata=record.metadata)

    return open_table


def _open_sparse(source: DataSource, record: NodeRecord) -> Any:
    asset = source.assets[0]
    directory = blocks_directory(asset.data_uri, asset.is_directory)
    return WritableCatalogSparseAdapter(
        uri_from_path(directory), source.structure, metadata=record.metadata
    )


def _open_sql_table(source: DataSource, record: NodeRecord) -> Any:
    from .sql_tables import open_sql_table  # (it imports this module)

    return open_sql_table(source, record)


def _open_awkward(source: DataSource, record: NodeRecord) -> Any:
    adapter = WritableCatalogAwkwardAdapter.from_uri(
        source.assets[0].data_uri, source.structure, metadata=record.metadata
    )
    return adapter


def _open_ragged(source: DataSource, record: NodeRecord) -> Any:
    return WritableCatalogRaggedAdapter.from_catalog(source, record, metadata=record.metadata)


WRITABLE_OPENERS = {
    ZARR_MIMETYPE: _open_array,
    AWKWARD_BUFFERS_MIMETYPE: _open_awkward,
    RAGGED_SQL_MIMETYPE: _open_ragged,
    "application/x-parquet": _table_opener(WritableCatalogTableAdapter),
    CSV_MIMETYPE: _table_opener(WritableCatalogCSVTableAdapter),
    APACHE_ARROW_FILE_MIME_TYPE: _table_opener(WritableCatalogArrowTableAdapter),
    "application/x-parquet;structure=sparse": _open_sparse,
    SQL_TABLE_MIMETYPE: _open_sql_table,
}


@cache
def node_class(cls: type) -> type:
    """``cls`` with :class:`CatalogNode` mixed in (for adapters of registered data)."""
    return type(cls.__name__, (CatalogNode, cls), {"__module__": cls.__module__})


# --- registered files that fail when read -------------------------------------------------------
#
# Files registered with the catalog may change, vanish or turn out corrupt after they were
# opened; what a reader then raises (OSError, ArrowInvalid, h5py's errors...) is a problem
# of the files, for the client to hear about (4xx naming it), not a server error. The adapter
# of a registered node, and every member looked up below it, answers so.

_READS = ("read", "read_block", "read_partition")
_ASYNC_READS = ("to_zarr_meta", "to_zarr_chunk", "count", "items_range", "keys_range",
                "zarr_member_keys")  # fmt: skip
_MEMBER_LOOKUPS = ("lookup_adapter", "zarr_member")


def _unreadable(adapter: Any, err: Exception) -> DataUnavailable:
    # Named by the registered node, whichever member of its files failed.
    where, mimetype = getattr(adapter, "_registered_as", (NodeAt(()), None))
    reason = why_unopenable(mimetype, err).replace("open", "read", 1)
    return naming(DataUnavailable, where, "/{path}: {reason}", reason=reason)


def _guard_read(original: Any) -> Any:
    @functools.wraps(original)
    def guarded(self: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return original(self, *args, **kwargs)
        except TiledError:
            raise
        except Exception as err:
            raise _unreadable(self, err) from None

    return guarded


def _guard_async_read(original: Any) -> Any:
    @functools.wraps(original)
    async def guarded(self: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return await original(self, *args, **kwargs)
        except TiledError:
            raise
        except Exception as err:
            raise _unreadable(self, err) from None

    return guarded


def _guard_member_lookup(original: Any) -> Any:
    @functools.wraps(original)
    async def guarded(self: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            member = await original(self, *args, **kwargs)
        except TiledError:
            raise
        except Exception as err:
            raise _unreadable(self, err) from None
        return guard_registered(member, self._registered_as)

    return guarded


_GUARDS = [
    *((name, _guard_read) for name in _READS),
    *((name, _guard_async_read) for name in _ASYNC_READS),
    *((name, _guard_member_lookup) for name in _MEMBER_LOOKUPS),
]


@cache
def guarded_class(cls: type) -> type:
    """``cls`` whose reads answer :class:`DataUnavailable` for failures of the files."""
    namespace: dict[str, Any] = {"__module__": cls.__module__, "_guards_files": True}
    for name, guard in _GUARDS:
        if callable(getattr(cls, name, None)):
            namespace[name] = guard(getattr(cls, name))
    return type(cls.__name__, (cls,), namespace)


@cache
def registered_node_class(cls: type) -> type:
    """The class a registered node's adapter of class ``cls`` is served as: guarded reads
    (:func:`guarded_class`) and the row's attributes (:func:`node_class`)."""
    guarded = cls if getattr(cls, "_guards_files", False) else guarded_class(cls)
    return guarded if issubclass(guarded, CatalogNode) else node_class(guarded)


_HEAP_TYPE = 1 << 9  # Py_TPFLAGS_HEAPTYPE: set on classes defined in Python


@cache
def _slot_members(cls: type) -> tuple[Any, ...] | None:
    """The slot descriptors of ``cls``'s instances; None when a base other than ``object`` is
    built into Python or an extension, whose instances keep state no attribute shows."""
    if any(base is not object and not base.__flags__ & _HEAP_TYPE for base in cls.__mro__):
        return None
    return tuple(
        member
        for base in cls.__mro__
        for member in vars(base).values()
        if isinstance(member, types.MemberDescriptorType)
    )


def rebuilt_as(cls: type, adapter: Any) -> Any | None:
    """``adapter`` as an instance of ``cls``, a subclass of its class made by the functions
    above: a new object holding the adapter's attributes (``adapter`` itself if it is one).

    The registry's factory (``from_uris``, ``from_catalog`` or any callable) decides the
    adapter's class, so the catalog's additions come as a subclass made once per class, and
    the adapter's state (its ``__dict__`` and slots) is carried over rather than the files
    opened again. None for objects whose state cannot be carried over (instances of built-in
    or extension types) and classes that cannot be instantiated without arguments.
    """
    if type(adapter) is cls:
        return adapter
    members = _slot_members(type(adapter))
    if members is None:
        return None
    try:
        rebuilt = cls.__new__(cls)
    except TypeError:
        return None
    rebuilt.__dict__.update(getattr(adapter, "__dict__", {}))
    for member in members:
        try:
            member.__set__(rebuilt, member.__get__(adapter, type(adapter)))
        except AttributeError:  # a slot never assigned
            continue
    return rebuilt


def guard_registered(adapter: Any, registered_as: tuple[NodeAt, str | None]) -> Any:
    """``adapter`` (read from registered files) answering 4xx when they fail to be read; an
    object that cannot be carried over to its guarded class is served as it is."""
    if getattr(type(adapter), "_guards_files", False) or not hasattr(adapter, "structure_family"):
        return adapter
    guarded = rebuilt_as(guarded_class(type(adapter)), adapter)
    if guarded is None:
        return adapter
    guarded._registered_as = registered_as
    return guarded


@dataclass(frozen=True)
class StoredStructure:
    """A structure kept as the JSON stored with it (for families this server does not parse)."""

    value: Any

    def to_json(self) -> Any:
        return self.value.to_json() if hasattr(self.value, "to_json") else self.value


def _stored_key_count(record: NodeRecord) -> int | None:
    """The number of members a registered container declared (upstream's ``{"keys": [...]}``)."""
    sources = record.data_sources
    structure = sources[0].structure if sources else None
    keys = structure.get("keys") if isinstance(structure, dict) else None
    return len(keys) if isinstance(keys, list) else None


class UnavailableNode(CatalogNode):
    """A node whose data this server cannot read: listed with its metadata, data refused.

    Catalogs written by upstream may hold families or media types this server has no adapter
    for, and registered files may have gone missing, become unreadable or corrupt since; such a
    node keeps its place in listings and searches, and every request for its data answers
    :class:`~tiled.errors.DataUnavailable` naming what is wrong.
    """

    def __init__(self, catalog: Catalog, record: NodeRecord, reason: str):
        self.structure_family = record.structure_family
        self.reason = reason
        self.bind(catalog, record)

    @property
    def specs(self) -> list[Any]:
        return self._specs

    def metadata(self) -> dict[str, Any]:
        return self._metadata

    def structure(self) -> Any:
        sources = self._record.data_sources
        stored = sources[0].structure if sources else None
        # Parsed (array, table, sparse) as data routes read it before reading; else as stored.
        return stored if hasattr(stored, "to_json") else StoredStructure(stored)

    def unavailable(self) -> DataUnavailable:
        return naming(DataUnavailable, self._named, "/{path}: {reason}", reason=self.reason)

    def read(self, *args: Any, **kwargs: Any) -> Any:
        raise self.unavailable()

    read_block = read_partition = zarr_dtype = zarr_layout = read

    async def to_zarr_meta(self, *args: Any, **kwargs: Any) -> Any:
        raise self.unavailable()

    async def to_zarr_chunk(self, *args: Any, **kwargs: Any) -> Any:
        raise self.unavailable()


class UnavailableContainer(UnavailableNode):
    """A registered container (an HDF5 file, a zarr group) that cannot be opened: its parent
    lists it with the member count it was registered with; its members answer 4xx."""

    async def count(self) -> int:
        return _stored_key_count(self._record) or 0

    async def items_range(self, *args: Any, **kwargs: Any) -> list[tuple[str, Any]]:
        raise self.unavailable()

    async def keys_range(self, *args: Any, **kwargs: Any) -> list[str]:
        raise self.unavailable()

    zarr_member_keys = keys_range

    async def zarr_member(self, key: str) -> Any:
        raise self.unavailable()

    async def lookup_adapter(self, segments: Sequence[str]) -> Any:
        if not segments:
            return self
        raise self.unavailable()


UNAVAILABLE_BY_FAMILY: dict[str, type[UnavailableNode]] = {"container": UnavailableContainer}


def unavailable_node(catalog: Catalog, record: NodeRecord, reason: str) -> UnavailableNode:
    cls = UNAVAILABLE_BY_FAMILY.get(record.structure_family.value, UnavailableNode)
    return cls(catalog, record, reason)


def _reason_unreadable(catalog: Catalog, record: NodeRecord) -> str | None:
    """Why this server cannot open the node's data, or None if it can try."""
    if record.structure_family.value not in SERVED_FAMILIES:
        return f"this server does not serve nodes of the {record.structure_family.value!r} family"
    if not record.data_sources:
        return "the node has no data source"
    source = record.data_sources[0]
    if source.management == Management.writable:
        if source.mimetype not in WRITABLE_OPENERS:
            return f"this server has no reader for stored data of type {source.mimetype!r}"
        if not source.assets:  # e.g. its asset was deleted (DELETE /asset)
            return "its stored data were deleted (the data source has no assets)"
        return None
    if source.mimetype not in catalog.adapters_by_mimetype:
        return (
            f"no adapter is configured for registered data of type {source.mimetype!r} "
            "(adapters_by_mimetype)"
        )
    outside = outside_readable_storage(source, catalog.readable_roots)
    if outside is not None:
        return f"refusing to read it: {outside}"
    return None


SERVED_FAMILIES = frozenset({"array", "sparse", "table", "container", "awkward", "ragged"})


def is_registered(record: NodeRecord) -> bool:
    """Whether the node's data are files registered with the catalog (not stored by it)."""
    return bool(record.data_sources) and record.data_sources[0].management != Management.writable


def open_node(catalog: Catalog, record: NodeRecord) -> Any:
    """The adapter of a node with data (blocking: opens storage). A node whose data cannot be
    opened (no adapter, files missing, unreadable or outside the readable storage) is an
    :class:`UnavailableNode` saying why, so that listings of its parent keep working."""
    reason = _reason_unreadable(catalog, record)
    if reason is not None:
        return unavailable_node(catalog, record, reason)
    source = record.data_sources[0]
    if source.management == Management.writable:
        try:
            adapter = WRITABLE_OPENERS[source.mimetype](source, record)
        except DataUnavailable as err:  # e.g. a SQL storage database not configured here
            return unavailable_node(catalog, record, str(err))
        return adapter.bind(catalog, record)
    node = NodeView(
        record.metadata, list(record.specs), record.structure_family, record.key, record.id
    )
    try:
        adapter = open_external(catalog.adapters_by_mimetype, source, node)
    except Exception as err:
        return unavailable_node(catalog, record, why_unopenable(source.mimetype, err))
    if adapter.structure_family != record.structure_family:
        return unavailable_node(
            catalog, record,
            f"its {source.mimetype} data now hold a {adapter.structure_family.value}, "
            f"not a {record.structure_family.value}",
        )  # fmt: skip
    served = rebuilt_as(registered_node_class(type(adapter)), adapter)
    if served is None:
        return unavailable_node(
            catalog, record,
            f"its adapter ({type(adapter).__qualname__}) keeps state in a built-in or extension "
            "type, which the catalog cannot carry over to a node",
        )  # fmt: skip
    served._registered_as = (catalog.node_at(record.segments), source.mimetype)
    return served.bind(catalog, record)


open_leaf = open_node  # the name before registered containers were opened too


class ListedNode(CatalogNode):
    """A registered node as a listing shows it: its row and stored structure, files unopened.

    Listing a directory of registered files must not open every file. The attributes a
    listing reads come from the row; anything else asked of this node (its data) opens the
    files then, once, and is answered by the opened adapter.
    """

    # Probed by listings and access views: a listed node offers no member views of its own.
    search = filter = sort = get_distinct = zarr_member_keys = None
    inlined_contents_enabled = sorting = None

    def __init__(self, catalog: Catalog, record: NodeRecord):
        self.structure_family = record.structure_family
        self._opened_adapter: Any = None
        self.bind(catalog, record)

    @property
    def specs(self) -> list[Any]:
        return self._specs

    def metadata(self) -> dict[str, Any]:
        return self._metadata

    def structure(self) -> Any:
        stored = self._record.data_sources[0].structure
        if stored is None or self.structure_family.value == "container":
            return self.opened().structure()
        # Parsed for the families this server reads; other families' as they were stored.
        return stored if hasattr(stored, "to_json") else StoredStructure(stored)

    async def count(self) -> int:
        """Members of a registered container (as registered; else counted in the files)."""
        stored = _stored_key_count(self._record)
        if stored is not None:
            return stored
        return await (await run_sync(self.opened)).count()

    def opened(self) -> Any:
        """The adapter with the files open (blocking)."""
        if self._opened_adapter is None:
            self._opened_adapter = open_node(self._catalog, self._record)
        return self._opened_adapter

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        return getattr(self.opened(), name)


__all__ = [
    "CatalogNode",
    "ListedNode",
    "UnavailableContainer",
    "UnavailableNode",
    "WritableCatalogArrayAdapter",
    "WritableCatalogSparseAdapter",
    "WritableCatalogTableAdapter",
    "open_leaf",
    "open_node",
]
