"""The metadata documents of one node in one zarr format, consolidated where bounded."""

from __future__ import annotations

from typing import Any

from ...access.view import AccessView
from ...adapters.base import is_group
from ...errors import DataUnavailable
from ...zarr_format.encoding import ZarrEncoding, json_document
from ...zarr_format.model import ZarrArrayMeta, ZarrOptions


async def node_json(adapter: Any, encoding: ZarrEncoding, options: ZarrOptions) -> dict[str, dict]:
    meta = await adapter.to_zarr_meta(options)
    return encoding.group_json(meta) if is_group(adapter) else encoding.array_json(meta)


def array_documents(meta: ZarrArrayMeta, encoding: ZarrEncoding) -> dict[str, bytes]:
    """An array's documents, encoded once per metadata object and format (adapters give the
    same metadata object while nothing changed: see ``default_zarr_meta``)."""
    found = meta.encoded.get(encoding.zarr_format)
    if found is None:
        documents = encoding.array_json(meta).items()
        found = meta.encoded[encoding.zarr_format] = {n: json_document(d) for n, d in documents}
    return found


async def descendants(
    chain: tuple, encoding: ZarrEncoding, options: ZarrOptions, max_nodes: int, view: AccessView
) -> list[tuple[str, dict[str, dict]]] | None:
    """Documents of every node below the end of ``chain`` that the viewer may see (breadth
    first), or None past ``max_nodes``."""
    found: list[tuple[str, dict[str, dict]]] = []
    pending: list[tuple[str, tuple]] = [("", chain)]
    while pending:
        prefix, group_chain = pending.pop(0)
        group = view.members(group_chain)
        keys = await group.zarr_member_keys(0, max_nodes - len(found) + 1)
        for key in keys:
            if len(found) >= max_nodes:
                return None
            member = await group.zarr_member(key)
            path = f"{prefix}{key}"
            try:
                found.append((path, await node_json(member, encoding, options)))
            except DataUnavailable:
                continue  # left out: its own documents answer why it cannot be read
            if is_group(member):
                pending.append((path + "/", (*group_chain, (key, member))))
    return found


async def documents_of(
    chain: tuple, encoding: ZarrEncoding, settings: Any, view: AccessView, wanted: str | None = None
) -> dict[str, bytes]:
    """The documents of this node; a group's include the consolidated metadata when bounded.

    With ``wanted`` given, the subtree is walked only if that document carries the consolidated
    metadata (v3 ``zarr.json``, v2 ``.zmetadata``), not for v2's ``.zgroup`` or ``.zattrs``."""
    adapter = chain[-1][1]
    if not is_group(adapter):
        return array_documents(await adapter.to_zarr_meta(settings.zarr), encoding)
    documents = await node_json(adapter, encoding, settings.zarr)
    if is_group(adapter) and wanted in (None, encoding.consolidated_document):
        max_nodes = settings.zarr_consolidated_max_nodes
        members = await descendants(chain, encoding, settings.zarr, max_nodes, view)
        if members is not None:
            documents = encoding.consolidated(documents, members)
    return {name: json_document(doc) for name, doc in documents.items()}
