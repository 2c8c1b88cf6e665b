"""JSON resources for nodes: attributes and links, in upstream Tiled's shapes."""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Annotated, Any

from fastapi import Query

from ..access.blobs import legacy_access_blob, tags_in_blob
from ..adapters.protocols import (
    BaseAdapter,
    HasDataSources,
    InlinesContents,
    Listing,
    SearchesDeep,
    supports,
)
from ..structures.json import to_document_value
from .client_dialects import CURRENT, ClientDialect
from .urls import url_path

ALL_FIELDS = frozenset(
    {
        "metadata",
        "structure_family",
        "structure",
        "count",
        "sorting",
        "specs",
        "data_sources",
        "access_blob",
        "access_tags",
    }
)
# Either asks for a node's tags; clients before upstream 0.2.19 read them as ``access_blob``.
_TAG_FIELDS = frozenset({"access_tags", "access_blob"})
MAX_INLINE_DEPTH = 5
MAX_INLINE_CHILDREN = 500


def _array_links(base: str, path: str, adapter: Any) -> dict[str, str]:
    placeholders = _block_placeholders(len(adapter.structure().shape))
    return {
        "full": f"{base}/array/full/{path}",
        "block": f"{base}/array/block/{path}?block={placeholders}",
    }


@functools.lru_cache(maxsize=64)
def _block_placeholders(ndim: int) -> str:
    return ",".join(f"{{{i}}}" for i in range(ndim))


def _container_links(base: str, path: str, adapter: Any) -> dict[str, str]:
    links = {"full": f"{base}/container/full/{path}", "search": f"{base}/search/{path}"}
    # Clients look for the link before they ask. Asked of the class: a registered node listed
    # unopened opens its file to answer for an attribute it lacks.
    if issubclass(type(adapter), SearchesDeep):
        links["search_deep"] = f"{base}/search-deep/{path}"
    return links


def _table_links(base: str, path: str, adapter: Any) -> dict[str, str]:
    return {
        "full": f"{base}/table/full/{path}",
        "partition": f"{base}/table/partition/{path}?partition={{index}}",
    }


def _awkward_links(base: str, path: str, adapter: Any) -> dict[str, str]:
    return {"buffers": f"{base}/awkward/buffers/{path}", "full": f"{base}/awkward/full/{path}"}


def _ragged_links(base: str, path: str, adapter: Any) -> dict[str, str]:
    # Only the first dimension is chunked: one block index.
    return {
        "full": f"{base}/ragged/full/{path}",
        "block": f"{base}/ragged/block/{path}?block={{0}}",
    }


LINKS_BY_FAMILY: dict[str, Callable[[str, str, Any], dict[str, str]]] = {
    "awkward": _awkward_links,
    "ragged": _ragged_links,
    "array": _array_links,
    "sparse": _array_links,
    "container": _container_links,
    "table": _table_links,
}


async def _container_structure(
    adapter: Listing, context: ResourceContext, depth: int
) -> dict[str, Any]:
    inline = supports(adapter, InlinesContents) and adapter.inlined_contents_enabled(depth)
    contents = None
    count = await adapter.count()
    # A node too wide to inline is listed in pages, as any other (and never in part here).
    if inline and depth < context.max_depth:
        if count <= MAX_INLINE_CHILDREN:
            # Nothing to list: not asked (a node that counts an unreadable file as empty
            # answers its own listings with the error, not its parent's).
            items = await adapter.items_range(0, MAX_INLINE_CHILDREN) if count else []
            contents = {
                key: await context.resource(child, context.path_parts_of(key), depth + 1)
                for key, child in items
            }
    return {"contents": contents, "count": count}


async def _plain_structure(
    adapter: BaseAdapter, context: ResourceContext, depth: int
) -> dict[str, Any]:
    return adapter.structure().to_json()


STRUCTURE_BY_FAMILY = {"container": _container_structure}


@dataclass(slots=True)  # made on every request: a frozen dataclass costs 3x to build
class ResourceContext:
    """What resource building needs from the request: base URL, fields and options."""

    base_url: str
    path_parts: tuple[str, ...]
    fields: frozenset[str] = ALL_FIELDS
    omit_links: bool = False
    select_metadata: Callable[[dict], Any] | None = None
    max_depth: int = MAX_INLINE_DEPTH
    include_data_sources: bool = False
    dialect: ClientDialect = CURRENT  # what the request's client reads

    def path_parts_of(self, key: str) -> tuple[str, ...]:
        return self.path_parts + (key,)

    async def resource(
        self, adapter: BaseAdapter, path_parts: tuple[str, ...], depth: int = 0
    ) -> dict[str, Any]:
        context = self if path_parts == self.path_parts else replace(self, path_parts=path_parts)
        return await build_resource(adapter, context, depth)


def _access_tags(adapter: BaseAdapter) -> list[str] | None:
    """The node's tags: a catalog node's own, or those of an in-memory node's access blob
    (this server's tag policy); None for a node without either."""
    tags = getattr(adapter, "access_tags", None)
    if tags is None:
        blob = getattr(adapter, "access_blob", None)
        tags = tags_in_blob(blob) if blob else None
    return None if tags is None else sorted(tags)


