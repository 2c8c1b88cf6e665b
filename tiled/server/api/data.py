"""Data routes: arrays, tables and containers, encoded in the media type the client asks for."""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends, Request, Response

from ...adapters.base import is_group
from ...adapters.protocols import ZarrGroupHooks
from ...adapters.walk import walk
from ...errors import BadRequest, DataUnavailable, InvalidSlice, NoSuchEntry
from ...ndslice import NDBlock, NDSlice
from ...utils import run_sync
from ..dependencies import ArrayNode, ContainerNode, GroupNode, Node, TableNode
from ..headers import attachment
from ..responses import bytes_response, stream_response
from ..state import tiled_state

router = APIRouter()


@dataclass(frozen=True)
class Encoding:
    """``format`` (media type or alias) and ``filename`` (download name) of a data request."""

    format: str | None = None
    filename: str | None = None


@dataclass(frozen=True)
class Slicing:
    slice: str = ""
    expected_shape: str | None = None


EncodingParams = Annotated[Encoding, Depends()]
SlicingParams = Annotated[Slicing, Depends()]
Columns = Annotated[list[str] | None, Body()]


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
    limit = tiled_state(request).settings.response_bytesize_limit
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
    encoding: Encoding,
    target: Any = None,
    sliced: bool = False,
) -> Response:
    """Negotiate a media type, encode, and respond (streaming when the encoder streams)."""
    from ...serialization import EncodeOptions

    state = tiled_state(request)
    adapter = target if target is not None else node.adapter
    keys = [spec.name for spec in adapter.specs] + [adapter.structure_family.value]
    key, media_type = state.serialization_registry.negotiate(
        keys, encoding.format, request.headers.get("accept")
    )
    read = _size_limited(read, state.settings.response_bytesize_limit)
    registry = state.serialization_registry
    if sliced and registry.encodes_whole_node(key, media_type):
        # A whole-node encoder (e.g. a zarr zip) sees only the requested part.
        adapter = IN_MEMORY_BY_FAMILY[adapter.structure_family.value](await run_sync(read))
    zarr_format = request.query_params.get("zarr_format", "3")
    options = EncodeOptions(zarr_options=state.settings.zarr, zarr_format=_zarr_format(zarr_format))
    body = await state.serialization_registry.encode(
        key, media_type, node=adapter, read=read, metadata=adapter.metadata(), options=options
    )
    filename = encoding.filename
    headers = {"Content-Disposition": attachment(filename)} if filename else {}
    if isinstance(body, bytes | bytearray | memoryview):
        return bytes_response(request, bytes(body), media_type, headers)
    return stream_response(body, media_type, headers)


def _size_limited(read: Callable[[], Any], limit: int) -> Callable[[], Any]:
    """Refuse data that turns out larger than the limit (tables cannot be sized before reading)."""

    def limited() -> Any:
        data = read()
        size = getattr(data, "nbytes", None)
        if size is None and hasattr(data, "memory_usage"):
            # The index counts: it is sent too (upstream counts it the same way).
            size = int(data.memory_usage().sum())
        if size is not None and size > limit:
            raise BadRequest(
                f"Response would exceed {limit}. Use slicing ('?slice=...') or request fewer columns or a partition."
            )
        return data

    return limited


def _in_memory_sparse(data: Any) -> Any:
    from ...adapters.sparse import COOAdapter

    return COOAdapter.from_coo(data)


def _in_memory_array(data: Any) -> Any:
    from ...adapters.array import ArrayAdapter

    return ArrayAdapter.from_array(data)


IN_MEMORY_BY_FAMILY = {"array": _in_memory_array, "sparse": _in_memory_sparse}


def _zarr_format(value: str) -> int:
    from ...zarr_format.formats import encoding_for

    return encoding_for(value).zarr_format


