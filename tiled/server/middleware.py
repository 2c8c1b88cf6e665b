"""Pure ASGI middleware (cheaper than Starlette's BaseHTTPMiddleware on every request)."""

from __future__ import annotations

import secrets


class RequestIdMiddleware:
    """Tag every response with ``X-Tiled-Request-ID`` so logs and clients can correlate."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        request_id = secrets.token_hex(8).encode()

        async def tagged_send(message):
            if message["type"] == "http.response.start":
                message.setdefault("headers", [])
                message["headers"] = [*message["headers"], (b"x-tiled-request-id", request_id)]
            await send(message)

        await self.app(scope, receive, tagged_send)
