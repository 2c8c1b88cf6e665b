"""Routes that create, describe, revise and delete nodes (not their data: see writes.py)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Body, Query, Request
from pydantic import BaseModel, ConfigDict, Field

from ...adapters.protocols import (
    NodeWithHistory,
    WritableContainer,
)
from ...errors import BadRequest, UnsupportedMediaType
from ...structures.array import ArrayStructure
from ...structures.core import StructureFamily, normalize_specs
from ...structures.data_source import Asset, DataSource, Management
from ...structures.patch import PATCHERS
from ...structures.sparse import COOStructure
from ...structures.table import TableStructure
from ..dependencies import Node, capable, node_dependency
from ..resources import LINKS_BY_FAMILY, data_sources_json, page_links
from ..responses import document_response
from ..urls import base_url

router = APIRouter()

STRUCTURES = {"array": ArrayStructure, "sparse": COOStructure, "table": TableStructure}

CreatingNode = Annotated[Node, node_dependency("write:metadata", {"container"})]
WritingMetadata = Annotated[Node, node_dependency("write:metadata")]
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


async def _create(request: Request, node: Node, body: PostMetadataRequest, register: bool) -> Any:
    node.require("create:node")
    if register:
        node.require("register")
    parent = capable(node.adapter, WritableContainer, "creating nodes")
    data_sources = [ds.to_data_source() for ds in body.data_sources]
    child = await parent.create_node(
        key=body.id, structure_family=body.structure_family, metadata=body.metadata,
        specs=normalize_specs(body.specs), data_sources=data_sources, access_blob=body.access_blob,
        register=register,
    )  # fmt: skip
    path = "/".join((*node.path_parts, child.key))
    base = base_url(request)
    links = {"self": f"{base}/metadata/{path}"}
    links.update(LINKS_BY_FAMILY[body.structure_family.value](base, path, child))
    sources = data_sources_json(child) or []
    return document_response(request, {"id": child.key, "links": links, "data_sources": sources})


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
    target = capable(node.adapter, NodeWithHistory, "metadata updates")
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
    target = capable(node.adapter, NodeWithHistory, "metadata updates")
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
    await capable(node.adapter, NodeWithHistory, "deletion").delete(
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
    items, count = await capable(node.adapter, NodeWithHistory, "revisions").revisions(
        offset, limit
    )
    links = page_links(f"{base_url(request)}/revisions/{node.path}", offset, limit, count)
    return document_response(
        request, {"data": items, "error": None, "links": links, "meta": {"count": count}}
    )


@router.delete("/revisions/{path:path}")
async def delete_revision(request: Request, node: WritingMetadata, number: int):
    node.require("delete:revision")
    await capable(node.adapter, NodeWithHistory, "revisions").delete_revision(number)
    return document_response(request, None)
