"""Routes that create, describe, revise and delete nodes (not their data: see writes.py)."""

from __future__ import annotations

import contextlib
from typing import Annotated, Any

from fastapi import APIRouter, Body, Query, Request
from pydantic import BaseModel, ConfigDict, Field

from ...access.blobs import legacy_access_blob, tags_of_blob
from ...adapters.protocols import (
    NodeWithHistory,
    UpdatesInTurn,
    WritableContainer,
    supports,
)
from ...errors import BadRequest, UnsupportedMediaType
from ...structures.array import ArrayStructure
from ...structures.core import Spec, StructureFamily, normalize_specs
from ...structures.data_source import Asset, DataSource, Management
from ...structures.patch import PATCHERS
from ...structures.sparse import COOStructure
from ...structures.table import TableStructure
from ..client_dialects import client_dialect
from ..dependencies import Node, capable, node_dependency
from ..resources import (
    LARGEST_POSITION,
    LINKS_BY_FAMILY,
    PageLimit,
    PageOffset,
    data_sources_json,
    page_links,
)
from ..responses import document_response
from ..state import tiled_state
from ..urls import base_url, url_path

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
        parse = STRUCTURES.get(self.structure_family.value)
        # A registered container's structure stays JSON (upstream's {"keys": [...]}).
        structure = parse.from_json(self.structure) if parse and self.structure else self.structure
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
    access_tags: list[str] | None = None
    access_blob: dict[str, Any] | None = None  # the spelling of clients before upstream 0.2.19
    data_sources: list[DataSourceRequest] = []


class PutMetadataRequest(BaseModel):
    metadata: dict[str, Any] | None = None
    specs: list[Any] | None = None
    access_tags: list[str] | None = None
    access_blob: dict[str, Any] | None = None


def _requested_tags(access_tags: Any, access_blob: Any) -> list[str] | None:
    """The tags a request asks for, in either spelling; None when it asks for none."""
    if access_tags is not None and access_blob is not None:
        raise BadRequest("Give access_tags or the deprecated access_blob, not both.")
    if access_tags is not None:
        if not isinstance(access_tags, list) or not all(isinstance(t, str) for t in access_tags):
            raise BadRequest(f"access_tags must be a list of tag names, not {access_tags!r}")
        return access_tags
    return tags_of_blob(access_blob) if access_blob else None


async def _validated(
    request: Request,
    specs: list[Spec],
    metadata: dict[str, Any],
    entry: Any = None,
    structure_family: StructureFamily | None = None,
    structure: Any = None,
) -> dict[str, Any] | None:
    """Run the validators of ``specs`` the application was built with; the metadata to store
    when a validator changed it, else None. A refusal is a 400."""
    state = tiled_state(request)
    return await state.validation_registry.validate(
        specs, metadata, entry, structure_family, structure,
        reject_undeclared=state.settings.reject_undeclared_specs,
    )  # fmt: skip


async def _create(request: Request, node: Node, body: PostMetadataRequest, register: bool) -> Any:
    node.require("create:node")
    if register:
        node.require("register")
    parent = capable(node.adapter, WritableContainer, "creating nodes")
    data_sources = [ds.to_data_source() for ds in body.data_sources]
    specs = normalize_specs(body.specs)
    # As upstream: a validator sees the structure of the first data source (none for a
    # container).
    structure = data_sources[0].structure if data_sources else None
    validated = await _validated(
        request, specs, body.metadata, None, body.structure_family, structure
    )
    metadata = validated if validated is not None else body.metadata
    requested = _requested_tags(body.access_tags, body.access_blob)
    access_blob, reported_tags = await node.approve_tags(None, requested)
    child = await parent.create_node(
        # As upstream (``body.id or key_maker()``): an empty id asks for a generated key.
        key=body.id or None, structure_family=body.structure_family, metadata=metadata,
        specs=specs, data_sources=data_sources, access_blob=access_blob, register=register,
    )  # fmt: skip
    path = url_path((*node.path_parts, child.key))
    base = base_url(request)
    links = {"self": f"{base}/metadata/{path}"}
    links.update(LINKS_BY_FAMILY[body.structure_family.value](base, path, child))
    sources = data_sources_json(child, client_dialect(request).omit_asset_size) or []
    document = {"id": child.key, "links": links, "data_sources": sources}
    if validated is not None:
        document["metadata"] = validated  # as upstream reports a validator's change
    _report_tags(request, document, reported_tags)
    return document_response(request, document)


