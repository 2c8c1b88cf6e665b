"""A zarr-python store over a Tiled server's zarr routes, with the client's credentials.

``node.zarr_store()`` gives one, so that ``zarr.open_group(node.zarr_store())`` and
``xarray.open_zarr(node.zarr_store())`` read any node. Chunks are fetched concurrently by
zarr-python (each ``get`` is one request); the array client reads through it too.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Iterable
from typing import TYPE_CHECKING, Any

import httpx
from zarr.abc.store import (
    ByteRequest,
    OffsetByteRequest,
    RangeByteRequest,
    Store,
    SuffixByteRequest,
)

from .logger import log_request, log_response
from .utils import RETRY_STATUSES, handle_error, path_url, retry_attempts

if TYPE_CHECKING:
    from zarr.core.buffer import Buffer, BufferPrototype

    from .context import Context

# The documents a zarr client reads, by format.
GROUP_DOCUMENTS = {2: (".zgroup", ".zattrs", ".zmetadata"), 3: ("zarr.json",)}


def _range_header(byte_range: ByteRequest | None) -> dict[str, str]:
    if byte_range is None:
        return {}
    if isinstance(byte_range, RangeByteRequest):
        return {"Range": f"bytes={byte_range.start}-{byte_range.end - 1}"}
    if isinstance(byte_range, OffsetByteRequest):
        return {"Range": f"bytes={byte_range.offset}-"}
    if isinstance(byte_range, SuffixByteRequest):
        return {"Range": f"bytes=-{byte_range.suffix}"}
    raise TypeError(f"Unexpected byte range {byte_range!r}")


class TiledZarrStore(Store):
    """Read-only zarr store of the node at ``path_parts`` through ``/zarr/v{zarr_format}``."""

    supports_writes = False
    supports_deletes = False
    supports_partial_writes = False
    supports_listing = True

    def __init__(self, context: Context, path_parts: list[str], zarr_format: int = 3):
        super().__init__(read_only=True)
        if zarr_format not in (2, 3):
            raise ValueError(f"zarr_format must be 2 or 3, not {zarr_format!r}")
        self.context = context
        self.path_parts = list(path_parts)
        self.zarr_format = zarr_format
        self.on_bytes: Any = None  # called with the size of each chunk read (progress bars)
        path = path_url(self.path_parts)
        self.url = f"{context.base_url}/zarr/v{zarr_format}" + (f"/{path}" if path else "")

    def __eq__(self, other: object) -> bool:
        return isinstance(other, TiledZarrStore) and (other.url, other.context) == (
            self.url,
            self.context,
        )

    def __repr__(self) -> str:
        return f"<TiledZarrStore {self.url}>"

    def with_read_only(self, read_only: bool = False) -> TiledZarrStore:
        if not read_only:
            raise ValueError("Tiled zarr stores are read-only")
        return self

    # --- reading ---

    async def _fetch(self, key: str, headers: dict[str, str]) -> httpx.Response:
        url = f"{self.url}/{key}" if key else self.url
        if self.context.app is not None:
            # An app in this process is called through its own (synchronous) client.
            client = self.context.http_client
            return await asyncio.to_thread(client.get, url, headers=headers)
        client = self.context._async_client()
        delay = 0.1
        attempts = retry_attempts()
        for attempt in range(1, attempts + 1):
            request = client.build_request("GET", url, headers=headers)
            # Logged here rather than by event hooks: an async client's hooks must be
            # coroutines, and the context's synchronous hooks are shared with its other client.
            log_request(request)
            try:
                response = await client.send(request)
            except httpx.TransportError:
                if attempt == attempts:
                    raise
            else:
                log_response(response)
                if response.status_code not in RETRY_STATUSES or attempt == attempts:
                    return response
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)
        raise AssertionError("unreachable")  # pragma: no cover

    async def get(
        self, key: str, prototype: BufferPrototype, byte_range: ByteRequest | None = None
    ) -> Buffer | None:
        response = await self._fetch(key, _range_header(byte_range))
        if response.status_code == 404:
            return None
        handle_error(response)
        if self.on_bytes is not None:
            self.on_bytes(len(response.content))
        return prototype.buffer.from_bytes(response.content)

    async def get_partial_values(
        self,
        prototype: BufferPrototype,
        key_ranges: Iterable[tuple[str, ByteRequest | None]],
    ) -> list[Buffer | None]:
        return list(await asyncio.gather(*(self.get(k, prototype, r) for k, r in key_ranges)))

    async def exists(self, key: str) -> bool:
        response = await self._fetch(key, {})
        if response.status_code == 404:
            return False
        handle_error(response)
        return True

    # --- listing: a group's members are named by its (consolidated) metadata ---

    async def _document(self, key: str) -> dict[str, Any] | None:
        response = await self._fetch(key, {})
        if response.status_code == 404:
            return None
        handle_error(response)
        return json.loads(response.content)

    async def _members(self, prefix: str) -> list[str]:
        base = prefix.strip("/")
        join = (lambda name: f"{base}/{name}") if base else (lambda name: name)
        if self.zarr_format == 3:
            document = await self._document(join("zarr.json"))
            if not document or document.get("node_type") != "group":
                return []
            consolidated = (document.get("consolidated_metadata") or {}).get("metadata") or {}
            return sorted({name.split("/")[0] for name in consolidated})
        document = await self._document(join(".zmetadata"))
        if not document:
            return []
        names = {name.split("/")[0] for name in document.get("metadata", {}) if "/" in name}
        return sorted(names)

    async def list_dir(self, prefix: str) -> AsyncIterator[str]:
        documents = GROUP_DOCUMENTS[self.zarr_format]
        base = prefix.strip("/")
        found = [d for d in documents if await self.exists(f"{base}/{d}" if base else d)]
        for name in found:
            yield name
        for name in await self._members(base):
            yield name

    async def list_prefix(self, prefix: str) -> AsyncIterator[str]:
        async for key in self.list():
            if key.startswith(prefix):
                yield key

    async def list(self) -> AsyncIterator[str]:
        pending = [""]
        while pending:
            base = pending.pop()
            async for name in self.list_dir(base):
                key = f"{base}/{name}" if base else name
                if name in GROUP_DOCUMENTS[self.zarr_format] or name == ".zarray":
                    yield key
                else:
                    pending.append(key)

    # --- writing is not offered (writes go through the node clients) ---

    async def set(self, key: str, value: Buffer) -> None:
        self._check_writable()

    async def delete(self, key: str) -> None:
        self._check_writable()


__all__ = ["TiledZarrStore"]
