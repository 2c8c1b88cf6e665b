"""Cross-site request forgery protection for requests authenticated by a cookie."""

from __future__ import annotations

import hmac
import secrets
from urllib.parse import parse_qs

from starlette.responses import JSONResponse

from .credentials import request_cookies

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "TRACE"})


class CSRFMiddleware:
    """Double-submit cookie check for requests that carry the ``tiled_api_key`` cookie.

    A state-changing request (not GET/HEAD/OPTIONS/TRACE) carrying that cookie must also carry
    the ``tiled_csrf`` cookie and the same value in the ``x-csrf`` header or ``csrf`` query
    parameter, else 403. Responses to such requests, to the about document and to the
    ``/api/v1/auth/`` routes set a ``tiled_csrf`` cookie if the request had none (the upstream
    Python client reads it after fetching the about document and sends it back when it
    refreshes its session). Other responses, zarr chunks included, carry no ``Set-Cookie``, so
    shared caches may keep them.
    """

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        cookies = request_cookies(scope["headers"])
        expected = cookies.get("tiled_csrf")
        if not cookies.get("tiled_api_key"):
            if expected or not _offers_csrf_cookie(scope["path"]):
                return await self.app(scope, receive, send)
            return await self.app(scope, receive, _with_csrf_cookie(send))
        if scope["method"] not in SAFE_METHODS:
            query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
            header = next((v for n, v in scope["headers"] if n == b"x-csrf"), b"")
            submitted = header.decode("latin-1") or (query.get("csrf") or [""])[0]
            if not (expected and submitted and hmac.compare_digest(expected, submitted)):
                return await _csrf_refused(scope, receive, send)
        if expected:
            return await self.app(scope, receive, send)
        await self.app(scope, receive, _with_csrf_cookie(send))


def _offers_csrf_cookie(path: str) -> bool:
    return path.endswith("/api/v1/") or path.endswith("/api/v1") or "/api/v1/auth/" in path


async def _csrf_refused(scope, receive, send) -> None:
    response = JSONResponse(
        {
            "detail": "Requests authenticated by the tiled_api_key cookie that change state "
            "must send the tiled_csrf cookie's value in the x-csrf header or the csrf query "
            "parameter."
        },
        status_code=403,
    )
    await response(scope, receive, send)


def _with_csrf_cookie(send):
    cookie = f"tiled_csrf={secrets.token_urlsafe(32)}; HttpOnly; Path=/; SameSite=lax"

    async def send_with_cookie(message):
        if message["type"] == "http.response.start":
            extra = (b"set-cookie", cookie.encode("latin-1"))
            message = {**message, "headers": [*message.get("headers", []), extra]}
        await send(message)

    return send_with_cookie
