"""Upstream Tiled's ``tiled.server.core`` names that callers import, for drop-in use.

This server builds its resources in :mod:`tiled.server.resources`; the limits live there.
"""

from __future__ import annotations

from .resources import MAX_INLINE_CHILDREN, MAX_INLINE_DEPTH

# How many children a node may have for its description to carry theirs ("contents").
INLINED_CONTENTS_LIMIT = MAX_INLINE_CHILDREN
# How deep descriptions are inlined at most, whatever the adapters ask for.
DEPTH_LIMIT = MAX_INLINE_DEPTH

__all__ = ["DEPTH_LIMIT", "INLINED_CONTENTS_LIMIT"]
