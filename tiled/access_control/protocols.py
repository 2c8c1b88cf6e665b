"""Upstream's interface of access policies, which policies written for upstream implement.

Such a policy decides with coroutines, given the node (an adapter), the requesting
:class:`~tiled.server.schemas.Principal` (None when anonymous or single-user), the tags its API
key is limited to (None: not limited) and its credentials' scopes:

- ``allowed_scopes(node, ...)``: what the principal may do on the node (without
  ``read:metadata`` the node does not exist for it);
- ``filters(node, ..., scopes)``: the queries that narrow the node's children to those the
  principal may see (all must match), or ``NO_ACCESS``;
- ``init_node(...)`` / ``modify_node(node, ...)``: ``(changed, tags)`` for a node being created
  or updated with the access tags asked for; a ValueError refuses (403).

This server runs such a policy through :class:`tiled.access.upstream_policies.UpstreamPolicy`
(wrapped where the policy is configured), which asks these questions at the points where
upstream asks them.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable
from typing import Any

from ..access.blobs import PRINCIPAL_TAG_PREFIXES
from ..type_aliases import AccessTags, Filters, Scopes


def normalize_access_tags(tags: Iterable[str] = ()) -> AccessTags:
    """``tags`` as a frozenset; a single string is refused (it is not a list of one tag)."""
    if isinstance(tags, str):
        raise TypeError("access tags must be an iterable of strings, not a single string.")
    return frozenset(tags)


class AccessPolicy(ABC):
    @abstractmethod
    async def init_node(
        self,
        principal: Any,
        authn_access_tags: AccessTags | None,
        authn_scopes: Scopes,
        access_tags: AccessTags | None = None,
    ) -> tuple[bool, AccessTags]: ...

    async def modify_node(
        self,
        node: Any,
        principal: Any,
        authn_access_tags: AccessTags | None,
        authn_scopes: Scopes,
        access_tags: AccessTags | None,
    ) -> tuple[bool, AccessTags]:
        """By default a node's tags do not change."""
        return False, access_tags or normalize_access_tags()

    @abstractmethod
    async def allowed_scopes(
        self,
        node: Any,
        principal: Any,
        authn_access_tags: AccessTags | None,
        authn_scopes: Scopes,
    ) -> Scopes: ...

    @abstractmethod
    async def filters(
        self,
        node: Any,
        principal: Any,
        authn_access_tags: AccessTags | None,
        authn_scopes: Scopes,
        scopes: Scopes,
    ) -> Filters: ...


__all__ = ["PRINCIPAL_TAG_PREFIXES", "AccessPolicy", "normalize_access_tags"]
