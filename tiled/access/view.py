"""What one identity sees of the tree under one policy: lookups, scopes and filtered members."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..adapters.base import is_group
from ..adapters.protocols import BaseAdapter, Filterable, PathLookup, Searchable, supports
from ..adapters.walk import members
from ..errors import NoSuchEntry, UnsupportedQuery
from .identity import Identity
from .policies import AccessPolicy, Chain, PreparesRequests, QueriesVisibleChildren
from .upstream_policies import decides_asynchronously


@dataclass(slots=True)  # made on every request: a frozen dataclass costs 3x to build
class AccessView:
    """``policy`` decides as this server's policies do (:class:`AccessPolicy`, answering at
    once), or with coroutines (a policy written for upstream's interface, see
    :mod:`tiled.access.upstream_policies`); the view asks either kind, and keeps what the
    latter worked out for this request in ``memo`` (made when first needed)."""

    identity: Identity
    policy: AccessPolicy | None = None
    memo: dict | None = None

    def _memo(self) -> dict:
        if self.memo is None:
            self.memo = {}
        return self.memo

    async def prepare(self, root: Any) -> None:
        """Let the policy bring its state up to date before a request on the tree ``root``
        (optional part of a policy: the catalog tag policy reloads stale tag definitions)."""
        if self.policy is not None and supports(self.policy, PreparesRequests):
            await self.policy.prepare(root)

    async def lookup(self, root: BaseAdapter, parts: tuple[str, ...]) -> Chain:
        """The ``(key, adapter)`` chain from the root to ``parts``; invisible nodes do not exist.

        Whatever part of the path is missing (or invisible), the error names the path as
        requested: an adapter's own account may be relative to where it is served, or say
        where a mounted catalog lies in its database."""
        if not parts:
            return (("", root),)
        if not supports(root, PathLookup):
            raise NoSuchEntry(list(parts))
        try:
            if self.policy is None:
                # One lookup for the whole path (a catalog answers it in one query).
                return (("", root), (parts[-1], await root.lookup_adapter(list(parts))))
            chain: list[tuple[str, Any]] = [("", root)]
            for key in parts:
                parent = chain[-1][1]
                if not supports(parent, PathLookup):
                    raise NoSuchEntry(list(parts))
                child = await parent.lookup_adapter([key])
                if not await self.admits(chain, key, child):
                    raise NoSuchEntry(list(parts))
                chain.append((key, child))
            return tuple(chain)
        except NoSuchEntry:
            raise NoSuchEntry(list(parts)) from None

    async def child_visible(self, chain: Chain, key: str) -> bool:
        """Whether member ``key`` of the node at the end of ``chain`` exists for this
        identity (the rule :meth:`lookup` applies at each step)."""
        parent = chain[-1][1]
        if not supports(parent, PathLookup):
            return False
        try:
            child = await parent.lookup_adapter([key])
        except NoSuchEntry:
            return False
        return await self.admits(chain, key, child)

    async def admits(self, chain: Chain, key: str, child: Any) -> bool:
        """Whether member ``key`` (``child``) of the node at the end of ``chain`` is visible."""
        policy = self.policy
        if policy is None:
            return True
        if decides_asynchronously(policy):
            return await policy.visible(self.identity, chain, key, child, self._memo())
        return policy.visible(self.identity, chain, key, child)

    async def scopes(self, chain: Chain) -> frozenset[str]:
        policy = self.policy
        if policy is None:
            return self.identity.scopes
        if decides_asynchronously(policy):
            return await policy.allowed_scopes(self.identity, chain)
        return policy.allowed_scopes(self.identity, chain)

    async def members(self, chain: Chain) -> Any:
        """The node at the end of ``chain``, keeping only the members this identity may see."""
        adapter = chain[-1][1]
        policy = self.policy
        if policy is None:
            return adapter
        if decides_asynchronously(policy):
            return await policy.members(self.identity, chain, self._memo())
        narrowed = self._by_query(chain, adapter)
        if narrowed is not None:
            return narrowed
        if not supports(adapter, Filterable):
            return adapter
        policy, identity = self.policy, self.identity
        return adapter.filter(lambda key, child: policy.visible(identity, chain, key, child))

    def _by_query(self, chain: Chain, adapter: BaseAdapter) -> Any | None:
        """The members through the policy's query form of its rule, which a catalog turns into
        SQL; None when the policy has none here or the container cannot evaluate it."""
        if not (supports(self.policy, QueriesVisibleChildren) and supports(adapter, Searchable)):
            return None
        query = self.policy.child_query(self.identity, chain)
        if query is None:
            return None
        try:
            return adapter.search(query)
        except UnsupportedQuery:
            return None

    def members_deep(self, chain: Chain, scope: str | None = None) -> Any:
        """The node at the end of ``chain`` with only visible members at every depth, and of
        those only the ones on which the identity holds ``scope`` (exports read data: a member
        granted ``read:metadata`` alone is left out, as its own data route would refuse it)."""
        adapter = chain[-1][1]
        if self.policy is None or not is_group(adapter):
            return adapter
        return VisibleGroup(self, tuple(chain), scope)


class VisibleGroup:
    """A group seen through an access view: its members (and theirs) filtered, all else as is.

    Whole-subtree encoders walk groups through ``zarr_member_keys``/``zarr_member``; this
    wrapper answers those with what the identity may see, whatever the container type.
    """

    def __init__(self, view: AccessView, chain: Chain, scope: str | None = None):
        self._view = view
        self._chain = chain
        self._adapter = chain[-1][1]
        self._scope = scope

    def __getattr__(self, name: str) -> Any:
        return getattr(self._adapter, name)

    async def to_zarr_meta(self, options: Any = None) -> Any:
        return await self._adapter.to_zarr_meta(options)

    async def _admits(self, key: str, child: Any) -> bool:
        view = self._view
        if not await view.admits(self._chain, key, child):
            return False
        if self._scope is None:
            return True
        return self._scope in await view.scopes((*self._chain, (key, child)))

    async def _visible(self) -> list[tuple[str, Any]]:
        view = self._view
        if decides_asynchronously(view.policy):
            # Its members are those of the container narrowed by the policy's filters.
            narrowed = await view.members(self._chain)
            found = [item async for item in members(narrowed)]
            if self._scope is None:
                return found
            return [
                (key, child)
                for key, child in found
                if self._scope in await view.scopes((*self._chain, (key, child)))
            ]
        return [
            (key, child)
            async for key, child in members(self._adapter)
            if await self._admits(key, child)
        ]

    async def zarr_member_keys(self, offset: int = 0, limit: int | None = None) -> list[str]:
        keys = [key for key, _ in await self._visible()]
        return keys[offset : None if limit is None else offset + limit]

    async def zarr_member(self, key: str) -> Any:
        child = await self._adapter.zarr_member(key)
        if not await self._admits(key, child):
            raise NoSuchEntry([key])
        return self._view.members_deep((*self._chain, (key, child)), self._scope)
