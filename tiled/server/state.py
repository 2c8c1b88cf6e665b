"""The state of one application, in one typed object.

``build_app`` stores a :class:`TiledState` as ``app.state.tiled``. Route handlers read it
through :func:`tiled_state`; the hot paths (the zarr store, the plain metadata routes, identity)
read ``request.app.state.tiled`` directly, one attribute lookup with no call in between.

Upstream Tiled's applications expose ``app.state.root_tree``, ``app.state.access_policy`` and
``app.state.authenticated``, which its tests and some deployments read: ``build_app`` sets those
too (:func:`install`), as copies of this object's values. Nothing in this package reads them,
so assigning to them changes nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from starlette.requests import HTTPConnection

    from ..query_registration import QueryRegistry
    from ..serialization import DeserializationRegistry, SerializationRegistry
    from ..validation_registration import ValidationRegistry
    from .authenticators import MultiUserAuthenticator, SingleUserAuthenticator
    from .compression import CompressionRegistry
    from .settings import ServerSettings

# The names upstream's applications set on ``app.state`` (each a field or property here).
UPSTREAM_ALIASES = ("root_tree", "access_policy", "authenticated")


@dataclass(frozen=True)
class TiledState:
    """Everything a request handler needs from the application that received the request."""

    root_tree: Any
    settings: ServerSettings
    authenticator: SingleUserAuthenticator | MultiUserAuthenticator
    access_policy: Any
    query_registry: QueryRegistry
    serialization_registry: SerializationRegistry
    deserialization_registry: DeserializationRegistry
    compression_registry: CompressionRegistry
    validation_registry: ValidationRegistry
    # tiled.server.api.webhooks.WebhookService, where the server has a webhooks section.
    webhooks: Any = None
    # tiled.server.api.streams.StreamService, where the server has a streaming cache.
    streams: Any = None

    @property
    def authenticated(self) -> bool:
        """Whether requests need credentials (upstream's ``app.state.authenticated``)."""
        return self.authenticator.required


def install(app: Any, state: TiledState) -> None:
    """Store ``state`` on ``app`` (a Starlette application), with upstream's aliases."""
    app.state.tiled = state
    for name in UPSTREAM_ALIASES:
        setattr(app.state, name, getattr(state, name))
    from ..access.upstream_policies import decides_asynchronously

    if decides_asynchronously(state.access_policy):
        app.state.access_policy = state.access_policy.policy  # the one configured (upstream's kind)


def tiled_state(connection: HTTPConnection) -> TiledState:
    """The state of the application that received ``connection`` (a request)."""
    return connection.app.state.tiled
