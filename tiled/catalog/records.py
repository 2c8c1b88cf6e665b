"""Reading node rows: one query returns nodes with their data sources, assets, tags and counts.

Both a lookup and a page of a listing are one statement: the nodes are selected (filtered,
ordered, paged) in a subquery, then joined to their data sources (with their structures),
assets and access tags; rows are grouped back into :class:`NodeRecord`. A path is resolved to
a node id inside the same statement by a chain of joins on ``(key, parent)``, the unique
index of ``nodes``, so a node at any depth costs one query.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Any

from sqlalchemy import ColumnElement, Select, and_, bindparam, case, func, select
from sqlalchemy.ext.asyncio import AsyncConnection

from ..access.blobs import blob_of_tags
from ..structures.core import StructureFamily, normalize_specs
from ..structures.data_source import Asset, DataSource, Management
from ..structures.families import structure_from_json
from .core import NodeRecord, as_utc
from .orm import (
    access_tags,
    assets,
    data_source_asset_association,
    data_sources,
    node_access_tags_association,
    nodes,
    structures,
)

_children = nodes.alias("children")


def _by_id(table: Any) -> list[Any]:
    return [table.c.id]


def path_ids(base_id: int, segments: Sequence[str]) -> Select:
    """One row: the ids of the nodes along ``segments`` below node ``base_id`` (NULL if absent).

    Outer joins, so the row also tells how deep the path exists.
    """
    steps = [nodes.alias(f"step{n}") for n in range(len(segments))]
    joined = steps[0]
    for above, below, key in zip(steps, steps[1:], segments[1:], strict=False):
        joined = joined.outerjoin(below, and_(below.c.parent == above.c.id, below.c.key == key))
    return (
        select(*(step.c.id.label(f"id{n}") for n, step in enumerate(steps)))
        .select_from(joined)
        .where(steps[0].c.parent == base_id, steps[0].c.key == segments[0])
    )


@functools.lru_cache(maxsize=64)
def lookup_query(depth: int) -> Select:
    """The records query of the node ``depth`` steps below node ``:base_id``, by the keys
    ``:key0`` .. ``:key{depth-1}`` (see :func:`lookup_parameters`).

    Built once per depth with bound parameters: constructing the joins costs more than running
    them, and a statement of the same shape hits SQLAlchemy's compiled cache too.
    """
    steps = [nodes.alias(f"step{n}") for n in range(depth)]
    joined = steps[0]
    for n, (above, below) in enumerate(zip(steps, steps[1:], strict=False), start=1):
        joined = joined.join(
            below, and_(below.c.parent == above.c.id, below.c.key == bindparam(f"key{n}"))
        )
    found = (
        select(steps[-1].c.id)
        .select_from(joined)
        .where(steps[0].c.parent == bindparam("base_id"), steps[0].c.key == bindparam("key0"))
        .scalar_subquery()
    )
    return records_query([nodes.c.id == found])


def lookup_parameters(base_id: int, segments: Sequence[str]) -> dict[str, Any]:
    return {"base_id": base_id, **{f"key{n}": key for n, key in enumerate(segments)}}


def records_query(
    where: Sequence[ColumnElement],
    order_for: Callable[[Any], list[Any]] = _by_id,
    offset: int = 0,
    limit: int | None = None,
) -> Select:
    """Nodes matching ``where``, ordered by ``order_for(table)``, with data sources and assets.

    ``order_for`` builds the ordering for a given table, so the page is selected in that order
    and the joined rows are put back in it (no window function over the whole listing).
    """
    page = (
        select(*nodes.c)
        .where(*where)
        .order_by(*order_for(nodes))
        .offset(offset or None)
        .limit(limit)
        .subquery("page")
    )
    # Counted for the page's containers only, after paging.
    count = (
        select(func.count())
        .select_from(_children)
        .where(_children.c.parent == page.c.id)
        .scalar_subquery()
    )
    child_count = case((page.c.structure_family == "container", count), else_=None)
    association = data_source_asset_association
    tagged = node_access_tags_association
    joined = page.outerjoin(data_sources, data_sources.c.node_id == page.c.id)
    joined = joined.outerjoin(structures, structures.c.id == data_sources.c.structure_id)
    joined = joined.outerjoin(association, association.c.data_source_id == data_sources.c.id)
    joined = joined.outerjoin(assets, assets.c.id == association.c.asset_id)
    joined = joined.outerjoin(tagged, tagged.c.node_id == page.c.id)
    joined = joined.outerjoin(access_tags, access_tags.c.id == tagged.c.tag_id)
    return (
        select(
            page,
            child_count.label("child_count"),
            access_tags.c.name.label("tag_name"),
            data_sources.c.id.label("ds_id"),
            data_sources.c.structure_family.label("ds_structure_family"),
            structures.c.structure.label("ds_structure"),
            data_sources.c.mimetype.label("ds_mimetype"),
            data_sources.c.parameters.label("ds_parameters"),
            data_sources.c.properties.label("ds_properties"),
            data_sources.c.management.label("ds_management"),
            assets.c.id.label("asset_id"),
            assets.c.data_uri.label("asset_data_uri"),
            assets.c.is_directory.label("asset_is_directory"),
            assets.c.size.label("asset_size"),
            association.c.parameter.label("asset_parameter"),
            association.c.num.label("asset_num"),
        )
        .select_from(joined)
        .order_by(*order_for(page), data_sources.c.id, association.c.num, assets.c.id)
    )


def _record(row: Any, parent: str) -> NodeRecord:
    return NodeRecord(
        id=row.id,
        parent_id=row.parent,
        parent=parent,
        key=row.key,
        structure_family=StructureFamily(row.structure_family),
        metadata=row.metadata or {},
        specs=normalize_specs(row.specs),
        access_blob=None,
        time_created=as_utc(row.time_created),
        time_updated=as_utc(row.time_updated or row.time_created),
        child_count=row.child_count,
    )


def _data_source(row: Any) -> DataSource:
    return DataSource(
        structure_family=StructureFamily(row.ds_structure_family),
        structure=structure_from_json(row.ds_structure_family, row.ds_structure),
        id=row.ds_id,
        mimetype=row.ds_mimetype,
        parameters=row.ds_parameters or {},
        properties=row.ds_properties or {},
        management=Management(row.ds_management),
    )


def _asset(row: Any) -> Asset:
    return Asset(
        data_uri=row.asset_data_uri,
        is_directory=bool(row.asset_is_directory),
        parameter=row.asset_parameter,
        num=row.asset_num,
        id=row.asset_id,
        size=row.asset_size,
    )


def group_rows(rows: Sequence[Any], parent: str) -> list[NodeRecord]:
    """Rows of :func:`records_query` (one per asset and tag) as records, in order."""
    records: dict[int, NodeRecord] = {}
    sources: dict[int, DataSource] = {}
    seen_assets: set[tuple[int, int]] = set()
    tags: dict[int, set[str]] = {}
    for row in rows:
        record = records.get(row.id)
        if record is None:
            record = records[row.id] = _record(row, parent)
            tags[row.id] = set()
        if row.tag_name is not None:
            tags[row.id].add(row.tag_name)
        if row.ds_id is not None and row.ds_id not in sources:
            sources[row.ds_id] = _data_source(row)
            record.data_sources.append(sources[row.ds_id])
        if row.asset_id is not None and (row.ds_id, row.asset_id) not in seen_assets:
            seen_assets.add((row.ds_id, row.asset_id))
            sources[row.ds_id].assets.append(_asset(row))
    for node_id, record in records.items():
        record.access_blob = blob_of_tags(tags[node_id])
    return list(records.values())


async def fetch_records(
    connection: AsyncConnection, query: Select, parent: str, parameters: dict | None = None
) -> list[NodeRecord]:
    """The records of ``query``'s nodes, all children of the node at path ``parent``."""
    result = await connection.execute(query, parameters or {})
    return group_rows(result.all(), parent)
