"""Walking a group's members: the one traversal every group offers, through its group hooks
(``zarr_member_keys``, ``zarr_member``).

Whole-subtree work (consolidated zarr metadata, exports, the size check before an export) walks
with :func:`walk`; a caller that must hide members from an identity gives the walk the group to
list at each step (an access view's filtered members), and a caller that needs only one level
reads :func:`members`.
"""

from __future__ import annotations

import inspect
from collections import deque
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from .base import is_group

Chain = tuple[tuple[str, Any], ...]  # (key, adapter) pairs, from where the walk starts
Order = Literal["breadth", "depth"]


async def members(node: Any) -> AsyncIterator[tuple[str, Any]]:
    """``(key, child)`` of a group, in its order; nothing for a node that is not a group."""
    if not is_group(node):
        return
    for key in await node.zarr_member_keys():
        yield key, await node.zarr_member(key)


@dataclass
class Visit:
    """One member reached by a walk. The walker reads ``pruned`` when the caller is done with
    the visit: a pruned member is not descended into and does not count as taken."""

    chain: Chain
    depth: int  # how many keys below the start of the walk
    pruned: bool = field(default=False)

    @property
    def node(self) -> Any:
        return self.chain[-1][1]

    @property
    def key(self) -> str:
        return self.chain[-1][0]

    @property
    def path(self) -> tuple[str, ...]:
        """The keys from the start of the walk (excluded) to this member."""
        return tuple(key for key, _ in self.chain[len(self.chain) - self.depth :])

    def prune(self) -> None:
        """Leave this member's own members out of the walk, and this member out of the count
        of members taken (see ``limit`` in :func:`walk`)."""
        self.pruned = True


def _node_itself(chain: Chain) -> Any:
    return chain[-1][1]


async def walk(
    start: Chain | Any,
    *,
    order: Order = "depth",
    group_at: Callable[[Chain], Any] = _node_itself,
    limit: int | None = None,
) -> AsyncIterator[Visit]:
    """Every member below ``start`` (a node, or the chain of ``(key, adapter)`` pairs that ends
    at it), each once, as a :class:`Visit`: depth first (pre-order: a group before its members,
    as nested files are written) or breadth first (a level at a time).

    ``group_at(chain)`` is the group whose members are listed at the end of ``chain``: by
    default the node itself; an access view gives its filtered members there. Groups are
    descended into; a member the caller prunes is not. With ``limit``, the caller takes at most
    that many members (and stops the walk itself): no group is asked for more keys than could
    still be taken, plus one, so that the caller sees that there are more.
    """
    chain: Chain = start if isinstance(start, tuple) else (("", start),)
    walker = _Walker(group_at, limit, len(chain))
    steps = walker.depth_first(chain) if order == "depth" else walker.breadth_first(chain)
    async for visit in steps:
        yield visit


class _Walker:
    def __init__(self, group_at: Callable[[Chain], Any], limit: int | None, start_length: int):
        self.group_at = group_at
        self.limit = limit
        self.start_length = start_length
        self.taken = 0  # members visited and not pruned

    async def _level(self, chain: Chain) -> AsyncIterator[Visit]:
        group = self.group_at(chain)
        if inspect.isawaitable(group):  # an access view's members are worked out with awaits
            group = await group
        wanted = None if self.limit is None else max(self.limit - self.taken + 1, 0)
        for key in await group.zarr_member_keys(0, wanted):
            member = await group.zarr_member(key)
            visit = Visit((*chain, (key, member)), len(chain) + 1 - self.start_length)
            yield visit
            if not visit.pruned:
                self.taken += 1

    async def depth_first(self, chain: Chain) -> AsyncIterator[Visit]:
        # A stack of the levels being listed, not recursion: a tree may be nested deeper
        # than Python's recursion limit (an HDF5 file of a thousand nested groups).
        levels = [self._level(chain)]
        try:
            while levels:
                try:
                    visit = await anext(levels[-1])
                except StopAsyncIteration:
                    levels.pop()
                    continue
                yield visit
                if not visit.pruned and is_group(visit.node):
                    levels.append(self._level(visit.chain))
        finally:
            for level in reversed(levels):
                await level.aclose()

    async def breadth_first(self, chain: Chain) -> AsyncIterator[Visit]:
        pending: deque[Chain] = deque([chain])
        while pending:
            async for visit in self._level(pending.popleft()):
                yield visit
                if not visit.pruned and is_group(visit.node):
                    pending.append(visit.chain)


__all__ = ["Chain", "Visit", "members", "walk"]
