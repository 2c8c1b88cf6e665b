"""The tree as a zarr store, one ASGI app per format, served at /zarr/v2 and /zarr/v3.

Zarr clients fire many small requests, so this is a plain ASGI app that the edge middleware
calls directly (no route matching, no FastAPI parameter validation or dependency solving on the
hot path); it calls the same identity, scope and lookup functions as /api/v1, and answers
errors as /api/v1 does.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from starlette.requests import Request

from ...access.view import AccessView
from ...adapters.protocols import DirectChunkReads, ZarrGroupHooks, supports
from ...errors import BadRequest, NoSuchEntry, ZarrKeyNotFound
from ...utils import run_sync
from ...zarr_format.formats import encoding_for
from ..authentication import get_identity
from ..dependencies import require_node_scope, require_scope, visible_node_scopes
from ..errors import error_response, served_tree
from ..responses import etag_of, json_bytes
from .documents import documents_of
from .propfind import propfind
from .ranges import KeyResponse, ranged_response
from .resolve import resolve
from .writes import write_key


def zarr_router(zarr_format: int) -> Any:
    """An ASGI app answering GET and HEAD for every key of the zarr store; the key is
    ``scope["path_params"]["path"]`` (the edge middleware sets it)."""
    encoding = encoding_for(zarr_format)

    async def read_key(request: Request) -> KeyResponse:
        path = request.path_params["path"]
        identity = await get_identity(request)
        require_scope(identity, "read:metadata", request)
        state = request.app.state.tiled
        settings = state.settings
        view = AccessView(identity, state.access_policy)
        await view.prepare(state.root_tree)
        target = await resolve(state.root_tree, path, encoding, view)
        try:
            granted = await visible_node_scopes(view, target.chain, target.parts)
        except NoSuchEntry:
            raise ZarrKeyNotFound(f"No such key: {path!r}") from None
        cache_control = settings.zarr_cache_control
        headers = [(b"cache-control", cache_control.encode())] if cache_control else []
        if target.is_chunk:
            require_scope(identity, "read:data", request)
            require_node_scope(granted, "read:data")
            meta = await target.adapter.to_zarr_meta(settings.zarr)
            coords = target.coords
            if len(coords) != len(meta.shape):  # a v2 0-d array's one chunk is keyed "0"
                coords = encoding.parse_chunk_key(target.key, len(meta.shape))
            if settings.zarr_direct_reads and request.method == "GET":
                redirect = await _direct_read(target.adapter, meta, coords, settings)
                if redirect is not None:
                    return redirect
            body = await target.adapter.to_zarr_chunk(coords, meta)
            etag = getattr(body, "etag", None) or etag_of(body)  # stored chunks come tagged
            return ranged_response(request, body, "application/octet-stream", etag, headers)
        if not target.key:
            body = json_bytes(
                await _listing(request, await view.members(target.chain), settings.zarr_listing_max)
            )
            return ranged_response(
                request, body, _listing_media_type(request), etag_of(body), headers
            )
        else:
            documents = await documents_of(target.chain, encoding, settings, view, target.key)
            if target.key not in documents:
                raise ZarrKeyNotFound(f"No such key: {path!r}")
            body = documents[target.key]
        return ranged_response(request, body, "application/json", etag_of(body), headers)

    async def store(scope, receive, send) -> None:
        try:
            method = scope["method"]
            if method in ("GET", "HEAD"):
                response = await read_key(Request(scope, receive))
            elif method in ("PUT", "DELETE"):
                response = await write_key(Request(scope, receive), encoding)
            elif method == "PROPFIND":
                response = await propfind(Request(scope, receive), encoding)
            else:
                response = _method_not_allowed(method)
        except Exception as exception:  # noqa: BLE001 - every error gets its JSON answer
            response = error_response(exception, served_tree(Request(scope)))
        await response(scope, receive, send)

    store.write_methods = ANSWERED_METHODS  # type: ignore[attr-defined]  # see EdgeMiddleware
    return store


async def _direct_read(adapter: Any, meta: Any, coords: Any, settings: Any) -> Any | None:
    """A 307 to a presigned URL of the stored chunk (after the access checks, which every
    read still passes through here), or None where the chunk is served by this server."""
    if not supports(adapter, DirectChunkReads):
        return None
    meta.chunk_region(coords)  # coordinates off the grid are 404, never a redirect
    url = await run_sync(adapter.zarr_chunk_url, coords, settings.zarr_direct_reads)
    if url is None:
        return None
    headers = [
        (b"location", url.encode()),
        (b"content-length", b"0"),
        # Every read is authorized anew: no cache may answer with this redirect.
        (b"cache-control", b"no-store"),
    ]
    return KeyResponse(307, headers)


WRITE_METHODS = frozenset({"PUT", "DELETE", "PROPFIND"})
_ALLOWED = ", ".join(["GET", "HEAD", *sorted(WRITE_METHODS)])
# Methods the edge middleware routes here besides GET and HEAD: the writes, and the other
# methods of HTTP and WebDAV, which get their 405 with ``Allow`` from the store itself (CORS
# preflights are answered before, by the CORS middleware).
ANSWERED_METHODS = WRITE_METHODS | {
    "POST", "PATCH", "OPTIONS", "TRACE", "CONNECT",
    "MKCOL", "COPY", "MOVE", "PROPPATCH", "LOCK", "UNLOCK",
}  # fmt: skip


def _method_not_allowed(method: str) -> Any:
    from starlette.responses import JSONResponse

    return JSONResponse(
        {"detail": f"Method {method} is not allowed on a zarr key; allowed: {_ALLOWED}"},
        status_code=405,
        headers={"Allow": _ALLOWED},
    )


def _listing_media_type(request: Request) -> str | None:
    # fsspec's HTTP filesystem looks for member URLs only in bodies typed text/html or untyped,
    # so the JSON list goes untyped (as upstream's does) unless the client asks for JSON.
    accepted = request.headers.get("accept", "")
    return "application/json" if "application/json" in accepted else None


def _non_negative(request: Request, name: str, default: int) -> int:
    value = request.query_params.get(name)
    if value is None or value == "":
        return default
    if not value.isdigit():
        raise BadRequest(f"{name} must be a non-negative integer, not {value!r}")
    return int(value)


async def _listing(request: Request, group: ZarrGroupHooks, maximum: int) -> list[str]:
    """Absolute URLs of the members (fsspec's HTTP filesystem finds them by pattern)."""
    offset = _non_negative(request, "offset", 0)
    limit = min(_non_negative(request, "limit", maximum), maximum)
    keys = await group.zarr_member_keys(max(offset, 0), max(limit, 0))
    here = str(request.url.replace(query="")).rstrip("/")
    return [f"{here}/{quote(key, safe='')}" for key in keys]
