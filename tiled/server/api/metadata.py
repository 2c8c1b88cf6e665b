"""Metadata, search and distinct: the routes that describe nodes without reading data."""

from __future__ import annotations

import inspect
import re
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Query, Request, Response

from ...adapters.protocols import (
    BaseAdapter,
    DistinctValues,
    KeysetPages,
    Listing,
    Searchable,
    SearchesDeep,
    Sortable,
    supports,
)
from ...errors import BadRequest, NoSuchEntry
from ...queries import KeyLookup
from ...structures.json import to_document_value
from ..client_dialects import client_dialect
from ..dependencies import MetadataNode, Node, capable, node_dependency
from ..plain import PlainRoute
from ..resources import (
    ALL_FIELDS,
    MAX_INLINE_DEPTH,
    PageCursor,
    PageLimit,
    PageOffset,
    ResourceContext,
    page_links,
)
from ..responses import document_response
from ..state import tiled_state
from ..urls import base_url, url_path

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
            client_dialect(request),
        )


def _compile_jmespath(expression: str | None):
    if not expression:
        return None
    import jmespath
    import jmespath.exceptions

    try:
        compiled = jmespath.compile(expression)
    except (jmespath.exceptions.JMESPathError, RecursionError) as err:
        raise BadRequest(f"Invalid select_metadata expression {expression!r}: {err}") from None

    def select(metadata: Any) -> Any:
        # An expression that compiles may still fail on these values (length() of a number,
        # an unknown function): the request's fault, as a compile error is.
        try:
            return compiled.search(metadata)
        except (TypeError, ValueError, RecursionError) as err:  # JMESPathError included
            raise BadRequest(f"select_metadata {expression!r} failed: {err}") from None

    return select


# Most requests carry no query: their options are these (never changed once made).
DEFAULT_OPTIONS = ResourceOptions()


async def read_metadata(request: Request, node: Node) -> Response:
    if request.scope.get("query_string"):
        options = ResourceOptions(**_options_from(request))
    else:
        options = DEFAULT_OPTIONS
    resource = await options.context(request, node.path_parts).resource(
        await node.members(), node.path_parts
    )
    wants_root_path = options is not DEFAULT_OPTIONS and _flag(
        request.query_params.get("root_path")
    )
    meta = {"root_path": request.scope.get("root_path") or "/"} if wants_root_path else {}
    return document_response(
        request, {"data": resource, "error": None, "links": None, "meta": meta}
    )


# The edge serves GET /api/v1/metadata/... with this (see tiled.server.plain); the route below
# declares it to OpenAPI and answers wherever the edge is not in front.
PLAIN_ROUTES = [PlainRoute("/api/v1/metadata", "read:metadata", read_metadata)]


@router.get("/metadata/{path:path}")
async def metadata(request: Request, node: MetadataNode, root_path: bool = False) -> Response:
    return await read_metadata(request, node)


def _flag(value: str | None) -> bool:
    return (value or "").lower() in ("true", "1", "yes")


def _options_from(request: Request, inline_depth: bool = True) -> dict[str, Any]:
    """``inline_depth=False``: ``max_depth`` is not the depth of inlined members (in
    /search-deep it is the depth searched)."""
    params = request.query_params
    fields = params.getlist("fields")
    unknown = [f for f in fields if f not in ALL_FIELDS | {""}]
    if unknown:
        raise BadRequest(f"Unknown fields {unknown}; allowed: {sorted(ALL_FIELDS)}")
    max_depth = params.get("max_depth", str(MAX_INLINE_DEPTH)) if inline_depth else "0"
    if not (max_depth.isascii() and max_depth.isdigit()) or int(max_depth) > MAX_INLINE_DEPTH:
        raise BadRequest(f"max_depth must be an integer from 0 to {MAX_INLINE_DEPTH}")
    return {
        "fields": fields if "fields" in params else None,
        "select_metadata": params.get("select_metadata"),
        "omit_links": params.get("omit_links", "false").lower() in ("true", "1", "yes"),
        "max_depth": int(max_depth),
        "include_data_sources": _flag(params.get("include_data_sources")),
    }


# One element of ``sort``: a key (dotted for nested metadata), optionally signed; a bare sign is
# the default (insertion) order, ascending (+) or descending (-). Upstream's pattern.
_SORT_ELEMENT = re.compile(r"^(?:[+-][a-zA-Z0-9_.]*|[a-zA-Z0-9_.]+)$")
# Sort keys that name a property of the node, not a metadata key ("metadata.id" does).
STANDARD_SORT_KEYS = frozenset({"id"})


