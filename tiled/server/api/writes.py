"""Routes that write data: whole arrays, array blocks, tables and table partitions.

Every handler validates the whole request before the node is touched, so a refused write
changes nothing; the storage adapters make each file replacement atomic. Bodies are read
through :func:`tiled.server.bodies.request_body`, which refuses (413) one larger than the
write can use before it is held in memory.
"""

from __future__ import annotations

import math
from typing import Annotated, Any

import numpy
from fastapi import APIRouter, Request

from ... import stream_messages
from ...adapters.protocols import (
    PatchableArray,
    ReadableArray,
    ReadableSparse,
    WritableArray,
    WritableSparse,
    WritableTable,
)
from ...errors import BadRequest
from ...ndslice import NDBlock, patched_region
from ...serialization.media_types import ARROW_FILE, OCTET_STREAM
from ..bodies import request_body
from ..dependencies import Node, capable, node_dependency
from ..responses import document_response
from ..state import tiled_state
from .streams import publish_update

router = APIRouter()

WritingArray = Annotated[Node, node_dependency("write:data", {"array", "sparse"})]
WritingTable = Annotated[Node, node_dependency("write:data", {"table"})]
PatchingArray = Annotated[Node, node_dependency("write:data", {"array"})]


def _media_type(request: Request, default: str) -> str:
    return request.headers.get("content-type", default).split(";")[0].strip() or default


def decoded(request: Request, family: str, body: bytes, default: str, *args: Any) -> Any:
    """``body`` read by the decoder the application has for ``family`` and the request's
    Content-Type (``default`` when it names none); see :mod:`tiled.serialization.decoding`."""
    registry = tiled_state(request).deserialization_registry
    return registry.decode(family, _media_type(request, default), body, *args)


async def _array_from_body(
    request: Request, structure: Any, shape: tuple[int, ...], ceiling: int | None = None
) -> tuple[Any, bytes]:
    """The body as an array of ``shape``, and as it came; ``ceiling``: the most bytes a region
    of a shape the client chose may have."""
    dtype = structure.data_type.to_numpy_dtype()
    limit = None  # a registered decoder's encoding may take any size: the general limit
    if _media_type(request, OCTET_STREAM).lower() == OCTET_STREAM:
        # Raw bytes in C order: exactly the region's size (the decoder refuses fewer).
        limit = math.prod(shape) * dtype.itemsize
        if ceiling is not None:
            limit = min(limit, ceiling)
    body = await request_body(request, limit)
    return decoded(request, "array", body, OCTET_STREAM, dtype, shape), body


async def _coo_from_body(request: Request, ndim: int) -> tuple[Any, Any, bytes]:
    body = await request_body(request)
    frame = decoded(request, "sparse", body, ARROW_FILE)
    columns = [f"dim{i}" for i in range(ndim)] + ["data"]
    if sorted(frame.columns, key=str) != sorted(columns):
        # A coordinate column more or fewer than the array's rank is a body of another array.
        raise BadRequest(f"A sparse body has the columns {columns}, not {list(frame.columns)}")
    coords = numpy.stack([frame[c].to_numpy() for c in columns[:-1]])
    return coords, frame["data"].to_numpy(), body


# The writers below check the whole request (the body, the block) with or without
# ``persist``, and store only with it; then, as upstream, they send the body to the node's
# live subscribers (all that ``persist=false`` does). The same rule as patch_array's.


async def _write_dense(
    request: Request, adapter: ReadableArray, block: NDBlock | None, persist: bool
) -> None:
    structure = adapter.structure()
    writer = capable(adapter, WritableArray, "writing")
    if block is None:
        array, body = await _array_from_body(request, structure, structure.shape)
        if persist:
            await writer.write(array)
        message = stream_messages.array_data(_media_type(request, OCTET_STREAM), structure.shape)
        await publish_update(adapter, message, body)
        return
    shape = tuple(r.stop - r.start for r in block.slices(structure.chunks))
    array, body = await _array_from_body(request, structure, shape)
    if persist:
        await writer.write_block(array, block)
    await publish_update(adapter, _block_message(request, OCTET_STREAM, structure, block), body)


async def _write_sparse(
    request: Request, adapter: ReadableSparse, block: NDBlock | None, persist: bool
) -> None:
    structure = adapter.structure()
    writer = capable(adapter, WritableSparse, "writing")
    coords, data, body = await _coo_from_body(request, len(structure.shape))
    shape = structure.shape
    if block is not None:
        # Refuses a wrong rank or a block off the grid.
        shape = tuple(r.stop - r.start for r in block.slices(structure.chunks))
    if persist and block is None:
        await writer.write(coords, data)
    elif persist:
        await writer.write_block(coords, data, block)
    if block is None:
        message = stream_messages.array_data(_media_type(request, ARROW_FILE), shape)
    else:
        message = _block_message(request, ARROW_FILE, structure, block)
    await publish_update(adapter, message, body)


