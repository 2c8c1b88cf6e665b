"""Write routes: create nodes, write array blocks and table partitions, edit and delete.

Every handler validates the whole request before the node is touched, so a refused write
changes nothing; the storage adapters make each file replacement atomic.
"""

from __future__ import annotations

import io
from typing import Annotated, Any

import numpy
from fastapi import APIRouter, Body, Query, Request
from pydantic import BaseModel, ConfigDict, Field

from ...adapters.protocols import (
    NodeWithHistory,
    WritableArray,
    WritableContainer,
    WritableSparse,
    WritableTable,
)
from ...errors import BadRequest, Unsupported, UnsupportedMediaType
from ...ndslice import NDBlock
from ...structures.array import ArrayStructure
from ...structures.core import StructureFamily, normalize_specs
from ...structures.data_source import Asset, DataSource, Management
from ...structures.patch import PATCHERS
from ...structures.sparse import COOStructure
from ...structures.table import TableStructure
from ..dependencies import Node, node_dependency
from ..resources import LINKS_BY_FAMILY
from ..responses import document_response
from ..urls import base_url

router = APIRouter()

STRUCTURES = {"array": ArrayStructure, "sparse": COOStructure, "table": TableStructure}

CreatingNode = Annotated[Node, node_dependency("write:metadata", {"container"})]
WritingMetadata = Annotated[Node, node_dependency("write:metadata")]
WritingArray = Annotated[Node, node_dependency("write:data", {"array", "sparse"})]
WritingTable = Annotated[Node, node_dependency("write:data", {"table"})]
DeletingNode = Annotated[Node, node_dependency("delete:node")]
ReadingRevisions = Annotated[Node, node_dependency("read:metadata")]


class DataSourceRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    id: int | None = None
    structure_family: StructureFamily
    structure: dict[str, Any] | None = None
    mimetype: str | None = None
    parameters: dict[str, Any] = {}
    properties: dict[str, Any] = {}
    assets: list[dict[str, Any]] = []
    management: Management = Management.writable

    def to_data_source(self) -> DataSource:
        structure = (
            STRUCTURES[self.structure_family.value].from_json(self.structure)
            if self.structure
            else None
        )
        return DataSource(
            structure_family=self.structure_family, structure=structure, id=self.id, mimetype=self.mimetype,
            parameters=self.parameters, properties=self.properties,
            assets=[Asset.from_json(a) for a in self.assets], management=self.management,
        )  # fmt: skip


class PostMetadataRequest(BaseModel):
    id: str | None = None
    structure_family: StructureFamily
    metadata: dict[str, Any] = {}
    specs: list[Any] = Field(default_factory=list, max_length=20)
    access_blob: dict[str, Any] | None = None
    data_sources: list[DataSourceRequest] = []


class PutMetadataRequest(BaseModel):
    metadata: dict[str, Any] | None = None
    specs: list[Any] | None = None
    access_blob: dict[str, Any] | None = None


def _capable(adapter: Any, protocol: type, action: str) -> Any:
    if not isinstance(adapter, protocol):
        raise Unsupported(f"This node does not support {action}.")
    return adapter


async def _create(request: Request, node: Node, body: PostMetadataRequest, register: bool) -> Any:
    node.require("create:node")
    if register:
        node.require("register")
    parent = _capable(node.adapter, WritableContainer, "creating nodes")
    data_sources = [ds.to_data_source() for ds in body.data_sources]
    if not register and any(ds.assets for ds in data_sources):
        raise BadRequest("Data sources with assets must be registered with POST /register.")
    child = await parent.create_node(
        key=body.id, structure_family=body.structure_family, metadata=body.metadata,
        specs=normalize_specs(body.specs), data_sources=data_sources, access_blob=body.access_blob,
    )  # fmt: skip
    key = child.key if hasattr(child, "key") else body.id
    path = "/".join((*node.path_parts, key))
    base = base_url(request)
    links = {"self": f"{base}/metadata/{path}"}
    links.update(LINKS_BY_FAMILY[body.structure_family.value](base, path, child))
    sources = [ds.to_json() for ds in getattr(child, "data_sources", lambda: [])()]
    return document_response(request, {"id": key, "links": links, "data_sources": sources})


