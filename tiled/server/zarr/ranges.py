"""Answers to zarr keys: conditional (``If-Match``, ``If-None-Match``, ``If-Range``) and
ranged (``bytes=a-b``, ``bytes=a-``, ``bytes=-n``), written as bare ASGI messages: these are
the most frequent responses the server sends, and a framework response object costs more than
the sending."""

from __future__ import annotations

import re
from typing import Any

from starlette.requests import Request

from ..responses import matches_if_none_match

_RANGE = re.compile(r"^bytes=(\d*)-(\d*)$")


class KeyResponse:
    """An ASGI response of a status, bytes headers and a body (empty for 304 and 416)."""

    __slots__ = ("status", "headers", "body")

    def __init__(self, status: int, headers: list[tuple[bytes, bytes]], body: bytes = b""):
        self.status, self.headers, self.body = status, headers, body

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": self.status, "headers": self.headers})
        await send({"type": "http.response.body", "body": self.body})


def _byte_range(header: str, size: int) -> tuple[int, int] | None:
    """Inclusive (first, last) of a single-range header; None when it cannot be satisfied."""
    match = _RANGE.match(header.strip())
    if not match or match.groups() == ("", ""):
        return None
    first, last = match.groups()
    if first == "":
        length = int(last)
        return (max(size - length, 0), size - 1) if length and size else None
    start = int(first)
    end = min(int(last), size - 1) if last else size - 1
    return (start, end) if start <= end else None


def _strong_match(header: bytes, etag: str) -> bool:
    """RFC 9110 strong comparison of ``etag`` with a list of entity tags (``*`` matches any
    current representation); weak tags never match strongly."""
    value = header.decode("latin-1").strip()
    if value == "*":
        return True
    return not etag.startswith("W/") and any(tag.strip() == etag for tag in value.split(","))


def ranged_response(
    request: Request,
    body: bytes,
    media_type: str | None,
    etag: str,
    headers: list[tuple[bytes, bytes]],
) -> KeyResponse:
    """``body`` as 200, or 304 when the client holds ``etag``, or the part a ``Range`` asks
    (206; 416 when it cannot be satisfied); ``headers`` are sent with each.

    As RFC 9110 orders them: ``If-Match`` naming other tags is 412; a ``Range`` whose
    ``If-Range`` does not name ``etag`` is ignored (the whole body, so that a client never
    joins parts of two versions)."""
    headers = [*headers, (b"etag", etag.encode()), (b"accept-ranges", b"bytes")]
    conditional = range_header = if_match = if_range = None
    for name, value in request.scope["headers"]:  # one pass; most requests carry none
        if name == b"if-none-match":
            conditional = value
        elif name == b"range":
            range_header = value.decode("latin-1")
        elif name == b"if-match":
            if_match = value
        elif name == b"if-range":
            if_range = value
    if if_match is not None and not _strong_match(if_match, etag):
        return KeyResponse(412, [*headers, (b"content-length", b"0")])
    if conditional and matches_if_none_match(request, etag):
        return KeyResponse(304, headers)
    if if_range is not None and (if_range.strip() == b"*" or not _strong_match(if_range, etag)):
        range_header = None  # a date (this server sends no Last-Modified) or another version
    size = len(body)
    status = 200
    # Multipart ranges (a comma) are ignored, as RFC 9110 allows: the whole body answers.
    if range_header and "," not in range_header:
        byte_range = _byte_range(range_header, size)
        if byte_range is None:
            headers.append((b"content-range", f"bytes */{size}".encode()))
            return KeyResponse(416, [*headers, (b"content-length", b"0")])
        first, last = byte_range
        headers.append((b"content-range", f"bytes {first}-{last}/{size}".encode()))
        body, status = body[first : last + 1], 206
    if media_type is not None:
        headers.append((b"content-type", media_type.encode()))
    headers.append((b"content-length", str(len(body)).encode()))
    return KeyResponse(status, headers, bytes(body) if not isinstance(body, bytes) else body)
