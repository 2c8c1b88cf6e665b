"""Reading node rows: one query returns nodes with their data sources, assets and child counts.

Both a lookup (``WHERE parent = :p AND key = :k``) and a page of a listing are one statement:
the nodes are selected (filtered, ordered, paged) in a subquery that numbers its rows, then
joined to their data sources and assets; rows are grouped back into :class:`NodeRecord`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from sqlalchemy import ColumnElement, Select, case, func, select
from sqlalchemy.ext.asyncio import AsyncConnection

from ..structures.array import ArrayStructure
from ..structures.core import StructureFamily, normalize_specs
from ..structures.data_source import Asset, DataSource, Management
from ..structures.sparse import COOStructure
from ..structures.table import TableStructure
from .core import NodeRecord, as_utc
from .orm import assets, data_source_asset_association, data_sources, nodes

STRUCTURES = {"array": ArrayStructure, "sparse": COOStructure, "table": TableStructure}
_children = nodes.alias("children")


def child_path(table: Any) -> ColumnElement:
    """The path of a node row as its children's ``parent`` value."""
    return case((table.c.parent == "", table.c.key), else_=table.c.parent + "/" + table.c.key)


def _by_id(table: Any) -> list[Any]:
    return [table.c.id]


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
        .where(_children.c.parent == child_path(page))
        .scalar_subquery()
    )
    child_count = case((page.c.structure_family == "container", count), else_=None)
    association = data_source_asset_association
    joined = page.outerjoin(data_sources, data_sources.c.node_id == page.c.id)
    joined = joined.outerjoin(association, association.c.data_source_id == data_sources.c.id)
    joined = joined.outerjoin(assets, assets.c.id == association.c.asset_id)
    return (
        select(
            page,
            child_count.label("child_count"),
            data_sources.c.id.label("ds_id"),
            data_sources.c.structure_family.label("ds_structure_family"),
            data_sources.c.structure.label("ds_structure"),
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


def _record(row: Any) -> NodeRecord:
    return NodeRecord(
        id=row.id,
        parent=row.parent,
        key=row.key,
        structure_family=StructureFamily(row.structure_family),
        metadata=row.metadata or {},
        specs=normalize_specs(row.specs),
        access_blob=row.access_blob,
        time_created=as_utc(row.time_created),
        time_updated=as_utc(row.time_updated),
        child_count=row.child_count,
    )


def structure_from_json(family: str, value: Any) -> Any:
    if value is None or family not in STRUCTURES:
        return value
    return STRUCTURES[family].from_json(value)


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


def group_rows(rows: Sequence[Any]) -> list[NodeRecord]:
    """Rows of :func:`records_query` (one per asset) as records, in order."""
    records: dict[int, NodeRecord] = {}
    sources: dict[int, DataSource] = {}
    for row in rows:
        record = records.get(row.id)
        if record is None:
            record = records[row.id] = _record(row)
        if row.ds_id is not None and row.ds_id not in sources:
            sources[row.ds_id] = _data_source(row)
            record.data_sources.append(sources[row.ds_id])
        if row.asset_id is not None:
            sources[row.ds_id].assets.append(_asset(row))
    return list(records.values())


async def fetch_records(connection: AsyncConnection, query: Select) -> list[NodeRecord]:
    result = await connection.execute(query)
    return group_rows(result.all())