@router.post("/metadata/{path:path}")
async def create_node(request: Request, node: CreatingNode, body: PostMetadataRequest):
    return await _create(request, node, body, register=False)


@router.post("/register/{path:path}")
async def register_node(request: Request, node: CreatingNode, body: PostMetadataRequest):
    return await _create(request, node, body, register=True)


@router.put("/metadata/{path:path}")
async def replace_metadata(
    request: Request, node: WritingMetadata, body: PutMetadataRequest, drop_revision: bool = False
):
    target = _capable(node.adapter, NodeWithHistory, "metadata updates")
    specs = normalize_specs(body.specs) if body.specs is not None else None
    await target.replace_metadata(body.metadata, specs, body.access_blob, drop_revision)
    return document_response(request, {"id": node.key})


@router.patch("/metadata/{path:path}")
async def patch_metadata(
    request: Request,
    node: WritingMetadata,
    body: Annotated[dict[str, Any], Body()],
    drop_revision: bool = False,
):
    target = _capable(node.adapter, NodeWithHistory, "metadata updates")
    patcher = PATCHERS.get(body.get("content-type"))
    if patcher is None:
        raise UnsupportedMediaType(
            f"Unsupported patch content-type {body.get('content-type')!r}; use one of {list(PATCHERS)}"
        )
    metadata = (
        patcher(node.adapter.metadata(), body["metadata"])
        if body.get("metadata") is not None
        else None
    )
    specs = None
    if body.get("specs") is not None:
        current = [s.to_json() for s in node.adapter.specs]
        specs = normalize_specs(patcher(current, body["specs"]))
    access_blob = (
        patcher(node.adapter.access_blob or {}, body["access_blob"])
        if body.get("access_blob")
        else None
    )
    await target.replace_metadata(metadata, specs, access_blob, drop_revision)
    return document_response(request, {"id": node.key})


@router.delete("/metadata/{path:path}")
async def delete_node(
    request: Request, node: DeletingNode, recursive: bool = False, external_only: bool = True
):
    if not node.path_parts:
        raise BadRequest("The root cannot be deleted.")
    await _capable(node.adapter, NodeWithHistory, "deletion").delete(
        recursive=recursive, external_only=external_only
    )
    return document_response(request, None)


@router.get("/revisions/{path:path}")
async def revisions(
    request: Request,
    node: ReadingRevisions,
    offset: Annotated[int, Query(alias="page[offset]", ge=0)] = 0,
    limit: Annotated[int, Query(alias="page[limit]", ge=0, le=300)] = 100,
):
    items, count = await _capable(node.adapter, NodeWithHistory, "revisions").revisions(
        offset, limit
    )
    here = f"{base_url(request)}/revisions/{node.path}"
    following = offset + limit
    links = {
        "self": f"{here}?page[offset]={offset}&page[limit]={limit}",
        "first": f"{here}?page[limit]={limit}",
        "next": f"{here}?page[offset]={following}&page[limit]={limit}"
        if following < count
        else None,
    }
    return document_response(
        request, {"data": items, "error": None, "links": links, "meta": {"count": count}}
    )


@router.delete("/revisions/{path:path}")
async def delete_revision(request: Request, node: WritingMetadata, number: int):
    node.require("delete:revision")
    await _capable(node.adapter, NodeWithHistory, "revisions").delete_revision(number)
    return document_response(request, None)


def _media_type(request: Request, default: str) -> str:
    return request.headers.get("content-type", default).split(";")[0].strip() or default


def _array_from_body(
    body: bytes, structure: Any, shape: tuple[int, ...], media_type: str
) -> numpy.ndarray:
    if media_type != "application/octet-stream":
        raise UnsupportedMediaType(
            f"Array bodies must be application/octet-stream, not {media_type!r}"
        )
    dtype = structure.data_type.to_numpy_dtype()
    expected = int(numpy.prod(shape, dtype=numpy.int64)) * dtype.itemsize
    if len(body) != expected:
        raise BadRequest(
            f"Expected {expected} bytes for shape {list(shape)} of {dtype.str}, got {len(body)}"
        )
    return numpy.frombuffer(body, dtype=dtype).reshape(shape)


