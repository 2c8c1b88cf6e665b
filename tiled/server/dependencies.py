"""The one dependency that turns a request path into an authorized node."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Annotated, Any, TypeVar

from fastapi import Depends, Request

from ..access.blobs import blob_of_tags
from ..access.identity import Identity
from ..access.policies import ApprovesTags, Chain
from ..access.upstream_policies import decides_asynchronously
from ..access.view import AccessView
from ..adapters.protocols import BaseAdapter, supports
from ..errors import Forbidden, NoSuchEntry, Unauthenticated, Unsupported, WrongStructureFamily
from .authenticators import CurrentIdentity


@dataclass(slots=True)  # made on every request: a frozen dataclass costs 3x to build
class Node:
    """A resolved node: its adapter, where it is, who asked, and what they may see of it."""

    adapter: Any  # a BaseAdapter; routes narrow it by family or with capable()
    path_parts: tuple[str, ...]
    identity: Identity
    view: AccessView | None = None
    chain: tuple = ()
    granted: frozenset[str] = frozenset()

    def require(self, scope: str) -> None:
        """Refuse (403) unless the identity holds ``scope`` on this node."""
        require_node_scope(self.granted, scope)

    async def members(self) -> Any:
        """The node with only the members the identity may see (for listings and exports)."""
        return await self.view.members(self.chain) if self.view is not None else self.adapter

    async def member_view(self, key: str, child: BaseAdapter) -> BaseAdapter:
        """A child of this node with only the members the identity may see."""
        if self.view is None:
            return child
        return await self.view.members((*self.chain, (key, child)))

    def subtree(self) -> Any:
        """The node with only the members whose data the identity may read, at every depth
        (for whole-subtree exports)."""
        if self.view is None:
            return self.adapter
        return self.view.members_deep(self.chain, "read:data")

    async def approve_tags(
        self, current: frozenset[str] | None, requested: list[str] | None
    ) -> tuple[dict[str, Any] | None, list[str] | None]:
        """``(access blob to store or None for unchanged, tags to report or None)`` for this
        node (``current`` None: a child about to be created under it).

        A policy that decides tags (``approve_tags``: the catalog tag policy; ``init_node`` and
        ``modify_node``: a policy written for upstream) may refuse (403) or change them; under
        other policies the requested tags are stored as given.
        """
        policy = self.view.policy if self.view else None
        if decides_asynchronously(policy):
            node = None if current is None else self.adapter
            tags = await policy.approve_tags(self.identity, current, requested, node)
        elif supports(policy, ApprovesTags):
            granted = None if current is None else self.granted
            tags = policy.approve_tags(self.identity, current, requested, granted)
        else:
            blob = blob_of_tags(requested) if requested is not None else None
            return blob, _reported_without_policy(current, requested)
        # Reported when the policy made them differ from the request (as upstream reports).
        reported = sorted(tags) if requested is None or frozenset(requested) != tags else None
        if current is not None and tags == current:
            return None, reported
        return blob_of_tags(tags) or {}, reported

    @property
    def path(self) -> str:
        return "/".join(self.path_parts)

    @property
    def key(self) -> str:
        return self.path_parts[-1] if self.path_parts else ""

    @property
    def family(self) -> str:
        return self.adapter.structure_family.value


def _reported_without_policy(
    current: frozenset[str] | None, requested: list[str] | None
) -> list[str] | None:
    """The tags a write answers with where no policy decides them (None: no ``access_tags``).

    Upstream stores none then, and answers with the node's tags whenever the request differs
    from them (a new node has none: ``[]``); this server stores the tags requested, and
    answers when upstream does, with those. Upstream's client keeps the tags it sent unless
    the answer has them: a node it created without this answer fails on ``access_tags``,
    ``metadata_copy()`` and tag patches.
    """
    if requested is None:
        return [] if current is None else None
    return sorted(set(requested)) if frozenset(requested) != (current or frozenset()) else None


def split_path(path: str) -> tuple[str, ...]:
    # Empty segments are dropped, as upstream does: /a//b/ is /a/b.
    parts = tuple(part for part in path.split("/") if part)
    if "\x00" in path:  # no key holds one (PostgreSQL cannot even compare it): no such node
        raise NoSuchEntry(list(parts))
    return parts


async def resolve_node(
    request: Request, identity: Identity, parts: tuple[str, ...], scope: str
) -> Node:
    """Authorize and look up a node, the same way for every route.

    Missing credentials -> 401; a node the identity may not see -> 404 (its existence is not
    revealed); a visible node without the scope the route needs -> 403.
    """
    require_scope(identity, scope, request)
    state = request.app.state.tiled
    view = AccessView(identity, state.access_policy)
    await view.prepare(state.root_tree)
    chain = await view.lookup(state.root_tree, parts)
    granted = await visible_node_scopes(view, chain, parts)
    require_node_scope(granted, scope)
    return Node(chain[-1][1], parts, identity, view, tuple(chain), granted)


# The 404-versus-403 rule, in two steps because the zarr store checks the identity's own
# scopes (401) between them: every route, /api/v1 and /zarr alike, decides through these two.
async def visible_node_scopes(
    view: AccessView, chain: Chain, parts: Sequence[str]
) -> frozenset[str]:
    """The scopes the identity holds on the node at the end of ``chain`` (found at ``parts``);
    raises :class:`NoSuchEntry` (404) when the identity may not see it.

    Under a policy, a node whose metadata the identity may not read does not exist for it.
    Without one there is nothing to hide: the route's own scope decides, so a key with only
    read:data reads data, as upstream's does.
    """
    granted = await view.scopes(chain)
    if view.policy is not None and "read:metadata" not in granted:
        raise NoSuchEntry(list(parts))
    return granted


def require_node_scope(granted: frozenset[str], scope: str) -> None:
    """Refuse (403) a visible node to an identity that lacks ``scope`` on it."""
    if scope not in granted:
        raise Forbidden(
            "Not enough permissions to perform this action on this node. "
            f"Requires scope {scope!r}; the node grants {sorted(granted)}"
        )


Capability = TypeVar("Capability")


def capable(adapter: object, capability: type[Capability], action: str) -> Capability:
    """``adapter`` if it offers ``capability`` (a protocol of ``tiled.adapters.protocols``),
    else 405 naming ``action``."""
    if not supports(adapter, capability):
        raise Unsupported(f"This node does not support {action}.")
    return adapter  # type: ignore[return-value]  # supports() checked it structurally


def require_scope(identity: Identity, scope: str, request: Request) -> None:
    if scope in identity.scopes:
        return
    message = (
        f"Not enough permissions. Requires scopes [{scope!r}]. "
        f"Request had scopes {sorted(identity.scopes)}"
    )
    # 401 even for valid credentials, as upstream's HTTP API answers: these credentials
    # cannot do this anywhere (other credentials might). A node's own refusal is a 403.
    headers = {"WWW-Authenticate": f'Bearer scope="{scope}"'}
    raise Unauthenticated(message, headers)


def node_dependency(scope: str, families: Iterable[str] | None = None):
    """A FastAPI dependency resolving ``{path}`` for requests that need ``scope``."""
    accepted = frozenset(families) if families is not None else None

    async def resolve(request: Request, path: str, identity: CurrentIdentity) -> Node:
        node = await resolve_node(request, identity, split_path(path), scope)
        if accepted is not None and node.family not in accepted:
            raise WrongStructureFamily("/" + node.path, node.family, accepted)
        return node

    return Depends(resolve)


MetadataNode = Annotated[Node, node_dependency("read:metadata")]
ArrayNode = Annotated[Node, node_dependency("read:data", {"array", "sparse"})]
TableNode = Annotated[Node, node_dependency("read:data", {"table"})]
ContainerNode = Annotated[Node, node_dependency("read:data", {"container"})]
GroupNode = Annotated[Node, node_dependency("read:data", {"container", "table"})]
