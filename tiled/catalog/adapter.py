"""Upstream Tiled's module name for the catalog's adapters, kept so its imports work here.

This package splits upstream's one module by role (see :mod:`tiled.catalog`): containers in
:mod:`tiled.catalog.container`, the other nodes in :mod:`tiled.catalog.nodes`, errors in
:mod:`tiled.catalog.errors`. The names upstream's code and tests import from
``tiled.catalog.adapter`` are available here under upstream's spelling.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable
from typing import TypeVar

from .container import CatalogContainerAdapter, CatalogRootAdapter
from .errors import InvalidKey, WouldDeleteData
from .nodes import CatalogNode

T = TypeVar("T")

# Every adapter of a catalog row mixes in CatalogNode: isinstance checks against upstream's
# base class name hold for all of them (containers, arrays, tables, registered files).
CatalogNodeAdapter = CatalogNode


def slice_by_offset(
    items: Iterable[T], offset: int = 0, limit: int | None = None
) -> tuple[list[T], int | None]:
    """The items from ``offset``, at most ``limit`` of them (all when None), and the offset of
    the next page: None when nothing follows.

    One item past the page is taken to learn whether another page follows, so that a listing
    that exactly fills its last page does not send the client to an empty one.
    """
    if offset < 0 or (limit is not None and limit < 0):
        raise ValueError(f"offset and limit must not be negative (got {offset}, {limit})")
    stop = None if limit is None else offset + limit + 1
    page = list(itertools.islice(items, offset, stop))
    if limit is None or len(page) <= limit:
        return page, None
    return page[:limit], offset + limit


__all__ = [
    "CatalogContainerAdapter",
    "CatalogNodeAdapter",
    "CatalogRootAdapter",
    "InvalidKey",
    "WouldDeleteData",
    "slice_by_offset",
]