@router.get("/array/block/{path:path}")
async def array_block(
    request: Request, node: ArrayNode, block: str, slicing: SlicingParams, encoding: EncodingParams
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
    ndslice = NDSlice.from_query(slicing.slice)
    shape = _sliced_shape(tuple(r.stop - r.start for r in region), ndslice)
    _check_expected(shape, _parse_expected_shape(slicing.expected_shape))
    _check_size(request, shape, adapter.zarr_dtype().itemsize or 1)
    read = lambda: adapter.read_block(parsed_block, ndslice)  # noqa: E731
    return await _encoded(request, node, read, encoding, sliced=True)


@router.get("/array/full/{path:path}")
async def array_full(
    request: Request, node: ArrayNode, slicing: SlicingParams, encoding: EncodingParams
):
    adapter = node.adapter
    ndslice = NDSlice.from_query(slicing.slice)
    structure_shape = tuple(adapter.structure().shape)
    shape = _sliced_shape(structure_shape, ndslice)
    _check_expected(shape, _parse_expected_shape(slicing.expected_shape))
    _check_size(request, shape, adapter.zarr_dtype().itemsize or 1)
    # The whole array is read as the region its structure names: storage that is growing
    # (an array being extended) may already hold more than the structure this request saw.
    region = ndslice or NDSlice(*(slice(0, n) for n in structure_shape))
    return await _encoded(
        request, node, lambda: adapter.read(region), encoding, sliced=bool(ndslice)
    )


def _columns(request: Request, body: list[str] | None) -> list[str] | None:
    params = request.query_params
    if "field" in params and "column" in params:
        raise BadRequest("Use 'column' (not also its deprecated alias 'field').")
    if "field" in params:
        warnings.warn(
            "The query parameter 'field' is deprecated; use 'column'.", DeprecationWarning,
            stacklevel=2,
        )  # fmt: skip
    columns = params.getlist("column") or params.getlist("field") or body
    if columns and len(set(columns)) != len(columns):
        raise BadRequest(f"A column is asked for more than once: {list(columns)}")
    return list(columns) if columns else None


@router.get("/table/partition/{path:path}")
@router.post("/table/partition/{path:path}")
async def table_partition(
    request: Request,
    node: TableNode,
    partition: int,
    encoding: EncodingParams,
    body: Columns = None,
):
    adapter = node.adapter
    columns = _columns(request, body)
    if not 0 <= partition < adapter.structure().npartitions:
        raise BadRequest("Partition out of range")
    return await _encoded(
        request, node, lambda: adapter.read_partition(partition, fields=columns), encoding
    )


@router.get("/table/full/{path:path}")
@router.post("/table/full/{path:path}")
async def table_full(
    request: Request, node: TableNode, encoding: EncodingParams, body: Columns = None
):
    columns = _columns(request, body)
    return await _encoded(request, node, lambda: node.adapter.read(fields=columns), encoding)


async def _subset(adapter: ZarrGroupHooks, keys: list[str] | None) -> Any:
    if not keys:
        return adapter
    from ...adapters.mapping import MapAdapter

    members = {}
    for key in keys:
        try:
            members[key] = await adapter.zarr_member(key)
        except NoSuchEntry:
            raise BadRequest(f"No such field {key!r}") from None
    return MapAdapter(members, metadata=adapter.metadata(), specs=adapter.specs)


@router.get("/container/full/{path:path}")
@router.post("/container/full/{path:path}")
async def container_full(
    request: Request, node: ContainerNode, encoding: EncodingParams, body: Columns = None
):
    target = await _subset(node.subtree(), request.query_params.getlist("field") or body)
    keys = [spec.name for spec in target.specs] + [target.structure_family.value]
    registry = tiled_state(request).serialization_registry
    key, media_type = registry.negotiate(keys, encoding.format, request.headers.get("accept"))
    if registry.reads_data(key, media_type):
        await _check_subtree_size(request, target)
    return await _encoded(request, node, lambda: target, encoding, target=target)


async def _check_subtree_size(request: Request, container: ZarrGroupHooks) -> None:
    """Refuse a whole-subtree export whose arrays alone exceed the response size limit.

    The size comes from structures (nothing is read), and the walk stops once over the limit.
    """
    settings = tiled_state(request).settings
    limit = settings.response_bytesize_limit
    total = 0
    async for visit in walk(container):
        member = visit.node
        if not is_group(member):
            try:
                meta = await member.to_zarr_meta(settings.zarr)  # reads no data
                shape, itemsize = meta.shape, meta.dtype.itemsize
            except DataUnavailable:
                # No zarr form (long doubles, an HDF5 placeholder) but a native one.
                structure = await run_sync(member.structure)
                shape, itemsize = structure.shape, structure.data_type.itemsize
            total += math.prod(shape) * (itemsize or 1)
        if total > limit:
            raise BadRequest(
                f"Response would exceed {limit}. Export a smaller part of the tree "
                "(a sub-container, or field=... to choose children)."
            )


# /node/full predates the family-specific routes; it reads a table or a container whole.
FULL_READERS = {"table": table_full, "container": container_full}


@router.get("/node/full/{path:path}", deprecated=True)
async def node_full(request: Request, node: GroupNode, encoding: EncodingParams):
    return await FULL_READERS[node.family](request, node, encoding, None)
