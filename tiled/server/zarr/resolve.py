"""Split a zarr request path into a node and the key asked of it.

Walks the tree as far as the path names nodes; what remains is the key: a document name, a
chunk key, or nothing (a listing). A member whose name looks like a chunk key (``0``, ``1.2``)
is still a member: groups have no chunks, so the key grammar is tried only on arrays.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ...adapters.base import is_group
from ...errors import NoSuchEntry, ZarrKeyNotFound
from ..dependencies import lookup, split_path
from .formats import ZarrEncoding


@dataclass(frozen=True)
class ZarrTarget:
    adapter: Any
    node_parts: tuple[str, ...]
    key: str  # "" for the node itself (a listing)
    is_chunk: bool = False


def _key_length(parts: tuple[str, ...], encoding: ZarrEncoding) -> list[int]:
    """How many trailing segments might form a key (longest first), by the format's grammar."""
    candidates = []
    for length in range(len(parts), 0, -1):
        key = "/".join(parts[-length:])
        if key in encoding.document_names or encoding.parse_chunk_key(key) is not None:
            candidates.append(length)
    return candidates


async def resolve(root: Any, path: str, encoding: ZarrEncoding) -> ZarrTarget:
    parts = split_path(path)
    for length in _key_length(parts, encoding):
        node_parts, key = parts[:-length], "/".join(parts[-length:])
        try:
            adapter = await lookup(root, node_parts)
        except NoSuchEntry:
            continue
        if key in encoding.document_names:
            return ZarrTarget(adapter, node_parts, key)
        if not is_group(adapter):
            return ZarrTarget(adapter, node_parts, key, is_chunk=True)
    try:
        return ZarrTarget(await lookup(root, parts), parts, "")
    except NoSuchEntry:
        raise ZarrKeyNotFound(f"No such key: {path!r}") from None
