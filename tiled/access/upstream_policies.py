"""Access policies written for upstream Tiled's interface, run by this server.

Upstream's policies (:class:`tiled.access_control.protocols.AccessPolicy`, or any object with
coroutines ``allowed_scopes`` and ``filters``) decide per node with coroutines, given a
:class:`~tiled.server.schemas.Principal`; they narrow a container's children with queries.
:class:`UpstreamPolicy` asks them where upstream's server asks:

- on the way down a path, each container is narrowed by the policy's ``filters`` (asked for
  ``read:metadata``) before the next key is looked up in it, so a child exists only if it
  matches them; at the root of the tree the policy's ``allowed_scopes`` must also grant
  ``read:metadata``, else nothing below is visible (upstream's rule at a catalog's root);
- the node reached is granted the policy's ``allowed_scopes`` (without ``read:metadata``
  it does not exist: 404; without the route's scope: 403);
- listings, searches and exports see the container narrowed by ``filters``;
- a created node's tags come from ``init_node``, an updated node's from ``modify_node``; a
  ValueError from either refuses the write (403), as upstream answers.

A container that cannot search is not narrowed, as upstream leaves it. A policy that fails
to decide (its decision service is down, a bug) answers 503: the request is refused, never
served undecided, and the failure is logged.
"""

from __future__ import annotations

import functools
import inspect
import logging
from collections.abc import Awaitable, Iterable
from typing import Any

from ..adapters.protocols import Searchable, supports
from ..errors import Forbidden, ServiceUnavailable, TiledError
from ..utils import Sentinel
from .identity import Identity
from .policies import Chain

logger = logging.getLogger(__name__)
READ_METADATA = "read:metadata"


# What a policy's ``filters`` returns where the principal may see no child.
NO_ACCESS = Sentinel("NO_ACCESS")


def is_upstream_policy(policy: Any) -> bool:
    """Whether ``policy`` speaks upstream's interface (coroutines ``allowed_scopes`` and
    ``filters``) rather than this server's (:class:`tiled.access.policies.AccessPolicy`)."""
    return inspect.iscoroutinefunction(
        getattr(policy, "allowed_scopes", None)
    ) and inspect.iscoroutinefunction(getattr(policy, "filters", None))


def decides_asynchronously(policy: Any) -> bool:
    """Whether ``policy`` (as the server runs it) must be awaited: upstream's kind."""
    return isinstance(policy, UpstreamPolicy)


def as_access_policy(policy: Any) -> Any:
    """``policy`` as this server runs it: upstream's kind wrapped, any other as it is."""
    if policy is None or isinstance(policy, UpstreamPolicy) or not is_upstream_policy(policy):
        return policy
    return UpstreamPolicy(policy)


@functools.lru_cache(maxsize=1024)
def principal_of(identity: Identity) -> Any:
    """The principal upstream's policies are given for ``identity``: None when anonymous or
    the single user of a server without authentication providers."""
    from ..server.schemas import Identity as LoginIdentity
    from ..server.schemas import Principal

    if identity.principal_uuid is None:
        return None
    return Principal(
        uuid=identity.principal_uuid,
        type=identity.principal_type,
        identities=[
            LoginIdentity(id=who, provider=provider) for provider, who in identity.identities
        ],
    )