async def build_resource(
    adapter: BaseAdapter, context: ResourceContext, depth: int = 0
) -> dict[str, Any]:
    fields = context.fields
    family = adapter.structure_family.value
    is_container = family == "container"
    path = url_path(context.path_parts)
    keys_only = not (fields - {""})
    metadata = None
    if "metadata" in fields:
        # By the metadata rule here, so that JSON and msgpack responses carry the same values
        # (NaN aside, which msgpack keeps and JSON writes null).
        metadata = to_document_value(adapter.metadata())
        if context.select_metadata is not None:
            metadata = {"selected": context.select_metadata(metadata)}
    wants_structure = "structure" in fields or (is_container and "count" in fields)
    structure = None
    if wants_structure:
        structure = await STRUCTURE_BY_FAMILY.get(family, _plain_structure)(adapter, context, depth)
    attributes = {
        "ancestors": list(context.path_parts[:-1]),
        "structure_family": family
        if ("structure_family" in fields or (is_container and not keys_only))
        else None,
        "specs": [s.to_json() for s in adapter.specs] if "specs" in fields else None,
        "metadata": metadata,
        "structure": structure,
        "access_tags": _access_tags(adapter) if "access_tags" in fields else None,
        "sorting": _sorting(adapter) if ("sorting" in fields and is_container) else None,
        "data_sources": data_sources_json(adapter, context.dialect.omit_asset_size)
        if context.include_data_sources
        else None,
    }
    if context.dialect.access_blob:
        del attributes["access_tags"]
        attributes["access_blob"] = (
            legacy_access_blob(_access_tags(adapter)) if fields & _TAG_FIELDS else None
        )
    links = None
    if not context.omit_links:
        links = {"self": f"{context.base_url}/metadata/{path}"}
        if not keys_only:
            links.update(
                LINKS_BY_FAMILY.get(family, lambda *a: {})(context.base_url, path, adapter)
            )
    return {
        "id": context.path_parts[-1] if context.path_parts else "",
        "attributes": attributes,
        "links": links,
        "meta": None,
    }


def data_sources_json(
    adapter: BaseAdapter, omit_asset_size: bool = False
) -> list[dict[str, Any]] | None:
    if not supports(adapter, HasDataSources):  # only storage-backed nodes have them
        return None
    return [data_source_json(ds, omit_asset_size) for ds in adapter.data_sources()]


def data_source_json(source: Any, omit_asset_size: bool = False) -> dict[str, Any]:
    described = source.to_json()
    if omit_asset_size:
        for asset in described["assets"]:
            asset.pop("size", None)
    return described


def _sorting(adapter: BaseAdapter) -> list[dict[str, Any]] | None:
    sorting = getattr(adapter, "sorting", None)
    if sorting is None:
        return None
    return [{"key": item[0], "direction": int(item[1])} for item in map(_as_pair, sorting)]


def _as_pair(item: Any) -> tuple[str, int]:
    if isinstance(item, tuple | list):
        return item[0], item[1]
    return item.key, item.direction


# Positions in a listing go to the database as 64-bit integers: beyond them, 400 (not the
# driver's overflow, a 500).
LARGEST_POSITION = 2**63 - 1
PageOffset = Annotated[int, Query(alias="page[offset]", ge=0, le=LARGEST_POSITION)]
PageLimit = Annotated[int, Query(alias="page[limit]", ge=0, le=300)]
PageCursor = Annotated[
    int | None, Query(alias="page[cursor]", ge=-LARGEST_POSITION - 1, le=LARGEST_POSITION)
]


def page_links(
    here: str,
    offset: int,
    limit: int,
    count: int,
    *,
    cursor: int | None = None,
    next_cursor: int | None = None,
    query: Any = None,
) -> dict[str, str | None]:
    """Pagination links of a listing at ``here`` (upstream's shape: self, first, next).

    ``next`` continues after ``next_cursor`` when the page was read by cursor (a keyset
    page), else at the following offset while any entries remain. ``query``: the request's
    query parameters; each link keeps those that are not about the page (filters, fields,
    sorting), so that a client following the links reads the same listing. (Upstream's links
    drop them; its clients send them again, which these links also allow.)
    """
    kept = ""
    if query:
        from urllib.parse import urlencode

        kept = urlencode([(k, v) for k, v in query.multi_items() if not k.startswith("page[")])
        kept = kept and kept + "&"
    position = f"page[cursor]={cursor}&" if cursor is not None else (
        f"page[offset]={offset}&" if offset else ""
    )  # fmt: skip
    next_link = None
    if next_cursor is not None:
        next_link = f"{here}?{kept}page[cursor]={next_cursor}&page[limit]={limit}"
    elif cursor is None and limit and offset + limit < count:
        next_link = f"{here}?{kept}page[offset]={offset + limit}&page[limit]={limit}"
    return {
        "self": f"{here}?{kept}{position}page[limit]={limit}",
        "first": f"{here}?{kept}page[limit]={limit}",
        "next": next_link,
    }
