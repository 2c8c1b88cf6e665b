"""``build_app``: a FastAPI application serving a tree over HTTP API v1 and zarr v2/v3."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import re
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import HTMLResponse, JSONResponse

from .._version import __version__
from ..access.policies import StartsWithTree
from ..adapters.protocols import supports
from ..config import Authentication, Database
from .authentication import (
    CSRFMiddleware,
    UnscalableConfig,
    build_authenticator,
    install_openapi_security,
)
from .bodies import BodyLimit
from .errors import install_error_handlers
from .metrics import metrics_from_environment, metrics_router
from .middleware import EdgeMiddleware, ShortcutDispatch, TelemetryProbe
from .settings import Environment, ServerSettings, read_environment
from .state import TiledState
from .state import install as install_state

if TYPE_CHECKING:
    from ..query_registration import QueryRegistry
    from ..serialization import DeserializationRegistry, SerializationRegistry
    from ..validation_registration import ValidationRegistry
    from .compression import CompressionRegistry

logger = logging.getLogger(__name__)

# The page at the server's root: no data, only where the API and its documentation are.
LANDING_PAGE = """<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>Tiled</title></head>
<body><h1>Tiled {version}</h1>
<p>The HTTP API is at <a href="api/v1/">api/v1/</a> (its schema at <a href="docs">docs</a>);
read it with the Python client: <code>from tiled.client import from_uri</code>.</p>
</body></html>
"""


# A response is an ASGI app: the same one answers every health check.
HEALTHY = JSONResponse({"status": "ready"})


class TiledApp(FastAPI):
    """A FastAPI application behind Tiled's edge.

    Every HTTP request meets the :class:`~tiled.server.middleware.EdgeMiddleware` first, in
    front of all of FastAPI's layers, so that the requests it answers itself (zarr keys, node
    metadata, health checks) cost none of them; it hands the others to FastAPI as they came.
    """

    edge: EdgeMiddleware | None = None

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if self.edge is None or scope["type"] != "http":
            return await super().__call__(scope, receive, send)
        # What FastAPI's own entry sets, which the shortcuts read too.
        scope["app"] = self
        if self.root_path:
            scope["root_path"] = self.root_path
        await self.edge(scope, receive, send)

    async def framework(self, scope: Any, receive: Any, send: Any) -> None:
        """FastAPI's own handling of a request (its outer layers, then routing)."""
        await super().__call__(scope, receive, send)


def _authentication(value: Authentication | Mapping | None, env: Environment) -> Authentication:
    """The given fields, then the ``TILED_*`` variables, then defaults."""
    if isinstance(value, Authentication):
        given = {name: getattr(value, name) for name in value.model_fields_set}
    else:
        given = dict(value or {})
    given = {name: item for name, item in given.items() if item is not None}
    return Authentication.model_validate({**env.section("authentication"), **given})


def _database(server_settings: Mapping | ServerSettings | None, env: Environment):
    """The authentication database settings: ``server_settings["database"]``, else
    ``TILED_DATABASE_*``, else None (in-memory, used only in multi-user mode)."""
    value = server_settings.get("database") if isinstance(server_settings, Mapping) else None
    if value is None:
        value = env.section("database") or None
    if value is None or isinstance(value, Database):
        return value
    return Database.model_validate(dict(value))


def _settings(server_settings: Mapping | ServerSettings | None, env: Environment):
    if isinstance(server_settings, ServerSettings):
        return server_settings
    given = {k: v for k, v in dict(server_settings or {}).items() if v is not None}
    return ServerSettings.from_mapping({**env.server_settings(), **given})


def _given(registry: Any, default: Any) -> Any:
    # An empty registry is a choice (e.g. compress nothing), not a missing argument.
    return default if registry is None else registry


