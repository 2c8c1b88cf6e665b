"""Responses with negotiation of JSON/msgpack, ETags, 304s and compression."""

from __future__ import annotations

import datetime
from collections.abc import AsyncIterator
from typing import Any

import msgpack
from fastapi import Request, Response
from fastapi.responses import StreamingResponse

from ..serialization.media_types import parse_accept
from ..structures.json import STORABLE_INTEGERS, to_document_value
from ..structures.json import dumps as json_dumps
from ..zarr_format.chunk_cache import content_etag as etag_of  # noqa: F401 - shared
from .compression import CompressionRegistry, default_compression_registry
from .headers import header

# A compressed body is sent only when it is at most this fraction of the original.
WORTH_COMPRESSING = 0.9
# A large body is sampled (SAMPLES pieces of SAMPLE_BYTES, spread over it) before compressing.
SAMPLES = 4
SAMPLE_BYTES = 64 * 1024


def json_bytes(payload: Any) -> bytes:
    """A document as JSON; values JSON lacks are written by the rule of ``tiled.structures.json``
    (as metadata, which resources carry already in that form)."""
    return json_dumps(payload)


def _msgpack_default(value: Any) -> Any:
    # msgpack has timestamps (datetime=True) for the datetimes documents carry besides metadata
    # (revision times, key expiry), but only for aware ones: a naive one is taken as local.
    if isinstance(value, datetime.datetime) and value.tzinfo is None:
        return value.astimezone()
    return to_document_value(value)


def msgpack_bytes(payload: Any) -> bytes:
    try:
        return msgpack.packb(payload, default=_msgpack_default, datetime=True)
    except OverflowError:
        # An integer past 64 bits, stored by other means than this server's routes (which
        # refuse it): sent as its text, as msgpack cannot hold it.
        return msgpack.packb(
            _wide_integers_as_text(payload), default=_msgpack_default, datetime=True
        )


def _wide_integers_as_text(value: Any) -> Any:
    if isinstance(value, int) and not isinstance(value, bool) and value not in STORABLE_INTEGERS:
        return str(value)
    if isinstance(value, dict):
        return {_wide_integers_as_text(k): _wide_integers_as_text(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_wide_integers_as_text(v) for v in value]
    return value


def matches_if_none_match(request: Request, etag: str) -> bool:
    """RFC 9110 weak comparison against ``If-None-Match`` (a list, ``*``, ``W/`` tags)."""
    conditional = header(request, "if-none-match")
    if not conditional:
        return False
    if conditional.strip() == "*":
        return True
    wanted = etag.removeprefix("W/").strip('"')
    return any(
        tag.strip().removeprefix("W/").strip('"') == wanted for tag in conditional.split(",")
    )


def wants_msgpack(request: Request) -> bool:
    accept = header(request, "accept")
    if ";" in accept:  # parameters, q-values perhaps: the client's preference, not its order
        media_types: Any = parse_accept(accept)
    else:
        media_types = (item.strip().lower() for item in accept.split(","))
    for media in media_types:
        if media in ("*/*", "application/json"):
            return False
        if media == "application/x-msgpack":
            return True
    return False


def compress(
    request: Request,
    body: bytes,
    media_type: str,
    min_bytes: int,
    registry: CompressionRegistry = default_compression_registry,
) -> tuple[bytes, str | None]:
    """Compress with the first encoding ``registry`` offers for ``media_type`` that the client
    accepts, when it is worth it."""
    if len(body) < min_bytes:
        return body, None
    accepted = set(parse_accept(header(request, "accept-encoding")))  # "gzip;q=0" refuses
    chosen = registry.choose(media_type, accepted)
    if chosen is None:
        return body, None
    encoding, encode = chosen
    # Measured data (random floats, noisy images) rarely compresses: try samples first, so
    # that a large incompressible body costs a few small compressions, not a whole one.
    if len(body) > SAMPLE_BYTES * SAMPLES * 4:
        stride = len(body) // SAMPLES
        sample = b"".join(body[i * stride : i * stride + SAMPLE_BYTES] for i in range(SAMPLES))
        if len(encode(sample)) > WORTH_COMPRESSING * len(sample):
            return body, None
    compressed = encode(body)
    if len(compressed) > WORTH_COMPRESSING * len(body):
        return body, None
    return compressed, encoding


def bytes_response(
    request: Request,
    body: bytes,
    media_type: str,
    headers: dict[str, str] | None = None,
    etag: str | None = None,
) -> Response:
    etag = etag or etag_of(body)
    if matches_if_none_match(request, etag):
        return Response(status_code=304, headers={**(headers or {}), "ETag": etag})
    state = request.app.state.tiled
    min_bytes = state.settings.compression_min_bytes
    encoding = None
    if len(body) >= min_bytes:  # most metadata answers are smaller: no Accept-Encoding to read
        body, encoding = compress(request, body, media_type, min_bytes, state.compression_registry)
    headers = {**headers, "ETag": etag} if headers else {"ETag": etag}
    if encoding:
        headers["Content-Encoding"] = encoding
        headers["Vary"] = "Accept-Encoding"
    return PreparedResponse(body, media_type, headers)


class PreparedResponse(Response):
    """A 200 of bytes already encoded: what ``Response(body, media_type=..., headers=...)``
    sends, with its header list made in one step (metadata answers are the most frequent
    responses of /api/v1, and Starlette's general header handling costs microseconds)."""

    def __init__(self, body: bytes, media_type: str, headers: dict[str, str]):
        self.status_code = 200
        self.background = None
        self.body = body
        self.media_type = media_type
        if media_type.startswith("text/") and "charset=" not in media_type.lower():
            media_type += "; charset=" + self.charset  # as Starlette types text
        raw = [
            (key.lower().encode("latin-1"), value.encode("latin-1"))
            for key, value in headers.items()
        ]
        raw.append((b"content-length", b"%d" % len(body)))
        raw.append((b"content-type", media_type.encode("latin-1")))
        self.raw_headers = raw


def document_response(
    request: Request, payload: Any, headers: dict[str, str] | None = None
) -> Response:
    """A metadata-type response in JSON or msgpack, as the client's Accept asks."""
    if wants_msgpack(request):
        return bytes_response(request, msgpack_bytes(payload), "application/x-msgpack", headers)
    return bytes_response(request, json_bytes(payload), "application/json", headers)


def stream_response(
    body: AsyncIterator[bytes], media_type: str, headers: dict[str, str] | None = None
) -> Response:
    return StreamingResponse(body, media_type=media_type, headers=headers)
