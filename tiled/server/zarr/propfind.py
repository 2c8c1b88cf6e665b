"""WebDAV ``PROPFIND`` on the zarr store: how object-store clients (obstore's HTTPStore, which
zarr-python's ``ObjectStore`` wraps) list keys, for example before deleting a node's keys.

Nodes are collections (``href`` ending in ``/``); their documents and stored chunks are
members with a size, a modification time and an ETag. ``Depth: 0`` describes the key itself,
``1`` adds its direct members (a group's member nodes as collections), ``infinity`` (the
default, as RFC 4918 says) every key below, up to ``zarr_listing_max`` entries (403 beyond, as
RFC 4918 allows, with a ``detail`` saying to list with ``Depth: 1``). Chunks are listed where
they are stored (arrays written to the catalog); arrays whose chunks the server encodes on
request list only their documents.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass
from email.utils import formatdate
from typing import Any
from urllib.parse import quote
from xml.sax.saxutils import escape

from starlette.requests import Request

from ...access.view import AccessView
from ...adapters.base import is_group
from ...adapters.protocols import WritableZarrArray, supports
from ...adapters.walk import walk
from ...errors import BadRequest, DataUnavailable, Forbidden, NoSuchEntry, ZarrKeyNotFound
from ...utils import run_sync
from ...zarr_format.encoding import ZarrEncoding
from ..authentication import get_identity
from ..dependencies import require_node_scope, require_scope, split_path, visible_node_scopes
from ..responses import etag_of
from ..state import tiled_state
from .documents import array_documents, documents_of
from .ranges import KeyResponse
from .resolve import resolve

DEPTHS = ("0", "1", "infinity")


@dataclass(frozen=True)
class Entry:
    """One key (or, with ``collection``, one node or folder of chunk keys) of a listing."""

    key: str  # relative to the store's root, without a trailing slash
    collection: bool = False
    size: int | None = None
    modified: float | None = None
    etag: str | None = None


def _modified(adapter: Any) -> float:
    moment = getattr(adapter, "time_updated", None)
    return moment.timestamp() if moment is not None else time.time()


def _join(prefix: str, name: str) -> str:
    return f"{prefix}/{name}" if prefix else name


async def _documents(
    chain: Any, prefix: str, request: Request, encoding: ZarrEncoding, view: AccessView
) -> list[Entry]:
    adapter = chain[-1][1]
    settings = tiled_state(request).settings
    if is_group(adapter):
        documents = await documents_of(chain, encoding, settings, view)
    else:
        documents = array_documents(await adapter.to_zarr_meta(settings.zarr), encoding)
    modified = _modified(adapter)
    return [
        Entry(_join(prefix, name), size=len(body), modified=modified, etag=etag_of(body))
        for name, body in documents.items()
    ]


async def _chunks(adapter: Any, prefix: str, encoding: ZarrEncoding) -> list[Entry]:
    if not supports(adapter, WritableZarrArray):
        return []
    stored = await run_sync(adapter.stored_zarr_chunks)
    return [
        Entry(_join(prefix, encoding.chunk_key(coords)), size=size, modified=modified, etag=etag)
        for coords, size, modified, etag in stored
    ]


def _folded(prefix: str, entries: Iterable[Entry]) -> list[Entry]:
    """``entries`` cut to one level below ``prefix``: deeper keys become their first folder."""
    found: dict[str, Entry] = {}
    start = len(prefix) + 1 if prefix else 0
    for entry in entries:
        rest = entry.key[start:]
        if "/" in rest:
            folder = _join(prefix, rest.split("/", 1)[0])
            found.setdefault(folder, Entry(folder, collection=True, modified=entry.modified))
        else:
            found[entry.key] = entry
    return list(found.values())


async def _contents(
    chain: Any, prefix: str, request: Request, encoding: ZarrEncoding, view: AccessView
) -> list[Entry]:
    """The documents and stored chunks of one node (none for a node that cannot be read)."""
    try:
        entries = await _documents(chain, prefix, request, encoding, view)
    except DataUnavailable:
        return []
    adapter = chain[-1][1]
    if is_group(adapter) or "read:data" not in await view.scopes(chain):
        return entries  # (chunk sizes and versions are the data's, for readers of data)
    return entries + await _chunks(adapter, prefix, encoding)


async def _node_entries(
    chain: Any, prefix: str, depth: str, request: Request, encoding: ZarrEncoding,
    view: AccessView, limit: int,
) -> list[Entry]:  # fmt: skip
    adapter = chain[-1][1]
    entries = [Entry(prefix, collection=True, modified=_modified(adapter))]
    if depth == "0":
        return entries
    contents = await _contents(chain, prefix, request, encoding, view)
    if len(contents) > limit:
        raise Forbidden(
            f"A listing here has more than {limit} entries (stored chunks); list a chunk key "
            "itself, or read the array's metadata for its grid"
        )
    if depth == "1":
        entries += _folded(prefix, contents)
        if is_group(adapter):
            keys = await (await view.members(chain)).zarr_member_keys(0, limit)
            entries += [Entry(_join(prefix, key), collection=True) for key in keys]
        return entries
    entries += contents
    if not is_group(adapter):
        return entries
    async for visit in walk(chain, order="breadth", group_at=view.members, limit=limit):
        here = _join(prefix, "/".join(visit.path))
        entries.append(Entry(here, collection=True, modified=_modified(visit.node)))
        entries += await _contents(visit.chain, here, request, encoding, view)
        if len(entries) > limit:
            raise Forbidden(
                f"A Depth: infinity listing here has more than {limit} entries; "
                "list with Depth: 1 instead"
            )
    return entries


async def propfind(request: Request, encoding: ZarrEncoding) -> KeyResponse:
    """Answer ``PROPFIND`` on a key of the store with a 207 multistatus document."""
    depth = request.headers.get("depth", "infinity").strip().lower()
    if depth not in DEPTHS:
        raise BadRequest(f"Depth must be one of {list(DEPTHS)}, not {depth!r}")
    state = tiled_state(request)
    identity = await get_identity(request)
    require_scope(identity, "read:metadata", request)
    view = AccessView(identity, state.access_policy)
    await view.prepare(state.root_tree)
    path = request.path_params["path"]
    parts = split_path(path)
    target = await resolve(state.root_tree, path, encoding, view)
    # A key asked by name (a chunk, a document), or a node's own path.
    named = target.is_chunk or bool(target.key and parts and parts[-1] == target.key)
    node_parts = parts[: len(parts) - len(split_path(target.key))] if named else parts
    try:
        granted = await visible_node_scopes(view, target.chain, node_parts)
    except NoSuchEntry:
        raise ZarrKeyNotFound(f"No such key: {path!r}") from None
    node_path = "/".join(node_parts)
    if named:
        if target.is_chunk:
            require_scope(identity, "read:data", request)
            require_node_scope(granted, "read:data")
            found = await _chunks(target.adapter, node_path, encoding)
        else:
            found = await _documents(target.chain, node_path, request, encoding, view)
        key = _join(node_path, target.key)
        entries = [entry for entry in found if entry.key == key]
        if not entries:
            raise ZarrKeyNotFound(f"No such key: {path!r}")
    else:
        limit = state.settings.zarr_listing_max
        entries = await _node_entries(
            target.chain, node_path, depth, request, encoding, view, limit
        )
    body = _multistatus(_base_path(request, encoding), entries)
    headers = [
        (b"content-type", b"application/xml; charset=utf-8"),
        (b"content-length", str(len(body)).encode()),
    ]
    return KeyResponse(207, headers, body)


def _base_path(request: Request, encoding: ZarrEncoding) -> str:
    return f"{request.scope.get('root_path', '')}/zarr/v{encoding.zarr_format}/"


def _multistatus(base: str, entries: Iterable[Entry]) -> bytes:
    parts = ['<?xml version="1.0" encoding="utf-8"?>\n<D:multistatus xmlns:D="DAV:">']
    for entry in entries:
        href = base + quote(entry.key) + ("/" if entry.collection and entry.key else "")
        props = [
            "<D:getlastmodified>"
            + formatdate(entry.modified if entry.modified is not None else time.time(), usegmt=True)
            + "</D:getlastmodified>",
            "<D:resourcetype><D:collection/></D:resourcetype>"
            if entry.collection
            else "<D:resourcetype/>",
        ]
        if entry.size is not None:
            props.append(f"<D:getcontentlength>{entry.size}</D:getcontentlength>")
        if entry.etag is not None:
            props.append(f"<D:getetag>{escape(entry.etag)}</D:getetag>")
        parts.append(
            f"<D:response><D:href>{escape(href)}</D:href><D:propstat><D:prop>"
            + "".join(props)
            + "</D:prop><D:status>HTTP/1.1 200 OK</D:status></D:propstat></D:response>"
        )
    parts.append("</D:multistatus>\n")
    return "\n".join(parts).encode()
