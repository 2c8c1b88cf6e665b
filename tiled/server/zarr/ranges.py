"""HTTP Range requests on zarr keys (``bytes=a-b``, ``bytes=a-``, ``bytes=-n``)."""

from __future__ import annotations

import re

from fastapi import Request, Response

from ..responses import matches_if_none_match

_RANGE = re.compile(r"^bytes=(\d*)-(\d*)$")


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


def ranged_response(
    request: Request, body: bytes, media_type: str | None, etag: str, headers: dict[str, str]
) -> Response:
    headers = {**headers, "ETag": etag, "Accept-Ranges": "bytes"}
    if matches_if_none_match(request, etag):
        return Response(status_code=304, headers=headers)
    range_header = request.headers.get("range")
    if range_header and "," not in range_header:  # multipart ranges: ignored, as RFC 9110 allows
        byte_range = _byte_range(range_header, len(body))
        if byte_range is None:
            headers["Content-Range"] = f"bytes */{len(body)}"
            return Response(status_code=416, headers=headers)
        first, last = byte_range
        headers["Content-Range"] = f"bytes {first}-{last}/{len(body)}"
        return Response(
            body[first : last + 1], status_code=206, media_type=media_type, headers=headers
        )
    return Response(body, media_type=media_type, headers=headers)
