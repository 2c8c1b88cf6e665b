"""Pure ASGI middleware (cheaper than Starlette's BaseHTTPMiddleware on every request).

:class:`EdgeMiddleware` is the one layer every request passes, in front of the whole framework
application (see :class:`tiled.server.app.TiledApp`): it reads the headers once and applies
each cross-cutting concern only to the requests it concerns (CORS to requests with an
``Origin``, the client version check to Tiled's Python clients, CSRF to requests with cookies),
then hands the most frequent GETs (zarr keys, node metadata, health checks) straight to their
handlers, past the framework's outer layers, router and dependency solving. Zarr clients fire
many small requests; the cost of the layers in front of the store bounds their rate.
"""

from __future__ import annotations

import functools
import itertools
import logging
import secrets
import time
import warnings
from collections.abc import Callable
from typing import Any

logger = logging.getLogger(__name__)


# Upstream's Python client older than this speaks an HTTP API this server does not.
MINIMUM_PYTHON_CLIENT_VERSION = "0.1.0a104"
PYTHON_CLIENT_AGENT = b"python-tiled/"


def route_path(scope: Any) -> str:
    """The path the routes match: without the root path where the path starts with it (a
    proxy may have removed it already), as the framework's routing takes it."""
    path, root = scope["path"], scope.get("root_path", "")
    if root and path.startswith(root) and path[len(root) : len(root) + 1] in ("/", ""):
        return path[len(root) :]
    return path


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


# What a shortcut answers when something fails outside its own error handling (the shortcuts
# answer their errors themselves; this is the last resort the framework's outer layer was).
_SERVER_ERROR = b'{"detail":"Internal server error"}'
_SERVER_ERROR_HEADERS = [
    (b"content-type", b"application/json"),
    (b"content-length", str(len(_SERVER_ERROR)).encode()),
    (b"connection", b"close"),  # as tiled.server.errors answers a 500
]


