"""A node as a zipped zarr store (``application/x-zarr``), streamed member by member.

The store is built only from the zarr hooks (``to_zarr_meta``, ``to_zarr_chunk``,
``zarr_member_keys``, ``zarr_member``) and spelled by the same v2/v3 encodings as ``/zarr``,
so a download and the ``/zarr`` view of a node hold the same documents and chunks. Members are
stored uncompressed (chunks are compressed by their codecs already) with data descriptors, which
lets ``zipfile`` write to a sink that cannot seek: each member is yielded as soon as it is
written, and only one chunk is held at a time. It opens with ``zarr.storage.ZipStore``.
"""

from __future__ import annotations

import itertools
import zipfile
from collections.abc import AsyncIterator
from typing import Any

from ..adapters.base import is_group
from ..adapters.protocols import ZarrArrayHooks, supports
from ..adapters.walk import walk
from ..errors import Unsupported, UnsupportedMediaType, ZarrKeyNotFound

# A fixed timestamp keeps the archive byte-for-byte reproducible (stable ETags).
_EPOCH = (1980, 1, 1, 0, 0, 0)


class _Sink:
    """A write-only file object without ``tell``/``seek``: zipfile then streams."""

    def __init__(self) -> None:
        self._parts: list[bytes] = []

    def write(self, data: bytes) -> int:
        self._parts.append(bytes(data))
        return len(data)

    def flush(self) -> None:
        pass

    def drain(self) -> bytes:
        data = b"".join(self._parts)
        self._parts.clear()
        return data


def _has_hooks(node: Any) -> bool:
    return supports(node, ZarrArrayHooks) or is_group(node)


async def _meta_or_none(node: Any, options: Any) -> Any:
    """The node's zarr meta, or None for nodes that have no zarr view (they are skipped)."""
    if not _has_hooks(node):
        return None
    try:
        return await node.to_zarr_meta(options.zarr_options)
    except (NotImplementedError, Unsupported):
        return None


async def encode_zarr_zip(node: Any, options: Any) -> AsyncIterator[bytes]:
    """The zip stream; fails before the first byte if the node itself has no zarr view."""
    from ..zarr_format.formats import encoding_for

    encoding = encoding_for(options.zarr_format)
    meta = await _meta_or_none(node, options)
    if meta is None:
        raise UnsupportedMediaType("This node has no zarr representation")
    return _stream(_entries(node, meta, encoding, options))


async def _stream(entries: AsyncIterator[tuple[str, bytes]]) -> AsyncIterator[bytes]:
    sink = _Sink()
    with zipfile.ZipFile(sink, "w", compression=zipfile.ZIP_STORED) as archive:
        async for name, payload in entries:
            info = zipfile.ZipInfo(name, date_time=_EPOCH)
            info.external_attr = 0o644 << 16
            archive.writestr(info, payload)
            yield sink.drain()
    yield sink.drain()  # the central directory, written on close


async def _entries(
    node: Any, meta: Any, encoding: Any, options: Any
) -> AsyncIterator[tuple[str, bytes]]:
    """The node's own entries, then every member's (depth first, as the zarr layout nests);
    members without a zarr view are left out with their own members."""
    from ..zarr_format.model import ZarrGroupMeta

    async for entry in _node_entries(node, meta, "", encoding):
        yield entry
    if not isinstance(meta, ZarrGroupMeta):
        return
    async for visit in walk(node):
        member_meta = await _meta_or_none(visit.node, options)
        if member_meta is None:
            visit.prune()
            continue
        prefix = "/".join(visit.path) + "/"
        async for entry in _node_entries(visit.node, member_meta, prefix, encoding):
            yield entry


async def _node_entries(
    node: Any, meta: Any, prefix: str, encoding: Any
) -> AsyncIterator[tuple[str, bytes]]:
    """A node's documents, and an array's chunks."""
    from ..zarr_format.model import ZarrGroupMeta

    if isinstance(meta, ZarrGroupMeta):
        for name, document in encoding.group_documents(meta).items():
            yield prefix + name, document
        return
    for name, document in encoding.array_documents(meta).items():
        yield prefix + name, document
    for coords in itertools.product(*(range(n) for n in meta.grid_shape)):
        try:
            chunk = await node.to_zarr_chunk(coords, meta)
        except ZarrKeyNotFound:
            continue  # an absent chunk reads as the fill value
        yield prefix + encoding.chunk_key(coords), chunk