def _lifespan(
    tree: Any,
    tasks: Mapping[str, list] | None,
    authenticator: Any,
    policy: Any,
    metrics: Any = None,
    webhooks: Any = None,
    streams: Any = None,
):
    tasks = dict(tasks or {})

    def collected(kind: str) -> list:
        # The metrics start first (to see every database engine made), then the
        # authentication database opens; they close last. A policy that reads the tree's
        # catalog (its startup is optional) starts after the tree.
        first = {"startup": [authenticator.startup]}.get(kind, [])
        last = {"shutdown": [authenticator.shutdown]}.get(kind, [])
        if metrics is not None:
            first = {"startup": [metrics.start, *first], "background": [metrics.share]}.get(
                kind, first
            )
            last = [*last, metrics.stop] if kind == "shutdown" else last
        own = list(tasks.get(kind, [])) + list(getattr(tree, f"{kind}_tasks", []))
        if kind == "startup" and supports(policy, StartsWithTree):
            own.append(functools.partial(policy.startup, tree))
        for service in (webhooks, streams):  # they need their catalogs, from start to end
            if service is not None:
                own = {
                    "startup": [*own, service.startup], "shutdown": [service.shutdown, *own]
                }.get(kind, own)  # fmt: skip
        return first + own + last

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
        for task in collected("startup"):
            await task()
        background = [asyncio.create_task(task()) for task in collected("background")]
        try:
            yield
        finally:
            for task in background:
                task.cancel()
            for task in collected("shutdown"):
                await task()

    return lifespan


def build_app(
    tree: Any,
    authentication: Authentication | Mapping | None = None,
    server_settings: Mapping | ServerSettings | None = None,
    query_registry: QueryRegistry | None = None,
    serialization_registry: SerializationRegistry | None = None,
    deserialization_registry: DeserializationRegistry | None = None,
    compression_registry: CompressionRegistry | None = None,
    validation_registry: ValidationRegistry | None = None,
    tasks: Mapping[str, list] | None = None,
    scalable: bool = False,
    access_policy=None,
    include_routers=None,
    webhook_url_validator=None,
) -> FastAPI:
    """Build the application serving ``tree`` (any adapter, usually a container).

    Settings not given in ``authentication`` and ``server_settings`` come from the ``TILED_*``
    environment variables (see :mod:`tiled.server.settings`), then defaults.

    Each registry not given is the module-level default: ``query_registry`` decodes the
    search filters of ``/search`` and ``/distinct`` (and is listed at ``/api/v1/``);
    ``serialization_registry`` encodes data responses; ``deserialization_registry`` reads the
    bodies of writes; ``compression_registry`` compresses response bodies (HTTP content
    coding); ``validation_registry`` validates the specs of created and updated nodes.

    ``webhook_url_validator`` (an async callable given the registration, raising
    ``HTTPException`` to refuse it) replaces the checks of webhook URLs that the
    ``webhooks`` settings describe.
    """
    from ..access.upstream_policies import as_access_policy
    from ..query_registration import default_query_registry
    from ..serialization import default_deserialization_registry, default_serialization_registry
    from ..validation_registration import default_validation_registry
    from .api import about, assets, awkward, data, metadata, nodes, ragged, writes
    from .api import streams as streams_api
    from .compression import default_compression_registry
    from .zarr.router import zarr_router

    access_policy = as_access_policy(access_policy)
    env = read_environment()
    settings = _settings(server_settings, env)
    authenticator = build_authenticator(
        _authentication(authentication, env), _database(server_settings, env), scalable
    )
    metrics = metrics_from_environment() if settings.prometheus else None
    webhooks = None
    if settings.webhooks is not None:
        from .api.webhooks import WebhookService

        webhooks = WebhookService.for_tree(tree, settings.webhooks, webhook_url_validator)
    from .api.streams import StreamService

    streams = None
    streaming_cache = StreamService.options_for(tree, settings.streaming_cache)
    if streaming_cache is not None:
        if scalable and streaming_cache.in_memory:
            raise UnscalableConfig(
                "With several server processes, live streams cannot be kept in memory: "
                "set streaming_cache.uri to a Redis server (redis://...)."
            )
        streams = StreamService.for_tree(tree, streaming_cache)
    app = TiledApp(
        title="Tiled",
        version=__version__,
        lifespan=_lifespan(tree, tasks, authenticator, access_policy, metrics, webhooks, streams),
        root_path=settings.root_path,
    )
    state = TiledState(
        root_tree=tree,
        settings=settings,
        authenticator=authenticator,
        access_policy=access_policy,
        query_registry=_given(query_registry, default_query_registry),
        serialization_registry=_given(serialization_registry, default_serialization_registry),
        deserialization_registry=_given(deserialization_registry, default_deserialization_registry),
        compression_registry=_given(compression_registry, default_compression_registry),
        validation_registry=_given(validation_registry, default_validation_registry),
        webhooks=webhooks,
        streams=streams,
    )
    install_state(app, state)
    install_error_handlers(app)
    install_openapi_security(app)
    routers = (about, metadata, data, nodes, writes, assets, awkward, ragged, streams_api)
    for router in (module.router for module in routers):
        app.include_router(router, prefix="/api/v1")
    if authenticator.router is not None:  # multi-user: /api/v1/auth
        app.include_router(authenticator.router, prefix="/api/v1")
    if metrics is not None:
        app.include_router(metrics_router(metrics), prefix="/api/v1")
    if webhooks is not None:
        from .api.webhooks import router as webhooks_router

        app.include_router(webhooks_router, prefix="/api/v1")
    for router in list(include_routers or []) + list(getattr(tree, "include_routers", [])):
        app.include_router(router, prefix="/api/v1")
        app.include_router(router, prefix="/custom")

    @app.get("/healthz", include_in_schema=False)
    async def healthz():
        return HEALTHY

    @app.get("/", include_in_schema=False)
    async def landing_page():
        # Where a browser (or SimpleTiledServer.web_ui_link) lands: pointers to the API.
        return HTMLResponse(LANDING_PAGE.format(version=__version__))

    _warn_of_unmatchable_origins(settings.allow_origins or ())
    # Always installed, as upstream's: a preflight from an origin not allowed gets a 400.
    cors = functools.partial(
        CORSMiddleware,
        allow_origins=list(settings.allow_origins or ()),
        # Writes too (/api/v1, and zarr clients in a browser), from the allowed origins only.
        allow_methods=["GET", "HEAD", "OPTIONS", "POST", "PUT", "PATCH", "DELETE", "PROPFIND"],
        allow_headers=["*"],
        expose_headers=["ETag", "Content-Length", "Content-Range"],
    )
    # The most frequent requests (zarr keys, node metadata) go from the edge straight to
    # their handlers.
    shortcuts = {f"/zarr/v{n}": zarr_router(n) for n in (3, 2)}
    shortcuts.update((route.prefix, route) for route in metadata.PLAIN_ROUTES)
    shortcuts["/healthz"] = HEALTHY  # load balancers ask it several times a second
    # Inside the shortcuts' dispatch: the shortcuts (zarr writes) read with limits of their own.
    app.add_middleware(BodyLimit, limit=settings.write_max_bytes)
    app.add_middleware(ShortcutDispatch)  # for the shortcut requests the edge hands in
    app.edge = EdgeMiddleware(
        app.framework,
        cors=cors,
        csrf=CSRFMiddleware,
        shortcuts=shortcuts,
        traced=TelemetryProbe(app),
        metrics=metrics,
    )
    return app