def _table_from_body(body: bytes, media_type: str) -> Any:
    import pyarrow
    import pyarrow.parquet

    try:
        if media_type == "application/vnd.apache.arrow.file":
            return pyarrow.ipc.open_file(pyarrow.py_buffer(body)).read_pandas()
        if media_type == "application/x-parquet":
            return pyarrow.parquet.read_table(io.BytesIO(body)).to_pandas()
    except (pyarrow.ArrowInvalid, OSError) as err:
        raise BadRequest(f"Could not read the {media_type} body: {err}") from None
    raise UnsupportedMediaType(
        f"Table bodies must be Arrow IPC files or Parquet, not {media_type!r}"
    )


def _coo_from_body(body: bytes, media_type: str, ndim: int) -> tuple[numpy.ndarray, numpy.ndarray]:
    frame = _table_from_body(body, media_type)
    dims = [f"dim{i}" for i in range(ndim)]
    if set(dims + ["data"]) - set(frame.columns):
        raise BadRequest(f"A sparse body needs the columns {dims + ['data']}")
    return numpy.stack([frame[d].to_numpy() for d in dims]), frame["data"].to_numpy()


async def _write_dense(request: Request, adapter: Any, body: bytes, block: NDBlock | None) -> None:
    structure = adapter.structure()
    writer = _capable(adapter, WritableArray, "writing")
    media_type = _media_type(request, "application/octet-stream")
    if block is None:
        await writer.write(_array_from_body(body, structure, structure.shape, media_type))
        return
    shape = tuple(r.stop - r.start for r in block.slices(structure.chunks))
    await writer.write_block(_array_from_body(body, structure, shape, media_type), block)


async def _write_sparse(request: Request, adapter: Any, body: bytes, block: NDBlock | None) -> None:
    structure = adapter.structure()
    writer = _capable(adapter, WritableSparse, "writing")
    media_type = _media_type(request, "application/vnd.apache.arrow.file")
    coords, data = _coo_from_body(body, media_type, len(structure.shape))
    if block is None:
        await writer.write(coords, data)
    else:
        block.slices(structure.chunks)  # refuses a wrong rank or a block off the grid
        await writer.write_block(coords, data, block)


# How a request body becomes data, by the family of the node written to.
ARRAY_BODY_WRITERS = {"array": _write_dense, "sparse": _write_sparse}


@router.put("/array/full/{path:path}")
async def write_array(request: Request, node: WritingArray):
    await ARRAY_BODY_WRITERS[node.family](request, node.adapter, await request.body(), None)
    return document_response(request, None)


@router.put("/array/block/{path:path}")
async def write_array_block(request: Request, node: WritingArray, block: str):
    parsed = NDBlock.from_query(block)
    await ARRAY_BODY_WRITERS[node.family](request, node.adapter, await request.body(), parsed)
    return document_response(request, None)


async def _table_body(request: Request) -> Any:
    return _table_from_body(
        await request.body(), _media_type(request, "application/vnd.apache.arrow.file")
    )


@router.put("/table/full/{path:path}")
async def write_table(request: Request, node: WritingTable):
    await _capable(node.adapter, WritableTable, "writing").write(await _table_body(request))
    return document_response(request, None)


@router.put("/table/partition/{path:path}")
async def write_partition(request: Request, node: WritingTable, partition: int):
    await _capable(node.adapter, WritableTable, "writing").write_partition(
        await _table_body(request), partition
    )
    return document_response(request, None)


@router.patch("/table/partition/{path:path}")
async def append_partition(request: Request, node: WritingTable, partition: int):
    await _capable(node.adapter, WritableTable, "appending").append_partition(
        await _table_body(request), partition
    )
    return document_response(request, None)
