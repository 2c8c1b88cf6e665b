"""The metadata documents of one node in one zarr format, consolidated where bounded."""

from __future__ import annotations

import logging
from typing import Any

from ...access.view import AccessView
from ...adapters.base import is_group
from ...adapters.protocols import ZarrArrayHooks, ZarrGroupHooks
from ...adapters.walk import Chain, walk
from ...errors import StorageUnavailable, TiledError
from ...zarr_format.encoding import ZarrEncoding, json_document
from ...zarr_format.model import ZarrArrayMeta, ZarrOptions

logger = logging.getLogger(__name__)


async def node_json(
    adapter: ZarrArrayHooks | ZarrGroupHooks, encoding: ZarrEncoding, options: ZarrOptions
) -> dict[str, dict]:
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
    chain: Chain, encoding: ZarrEncoding, options: ZarrOptions, max_nodes: int, view: AccessView
) -> list[tuple[str, dict[str, dict]]] | None:
    """Documents of every node below the end of ``chain`` that the viewer may see (breadth
    first), or None past ``max_nodes`` or where a group below cannot be listed.

    A member whose own documents fail is left out (its own documents answer why): one bad
    member must not make its ancestors unreadable, the root above all. Only a storage or a
    database out of reach fails the whole (503: the same request may succeed later, and a
    partial tree would not say so)."""
    found: list[tuple[str, dict[str, dict]]] = []
    try:
        async for visit in walk(chain, order="breadth", group_at=view.members, limit=max_nodes):
            if len(found) >= max_nodes:
                return None
            try:
                found.append(("/".join(visit.path), await node_json(visit.node, encoding, options)))
            except Exception as err:
                if _unavailable(err):
                    raise
                _left_out("/".join(visit.path), err)
                visit.prune()
    except Exception as err:
        if _unavailable(err):
            raise
        _left_out("a group below", err)
        return None  # served without consolidated metadata: clients list the group instead
    return found


def _unavailable(err: Exception) -> bool:
    """A storage or database out of reach (503): the same request may succeed later, and a
    document served meanwhile would be cached as if it were whole."""
    from ..errors import unavailable_service

    return isinstance(err, StorageUnavailable) or unavailable_service(err) is not None


def _left_out(where: str, err: Exception) -> None:
    if isinstance(err, TiledError):
        logger.debug("consolidated zarr metadata leave out %s: %s", where, err)
    else:  # a fault of the adapter, not of the data: worth its traceback
        logger.exception("consolidated zarr metadata leave out %s", where)


async def documents_of(
    chain: Chain, encoding: ZarrEncoding, settings: Any, view: AccessView, wanted: str | None = None
) -> dict[str, bytes]:
    """The documents of this node; a group's include the consolidated metadata when bounded.

    With ``wanted`` given, the subtree is walked only if that document carries the consolidated
    metadata (v3 ``zarr.json``, v2 ``.zmetadata``), not for v2's ``.zgroup`` or ``.zattrs``."""
    adapter = chain[-1][1]
    if not is_group(adapter):
        return array_documents(await adapter.to_zarr_meta(settings.zarr), encoding)
    documents = await node_json(adapter, encoding, settings.zarr)
    if wanted in (None, encoding.consolidated_document):
        max_nodes = settings.zarr_consolidated_max_nodes
        members = await descendants(chain, encoding, settings.zarr, max_nodes, view)
        if members is not None:
            documents = encoding.consolidated(documents, members)
    return {name: json_document(doc) for name, doc in documents.items()}
