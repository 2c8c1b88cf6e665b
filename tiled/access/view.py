"""What one identity sees of the tree under one policy: lookups, scopes and filtered members."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..errors import NoSuchEntry
from .identity import Identity
from .policies import AccessPolicy, Chain


@dataclass(frozen=True)
class AccessView:
    identity: Identity
    policy: AccessPolicy | None = None

    async def lookup(self, root: Any, parts: tuple[str, ...]) -> Chain:
        """The ``(key, adapter)`` chain from the root to ``parts``; invisible nodes do not exist."""
        if not parts:
            return (("", root),)
        lookup_adapter = getattr(root, "lookup_adapter", None)
        if lookup_adapter is None:
            raise NoSuchEntry(list(parts))
        if self.policy is None:
            # One lookup for the whole path (a catalog answers it in one query).
            return (("", root), (parts[-1], await lookup_adapter(list(parts))))
        chain: list[tuple[str, Any]] = [("", root)]
        for depth, key in enumerate(parts):
            parent = chain[-1][1]
            if getattr(parent, "lookup_adapter", None) is None:
                raise NoSuchEntry(list(parts[: depth + 1]))
            child = await parent.lookup_adapter([key])
            if not self.policy.visible(self.identity, chain, key, child):
                raise NoSuchEntry(list(parts[: depth + 1]))
            chain.append((key, child))
        return tuple(chain)

    def scopes(self, chain: Chain) -> frozenset[str]:
        if self.policy is None:
            return self.identity.scopes
        return self.policy.allowed_scopes(self.identity, chain)

    def members(self, chain: Chain) -> Any:
        """The node at the end of ``chain``, keeping only the members this identity may see."""
        adapter = chain[-1][1]
        if self.policy is None or not callable(getattr(adapter, "filter", None)):
            return adapter
        return adapter.filter(
            lambda key, child: self.policy.visible(self.identity, chain, key, child)
        )

    def members_deep(self, chain: Chain) -> Any:
        """Like :meth:`members`, applied at every level below (for whole-subtree exports)."""
        visible = self.members(chain)
        if visible is chain[-1][1] and self.policy is None:
            return visible
        if not callable(getattr(visible, "new_variation", None)):
            return visible
        mapping = {key: self.members_deep((*chain, (key, child))) for key, child in visible.items()}
        return visible.new_variation(mapping=mapping)