def _block_message(request: Request, default: str, structure: Any, block: NDBlock) -> dict:
    """The array-data update of a block written: by its chunk indices (upstream's form), or,
    for a run of chunks (which upstream's messages cannot name), as the region at its offset."""
    region = block.slices(structure.chunks)
    shape = tuple(r.stop - r.start for r in region)
    media_type = _media_type(request, default)
    if all(isinstance(part, int) for part in block):
        return stream_messages.array_data(media_type, shape, block=tuple(block))
    return stream_messages.array_data(media_type, shape, offset=tuple(r.start for r in region))


# How a request body becomes data, by the family of the node written to.
ARRAY_BODY_WRITERS = {"array": _write_dense, "sparse": _write_sparse}


def _whole_region(request: Request) -> None:
    """Refuse ``slice``: these routes write a whole array or block, and ignoring it would
    write more than the client meant to."""
    if "slice" in request.query_params:
        raise BadRequest(
            "A write takes the whole array (array/full) or block (array/block), not a slice: "
            "write a region with PATCH array/full?offset=...&shape=..."
        )


@router.put("/array/full/{path:path}")
async def write_array(request: Request, node: WritingArray, persist: bool = True):
    _whole_region(request)
    await ARRAY_BODY_WRITERS[node.family](request, node.adapter, None, persist)
    return document_response(request, None)


@router.put("/array/block/{path:path}")
async def write_array_block(request: Request, node: WritingArray, block: str, persist: bool = True):
    _whole_region(request)
    parsed = NDBlock.from_query(block)
    await ARRAY_BODY_WRITERS[node.family](request, node.adapter, parsed, persist)
    return document_response(request, None)


def _integers(text: str, name: str) -> tuple[int, ...]:
    """``"3,4"`` as ``(3, 4)``; the empty string as ``()``."""
    try:
        return tuple(int(part) for part in text.split(",")) if text.strip() else ()
    except ValueError:
        raise BadRequest(f"{name} must be comma-separated integers, not {text!r}") from None


@router.patch("/array/full/{path:path}")
async def patch_array(
    request: Request,
    node: PatchingArray,
    offset: str,
    shape: str,
    extend: bool = False,
    persist: bool = True,
):
    """Write a region of an array at ``offset``; with ``extend``, grow the array to hold it.
    Answers the array's structure after the write."""
    if extend and not persist:
        raise BadRequest("extend=true needs persist=true: an array grows only by storing data")
    adapter = capable(node.adapter, PatchableArray, "patching (writing a region, extending)")
    structure = node.adapter.structure()
    dims = _integers(shape, "shape")
    if any(n < 0 for n in dims):
        raise BadRequest(f"Invalid shape {list(dims)}")
    # The region's shape is the client's: it holds no more than the array, unless it grows
    # the array (then no more than the array or write_max_bytes, whichever is larger).
    held = math.prod(structure.shape) * structure.data_type.itemsize
    ceiling = max(held, tiled_state(request).settings.write_max_bytes) if extend else held
    data, body = await _array_from_body(request, structure, dims, ceiling)
    at = _integers(offset, "offset")
    message = stream_messages.array_data(_media_type(request, OCTET_STREAM), dims, offset=at)
    if not persist:
        # Checked (the region must fit: it cannot grow the array), not stored: see the rule
        # above _write_dense.
        patched_region(structure.shape, at, data.shape, extend=False, stored=False)
        await publish_update(node.adapter, message, body)
        return document_response(request, structure.to_json())
    grown = await adapter.patch(data, at, extend)
    await publish_update(node.adapter, message, body)
    return document_response(request, grown.to_json())


async def _table_body(request: Request) -> tuple[Any, bytes]:
    body = await request_body(request)
    return decoded(request, "table", body, ARROW_FILE), body


async def _publish_rows(
    request: Request, node: Node, body: bytes, partition: int | None, append: bool
) -> None:
    message = stream_messages.table_data(_media_type(request, ARROW_FILE), partition, append)
    await publish_update(node.adapter, message, body)


@router.put("/table/full/{path:path}")
@router.put("/node/full/{path:path}", deprecated=True)  # upstream's older spelling, kept there
async def write_table(request: Request, node: WritingTable):
    table, body = await _table_body(request)
    await capable(node.adapter, WritableTable, "writing").write(table)
    await _publish_rows(request, node, body, None, append=False)
    return document_response(request, None)


@router.put("/table/partition/{path:path}")
async def write_partition(request: Request, node: WritingTable, partition: int):
    table, body = await _table_body(request)
    await capable(node.adapter, WritableTable, "writing").write_partition(table, partition)
    await _publish_rows(request, node, body, partition, append=False)
    return document_response(request, None)


@router.patch("/table/partition/{path:path}")
async def append_partition(request: Request, node: WritingTable, partition: int):
    table, body = await _table_body(request)
    await capable(node.adapter, WritableTable, "appending").append_partition(table, partition)
    await _publish_rows(request, node, body, partition, append=True)
    return document_response(request, None)
