"""The metadata documents of one node in one zarr format (consolidated where bounded)."""

from __future__ import annotations

from typing import Any

from ...adapters.base import is_group
from .formats import ZarrEncoding


async def documents_of(
    adapter: Any, node_parts: tuple[str, ...], encoding: ZarrEncoding, app: Any
) -> dict[str, bytes]:
    settings = app.state.settings
    meta = await adapter.to_zarr_meta(settings.zarr)
    if is_group(adapter):
        return encoding.group_documents(meta)
    return encoding.array_documents(meta)
