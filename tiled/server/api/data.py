"""Data routes: arrays, tables and containers, encoded in the media type the client asks for."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Annotated, Any

from fastapi import APIRouter, Body, Request, Response

from ...errors import BadRequest, InvalidSlice
from ...ndslice import NDBlock, NDSlice
from ..dependencies import ArrayNode, ContainerNode, GroupNode, Node, TableNode
from ..responses import bytes_response, stream_response

router = APIRouter()


def _sliced_shape(shape: tuple[int, ...], ndslice: NDSlice) -> tuple[int, ...]:
    result = []
    for part, size in zip(ndslice.expand(shape), shape, strict=True):
        if isinstance(part, slice):
            result.append(len(range(*part.indices(size))))
    return tuple(result)


def _parse_expected_shape(text: str | None) -> tuple[int, ...] | None:
    if text is None:
        return None
    if text == "scalar":
        return ()
    try:
        return tuple(int(p) for p in text.split(",")) if text else ()
    except ValueError:
        raise InvalidSlice(f"Could not parse expected_shape {text!r}") from None


def _check_size(request: Request, shape: tuple[int, ...], itemsize: int) -> None:
    limit = request.app.state.settings.response_bytesize_limit
    if math.prod(shape) * itemsize > limit:
        raise BadRequest(
            f"Response would exceed {limit}. Use slicing ('?slice=...') to request smaller chunks."
        )


def _check_expected(shape: tuple[int, ...], expected: tuple[int, ...] | None) -> None:
    if expected is not None and tuple(shape) != expected:
        raise InvalidSlice(
            f"The expected_shape {list(expected)} does not match the actual shape {list(shape)}"
        )


async def _encoded(
    request: Request,
    node: Node,
    read: Callable[[], Any],
    format: str | None,
    filename: str | None,
    target: Any = None,
) -> Response:
    """Negotiate a media type, encode, and respond (streaming when the encoder streams)."""
    from ...serialization import EncodeOptions

    state = request.app.state
    adapter = target if target is not None else node.adapter
    keys = [spec.name for spec in adapter.specs] + [adapter.structure_family.value]
    key, media_type = state.serialization_registry.negotiate(
        keys, format, request.headers.get("accept")
    )
    zarr_format = request.query_params.get("zarr_format", "3")
    options = EncodeOptions(zarr_options=state.settings.zarr, zarr_format=_zarr_format(zarr_format))
    body = await state.serialization_registry.encode(
        key, media_type, node=adapter, read=read, metadata=adapter.metadata(), options=options
    )
    headers = {"Content-Disposition": f'attachment; filename="{filename}"'} if filename else {}
    if isinstance(body, bytes | bytearray | memoryview):
        return bytes_response(request, bytes(body), media_type, headers)
    return stream_response(body, media_type, headers)


def _zarr_format(value: str) -> int:
    from ..zarr.formats import encoding_for

    return encoding_for(value).zarr_format


@router.get("/array/block/{path:path}")
async def array_block(
    request: Request,
    node: ArrayNode,
    block: str,
    slice: str = "",
    expected_shape: str | None = None,
    format: str | None = None,
    filename: str | None = None,
):
    adapter = node.adapter
    structure = adapter.structure()
    parsed_block = NDBlock.from_query(block)
    if len(parsed_block) != len(structure.shape):
        raise InvalidSlice(
            f"Block parameter must have {len(structure.shape)} comma-separated parameters, "
            f"corresponding to the dimensions of this {len(structure.shape)}-dimensional array."
        )
    region = parsed_block.slices(structure.chunks)
    block_shape = tuple(r.stop - r.start for r in region)
    ndslice = NDSlice.from_query(slice)
    shape = _sliced_shape(block_shape, ndslice)
    _check_expected(shape, _parse_expected_shape(expected_shape))
    _check_size(request, shape, adapter.zarr_dtype().itemsize or 1)
    return await _encoded(
        request, node, lambda: adapter.read_block(parsed_block, ndslice), format, filename
    )


@router.get("/array/full/{path:path}")
async def array_full(
    request: Request,
    node: ArrayNode,
    slice: str = "",
    expected_shape: str | None = None,
    format: str | None = None,
    filename: str | None = None,
):
    adapter = node.adapter
    ndslice = NDSlice.from_query(slice)
    shape = _sliced_shape(adapter.structure().shape, ndslice)
    _check_expected(shape, _parse_expected_shape(expected_shape))
    _check_size(request, shape, adapter.zarr_dtype().itemsize or 1)
    return await _encoded(request, node, lambda: adapter.read(ndslice), format, filename)


def _columns(request: Request, body: list[str] | None) -> list[str] | None:
    params = request.query_params
    if "field" in params and "column" in params:
        raise BadRequest("Use 'column' (not also its deprecated alias 'field').")
    columns = params.getlist("column") or params.getlist("field") or body
    return list(columns) if columns else None


@router.api_route("/table/partition/{path:path}", methods=["GET", "POST"])
async def table_partition(
    request: Request,
    node: TableNode,
    partition: int,
    format: str | None = None,
    filename: str | None = None,
    body: Annotated[list[str] | None, Body()] = None,
):
    adapter = node.adapter
    columns = _columns(request, body)
    if not 0 <= partition < adapter.structure().npartitions:
        raise BadRequest("Partition out of range")
    return await _encoded(
        request, node, lambda: adapter.read_partition(partition, fields=columns), format, filename
    )


@router.api_route("/table/full/{path:path}", methods=["GET", "POST"])
async def table_full(
    request: Request,
    node: TableNode,
    format: str | None = None,
    filename: str | None = None,
    body: Annotated[list[str] | None, Body()] = None,
):
    columns = _columns(request, body)
    return await _encoded(
        request, node, lambda: node.adapter.read(fields=columns), format, filename
    )


def _subset(adapter: Any, keys: list[str] | None) -> Any:
    if not keys:
        return adapter
    from ...adapters.mapping import MapAdapter

    missing = [k for k in keys if k not in adapter]
    if missing:
        raise BadRequest(f"No such field(s) {missing}")
    return MapAdapter(
        {k: adapter[k] for k in keys}, metadata=adapter.metadata(), specs=adapter.specs
    )


@router.api_route("/container/full/{path:path}", methods=["GET", "POST"])
async def container_full(
    request: Request,
    node: ContainerNode,
    format: str | None = None,
    filename: str | None = None,
    body: Annotated[list[str] | None, Body()] = None,
):
    target = _subset(node.adapter, request.query_params.getlist("field") or body)
    return await _encoded(request, node, lambda: target, format, filename, target=target)


# /node/full predates the family-specific routes; it reads a table or a container whole.
FULL_READERS = {"table": table_full, "container": container_full}


@router.get("/node/full/{path:path}", deprecated=True)
async def node_full(
    request: Request, node: GroupNode, format: str | None = None, filename: str | None = None
):
    return await FULL_READERS[node.family](request, node, format, filename, None)
