"""Pure ASGI middleware (cheaper than Starlette's BaseHTTPMiddleware on every request).

:class:`EdgeMiddleware` is the one layer every request passes: it reads the headers once and
applies each cross-cutting concern only to the requests it concerns (CORS to requests with an
``Origin``, the client version check to Tiled's Python clients, CSRF to requests with cookies),
then hands the most frequent GETs (zarr keys, node metadata, health checks) straight to their
handlers, past the framework's router and dependency solving. Zarr clients fire many small
requests; the cost of the layers in front of the store bounds their rate.
"""

from __future__ import annotations

import functools
import itertools
import logging
import secrets
import warnings
from typing import Any

logger = logging.getLogger(__name__)


# Upstream's Python client older than this speaks an HTTP API this server does not.
MINIMUM_PYTHON_CLIENT_VERSION = "0.1.0a104"
PYTHON_CLIENT_AGENT = b"python-tiled/"


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


class EdgeMiddleware:
    """Request ids, CORS, client versions and CSRF in one pass, and the shortcuts.

    ``inner`` is the rest of the application (FastAPI's routing); ``shortcuts`` maps a path
    prefix (``/zarr/v3``) to an ASGI app serving every GET and HEAD under it; that app
    receives the scope with ``path_params["path"]`` set to the rest of the path.
    Prefixes carry no trailing slash: ``/zarr/v3`` and ``/zarr/v3/`` both name the root.
    """

    def __init__(self, inner, *, cors, csrf, shortcuts: dict[str, Any]):
        self.inner = inner
        self.shortcuts = tuple(shortcuts.items())
        # Request ids: a random prefix per process, then a counter (16 hex digits, as
        # before; unique across workers without a random draw per request).
        self.id_prefix = secrets.token_hex(4).encode()
        self.id_counter = itertools.count()
        # Each concern wraps the stage after it, so a request can enter at the first stage
        # that concerns it: cors -> (version check, request id) -> csrf -> dispatch.
        self.csrf = csrf(self._dispatch)
        self.cors = cors(self._identified)

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.inner(scope, receive, send)
        origin = agent = cookie = None
        for name, value in scope["headers"]:
            if name == b"origin":
                origin = value
            elif name == b"user-agent":
                agent = value
            elif name == b"cookie":
                cookie = value
        scope["tiled.edge"] = (agent, cookie)
        if origin is not None:
            return await self.cors(scope, receive, send)
        await self._identified(scope, receive, send)

    async def _identified(self, scope, receive, send):
        agent, cookie = scope.pop("tiled.edge")
        request_id = b"%s%08x" % (self.id_prefix, next(self.id_counter) & 0xFFFFFFFF)

        async def tagged_send(message):
            if message["type"] == "http.response.start":
                # A new list: responses sent more than once (shared ones) keep their own, and
                # the layers outside (CORS) may add to this one.
                tag = (b"x-tiled-request-id", request_id)
                message["headers"] = [*message.get("headers", ()), tag]
            await send(message)

        if agent is not None and agent.startswith(PYTHON_CLIENT_AGENT):
            refusal = _too_old(agent[len(PYTHON_CLIENT_AGENT) :].decode("latin-1"))
            if refusal is not None:
                return await refusal(scope, receive, tagged_send)
        shortcut = self._shortcut(scope)
        if shortcut is not None and cookie is None:
            return await shortcut(scope, receive, tagged_send)
        scope["tiled.shortcut"] = shortcut
        await self.csrf(scope, receive, tagged_send)

    def _shortcut(self, scope) -> Any:
        method = scope["method"]
        reading = method in ("GET", "HEAD")
        path = scope["path"]
        root = scope.get("root_path", "")
        if root and path.startswith(root):
            path = path[len(root) :]
        for prefix, app in self.shortcuts:
            if path.startswith(prefix) and path[len(prefix) : len(prefix) + 1] in ("/", ""):
                # A shortcut app takes GET and HEAD, and the methods it lists (the zarr store
                # takes its writes), all past the framework's routing.
                if not reading and method not in getattr(app, "write_methods", ()):
                    return None
                scope["path_params"] = {"path": path[len(prefix) + 1 :]}
                return app
        return None

    async def _dispatch(self, scope, receive, send):
        app = scope.pop("tiled.shortcut", None) or self.inner
        await app(scope, receive, send)
