"""Request bodies read with a limit: one larger than the route can use is refused (413) before
it is held in memory, at once when Content-Length declares it, else as soon as a streamed
body passes the limit."""

from __future__ import annotations

from typing import Any

from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request

from ..errors import BadRequest, PayloadTooLarge
from .errors import error_response
from .middleware import route_path
from .state import tiled_state


async def request_body(request: Request, limit: int | None = None) -> bytes:
    """The body of ``request``, at most ``limit`` bytes (None: the server's
    ``write_max_bytes``); else :class:`PayloadTooLarge`."""
    if limit is None:
        limit = tiled_state(request).settings.write_max_bytes
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise PayloadTooLarge(f"The body ({declared} bytes) exceeds the limit of {limit} bytes")
    pieces, size = [], 0
    try:
        async for piece in request.stream():
            size += len(piece)
            if size > limit:
                raise PayloadTooLarge(f"The body exceeds the limit of {limit} bytes")
            pieces.append(piece)
    except ClientDisconnect:
        # Nothing was written, and nobody is left to answer: not a server error.
        raise BadRequest("The client disconnected before sending the whole body") from None
    return b"".join(pieces)


# The writes (PUT, PATCH) of these routes read their bodies with request_body and a limit of
# their own (an array write's is the size of the region it covers, which may pass
# write_max_bytes); their POSTs are reads whose bodies (field lists) the framework reads.
# /node/full: upstream's deprecated spelling of PUT /table/full.
_SIZED_BY_THEIR_ROUTES = (
    "/api/v1/array/", "/api/v1/table/", "/api/v1/awkward/", "/api/v1/ragged/", "/api/v1/node/full/",
)  # fmt: skip
_SIZED_WRITES = frozenset({"PUT", "PATCH"})
_WITHOUT_BODIES = frozenset({"GET", "HEAD", "OPTIONS", "DELETE", "TRACE"})


class BodyLimit:
    """``limit`` (the server's ``write_max_bytes``) for the bodies the framework reads itself:
    metadata documents, registrations, data sources, search and export bodies. 413 at once
    for a declared larger body; a streamed one is cut off once past it, so that no more is
    ever held."""

    def __init__(self, app: Any, limit: int):
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["method"] in _WITHOUT_BODIES:
            return await self.app(scope, receive, send)
        method = scope["method"]
        if method in _SIZED_WRITES and route_path(scope).startswith(_SIZED_BY_THEIR_ROUTES):
            return await self.app(scope, receive, send)
        limit = self.limit
        declared = next((v for n, v in scope["headers"] if n == b"content-length"), b"")
        if declared.isdigit() and int(declared) > limit:
            too_large = PayloadTooLarge(
                f"The body ({int(declared)} bytes) exceeds the limit of {limit} bytes"
            )
            return await error_response(too_large)(scope, receive, send)
        received = 0

        async def limited_receive() -> Any:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    # An HTTPException: the framework's body reading lets it through as is.
                    raise HTTPException(413, f"The body exceeds the limit of {limit} bytes")
            return message

        await self.app(scope, limited_receive, send)
