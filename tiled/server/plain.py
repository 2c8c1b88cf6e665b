"""GET routes the edge serves directly, past FastAPI's routing and dependency solving.

The most frequent reads (a node's metadata; zarr keys have their own store) cost several
times more in the framework than in their own work. A :class:`PlainRoute` gives its handler
the same authorized :class:`~tiled.server.dependencies.Node` that FastAPI's dependency would
(same identity, scopes, access policy and 404/403 rules) and answers errors from the same table.
The route stays declared in FastAPI too, for the OpenAPI document, with an endpoint that calls
the same handler.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from .authenticators import get_identity
from .dependencies import Node, resolve_node, split_path
from .errors import error_response, served_tree

Handler = Callable[[Request, Node], Awaitable[Response]]


@dataclass(frozen=True)
class PlainRoute:
    """``GET {prefix}/{path}``: ``handler(request, node)`` for the node at ``path``, which the
    identity must hold ``scope`` on."""

    prefix: str
    scope: str
    handler: Handler

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        request = Request(scope, receive)
        try:
            identity = await get_identity(request)
            parts = split_path(scope["path_params"]["path"])
            node = await resolve_node(request, identity, parts, self.scope)
            response = await self.handler(request, node)
        except Exception as exception:  # noqa: BLE001 - every error gets its JSON answer
            response = error_response(exception, served_tree(request))
        await response(scope, receive, send)