def build_app_from_config(
    config: Any, scalable: bool = False, *, source_filepath: str | os.PathLike | None = None
) -> FastAPI:
    """Build the application a configuration describes.

    ``config`` is a :class:`tiled.config.Config` (as returned by ``parse_configs``) or a plain
    dict of the same keys, e.g. ``{"trees": [{"path": "/", "tree": "pkg.mod:tree"}]}``.
    Raises :class:`tiled.config.ConfigError` for an unusable configuration.
    """
    from ..config import construct_build_app_kwargs

    kwargs = construct_build_app_kwargs(config, source_filepath=source_filepath)
    return build_app(**kwargs, scalable=scalable)


def app_factory() -> FastAPI:
    """The application of the configuration at ``$TILED_CONFIG`` (default ``config.yml``).

    For ASGI servers that import an application factory, e.g.
    ``uvicorn --factory tiled.server.app:app_factory`` or gunicorn with uvicorn workers.
    """
    from ..config import parse_configs

    return build_app_from_config(parse_configs(read_environment().config or "config.yml"))


def __getattr__(name: str) -> Any:
    # ``tiled.server.app:app``, built from $TILED_CONFIG on first access (not at import).
    if name == "app":
        application = app_factory()
        globals()["app"] = application
        return application
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


_ORIGIN = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://[^/?#\s]+$")


def _warn_of_unmatchable_origins(origins: Iterable[str]) -> None:
    """A warning for each allowed origin that no browser sends (a browser's ``Origin`` is
    ``scheme://host[:port]``, with no path, not even a trailing slash): accepted, as upstream
    accepts them, but such an entry allows nothing."""
    for origin in origins:
        if origin != "*" and not _ORIGIN.match(origin):
            logger.warning(
                "allow_origins: %r is no origin a browser sends (scheme://host[:port], "
                "without a path or a trailing slash): it allows nothing",
                origin,
            )