def _sorting_from(values: list[str]) -> list[tuple[str, int]]:
    """``sort`` parameters (comma-separated, repeatable) as ``(key, direction)`` pairs; the
    default order, which breaks ties, is put last wherever it was given."""
    sorting: list[tuple[str, int]] = []
    default: list[tuple[str, int]] = []
    for value in (part for v in values for part in v.split(",") if part):
        if not _SORT_ELEMENT.match(value):
            raise HTTPException(422, f"Malformed sort element {value!r}: expected a key, "
                                     "optionally prefixed by + or -")  # fmt: skip
        key, direction = (value[1:], -1) if value[0] == "-" else (value.lstrip("+"), 1)
        if key.startswith("metadata.") and key[len("metadata.") :] not in STANDARD_SORT_KEYS:
            key = key[len("metadata.") :]
        if any(existing == key for existing, _ in [*sorting, *default]):
            raise BadRequest(f"Duplicate sort key {key or value!r}")
        (default if key == "" else sorting).append((key, direction))
    if default == [("", 1)]:
        default = []  # ascending insertion order is the default's own tie-break
    return [*sorting, *default]


def _filtered(request: Request, tree: BaseAdapter) -> tuple[Any, str | None]:
    registry = tiled_state(request).query_registry
    queries = registry.decode_params(request.query_params.multi_items())
    lookup_key = None
    for query in queries:
        if isinstance(query, KeyLookup):
            lookup_key = query.key
            continue
        tree = capable(tree, Searchable, "search").search(query)
    return tree, lookup_key


@router.get("/search/{path:path}")
async def search(
    request: Request,
    node: SearchableNode,
    offset: PageOffset = 0,
    limit: PageLimit = 100,
    cursor: PageCursor = None,
):
    tree, lookup_key = _filtered(request, await node.members())
    sorting = _sorting_from(request.query_params.getlist("sort"))
    if sorting:
        if not supports(tree, Sortable):
            raise BadRequest("This node does not support sorting.")
        tree = tree.sort(sorting)
    options = ResourceOptions(**_options_from(request))
    context = options.context(request, node.path_parts)
    next_cursor = None
    if lookup_key is not None:
        try:
            items = [(lookup_key, await tree.zarr_member(lookup_key))]
        except NoSuchEntry:
            items = []
        count = len(items)
        items = items[offset : offset + limit]
    else:
        listing = capable(tree, Listing, "listing its members")
        count = await listing.count()
        wanted = limit and options.fields != {"count"}
        if wanted:
            items, cursor, next_cursor = await _page(listing, offset, limit, cursor)
        else:
            items = []
    # Each child as this identity may see it (its inlined members are filtered too).
    data = [
        await context.resource(await node.member_view(key, child), node.path_parts + (key,))
        for key, child in items
    ]
    here = f"{base_url(request)}/search/{url_path(node.path_parts)}"
    links = page_links(
        here, offset, limit, count, cursor=cursor, next_cursor=next_cursor,
        query=request.query_params,
    )  # fmt: skip
    return document_response(
        request, {"data": data, "error": None, "links": links, "meta": {"count": count}}
    )


# Under an access policy, each match of a deep search is checked along its path, in Python:
# no more matches than this are looked at for one request.
DEEP_SEARCH_CHECKED_MAX = 100_000


@router.get("/search-deep/{path:path}")
async def search_deep(
    request: Request,
    node: SearchableNode,
    offset: PageOffset = 0,
    limit: PageLimit = 100,
    cursor: PageCursor = None,
    max_depth: Annotated[int | None, Query(ge=1, le=64)] = None,
):
    """The descendants of a container at any depth (upstream 0.2.20's route): each item's
    ``id`` is its key and its ``ancestors`` say where it is."""
    if _sorting_from(request.query_params.getlist("sort")):
        raise BadRequest("Sorting is not supported for deep search.")
    if cursor is not None:
        raise BadRequest("A deep search is read by page[offset]; page[cursor] does not apply.")
    if not supports(node.adapter, SearchesDeep):
        raise BadRequest("This node does not support deep search.")
    tree, lookup_key = _filtered(request, node.adapter.search_deep(max_depth))
    if lookup_key is not None:  # at any depth: the nodes of that key
        tree = capable(tree, Searchable, "search").search(KeyLookup(lookup_key))
    listing = capable(tree, Listing, "deep search")
    options = ResourceOptions(**_options_from(request, inline_depth=False))
    context = options.context(request, node.path_parts)
    wanted = limit and options.fields != {"count"}
    if node.view is None or node.view.policy is None:
        count = await listing.count()
        items = await listing.items_range(offset, limit) if wanted else []
    else:
        visible = await _visible_deep(node, listing)
        count, items = len(visible), visible[offset : offset + limit] if wanted else []
    data = [
        await context.resource(child, node.path_parts + tuple(key.split("/")))
        for key, child in items
    ]
    here = f"{base_url(request)}/search-deep/{url_path(node.path_parts)}"
    links = page_links(here, offset, limit, count, query=request.query_params)
    return document_response(
        request, {"data": data, "error": None, "links": links, "meta": {"count": count}}
    )


