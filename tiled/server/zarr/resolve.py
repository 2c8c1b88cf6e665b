"""Split a zarr request path into a node and the key asked of it.

Walks the tree as far as the path names nodes; what remains is the key: a document name, a
chunk key, or nothing. Nothing after a group asks for its listing; nothing after an array asks
for its metadata document (``.zarray`` or ``zarr.json``), so every node's own path answers.
A member whose name looks like a chunk key (``0``, ``1.2``) is still a member: groups have no
chunks, so the key grammar is tried only on arrays.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ...access.view import AccessView
from ...adapters.base import is_group
from ...adapters.protocols import BaseAdapter
from ...errors import NoSuchEntry, ZarrKeyNotFound
from ...zarr_format.encoding import ZarrEncoding
from ..dependencies import split_path


@dataclass(frozen=True)
class ZarrTarget:
    chain: tuple[tuple[str, Any], ...]  # (key, adapter) from the root to the node
    key: str  # "" for a group itself (a listing)
    is_chunk: bool = False

    @property
    def adapter(self) -> Any:
        return self.chain[-1][1]


def _key_length(parts: tuple[str, ...], encoding: ZarrEncoding) -> list[int]:
    """How many trailing segments might form a key (longest first), by the format's grammar."""
    candidates = []
    for length in range(len(parts), 0, -1):
        key = "/".join(parts[-length:])
        if key in encoding.document_names or encoding.parse_chunk_key(key) is not None:
            candidates.append(length)
    return candidates


async def resolve(
    root: BaseAdapter, path: str, encoding: ZarrEncoding, view: AccessView
) -> ZarrTarget:
    parts = split_path(path)
    for length in _key_length(parts, encoding):
        node_parts, key = parts[:-length], "/".join(parts[-length:])
        try:
            chain = tuple(await view.lookup(root, node_parts))
        except NoSuchEntry:
            continue
        if key in encoding.document_names:
            return ZarrTarget(chain, key)
        if not is_group(chain[-1][1]):
            return ZarrTarget(chain, key, is_chunk=True)
    try:
        chain = tuple(await view.lookup(root, parts))
    except NoSuchEntry:
        raise ZarrKeyNotFound(f"No such key: {path!r}") from None
    return ZarrTarget(chain, "" if is_group(chain[-1][1]) else encoding.array_document)
