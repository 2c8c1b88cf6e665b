"""Pure ASGI middleware (cheaper than Starlette's BaseHTTPMiddleware on every request)."""

from __future__ import annotations

import functools
import logging
import secrets
import warnings
from typing import Any

logger = logging.getLogger(__name__)


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


# Upstream's Python client older than this speaks an HTTP API this server does not.
MINIMUM_PYTHON_CLIENT_VERSION = "0.1.0a104"
PYTHON_CLIENT_AGENT = b"python-tiled/"


class ClientVersionMiddleware:
    """Refuse (400) Tiled Python clients too old for this API, named by their User-Agent
    ``python-tiled/<version>``; a version that cannot be parsed is let through, with a
    warning. Other agents are not looked at."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http":
            agent = next((v for k, v in scope["headers"] if k == b"user-agent"), b"")
            if agent.startswith(PYTHON_CLIENT_AGENT):
                refusal = _too_old(agent[len(PYTHON_CLIENT_AGENT) :].decode("latin-1"))
                if refusal is not None:
                    return await refusal(scope, receive, send)
        await self.app(scope, receive, send)


@functools.lru_cache(maxsize=64)
def _too_old(version: str) -> Any:
    """The 400 response for a client at ``version``, or None (cached: few versions exist)."""
    from packaging.version import InvalidVersion, Version
    from starlette.responses import JSONResponse

    try:
        parsed = Version(version)
    except InvalidVersion:
        message = f"Could not parse the Python client version {version!r} in the User-Agent"
        logger.warning(message)
        warnings.warn(message, UserWarning, stacklevel=1)
        return None
    if parsed >= Version(MINIMUM_PYTHON_CLIENT_VERSION):
        return None
    return JSONResponse(
        {
            "detail": f"The Python client version {version} is too old; this server "
            f"supports python-tiled {MINIMUM_PYTHON_CLIENT_VERSION} and newer. "
            "Upgrade with: pip install --upgrade 'tiled[client]'"
        },
        status_code=400,
    )
