"""Ragged array routes: reading (sliced, in any encoding), writing whole or by chunk, and
appending rows (PATCH with ``extend``)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Request

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
from .writes import _integers, decoded

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


async def _body(request: Request, node: Node) -> Any:
    return decoded(request, "ragged", await request_body(request), ZIP, node.adapter.structure())


@router.put("/ragged/full/{path:path}")
async def write_ragged(request: Request, node: WritingRagged, persist: bool = True):
    writer = capable(node.adapter, WritableRagged, "writing")
    array = await _body(request, node)  # checked even when not persisted
    if persist:
        await writer.write(array)
    return document_response(request, None)


@router.put("/ragged/block/{path:path}")
async def write_ragged_block(
    request: Request, node: WritingRagged, block: str, persist: bool = True
):
    writer = capable(node.adapter, WritableRagged, "writing blocks")
    parsed = NDBlock.from_query(block)
    array = await _body(request, node)
    if persist:
        await writer.write_block(array, parsed)
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
    array = await _body(request, node)
    if not persist:
        return document_response(request, node.adapter.structure().to_json())
    grown = await patcher.patch(array, _integers(offset, "offset"), extend)
    return document_response(request, grown.to_json())
