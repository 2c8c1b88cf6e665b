"""Ragged array routes: reading (sliced, in any encoding), writing whole or by chunk, and
appending rows (PATCH with ``extend``)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Request

from ... import stream_messages
from ...adapters.protocols import PatchableRagged, WritableRagged
from ...errors import BadRequest
from ...ndslice import NDBlock, NDSlice
from ...serialization.media_types import ZIP
from ...structures.ragged import RaggedSlicingError
from ..bodies import request_body
from ..dependencies import Node, capable, node_dependency
from ..responses import document_response
from ..state import tiled_state
from .data import EncodingParams, SlicingParams, _encoded
from .streams import publish_update
from .writes import _integers, _media_type, decoded

router = APIRouter()

RaggedNode = Annotated[Node, node_dependency("read:data", {"ragged"})]
WritingRagged = Annotated[Node, node_dependency("write:data", {"ragged"})]


def _read(request: Request, adapter: Any, ndslice: NDSlice) -> Any:
    limit = tiled_state(request).settings.response_bytesize_limit
    try:
        array = adapter.read(ndslice or None)
    except RaggedSlicingError as err:
        raise RaggedSlicingError(
            "Cannot apply the requested slice to the given ragged array. "
            f"Try reading the entire array and slice it on the client side instead. ({err})"
        ) from None
    size = array._impl.nbytes if array.ndim else 0
    if size > limit:
        raise BadRequest(
            f"Response would exceed {limit}. Use slicing ('?slice=...') to request smaller chunks."
        )
    return array


@router.get("/ragged/full/{path:path}")
async def ragged_full(
    request: Request, node: RaggedNode, slicing: SlicingParams, encoding: EncodingParams
):
    ndslice = NDSlice.from_query(slicing.slice)
    return await _encoded(request, node, lambda: _read(request, node.adapter, ndslice), encoding)


async def _body(request: Request, node: Node) -> tuple[Any, bytes]:
    """The body as a ragged array, and as it came (for live subscribers)."""
    body = await request_body(request)
    return decoded(request, "ragged", body, ZIP, node.adapter.structure()), body


async def _publish(request: Request, node: Node, body: bytes, shape: Any, **where: Any) -> None:
    # Variable dimensions are None in a ragged structure's shape: the message says so too.
    message = stream_messages.ragged_data(_media_type(request, ZIP), shape, **where)
    await publish_update(node.adapter, message, body)


# As the array routes (see tiled.server.api.writes): checked with or without ``persist``,
# stored only with it, then sent to the node's live subscribers.


@router.put("/ragged/full/{path:path}")
async def write_ragged(request: Request, node: WritingRagged, persist: bool = True):
    writer = capable(node.adapter, WritableRagged, "writing")
    array, body = await _body(request, node)
    if persist:
        await writer.write(array)
    await _publish(request, node, body, node.adapter.structure().shape)
    return document_response(request, None)


@router.put("/ragged/block/{path:path}")
async def write_ragged_block(
    request: Request, node: WritingRagged, block: str, persist: bool = True
):
    writer = capable(node.adapter, WritableRagged, "writing blocks")
    parsed = NDBlock.from_query(block)
    array, body = await _body(request, node)
    if persist:
        await writer.write_block(array, parsed)
    # As upstream: a ragged block's shape is not computable from the chunks; the array's.
    await _publish(request, node, body, node.adapter.structure().shape, block=tuple(parsed))
    return document_response(request, None)


@router.patch("/ragged/full/{path:path}")
async def patch_ragged(
    request: Request,
    node: WritingRagged,
    offset: str,
    shape: str | None = None,
    extend: bool = False,
    persist: bool = True,
):
    """Append rows at ``offset`` (the current length) with ``extend``; answers the
    structure after the append."""
    if extend and not persist:
        raise BadRequest(
            "Cannot PATCH a ragged array with both extend=true and persist=false: "
            "an array grows only by storing data"
        )
    patcher = capable(node.adapter, PatchableRagged, "patching (appending rows)")
    array, body = await _body(request, node)
    at = _integers(offset, "offset")
    rows = _integers(shape, "shape") if shape else node.adapter.structure().shape
    if not persist:
        await _publish(request, node, body, rows, offset=at)
        return document_response(request, node.adapter.structure().to_json())
    grown = await patcher.patch(array, at, extend)
    await _publish(request, node, body, rows, offset=at)
    return document_response(request, grown.to_json())
