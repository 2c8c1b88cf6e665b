"""Creating nodes: checked keys, data sources prepared, rows and storage all or nothing.

The node and data-source rows are inserted in one transaction; storage for writable data is
created inside that transaction, before the commit. If anything fails (a duplicate key, a
storage error, the commit itself) the transaction is rolled back and the directories (or
bucket prefixes) created for it are removed, so neither a row nor a file remains.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import unicodedata
import uuid
from collections.abc import Mapping, Sequence
from contextlib import AsyncExitStack
from dataclasses import replace
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.exc import IntegrityError

from ..adapters.node_storage import NodeStorage
from ..errors import (
    BadRequest,
    Conflict,
    InvalidStructure,
    NoSuchEntry,
    TiledError,
    Unsupported,
    UnsupportedUploadType,
    naming,
)
from ..structures.core import StructureFamily, normalize_specs
from ..structures.data_source import Asset, DataSource, Management
from ..structures.families import structure_from_json
from ..utils import run_sync
from ..zarr_format.model import check_chunk_counts
from .access import set_tags_of_new_nodes
from .core import Catalog, NodeRecord
from .errors import InvalidKey
from .orm import assets, data_source_asset_association, data_sources, nodes, structures, utcnow
from .registered import NodeView, check_readable_storage, checked_registration
from .storage import (
    check_writable_source,
    create_storage,
    destroy_storages,
    is_new_sql_source,
    new_node_storage,
)

# Names a zarr client reads as documents of the parent, so a child by that name is unreachable.
RESERVED_KEYS = frozenset({".", "..", "zarr.json", ".zarray", ".zattrs", ".zgroup", ".zmetadata"})
MAX_KEY_LENGTH = 255
# Families whose structure lists every chunk's size (bounded, where the server stores the data,
# as the /zarr path bounds them).
GRIDDED_FAMILIES = frozenset({StructureFamily.array, StructureFamily.sparse})


def check_key(key: Any) -> str:
    """``key`` if it can name a node in a path and a URL; else :class:`InvalidKey`."""
    if not isinstance(key, str) or not key:
        raise InvalidKey("A key must be a non-empty string")
    if "/" in key:
        raise InvalidKey(f"A key may not contain '/': {key!r}")
    if key in RESERVED_KEYS:
        raise InvalidKey(f"The key {key!r} is reserved")
    if any(unicodedata.category(char) in ("Cc", "Cs") for char in key):
        raise InvalidKey(f"A key may not contain control characters: {key!r}")
    if len(key) > MAX_KEY_LENGTH:
        raise InvalidKey(f"A key may have at most {MAX_KEY_LENGTH} characters")
    return key


def new_key() -> str:
    return uuid.uuid4().hex


def as_data_source(value: Any, family: StructureFamily) -> DataSource:
    """A :class:`DataSource` from one, or from its JSON form; structures parsed by family, their
    chunk grids within the limit of every stored array."""
    if isinstance(value, dict):
        known = {k: value[k] for k in ("id", "mimetype", "parameters", "properties") if k in value}
        value = DataSource(
            structure_family=StructureFamily(value.get("structure_family", family)),
            structure=value.get("structure"),
            assets=[Asset.from_json(a) for a in value.get("assets") or []],
            management=Management(value.get("management", "writable")),
            **known,
        )
    if not isinstance(value, DataSource):
        raise BadRequest(f"Not a data source: {value!r}")
    if StructureFamily(value.structure_family) != family:
        raise BadRequest(
            f"A {family.value} node needs a {family.value} data source, not {value.structure_family}"
        )
    if isinstance(value.structure, dict):
        value = replace(value, structure=structure_from_json(family.value, value.structure))
    if (
        family in GRIDDED_FAMILIES
        and value.structure is not None
        and value.management == Management.writable
    ):
        # The grid of data the server stores; registered files keep the chunks they have.
        check_chunk_counts([len(sizes) for sizes in value.structure.chunks])
    return value


def _check_sources(family: StructureFamily, sources: list[DataSource], register: bool) -> None:
    if family == StructureFamily.container and not sources:
        return
    if family == StructureFamily.container and not (register and all(s.assets for s in sources)):
        raise BadRequest(
            "A container has no data sources, unless it is registered from files "
            "(an HDF5 file, a zarr group: register=True, with assets)"
        )
    if len(sources) != 1:
        raise BadRequest(f"A {family.value} node needs exactly one data source, got {len(sources)}")
    if sources[0].assets and not register:
        raise BadRequest("Data sources with assets must be registered (register=True)")
    for source in sources:
        if source.management == Management.external and not source.assets:
            # Else it would be given new storage and be writable: not what was asked for.
            # 415 as upstream's answer to one (its mimetype is none it can read).
            raise UnsupportedUploadType(
                "An external data source (management 'external') is read from its files, "
                "given as assets, and this one has none: register the files as assets, or "
                "leave out management to have the server store the data"
            )
        places = [(asset.parameter, asset.num) for asset in source.assets]
        single = {parameter for parameter, num in places if num is None}
        numbered = {parameter for parameter, num in places if num is not None}
        if len(set(places)) != len(places) or single & numbered:
            raise BadRequest(
                "Each asset parameter takes one asset (num null) or a numbered sequence, once"
            )


def _registered(
    catalog: Catalog, source: DataSource, record: NodeRecord, files_read: bool = False
) -> DataSource:
    """An external data source checked by opening its files (inside the readable storage,
    structure as declared); its structure read from them if not given. With ``files_read``
    (an in-process caller that has just read the structure from the files with the catalog's
    adapters) the files are only checked to lie inside the readable storage."""
    if files_read and source.structure is not None:
        if source.mimetype not in catalog.adapters_by_mimetype:
            raise BadRequest(f"Cannot register data of type {source.mimetype!r}")
        check_readable_storage(source, catalog.readable_roots)
        checked = source
    else:
        node = NodeView(record.metadata, list(record.specs), record.structure_family, record.key)
        checked = checked_registration(
            catalog.adapters_by_mimetype, source, node, catalog.readable_roots
        )
    management = (
        Management.external if source.management == Management.writable else source.management
    )
    return replace(checked, management=management)


def _node_storage(catalog: Catalog, source: DataSource) -> NodeStorage | None:
    """Where a writable data source will be stored; None for registered data."""
    if source.assets:
        return None
    if not catalog.writable_locations:
        raise Unsupported("This catalog has no writable storage")
    check_writable_source(source)
    return new_node_storage(catalog.writable_locations, source)


def structure_id(structure: Any) -> str:
    """The key of a structure in ``structures``: MD5 of its canonical (RFC 8785) JSON."""
    canonical = json.dumps(
        structure, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    )
    return hashlib.md5(canonical.encode("utf-8")).hexdigest()


def _new_record(
    parent_id: int,
    parent: str,
    key: str | None,
    structure_family: Any,
    metadata: Any,
    specs: Any,
    access_blob: Any,
) -> NodeRecord:
    try:
        family = StructureFamily(structure_family)
        checked_specs = normalize_specs(specs)
    except (ValueError, TypeError, KeyError) as err:
        raise BadRequest(str(err)) from None
    if metadata is not None and not isinstance(metadata, dict):
        raise BadRequest("metadata must be a JSON object")
    now = utcnow()
    return NodeRecord(
        id=0, parent_id=parent_id, parent=parent, key=new_key() if key is None else check_key(key),
        structure_family=family, metadata=dict(metadata or {}), specs=checked_specs,
        access_blob=access_blob, time_created=now, time_updated=now,
        child_count=0 if family == StructureFamily.container else None,
    )  # fmt: skip


def _prepared(
    parent_id: int,
    parent: str,
    key: str | None,
    structure_family: Any,
    metadata: Any,
    specs: Any,
    data_sources: Sequence[Any],
    access_blob: Any,
    register: bool,
) -> tuple[NodeRecord, list[DataSource]]:
    """The record of a new child and its parsed data sources, checked; not yet stored."""
    record = _new_record(parent_id, parent, key, structure_family, metadata, specs, access_blob)
    try:
        sources = [as_data_source(ds, record.structure_family) for ds in data_sources]
    except (InvalidStructure, ValueError, KeyError, TypeError) as err:
        raise BadRequest(f"Invalid data source: {err}") from None
    _check_sources(record.structure_family, sources, register)
    return record, sources


def _taken(catalog: Catalog, parent: str, key: str) -> Conflict:
    return naming(
        Conflict, catalog.node_at(parent), "There is already a node named {key!r} in /{path}",
        key=key,
    )  # fmt: skip


def _conflict(err: IntegrityError, record: NodeRecord, catalog: Catalog) -> Conflict | NoSuchEntry:
    text = str(err.orig)
    if "key_parent_unique_constraint" in text or "nodes.key, nodes.parent" in text:
        return _taken(catalog, record.parent, record.key)
    if 'on table "nodes" violates foreign key constraint' in text:
        # PostgreSQL: the parent was deleted (by another request) after it was looked up and
        # before its key-share lock (SQLite: _check_parent, under the database's write lock).
        return NoSuchEntry(catalog.node_at(record.parent))
    return Conflict(f"The node's data sources conflict: {text.splitlines()[0]}")


async def create_child(
    catalog: Catalog,
    parent_id: int,
    parent: str,
    *,
    key: str | None,
    structure_family: Any,
    metadata: dict[str, Any] | None,
    specs: Sequence[Any] | None,
    data_sources: Sequence[Any],
    access_blob: dict[str, Any] | None,
    register: bool,
    zarr_documents: Mapping[str, bytes] | None = None,
) -> NodeRecord:
    """Insert a child of ``parent`` and create its storage; return its record.

    ``zarr_documents`` (an array's): the zarr metadata its storage starts from, as a client
    wrote it through /zarr, instead of the server's own choice of chunks and codecs."""
    record, sources = _prepared(
        parent_id, parent, key, structure_family, metadata, specs, data_sources, access_blob,
        register,
    )  # fmt: skip
    # Registered files are opened and checked before the write transaction: reading them may
    # take a while, and a SQLite catalog admits one writer at a time.
    sources = [
        await run_sync(_registered, catalog, source, record) if source.assets else source
        for source in sources
    ]
    created: list[NodeStorage] = []
    try:
        async with catalog.connect(write=True) as connection, AsyncExitStack() as sql_tables:
            described = []
            for source in sources:
                if is_new_sql_source(source):
                    from .sql_tables import new_sql_table  # (it imports .nodes, which imports us)

                    # Rows in SQL storage (appendable tables, ragged arrays): its transaction
                    # commits once the rows below are in.
                    table = new_sql_table(catalog, source)
                    described.append(await sql_tables.enter_async_context(table))
                    continue
                storage = _node_storage(catalog, source)
                if storage is not None:  # writable; a registered one was checked above
                    created.append(storage)  # known before anything is created in it
                    source = await run_sync(create_storage, storage, source, zarr_documents)
                described.append(source)
            await _insert_many(connection, catalog, [(record, described)])
    except BaseException as err:
        if created:
            # On a thread (a bucket's deletes are requests over the network), shielded: a
            # cancellation of this request must not leave storage behind.
            await asyncio.shield(asyncio.ensure_future(run_sync(destroy_storages, created)))
        if isinstance(err, IntegrityError):
            raise _conflict(err, record, catalog) from None
        raise
    return record


async def register_children(
    catalog: Catalog,
    parent_id: int,
    parent: str,
    children: Sequence[dict[str, Any]],
    *,
    files_read: bool = False,
) -> list[NodeRecord | TiledError]:
    """Register many children of ``parent`` (each a dict of :func:`create_child`'s keyword
    arguments, registered data or containers only) in one transaction.

    The answer holds, per child in order, its record or the error that refused it (a bad
    node, a key already taken); the others are stored all the same. A directory of files
    registered this way costs a few statements in all instead of several per file, which
    under SQLite's single writer is what bounds the speed of indexing.
    """
    results: list[NodeRecord | TiledError] = []
    prepared: list[tuple[int, NodeRecord, list[DataSource]]] = []

    def check_all() -> None:
        for position, child in enumerate(children):
            try:
                record, sources = _prepared(
                    parent_id, parent, child.get("key"), child.get("structure_family"),
                    child.get("metadata"), child.get("specs"), child.get("data_sources") or (),
                    child.get("access_blob"), True,
                )  # fmt: skip
                if any(not source.assets for source in sources):
                    raise BadRequest("Only registered data can be created in bulk")
                sources = [_registered(catalog, s, record, files_read) for s in sources]
            except TiledError as err:
                results.append(err)
                continue
            results.append(record)
            prepared.append((position, record, sources))

    await run_sync(check_all)
    if not prepared:
        return results
    async with catalog.connect(write=True) as connection:
        taken = set(
            (
                await connection.execute(
                    select(nodes.c.key).where(
                        nodes.c.parent == parent_id,
                        nodes.c.key.in_([record.key for _, record, _ in prepared]),
                    )
                )
            ).scalars()
        )
        fresh: dict[str, tuple[int, NodeRecord, list[DataSource]]] = {}
        for position, record, sources in prepared:
            if record.key in taken or record.key in fresh:
                results[position] = _taken(catalog, parent, record.key)
            else:
                fresh[record.key] = (position, record, sources)
        if fresh:
            await _insert_many(connection, catalog, [(r, s) for _, r, s in fresh.values()])
    return results


async def _check_parent(connection: Any, catalog: Catalog, record: NodeRecord) -> None:
    """Refuse (404) children of a parent deleted since it was looked up, and, while they are
    inserted, keep it from being deleted (PostgreSQL: a key-share lock on its row; a SQLite writer
    holds the whole database). Its key is compared too: SQLite gives the id of a deleted row
    to the next row inserted, perhaps another node, or the child itself."""
    query = select(nodes.c.key).where(nodes.c.id == record.parent_id)
    locked = query.with_for_update(read=True, key_share=True)  # a metadata update may go on
    key = (await connection.execute(locked)).scalar_one_or_none()
    if key is None or key != record.parent.rpartition("/")[2]:
        raise NoSuchEntry(catalog.node_at(record.parent))


async def _insert_many(
    connection: Any, catalog: Catalog, children: list[tuple[NodeRecord, list[DataSource]]]
) -> None:
    """Insert new nodes with their data sources (storage already made): a few statements
    in all, however many nodes.

    Rows are inserted with one ``executemany`` per table and their ids read back by natural
    key afterwards (a node by its parent and key, a data source by its node, in id order),
    since RETURNING in insertion order would cost a statement per row on SQLite.
    """
    records = [record for record, _ in children]
    await _check_parent(connection, catalog, records[0])
    await connection.execute(
        nodes.insert(),
        [
            {
                "parent": r.parent_id,
                "key": r.key,
                "structure_family": r.structure_family.value,
                "metadata": r.metadata,
                "specs": [s.to_json() for s in r.specs],
                "time_created": r.time_created,
                "time_updated": r.time_updated,
            }
            for r in records
        ],
    )
    parent_id = records[0].parent_id
    ids = await _select_in(
        connection, select(nodes.c.key, nodes.c.id).where(nodes.c.parent == parent_id),
        nodes.c.key, [r.key for r in records],
    )  # fmt: skip
    for record in records:
        record.id = ids[record.key]
    await set_tags_of_new_nodes(connection, [(r.id, r.access_blob) for r in records])
    pairs = [(record, source) for record, sources in children for source in sources]
    if not pairs:
        return
    structure_rows: dict[str, Any] = {}
    structure_ids = []
    for _, source in pairs:
        structure = (
            source.structure.to_json() if hasattr(source.structure, "to_json") else source.structure
        )
        key = None if structure is None else structure_id(structure)
        if key is not None:
            structure_rows[key] = structure
        structure_ids.append(key)
    await store_structures(connection, structure_rows)
    await connection.execute(
        data_sources.insert(),
        [
            {
                "node_id": record.id,
                "structure_family": StructureFamily(source.structure_family).value,
                "structure_id": structure_key,
                "mimetype": source.mimetype,
                "parameters": source.parameters,
                "properties": source.properties,
                "management": Management(source.management).value,
            }
            for (record, source), structure_key in zip(pairs, structure_ids, strict=True)
        ],
    )
    source_ids: dict[int, list[int]] = {}
    for start in range(0, len(records), IN_LIST):
        found = await connection.execute(
            select(data_sources.c.node_id, data_sources.c.id)
            .where(data_sources.c.node_id.in_([r.id for r in records[start : start + IN_LIST]]))
            .order_by(data_sources.c.id)
        )
        for node_id, source_id in found:
            source_ids.setdefault(node_id, []).append(source_id)
    asset_ids = await _asset_ids(
        connection, [asset for _, source in pairs for asset in source.assets]
    )
    associations = []
    for record, sources in children:
        for source, source_id in zip(sources, source_ids[record.id], strict=True):
            stored = [replace(asset, id=asset_ids[asset.data_uri]) for asset in source.assets]
            associations += [
                {"data_source_id": source_id, "asset_id": asset.id, "parameter": asset.parameter,
                 "num": asset.num}
                for asset in stored
            ]  # fmt: skip
            record.data_sources.append(replace(source, id=source_id, assets=stored))
    if associations:
        await connection.execute(data_source_asset_association.insert(), associations)


async def store_structures(connection: Any, rows: dict[str, Any]) -> None:
    """Store structures ``{structure id: JSON}`` that are not stored yet (rows are shared by
    every data source with that structure)."""
    if not rows:
        return
    insert = postgresql_insert if connection.dialect.name == "postgresql" else sqlite_insert
    await connection.execute(
        insert(structures).on_conflict_do_nothing(),
        [{"id": key, "structure": value} for key, value in rows.items()],
    )


async def replace_structure(connection: Any, data_source_id: int, structure: Any) -> None:
    """Point data source ``data_source_id`` at ``structure`` (an array that grew)."""
    value = structure.to_json() if hasattr(structure, "to_json") else structure
    key = structure_id(value)
    await store_structures(connection, {key: value})
    await connection.execute(
        update(data_sources).where(data_sources.c.id == data_source_id).values(structure_id=key)
    )


async def stored_structure(connection: Any, data_source_id: int) -> Any:
    """The structure data source ``data_source_id`` has in the database now."""
    query = (
        select(data_sources.c.structure_family, structures.c.structure)
        .join(structures, structures.c.id == data_sources.c.structure_id)
        .where(data_sources.c.id == data_source_id)
    )
    family, value = (await connection.execute(query)).one()
    return structure_from_json(family, value)


IN_LIST = 500  # values per IN (...) list: well below every database's parameter limit


async def _select_in(connection: Any, query: Any, column: Any, values: list[Any]) -> dict:
    """``{first column: second column}`` of ``query`` restricted to ``column IN values``."""
    found: dict = {}
    for start in range(0, len(values), IN_LIST):
        result = await connection.execute(query.where(column.in_(values[start : start + IN_LIST])))
        found.update(tuple(row) for row in result)
    return found


async def _asset_ids(connection: Any, wanted: list[Asset]) -> dict[str, int]:
    """The ids of the asset rows of ``wanted`` by URI, inserting those not stored yet."""
    uris = list(dict.fromkeys(asset.data_uri for asset in wanted))
    query = select(assets.c.data_uri, assets.c.id)
    ids = await _select_in(connection, query, assets.c.data_uri, uris)
    new = {asset.data_uri: asset for asset in wanted if asset.data_uri not in ids}
    if new:
        await connection.execute(
            assets.insert(),
            [
                {"data_uri": a.data_uri, "is_directory": a.is_directory, "size": a.size}
                for a in new.values()
            ],
        )
        ids.update(await _select_in(connection, query, assets.c.data_uri, list(new)))
    return ids
