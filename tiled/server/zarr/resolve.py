"""Split a zarr request path into a node and the key asked of it.

Walks the tree as far as the path names nodes; what remains is the key: a document name, a
chunk key, or nothing. Nothing after a group asks for its listing; nothing after an array asks
for its metadata document (``.zarray`` or ``zarr.json``), so every node's own path answers.
A member whose name looks like a chunk key (``0``, ``1.2``) is still a member: groups have no
chunks, so the key grammar is tried only on arrays.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from ...access.view import AccessView
from ...adapters.base import is_group
from ...adapters.protocols import BaseAdapter
from ...errors import NoSuchEntry, ZarrKeyNotFound
from ...zarr_format.encoding import ZarrEncoding
from ..dependencies import split_path


@dataclass(slots=True)  # made on every request: a frozen dataclass costs 3x to build
class ZarrTarget:
    chain: tuple[tuple[str, Any], ...]  # (key, adapter) from the root to the node
    key: str  # "" for a group itself (a listing)
    parts: tuple[str, ...] = ()  # the request path's segments
    coords: tuple[int, ...] | None = None  # a chunk's coordinates as its key spells them

    @property
    def adapter(self) -> Any:
        return self.chain[-1][1]

    @property
    def is_chunk(self) -> bool:
        return self.coords is not None


def _keys(parts: tuple[str, ...], encoding: ZarrEncoding) -> Iterator[tuple[int, str, Any]]:
    """``(length, key, coords)`` for each run of trailing segments that may form a key by the
    format's grammar, longest first (coords None for a document). Lazy: the first usually
    answers."""
    for length in range(len(parts), 0, -1):
        key = "/".join(parts[-length:])
        if key in encoding.document_names:
            yield length, key, None
            continue
        coords = encoding.parse_chunk_key(key)
        if coords is not None:
            yield length, key, coords


async def resolve(
    root: BaseAdapter, path: str, encoding: ZarrEncoding, view: AccessView
) -> ZarrTarget:
    parts = split_path(path)
    for length, key, coords in _keys(parts, encoding):
        try:
            chain = tuple(await view.lookup(root, parts[:-length]))
        except NoSuchEntry:
            continue
        if coords is None:
            return ZarrTarget(chain, key, parts)
        if not is_group(chain[-1][1]):
            return ZarrTarget(chain, key, parts, coords)
    try:
        chain = tuple(await view.lookup(root, parts))
    except NoSuchEntry:
        raise ZarrKeyNotFound(f"No such key: {path!r}") from None
    return ZarrTarget(chain, "" if is_group(chain[-1][1]) else encoding.array_document, parts)
