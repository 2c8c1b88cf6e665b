"""The one dependency that turns a request path into an authorized node."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import Depends, Request

from ..access.identity import Identity
from ..errors import Forbidden, NoSuchEntry, Unauthenticated, WrongStructureFamily
from .authentication import get_identity


@dataclass(frozen=True)
class Node:
    """A resolved node: its adapter, where it is, and who asked."""

    adapter: Any
    path_parts: tuple[str, ...]
    identity: Identity

    @property
    def path(self) -> str:
        return "/".join(self.path_parts)

    @property
    def key(self) -> str:
        return self.path_parts[-1] if self.path_parts else ""

    @property
    def family(self) -> str:
        return self.adapter.structure_family.value


def split_path(path: str) -> tuple[str, ...]:
    # Empty segments are dropped, as upstream does: /a//b/ is /a/b.
    return tuple(part for part in path.split("/") if part)


async def lookup(root: Any, parts: tuple[str, ...]) -> Any:
    if not parts:
        return root
    lookup_adapter = getattr(root, "lookup_adapter", None)
    if lookup_adapter is None:
        raise NoSuchEntry(list(parts))
    return await lookup_adapter(list(parts))


def require_scope(identity: Identity, scope: str, request: Request) -> None:
    if scope in identity.scopes:
        return
    message = (
        f"Not enough permissions. Requires scopes [{scope!r}]. "
        f"Request had scopes {sorted(identity.scopes)}"
    )
    if not identity.authenticated:
        headers = {"WWW-Authenticate": f'Bearer scope="{scope}"'}
        raise Unauthenticated(message, headers)
    raise Forbidden(message)


def node_dependency(scope: str, families: Iterable[str] | None = None):
    """A FastAPI dependency resolving ``{path}`` for requests that need ``scope``."""
    accepted = frozenset(families) if families is not None else None

    async def resolve(request: Request, path: str, identity: CurrentIdentity) -> Node:
        require_scope(identity, scope, request)
        parts = split_path(path)
        adapter = await lookup(request.app.state.root_tree, parts)
        if accepted is not None and adapter.structure_family.value not in accepted:
            raise WrongStructureFamily(
                "/" + "/".join(parts), adapter.structure_family.value, accepted
            )
        return Node(adapter, parts, identity)

    return Depends(resolve)


CurrentIdentity = Annotated[Identity, Depends(get_identity)]
MetadataNode = Annotated[Node, node_dependency("read:metadata")]
ArrayNode = Annotated[Node, node_dependency("read:data", {"array", "sparse"})]
TableNode = Annotated[Node, node_dependency("read:data", {"table"})]
ContainerNode = Annotated[Node, node_dependency("read:data", {"container"})]
GroupNode = Annotated[Node, node_dependency("read:data", {"container", "table"})]
