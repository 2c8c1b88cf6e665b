"""A node's data sources and assets after creation: look-up, replacement, dissociation.

Upstream's routes ``PUT /data_source``, ``GET /asset/...`` and ``DELETE /asset`` act on one
node's data sources; the functions here do so on the catalog's rows. Rows change in one
transaction; files are removed only after it commits, so that a refused or failed request
leaves both catalog and storage as they were.
"""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from sqlalchemy import delete, exists, select, update

from ..adapters.files import path_from_uri
from ..errors import BadRequest, Conflict, InvalidStructure, NotFound, naming
from ..structures.core import StructureFamily
from ..structures.data_source import Asset, DataSource, Management
from ..utils import run_sync
from .core import Catalog, NodeRecord
from .creation import _asset_ids, _registered, as_data_source, store_structures
from .creation import structure_id as compute_structure_id
from .errors import WouldDeleteData
from .orm import assets, data_source_asset_association, data_sources, nodes, utcnow
from .storage import node_storages


def asset_of(record: NodeRecord, asset_id: int) -> Asset | None:
    """The asset ``asset_id`` of one of the node's data sources, or None."""
    for source in record.data_sources:
        for asset in source.assets:
            if asset.id == asset_id:
                return asset
    return None


@dataclass(frozen=True)
class ArrayPatch:
    """The region of an array that a replaced data source added (upstream's patch params)."""

    shape: tuple[int, ...]
    offset: tuple[int, ...]

    def check(self, structure: Any) -> None:
        """Refuse a region that is not inside the data source's new shape."""
        shape = getattr(structure, "shape", None)
        if shape is None:
            raise BadRequest("patch_shape and patch_offset apply to array data sources only")
        if not (len(self.shape) == len(self.offset) == len(shape)):
            raise BadRequest(
                f"patch_shape {list(self.shape)} and patch_offset {list(self.offset)} must "
                f"have one entry per dimension of the array's shape {list(shape)}"
            )
        for size, start, whole in zip(self.shape, self.offset, shape, strict=True):
            if size < 0 or start < 0 or start + size > whole:
                raise BadRequest(
                    f"The patch (shape {list(self.shape)} at offset {list(self.offset)}) lies "
                    f"outside the array's shape {list(shape)}"
                )


def _same_description(old: DataSource, new: DataSource) -> bool:
    """Whether ``new`` describes ``old`` unchanged (an echo of what the server sent)."""

    def as_json(source: DataSource) -> dict[str, Any]:
        described = source.to_json()
        described["assets"] = sorted(a["data_uri"] for a in described["assets"])
        described.pop("id")
        return described

    return as_json(old) == as_json(new)


def _merged_assets(old: DataSource, new: DataSource) -> list[Asset]:
    """The old assets, then those of ``new`` not already there (upstream adds, never drops)."""
    known = {asset.data_uri for asset in old.assets}
    added = [replace(asset, id=None) for asset in new.assets if asset.data_uri not in known]
    return [*old.assets, *added]


async def put_data_source(
    catalog: Catalog, record: NodeRecord, value: Any, patch: ArrayPatch | None
) -> DataSource:
    """Replace the data source of the node with the same id as ``value``; or, with no id, add
    it where the node's family admits several (a registered container). Returns it stored.

    Registered data are checked as on registration (files inside the readable storage, opened,
    structure as the files hold). Data the server stores (``writable``) change only through
    the data routes: an unchanged echo is accepted, any change refused.
    """
    try:
        source = as_data_source(value, record.structure_family)
    except (InvalidStructure, ValueError, KeyError, TypeError) as err:
        raise BadRequest(f"Invalid data source: {err}") from None
    if source.id is None:
        return await _add_data_source(catalog, record, source, patch)
    position = next((i for i, old in enumerate(record.data_sources) if old.id == source.id), None)
    if position is None:
        raise naming(
            NotFound, catalog.node_at(record.path), "No data_source {id} on /{path}", id=source.id
        )
    old = record.data_sources[position]
    if old.management == Management.writable:
        if _same_description(old, replace(source, assets=_merged_assets(old, source))):
            # An echo changes nothing, but its patch must still lie inside the array.
            if patch is not None:
                patch.check(old.structure)
            return old
        raise naming(
            Conflict, catalog.node_at(record.path),
            "Data source {id} of /{path} is stored by the server; it changes only by writing "
            "data through the data routes", id=old.id,
        )  # fmt: skip
    merged = replace(source, assets=_merged_assets(old, source))
    checked = await run_sync(_registered, catalog, merged, record)
    if patch is not None:
        patch.check(checked.structure)
    async with catalog.connect(write=True) as connection:
        await _store_description(connection, checked)
        stored = await _associate_new_assets(connection, checked)
        await _touch(connection, record)
    record.data_sources[position] = stored
    return stored


async def _add_data_source(
    catalog: Catalog, record: NodeRecord, source: DataSource, patch: ArrayPatch | None
) -> DataSource:
    if not source.assets:
        raise BadRequest(
            "A data source without an id is added to the node; it must be registered data "
            "(with assets). To replace one of the node's data sources, give its id."
        )
    if record.structure_family != StructureFamily.container:
        # A leaf's data are its one data source; a registered container (an HDF5 file) may
        # list more files, and is read from its first.
        raise BadRequest(
            f"A {record.structure_family.value} node has exactly one data source; "
            "give its id to replace it"
        )
    fresh = [replace(asset, id=None) for asset in source.assets]
    checked = await run_sync(_registered, catalog, replace(source, assets=fresh), record)
    if patch is not None:
        patch.check(checked.structure)
    structure = _structure_json(checked)
    async with catalog.connect(write=True) as connection:
        key = None if structure is None else compute_structure_id(structure)
        if key is not None:
            await store_structures(connection, {key: structure})
        inserted = await connection.execute(
            data_sources.insert().values(
                node_id=record.id, structure_family=record.structure_family.value,
                structure_id=key, mimetype=checked.mimetype, parameters=checked.parameters,
                properties=checked.properties, management=Management(checked.management).value,
            )
        )  # fmt: skip
        checked = replace(checked, id=inserted.inserted_primary_key[0])
        stored = await _associate_new_assets(connection, checked)
        await _touch(connection, record)
    record.data_sources.append(stored)
    return stored