async def _visible_deep(node: Node, listing: Listing) -> list[tuple[str, Any]]:
    """The matches the identity may see, each as it may see it: every node on a match's path
    must be visible (a visible node below an invisible one is not). Each container on the
    way is looked at once per request; a match is checked with the adapter its listing gave
    (a registered file is not opened)."""
    view = node.view
    chains: dict[tuple[str, ...], Any] = {(): node.chain}  # None: not visible

    async def chain_to(parts: tuple[str, ...]) -> Any:
        if parts not in chains:
            above = await chain_to(parts[:-1])
            chains[parts] = None
            if above is not None:
                try:
                    child = await above[-1][1].lookup_adapter([parts[-1]])
                except NoSuchEntry:
                    return None
                chains[parts] = await _visible_chain(view, above, parts[-1], child)
        return chains[parts]

    found: list[tuple[str, Any]] = []
    offset, page_size = 0, min(100, DEEP_SEARCH_CHECKED_MAX)
    while True:
        page = await listing.items_range(offset, page_size)
        if page and offset >= DEEP_SEARCH_CHECKED_MAX:
            raise BadRequest(
                f"More than {DEEP_SEARCH_CHECKED_MAX} matches to check: narrow the deep search "
                "(more queries, or max_depth)"
            )
        for key, child in page:
            *between, own = key.split("/")
            above = await chain_to(tuple(between))
            chain = None if above is None else await _visible_chain(view, above, own, child)
            if chain is not None:
                found.append((key, await view.members(chain)))
        offset += len(page)
        if len(page) < page_size:
            return found


async def _visible_chain(view: Any, above: Any, key: str, child: Any) -> Any:
    """``above`` continued by ``(key, child)`` if the identity may see that child (and read
    its metadata), else None."""
    if not await view.admits(above, key, child):
        return None
    chain = (*above, (key, child))
    return chain if "read:metadata" in await view.scopes(chain) else None


async def _page(
    tree: Listing, offset: int, limit: int, cursor: int | None
) -> tuple[list[tuple[str, Any]], int | None, int | None]:
    """``(items, cursor, next cursor)`` of one page of a listing.

    A listing that offers keyset pages (a catalog in insertion order: ``items_page`` and
    ``cursor_for_offset``, upstream's names) is read after a cursor, which stays right while
    children are added; an offset is turned into a cursor first, so that the ``next`` link is
    one. Other listings, and catalogs sorted by metadata, are read by offset.
    """
    keyset = supports(tree, KeysetPages)
    if cursor is not None:
        if not keyset:
            raise BadRequest("This node does not support page[cursor]; use page[offset].")
        items, following = await tree.items_page(cursor, limit)
        return items, cursor, following
    if keyset:
        cursor = await tree.cursor_for_offset(offset) if offset else None
        if cursor is not None or offset == 0:
            items, following = await tree.items_page(cursor, limit)
            return items, cursor, following
    return await tree.items_range(offset, limit), None, None


@router.get("/distinct/{path:path}")
async def distinct(
    request: Request,
    node: MetadataNode,
    metadata: Annotated[list[str], Query()] = [],  # noqa: B006
    structure_families: bool = False,
    specs: bool = False,
    counts: bool = False,
):
    tree, _ = _filtered(request, await node.members())
    result = capable(tree, DistinctValues, "distinct").get_distinct(
        metadata=metadata, structure_families=structure_families, specs=specs, counts=counts
    )
    if inspect.isawaitable(result):  # a catalog answers with a query
        result = await result
    return document_response(request, to_document_value(_with_counts(result)))


def _with_counts(result: dict[str, Any]) -> dict[str, Any]:
    """Every distinct value with its ``count`` (null when counts were not asked for), as
    upstream answers, whatever the adapter left out."""

    def complete(values: list[dict[str, Any]] | None) -> list[dict[str, Any]] | None:
        if values is None:
            return None
        return [{"value": entry.get("value"), "count": entry.get("count")} for entry in values]

    completed = dict(result)
    if result.get("metadata") is not None:
        completed["metadata"] = {key: complete(v) for key, v in result["metadata"].items()}
    for name in ("structure_families", "specs"):
        if name in result:
            completed[name] = complete(result[name])
    return completed