class UpstreamPolicy:
    """A policy of upstream's interface (``policy``) behind this server's access view.

    Its decisions are coroutines, so the view awaits them (:func:`decides_asynchronously`).
    Within one request (``memo``, a dict the view keeps) each container is narrowed once.
    """

    def __init__(self, policy: Any):
        self.policy = policy

    def __repr__(self) -> str:
        return f"UpstreamPolicy({self.policy!r})"

    def _arguments(self, identity: Identity) -> tuple[Any, Any, set[str]]:
        return principal_of(identity), identity.access_tags, set(identity.scopes)

    async def _ask(self, decision: Awaitable[Any], refusals: tuple[type, ...] = ()) -> Any:
        """The policy's answer; what it raises besides this server's errors, HTTP errors and
        ``refusals`` is a failure to decide (503)."""
        from starlette.exceptions import HTTPException

        try:
            return await decision
        except (TiledError, HTTPException, *refusals):
            raise
        except Exception as error:
            logger.exception("The access policy %r failed to decide", self.policy)
            raise ServiceUnavailable(
                f"The access policy could not decide ({type(error).__name__}); try again later."
            ) from None

    async def allowed_scopes(self, identity: Identity, chain: Chain) -> frozenset[str]:
        scopes = await self._ask(
            self.policy.allowed_scopes(chain[-1][1], *self._arguments(identity))
        )
        return frozenset(str(getattr(scope, "value", scope)) for scope in scopes or ())

    async def narrowed(self, identity: Identity, chain: Chain, memo: dict) -> Any | None:
        """The container at the end of ``chain`` with only the children the policy lets the
        identity see; None where it may see none."""
        node = chain[-1][1]
        known = memo.get(id(node))
        if known is None or known[0] is not node:
            known = memo[id(node)] = (node, await self._narrow(identity, chain))
        return known[1]

    async def _narrow(self, identity: Identity, chain: Chain) -> Any | None:
        node = chain[-1][1]
        if not supports(node, Searchable):
            return node
        if len(chain) == 1 and READ_METADATA not in await self.allowed_scopes(identity, chain):
            return None
        queries = await self._ask(
            self.policy.filters(node, *self._arguments(identity), {READ_METADATA})
        )
        if queries is NO_ACCESS:
            return None
        for query in _queries(queries):
            node = node.search(query)
        return node

    async def visible(
        self, identity: Identity, chain: Chain, key: str, child: Any, memo: dict
    ) -> bool:
        narrowed = await self.narrowed(identity, chain, memo)
        if narrowed is None:
            return False
        if narrowed is chain[-1][1]:
            return True
        from ..queries import KeysFilter

        return await narrowed.search(KeysFilter([key])).count() > 0

    async def members(self, identity: Identity, chain: Chain, memo: dict) -> Any:
        narrowed = await self.narrowed(identity, chain, memo)
        if narrowed is not None:
            return narrowed
        from ..queries import KeysFilter

        return chain[-1][1].search(KeysFilter([]))  # searchable, or it would be as it is

    async def approve_tags(
        self,
        identity: Identity,
        current: frozenset[str] | None,
        requested: Iterable[str] | None,
        node: Any = None,
    ) -> frozenset[str]:
        """The tags to store on a node created (``current`` None) or updated (``node``)."""
        asked = None if requested is None else frozenset(requested)
        arguments = self._arguments(identity)
        try:
            if current is None:
                if not hasattr(self.policy, "init_node"):
                    return asked or frozenset()
                decision = self.policy.init_node(*arguments, access_tags=asked)
            else:
                if not hasattr(self.policy, "modify_node"):
                    return current
                decision = self.policy.modify_node(node, *arguments, asked)
            _, tags = await self._ask(decision, refusals=(ValueError,))
        except ValueError as error:
            from .catalog_tags import REJECTED  # as upstream words the refusal

            raise Forbidden(REJECTED + str(error)) from None
        return frozenset(tags or ())


def _queries(filters: Any) -> list[Any]:
    """The queries of a ``filters`` answer: a list, or this server's spelling of "all"."""
    from .policies import ALL_ACCESS

    if filters is None or (isinstance(filters, str) and filters == ALL_ACCESS):
        return []
    if isinstance(filters, str) or not isinstance(filters, Iterable):
        raise TypeError(f"An access policy's filters must be a list of queries, not {filters!r}")
    return list(filters)


__all__ = ["NO_ACCESS", "UpstreamPolicy", "as_access_policy", "is_upstream_policy"]