def _structure_json(source: DataSource) -> Any:
    structure = source.structure
    return structure.to_json() if hasattr(structure, "to_json") else structure


async def _store_description(connection: Any, source: DataSource) -> None:
    structure = _structure_json(source)
    key = None if structure is None else compute_structure_id(structure)
    if key is not None:
        await store_structures(connection, {key: structure})
    await connection.execute(
        update(data_sources).where(data_sources.c.id == source.id).values(
            structure_id=key, mimetype=source.mimetype, parameters=source.parameters,
            properties=source.properties, management=Management(source.management).value,
        )
    )  # fmt: skip


async def _associate_new_assets(connection: Any, source: DataSource) -> DataSource:
    """Store the assets of ``source`` that have no id yet and associate them with it."""
    new = [asset for asset in source.assets if asset.id is None]
    ids = await _asset_ids(connection, new) if new else {}
    if new:
        await connection.execute(
            data_source_asset_association.insert(),
            [
                {"data_source_id": source.id, "asset_id": ids[a.data_uri],
                 "parameter": a.parameter, "num": a.num}
                for a in new
            ],
        )  # fmt: skip
    stored = [a if a.id is not None else replace(a, id=ids[a.data_uri]) for a in source.assets]
    return replace(source, assets=stored)


async def _touch(connection: Any, record: NodeRecord) -> None:
    now = utcnow()
    await connection.execute(update(nodes).where(nodes.c.id == record.id).values(time_updated=now))
    record.time_updated = now


async def delete_asset(
    catalog: Catalog, record: NodeRecord, asset_id: int, external_only: bool = True
) -> dict[str, bool] | None:
    """Dissociate asset ``asset_id`` from the node's data sources; delete its row when no data
    source uses it any more, and then its files too if the server manages them. None if the
    node has no such asset. With ``external_only``, an asset of data the server manages is
    refused (:class:`WouldDeleteData`), as upstream."""
    users = [s for s in record.data_sources if any(a.id == asset_id for a in s.assets)]
    if not users:
        return None
    internal = any(Management(s.management) != Management.external for s in users)
    if internal and external_only:
        raise naming(
            WouldDeleteData, catalog.node_at(record.path),
            "Asset {id} of /{path} holds data the server manages; deleting it deletes the "
            "data. Pass external_only=false to delete it.", id=asset_id,
        )  # fmt: skip
    source_ids = [s.id for s in users]
    if not internal:
        return await _delete_asset(catalog, record, asset_id, source_ids, internal)
    # Its data go too: as every writer of the node's data, under the node's lock in every
    # process, taken before anything changes.
    async with catalog.node_lock(record.path), catalog.exclusive(record.path):
        return await _delete_asset(catalog, record, asset_id, source_ids, internal)


async def _delete_asset(
    catalog: Catalog, record: NodeRecord, asset_id: int, source_ids: list[int], internal: bool
) -> dict[str, bool]:
    association = data_source_asset_association
    async with catalog.connect(write=True) as connection:
        await connection.execute(
            delete(association).where(
                association.c.asset_id == asset_id, association.c.data_source_id.in_(source_ids)
            )
        )
        still_used = exists(
            select(association.c.asset_id).where(association.c.asset_id == asset_id)
        )
        found = (
            await connection.execute(
                select(assets.c.data_uri, assets.c.is_directory).where(assets.c.id == asset_id)
            )
        ).one_or_none()
        removed = await connection.execute(
            delete(assets).where(assets.c.id == asset_id, ~still_used)
        )
        asset_deleted = bool(removed.rowcount)
        await _touch(connection, record)
    for position, source in enumerate(record.data_sources):
        if source.id in source_ids:
            kept = [a for a in source.assets if a.id != asset_id]
            record.data_sources[position] = replace(source, assets=kept)
    data_deleted = False
    if asset_deleted and internal and found is not None:
        # Only after the commit: a failed transaction must leave the files in place.
        if found.data_uri.startswith("file:"):
            data_deleted = await run_sync(
                _remove_stored, path_from_uri(found.data_uri), bool(found.is_directory),
                catalog.writable_storage,
            )  # fmt: skip
        else:
            data_deleted = await run_sync(
                _remove_stored_object, found.data_uri, bool(found.is_directory),
                catalog.writable_locations,
            )  # fmt: skip
    return {"asset_deleted": asset_deleted, "data_deleted": data_deleted}


def _remove_stored_object(uri: str, is_directory: bool, locations: Sequence[Any]) -> bool:
    """Remove a node's prefix, or one object of it, only ever in a writable bucket."""
    places = node_storages([(uri, is_directory)], locations)
    if not places:
        return False
    if is_directory:
        places[0].destroy()
    else:
        places[0].remove(uri.rsplit("/", 1)[1])
    return True


def _remove_stored(path: Path, is_directory: bool, roots: Sequence[Path]) -> bool:
    """Remove a stored file or directory, only ever inside the writable storage."""
    resolved = path.resolve()
    if not any(resolved.is_relative_to(root.resolve()) and resolved != root.resolve()
               for root in roots):  # fmt: skip
        return False
    if is_directory:
        shutil.rmtree(resolved, ignore_errors=True)
    else:
        resolved.unlink(missing_ok=True)
    return True
