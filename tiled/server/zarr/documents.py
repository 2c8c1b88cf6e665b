"""The metadata documents of one node in one zarr format, consolidated where bounded."""

from __future__ import annotations

from typing import Any

from ...adapters.base import is_group
from ...structures.zarr_meta import ZarrOptions
from .formats import ZarrEncoding, json_document


async def node_json(adapter: Any, encoding: ZarrEncoding, options: ZarrOptions) -> dict[str, dict]:
    meta = await adapter.to_zarr_meta(options)
    return encoding.group_json(meta) if is_group(adapter) else encoding.array_json(meta)


async def descendants(
    adapter: Any, encoding: ZarrEncoding, options: ZarrOptions, max_nodes: int
) -> list[tuple[str, dict[str, dict]]] | None:
    """Documents of every node below ``adapter`` (breadth first), or None past ``max_nodes``."""
    found: list[tuple[str, dict[str, dict]]] = []
    pending: list[tuple[str, Any]] = [("", adapter)]
    while pending:
        prefix, group = pending.pop(0)
        keys = await group.zarr_member_keys(0, max_nodes - len(found) + 1)
        for key in keys:
            if len(found) >= max_nodes:
                return None
            member = await group.zarr_member(key)
            path = f"{prefix}{key}"
            found.append((path, await node_json(member, encoding, options)))
            if is_group(member):
                pending.append((path + "/", member))
    return found


async def documents_of(adapter: Any, encoding: ZarrEncoding, settings: Any) -> dict[str, bytes]:
    """Every document of this node; a group's include the consolidated metadata when bounded."""
    documents = await node_json(adapter, encoding, settings.zarr)
    if is_group(adapter):
        members = await descendants(
            adapter, encoding, settings.zarr, settings.zarr_consolidated_max_nodes
        )
        if members is not None:
            documents = encoding.consolidated(documents, members)
    return {name: json_document(doc) for name, doc in documents.items()}
