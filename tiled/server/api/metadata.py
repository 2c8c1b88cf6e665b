"""Metadata, search and distinct: the routes that describe nodes without reading data."""

from __future__ import annotations

import inspect
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request

from ...errors import BadRequest, NoSuchEntry, Unsupported
from ...queries import KeyLookup
from ..dependencies import MetadataNode, node_dependency
from ..resources import ALL_FIELDS, MAX_INLINE_DEPTH, ResourceContext, page_links
from ..responses import document_response
from ..urls import base_url

router = APIRouter()
SearchableNode = Annotated[Any, node_dependency("read:metadata", {"container"})]


class ResourceOptions:
    """Query parameters shared by /metadata and /search."""

    def __init__(
        self,
        fields: list[str] | None = None,
        select_metadata: str | None = None,
        omit_links: bool = False,
        max_depth: int = MAX_INLINE_DEPTH,
        include_data_sources: bool = False,
    ):
        self.include_data_sources = include_data_sources
        self.fields = frozenset(fields) if fields is not None else ALL_FIELDS
        self.select_metadata = _compile_jmespath(select_metadata)
        self.omit_links = omit_links
        self.max_depth = max_depth

    def context(self, request: Request, path_parts: tuple[str, ...]) -> ResourceContext:
        return ResourceContext(
            base_url(request),
            path_parts,
            self.fields,
            self.omit_links,
            self.select_metadata,
            self.max_depth,
            self.include_data_sources,
        )


def _compile_jmespath(expression: str | None):
    if not expression:
        return None
    import jmespath
    import jmespath.exceptions

    try:
        compiled = jmespath.compile(expression)
    except jmespath.exceptions.JMESPathError as err:
        raise BadRequest(f"Invalid select_metadata expression {expression!r}: {err}") from None
    return compiled.search


@router.get("/metadata/{path:path}")
async def metadata(request: Request, node: MetadataNode, root_path: bool = False):
    options = ResourceOptions(**_options_from(request))
    resource = await options.context(request, node.path_parts).resource(
        node.members(), node.path_parts
    )
    meta = {"root_path": request.scope.get("root_path") or "/"} if root_path else {}
    return document_response(
        request, {"data": resource, "error": None, "links": None, "meta": meta}
    )


def _flag(value: str | None) -> bool:
    return (value or "").lower() in ("true", "1", "yes")


def _options_from(request: Request) -> dict[str, Any]:
    params = request.query_params
    fields = params.getlist("fields")
    unknown = [f for f in fields if f not in ALL_FIELDS | {""}]
    if unknown:
        raise BadRequest(f"Unknown fields {unknown}; allowed: {sorted(ALL_FIELDS)}")
    max_depth = params.get("max_depth", str(MAX_INLINE_DEPTH))
    if not max_depth.isdigit() or int(max_depth) > MAX_INLINE_DEPTH:
        raise BadRequest(f"max_depth must be an integer from 0 to {MAX_INLINE_DEPTH}")
    return {
        "fields": fields if "fields" in params else None,
        "select_metadata": params.get("select_metadata"),
        "omit_links": params.get("omit_links", "false").lower() in ("true", "1", "yes"),
        "max_depth": int(max_depth),
        "include_data_sources": _flag(params.get("include_data_sources")),
    }


def _sorting_from(values: list[str]) -> list[tuple[str, int]]:
    sorting: list[tuple[str, int]] = []
    for value in (part for v in values for part in v.split(",")):
        key, direction = (value[1:], -1) if value.startswith("-") else (value.lstrip("+"), 1)
        if key and not key.replace("_", "a").replace(".", "a").isalnum():
            raise BadRequest(f"Invalid sort key {value!r}")
        if any(existing == key for existing, _ in sorting):
            raise BadRequest(f"Duplicate sort key {key!r}")
        sorting.append((key, direction))
    if any(key == "" for key, _ in sorting[:-1]):
        raise BadRequest("The default sort ('') may only come last")
    return [item for item in sorting if item[0] != ""]


def _filtered(request: Request, tree: Any) -> tuple[Any, str | None]:
    queries = request.app.state.query_registry.decode_params(request.query_params.multi_items())
    lookup_key = None
    for query in queries:
        if isinstance(query, KeyLookup):
            lookup_key = query.key
            continue
        search = getattr(tree, "search", None)
        if search is None:
            raise Unsupported("This node does not support search.")
        tree = search(query)
    return tree, lookup_key


@router.get("/search/{path:path}")
async def search(
    request: Request,
    node: SearchableNode,
    offset: Annotated[int, Query(alias="page[offset]", ge=0)] = 0,
    limit: Annotated[int, Query(alias="page[limit]", ge=0, le=300)] = 100,
):
    tree, lookup_key = _filtered(request, node.members())
    sorting = _sorting_from(request.query_params.getlist("sort"))
    if sorting:
        sort = getattr(tree, "sort", None)
        if sort is None:
            raise BadRequest("This node does not support sorting.")
        tree = sort(sorting)
    options = ResourceOptions(**_options_from(request))
    context = options.context(request, node.path_parts)
    if lookup_key is not None:
        try:
            items = [(lookup_key, await tree.zarr_member(lookup_key))]
        except NoSuchEntry:
            items = []
        count = len(items)
        items = items[offset : offset + limit]
    else:
        count = await tree.count()
        wanted = limit and options.fields != {"count"}
        items = await tree.items_range(offset, limit) if wanted else []
    # Each child as this identity may see it (its inlined members are filtered too).
    data = [
        await context.resource(node.member_view(key, child), node.path_parts + (key,))
        for key, child in items
    ]
    links = page_links(f"{base_url(request)}/search/{node.path}", offset, limit, count)
    return document_response(
        request, {"data": data, "error": None, "links": links, "meta": {"count": count}}
    )


@router.get("/distinct/{path:path}")
async def distinct(
    request: Request,
    node: MetadataNode,
    metadata: Annotated[list[str], Query()] = [],  # noqa: B006
    structure_families: bool = False,
    specs: bool = False,
    counts: bool = False,
):
    tree, _ = _filtered(request, node.members())
    get_distinct = getattr(tree, "get_distinct", None)
    if get_distinct is None:
        raise Unsupported("This node does not support distinct.")
    result = get_distinct(
        metadata=metadata, structure_families=structure_families, specs=specs, counts=counts
    )
    if inspect.isawaitable(result):  # a catalog answers with a query
        result = await result
    return document_response(request, result)
