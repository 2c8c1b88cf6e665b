"""Awkward array routes: buffers by form key (GET, or POST for long key lists), the whole
array in any of its encodings, and writing all buffers at once."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Body, Query, Request

from ...adapters.protocols import WritableAwkward
from ...errors import BadRequest
from ...serialization.media_types import ZIP
from ...utils import run_sync
from ..bodies import request_body
from ..dependencies import Node, capable, node_dependency
from ..responses import document_response
from ..state import tiled_state
from .data import EncodingParams, _encoded
from .writes import decoded

router = APIRouter()

AwkwardNode = Annotated[Node, node_dependency("read:data", {"awkward"})]
WritingAwkward = Annotated[Node, node_dependency("write:data", {"awkward"})]


def _check_size(request: Request, buffers: dict[str, bytes]) -> None:
    limit = tiled_state(request).settings.response_bytesize_limit
    if sum(len(b) for b in buffers.values()) > limit:
        raise BadRequest(
            f"Response would exceed {limit}. Ask for fewer form keys (slice the array)."
        )


async def _buffers(request: Request, node: Node, form_keys: list[str] | None, encoding: Any) -> Any:
    adapter = node.adapter
    structure = adapter.structure()
    buffers = await run_sync(adapter.read_buffers, form_keys)
    _check_size(request, buffers)
    components = (structure.form, structure.length, buffers)
    return await _encoded(request, node, lambda: components, encoding)


@router.get("/awkward/buffers/{path:path}")
async def awkward_buffers(
    request: Request,
    node: AwkwardNode,
    encoding: EncodingParams,
    form_key: Annotated[list[str] | None, Query()] = None,
):
    """The buffers of the given form keys (all when none is given)."""
    return await _buffers(request, node, form_key, encoding)


@router.post("/awkward/buffers/{path:path}")
async def awkward_buffers_post(
    request: Request,
    node: AwkwardNode,
    encoding: EncodingParams,
    body: Annotated[list[str], Body()],
):
    """As GET, with the form keys in the body: a URL has room for only so many."""
    return await _buffers(request, node, body, encoding)


@router.get("/awkward/full/{path:path}")
async def awkward_full(request: Request, node: AwkwardNode, encoding: EncodingParams):
    return await _buffers(request, node, None, encoding)


@router.put("/awkward/full/{path:path}")
async def write_awkward(request: Request, node: WritingAwkward):
    """Replace all buffers with those of a zip file (one member per buffer)."""
    writer = capable(node.adapter, WritableAwkward, "writing")
    structure = node.adapter.structure()
    buffers = decoded(
        request, "awkward", await request_body(request), ZIP, structure.form, structure.length
    )
    await writer.write(buffers)
    return document_response(request, None)
