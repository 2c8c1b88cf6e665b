"""Walking a node tree through the async zarr hooks, the one traversal every adapter offers."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from ..adapters.base import is_group


def family_of(node: Any) -> str:
    return str(node.structure_family)


def spec_names(node: Any) -> set[str]:
    return {spec.name for spec in node.specs}


async def members(node: Any) -> AsyncIterator[tuple[str, Any]]:
    """``(key, child)`` of a group-like node; nothing for nodes without group hooks."""
    if not is_group(node):
        return
    for key in await node.zarr_member_keys():
        yield key, await node.zarr_member(key)