class EdgeMiddleware:
    """Request ids, CORS, client versions and CSRF in one pass, and the shortcuts.

    ``inner`` is the rest of the application (the framework's own layers and routing); inside
    it, :class:`ShortcutDispatch` serves the requests handed in with a shortcut chosen.
    ``shortcuts`` maps a path prefix (``/zarr/v3``) to an ASGI app serving every GET and HEAD
    under it; that app receives the scope with ``path_params["path"]`` set to the rest of the
    path. Prefixes carry no trailing slash: ``/zarr/v3`` and ``/zarr/v3/`` both name the root.
    ``traced()`` says whether the framework traces requests (OpenTelemetry): then shortcut
    requests too pass through its layers, so that every request is traced.
    """

    def __init__(
        self,
        inner,
        *,
        cors,
        csrf,
        shortcuts: dict[str, Any],
        traced: Callable[[], bool] = lambda: False,
        metrics: Any = None,
    ):
        self.inner = inner
        # Counts each request's status, duration and body bytes (tiled.server.metrics).
        self.metrics = metrics
        self.shortcuts = tuple(shortcuts.items())
        self.traced = traced
        # Request ids: a random prefix per process, then a counter (16 hex digits, as
        # before; unique across workers without a random draw per request).
        self.id_prefix = secrets.token_hex(4).encode()
        self.id_counter = itertools.count()
        # Each concern wraps the stage after it, so a request can enter at the first stage
        # that concerns it: cors -> (version check, request id) -> csrf -> inner.
        self.csrf = csrf(inner)
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
            if self.metrics is not None and scope["method"] == "OPTIONS":
                # A preflight is answered by the CORS layer itself, before the request id.
                return await self._counted(self.cors, scope, receive, send)
            return await self.cors(scope, receive, send)
        await self._identified(scope, receive, send)

    async def _counted(self, app, scope, receive, send):
        status, size, begun = 500, 0, time.perf_counter()
        scope["tiled.counted"] = True

        async def counting_send(message):
            nonlocal status, size
            if message["type"] == "http.response.start":
                status = message["status"]
            else:
                size += len(message.get("body", b""))
            await send(message)

        try:
            await app(scope, receive, counting_send)
        finally:
            self.metrics.request_done(scope, status, time.perf_counter() - begun, size)

    async def _identified(self, scope, receive, send):
        agent, cookie = scope.pop("tiled.edge")
        request_id = b"%s%08x" % (self.id_prefix, next(self.id_counter) & 0xFFFFFFFF)
        started = False
        status, size, begun = 500, 0, time.perf_counter()

        async def tagged_send(message):
            nonlocal started, status, size
            if message["type"] == "http.response.start":
                started, status = True, message["status"]
                # A new list: responses sent more than once (shared ones) keep their own, and
                # the layers outside (CORS) may add to this one.
                tag = (b"x-tiled-request-id", request_id)
                message["headers"] = [*message.get("headers", ()), tag]
            else:
                size += len(message.get("body", b""))
            await send(message)

        try:
            if agent is not None and agent.startswith(PYTHON_CLIENT_AGENT):
                refusal = _too_old(agent[len(PYTHON_CLIENT_AGENT) :].decode("latin-1"))
                if refusal is not None:
                    return await refusal(scope, receive, tagged_send)
            shortcut = self._shortcut(scope)
            if shortcut is not None and cookie is None and not self.traced():
                return await shortcut(scope, receive, tagged_send)
            scope["tiled.shortcut"] = shortcut
            await self.csrf(scope, receive, tagged_send)
        except Exception:
            # The framework answers (and logs) its own routes' failures; this answers what
            # escapes a shortcut, so that the client still gets JSON (and the id to report).
            if not started:
                logger.exception("Unhandled error on %s %s", scope["method"], scope["path"])
                start = {"type": "http.response.start", "status": 500}
                await tagged_send({**start, "headers": list(_SERVER_ERROR_HEADERS)})
                await tagged_send({"type": "http.response.body", "body": _SERVER_ERROR})
            raise
        finally:
            if self.metrics is not None and "tiled.counted" not in scope:
                self.metrics.request_done(scope, status, time.perf_counter() - begun, size)

    def _shortcut(self, scope) -> Any:
        method = scope["method"]
        reading = method in ("GET", "HEAD")
        path = route_path(scope)
        for prefix, app in self.shortcuts:
            if path.startswith(prefix) and path[len(prefix) : len(prefix) + 1] in ("/", ""):
                # A shortcut app takes GET and HEAD, and the methods it lists (the zarr store
                # takes its writes), all past the framework's routing.
                if not reading and method not in getattr(app, "write_methods", ()):
                    return None
                scope["path_params"] = {"path": path[len(prefix) + 1 :]}
                return app
        return None


class ShortcutDispatch:
    """Inside the framework's layers: the shortcut the edge chose for a request it handed in
    (one with cookies, after the CSRF check, or any while requests are traced), else the
    framework's routing."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        shortcut = scope.pop("tiled.shortcut", None)
        await (shortcut or self.app)(scope, receive, send)


class TelemetryProbe:
    """Whether a FastAPI application traces requests, asked at most once per ``interval``.

    FastAPI asks its telemetry providers on every request (microseconds: several environment
    reads); they are installed once, usually before the server starts, and never removed, so
    a provider installed while the server runs is noticed within ``interval`` seconds, and
    from then on the answer is kept."""

    def __init__(self, app: Any, interval: float = 1.0):
        # FastAPI's native telemetry (0.16x); older versions have none.
        self._telemetry = getattr(app, "_native_telemetry", None)
        self._interval = interval
        self._enabled = False
        self._next_check = 0.0

    def __call__(self) -> bool:
        if self._enabled or self._telemetry is None:
            return self._enabled
        now = time.monotonic()
        if now >= self._next_check:
            self._next_check = now + self._interval
            self._enabled = bool(self._telemetry.enabled())
        return self._enabled
