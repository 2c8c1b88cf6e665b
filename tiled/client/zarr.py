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
from urllib.parse import unquote

import aiohttp
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
    from ..zarr_format.zarr_python import Buffer, BufferPrototype
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


async def fetch(context: Context, url: str, headers: dict[str, str]) -> httpx.Response:
    """GET ``url`` through the context's aiohttp session on the running loop, retrying what
    may succeed on a second try and refreshing an expired login once; the answer is an httpx
    response, so that errors, logs and history treat it like every other request."""
    if context.app is not None:
        # An app in this process is called through its own (synchronous) client.
        return await asyncio.to_thread(context.http_client.get, url, headers=headers)
    delay = 0.1
    attempts = retry_attempts()
    refreshed = False
    for attempt in range(1, attempts + 1):
        try:
            response = await _send(context, url, headers)
        except (TimeoutError, aiohttp.ClientConnectionError):
            if attempt == attempts:
                raise
        else:
            if response.status_code == 401 and context.tokens and not refreshed:
                # The login's access token expired: refresh it (once) and send again.
                await asyncio.to_thread(context.force_auth_refresh)
                refreshed = True
                continue
            if response.status_code not in RETRY_STATUSES or attempt == attempts:
                return response
        await asyncio.sleep(delay)
        delay = min(delay * 2, 5.0)
    raise AssertionError("unreachable")  # pragma: no cover


async def _send(context: Context, url: str, headers: dict[str, str]) -> httpx.Response:
    request = httpx.Request("GET", url, headers={**context.credential_headers(), **headers})
    # Logged here rather than by event hooks, which only the httpx clients have.
    log_request(request)
    async with context.chunk_session().get(url, headers=dict(request.headers)) as answer:
        content = await answer.read()
        response = httpx.Response(
            answer.status, headers=[(k, v) for k, v in answer.headers.items()
                                    if k.lower() not in ("content-encoding", "content-length")],
            content=content, request=request,
        )  # fmt: skip
    log_response(response)
    return response


def fetch_blocking(context: Context, url: str, headers: dict[str, str]) -> httpx.Response:
    """:func:`fetch` from synchronous code, on zarr-python's I/O loop (where the chunk reads
    run, so that both share one connection pool). For large bodies: aiohttp reads them at
    several times httpx's speed."""
    from ..zarr_format.zarr_python import run_on_zarr_loop

    return run_on_zarr_loop(fetch(context, url, headers))


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
        return await fetch(self.context, f"{self.url}/{key}" if key else self.url, headers)

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
            consolidated = document.get("consolidated_metadata")
            if consolidated is None:  # left out by the server (a group past its limit)
                return await self._listed_members(base)
            return sorted({name.split("/")[0] for name in consolidated.get("metadata") or {}})
        document = await self._document(join(".zmetadata"))
        if not document:
            # Left out by the server (a group past its limit), or no group here.
            return await self._listed_members(base) if await self.exists(join(".zgroup")) else []
        names = {name.split("/")[0] for name in document.get("metadata", {}) if "/" in name}
        return sorted(names)

    async def _listed_members(self, base: str) -> list[str]:
        """The members of the group at ``base`` from the server's listing, page by page."""
        names: list[str] = []
        while True:
            group = f"{self.url}/{base}" if base else self.url  # as _fetch names keys
            response = await fetch(
                self.context, f"{group}?offset={len(names)}", {"Accept": "application/json"}
            )
            handle_error(response)
            page = [unquote(url.rstrip("/").rsplit("/", 1)[-1]) for url in response.json()]
            if not page:
                return sorted(names)
            names.extend(page)

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