def _report_tags(request: Request, document: dict[str, Any], tags: list[str] | None) -> None:
    """Tell the client the tags stored where they differ from its request, in its dialect."""
    if tags is None:
        return
    if client_dialect(request).access_blob:
        document["access_blob"] = legacy_access_blob(tags)
    else:
        document["access_tags"] = tags


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
    # In turn with the patches: one that read the metadata must not store over this.
    async with _in_turn(target):
        metadata, validated = await _validated_update(request, node, body.metadata, specs)
        access_blob, reported_tags = await node.approve_tags(
            _current_tags(node), _requested_tags(body.access_tags, body.access_blob)
        )
        await target.replace_metadata(metadata, specs, access_blob, drop_revision)
    return _updated(request, node, reported_tags, validated)


def _in_turn(target: Any) -> Any:
    """Held around a read-modify-write of a node's metadata (see UpdatesInTurn)."""
    return target.updating() if supports(target, UpdatesInTurn) else contextlib.nullcontext()


async def _validated_update(
    request: Request, node: Node, metadata: dict[str, Any] | None, specs: list[Spec] | None
) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
    """``(metadata to store or None for unchanged, the validators' change or None)`` of an
    update; the validators see the node as it will be (what is not given stays)."""
    resulting_specs = specs if specs is not None else list(node.adapter.specs)
    resulting = metadata if metadata is not None else dict(node.adapter.metadata())
    validated = await _validated(request, resulting_specs, resulting, node.adapter)
    return (validated if validated is not None else metadata), validated


@router.patch("/metadata/{path:path}")
async def patch_metadata(
    request: Request,
    node: WritingMetadata,
    body: Annotated[dict[str, Any], Body()],
    drop_revision: bool = False,
):
    target = capable(node.adapter, NodeWithHistory, "metadata updates")
    content_type = body.get("content-type")
    # Only a name can be looked up (a list or an object is unhashable).
    patcher = PATCHERS.get(content_type) if isinstance(content_type, str) else None
    if patcher is None:
        raise UnsupportedMediaType(
            f"Unsupported patch content-type {content_type!r}; use one of {list(PATCHERS)}"
        )
    # The patch applies to what is stored when it is applied, one updater at a time: no
    # concurrent update is lost, and a JSON Patch "test" is a compare-and-set.
    async with _in_turn(target):
        return await _patched(request, node, target, patcher, body, drop_revision)


async def _patched(
    request: Request,
    node: Node,
    target: NodeWithHistory,
    patcher: Any,
    body: dict[str, Any],
    drop_revision: bool,
) -> Any:
    metadata = (
        patcher(node.adapter.metadata(), body["metadata"])
        if body.get("metadata") is not None
        else None
    )
    specs = None
    if body.get("specs") is not None:
        current = [s.to_json() for s in node.adapter.specs]
        specs = normalize_specs(patcher(current, body["specs"]))
    if body.get("access_tags") is not None and body.get("access_blob"):
        raise BadRequest("Give access_tags or the deprecated access_blob, not both.")
    requested = None
    if body.get("access_tags") is not None:
        # The patched document is checked like a PUT's access_tags (a list of names).
        requested = _requested_tags(patcher(sorted(_current_tags(node)), body["access_tags"]), None)
    elif body.get("access_blob"):
        requested = _requested_tags(
            None, patcher(node.adapter.access_blob or {}, body["access_blob"])
        )
    metadata, validated = await _validated_update(request, node, metadata, specs)
    access_blob, reported_tags = await node.approve_tags(_current_tags(node), requested)
    await target.replace_metadata(metadata, specs, access_blob, drop_revision)
    return _updated(request, node, reported_tags, validated)


def _current_tags(node: Node) -> frozenset[str]:
    tags = getattr(node.adapter, "access_tags", None)
    return frozenset(tags) if tags is not None else frozenset()


def _updated(
    request: Request,
    node: Node,
    reported_tags: list[str] | None,
    validated: dict[str, Any] | None = None,
) -> Any:
    document: dict[str, Any] = {"id": node.key}
    if validated is not None:
        document["metadata"] = validated
    _report_tags(request, document, reported_tags)
    return document_response(request, document)


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
    offset: PageOffset = 0,
    limit: PageLimit = 100,
):
    items, count = await capable(node.adapter, NodeWithHistory, "revisions").revisions(
        offset, limit
    )
    here = f"{base_url(request)}/revisions/{url_path(node.path_parts)}"
    links = page_links(here, offset, limit, count)
    return document_response(
        request, {"data": items, "error": None, "links": links, "meta": {"count": count}}
    )


@router.delete("/revisions/{path:path}")
async def delete_revision(
    request: Request,
    node: WritingMetadata,
    # Revisions count from 1; the catalog stores the number in a signed 64-bit column.
    number: Annotated[int, Query(ge=1, le=LARGEST_POSITION)],
):
    node.require("delete:revision")
    await capable(node.adapter, NodeWithHistory, "revisions").delete_revision(number)
    return document_response(request, None)
