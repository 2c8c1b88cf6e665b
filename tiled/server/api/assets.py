"""Routes of a node's data sources and raw assets (upstream's names and wire formats).

- ``GET /asset/bytes/{path}?id=N[&relative_path=...]``: the bytes of one asset file (or of one
  file inside a directory asset), HTTP Range requests honoured;
- ``GET /asset/manifest/{path}?id=N``: the files of a directory asset, relative to it;
- ``DELETE /asset/{path}?id=N[&external_only=false]``: dissociate an asset from the node (and
  delete it, with its files if the server manages them, when nothing else uses it);
- ``PUT /data_source/{path}``: replace one of the node's data sources (or add one).

The asset routes answer 403 unless the server setting ``expose_raw_assets`` (default true, as
upstream) allows them, and read with the same access checks as data reads (``read:data``).
"""

from __future__ import annotations

import os
from pathlib import Path, PurePosixPath
from typing import Annotated, Any

from fastapi import APIRouter, Request
from fastapi.responses import FileResponse, JSONResponse
from pydantic import BaseModel
from starlette import responses as starlette_responses

from ...adapters.files import path_from_uri
from ...adapters.protocols import DeletesAssets, ReplaceableDataSources, ServesAssets
from ...errors import BadRequest, Forbidden, NotFound
from ...utils import run_sync
from ..client_dialects import client_dialect
from ..dependencies import Node, capable, node_dependency, require_scope
from ..headers import attachment
from ..resources import data_source_json
from ..responses import document_response
from ..state import tiled_state

router = APIRouter()

ReadingAssets = Annotated[Node, node_dependency("read:data")]
DeletingAssets = Annotated[Node, node_dependency("delete:node")]
ReplacingDataSource = Annotated[Node, node_dependency("write:metadata")]


def _check_exposed(request: Request, action: str) -> None:
    if not tiled_state(request).settings.expose_raw_assets:
        raise Forbidden(f"This Tiled server is configured not to allow {action} raw assets.")


async def _asset(node: Node, asset_id: int) -> Any:
    asset = await capable(node.adapter, ServesAssets, "downloading assets").asset_by_id(asset_id)
    if asset is None:
        raise NotFound(f"This node exists but it does not have an Asset with id {asset_id}")
    if not asset.data_uri.startswith("file:"):
        raise BadRequest("Only download assets stored as file:// is currently supported.")
    return asset


def _inside(directory: Path, relative_path: str) -> Path:
    """``directory / relative_path``, refusing paths that are absolute or lead outside it
    (``..``, or a symbolic link pointing elsewhere)."""
    relative = PurePosixPath(relative_path)
    if relative.is_absolute() or not relative.parts:
        raise BadRequest("relative_path query parameter must be a *relative* path")
    if ".." in relative.parts:
        raise BadRequest("relative_path may not contain '..'")
    target = (directory / relative).resolve()
    if not target.is_relative_to(directory.resolve()):
        raise BadRequest("relative_path leads outside of the asset's directory")
    return target


def _asset_file(asset: Any, relative_path: str | None) -> tuple[Path, os.stat_result]:
    """The file to send and its stat (blocking); 4xx for paths that are not files."""
    path = path_from_uri(asset.data_uri)
    if asset.is_directory:
        if relative_path is None:
            raise BadRequest(
                "This asset is a directory. Must specify relative path, "
                f"from manifest provided by /asset/manifest/...?id={asset.id}"
            )
        path = _inside(path, relative_path)
    elif relative_path is not None:
        raise BadRequest(
            "This asset is not a directory. The relative_path query parameter must not be set."
        )
    try:
        stat = path.stat()
    except (FileNotFoundError, NotADirectoryError):
        # e.g. a table partition or sparse block that has not been written yet
        raise NotFound(f"The file of asset {asset.id} does not exist (yet)") from None
    if not path.is_file():
        raise BadRequest(f"{relative_path or path.name} is not a file of asset {asset.id}")
    return path, stat


def _refused_range(request: Request, size: int) -> JSONResponse | None:
    """A JSON 4xx for a Range header that FileResponse would refuse (it answers those in plain
    text); None when it may serve the request. Parsed by FileResponse's own parser, so that
    what is accepted here is exactly what it then serves."""
    header = request.headers.get("range")
    parse = getattr(FileResponse, "_parse_range_header", None)
    if header is None or parse is None:
        return None
    try:
        parse(header, size)
    except starlette_responses.MalformedRangeHeader as err:
        raise BadRequest(f"Invalid Range header {header!r}: {err.content}") from None
    except starlette_responses.RangeNotSatisfiable:
        return JSONResponse(
            {"detail": f"Range {header!r} is outside of the asset's {size} bytes"},
            status_code=416,
            headers={"Content-Range": f"bytes */{size}"},
        )
    return None


@router.get("/asset/bytes/{path:path}")
async def get_asset_bytes(
    request: Request, node: ReadingAssets, id: int, relative_path: str | None = None
):
    """The bytes of asset ``id`` (a file, or with ``relative_path`` a file inside a directory
    asset) as an attachment named after the file; Range requests answer 206."""
    _check_exposed(request, "downloading")
    asset = await _asset(node, id)
    path, stat = await run_sync(_asset_file, asset, relative_path)
    refused = _refused_range(request, stat.st_size)
    if refused is not None:
        return refused
    return FileResponse(
        path,
        stat_result=stat,
        headers={"Content-Disposition": attachment(path.name)},
    )


def _manifest(directory: Path) -> list[str]:
    """Every file below ``directory``, as a POSIX path relative to it, sorted."""
    found = []
    for root, _directories, files in os.walk(directory):
        base = Path(root).relative_to(directory)
        found.extend((base / name).as_posix() for name in files)
    return sorted(found)


@router.get("/asset/manifest/{path:path}")
async def get_asset_manifest(request: Request, node: ReadingAssets, id: int):
    """The files of directory asset ``id``, relative to it: ``{"manifest": [...]}``."""
    _check_exposed(request, "downloading")
    asset = await _asset(node, id)
    if not asset.is_directory:
        raise BadRequest("This asset is not a directory. There is no manifest.")
    manifest = await run_sync(_manifest, path_from_uri(asset.data_uri))
    return document_response(request, {"manifest": manifest})


@router.delete("/asset/{path:path}")
async def delete_asset(request: Request, node: DeletingAssets, id: int, external_only: bool = True):
    """Dissociate asset ``id`` from the node; delete it (and its files, if the server manages
    them: only with ``external_only=false``) when no other data source uses it."""
    _check_exposed(request, "deleting")
    deleter = capable(node.adapter, DeletesAssets, "deleting assets")
    result = await deleter.delete_asset(id, external_only=external_only)
    if result is None:
        raise NotFound(f"This node exists but it does not have an Asset with id {id}")
    return document_response(request, result)


class PutDataSourceRequest(BaseModel):
    data_source: dict[str, Any]


def _integers(text: str | None, name: str) -> tuple[int, ...] | None:
    if text is None:
        return None
    try:
        return tuple(int(part) for part in text.split(","))
    except ValueError:
        raise BadRequest(f"{name} must be comma-separated integers, not {text!r}") from None


@router.put("/data_source/{path:path}")
async def put_data_source(
    request: Request,
    node: ReplacingDataSource,
    body: PutDataSourceRequest,
    patch_shape: str | None = None,
    patch_offset: str | None = None,
):
    """Replace the node's data source with the id of the body's (registered data: its files are
    checked as on registration); without an id, add one where the family admits several.
    ``patch_shape`` and ``patch_offset`` (together) name the region of an array that changed."""
    require_scope(node.identity, "register", request)
    node.require("register")
    from ...catalog.data_sources import ArrayPatch

    shape, offset = _integers(patch_shape, "patch_shape"), _integers(patch_offset, "patch_offset")
    if (shape is None) != (offset is None):
        raise BadRequest(
            "The query parameters patch_shape and patch_offset go together; "
            "either both or neither must be given."
        )
    patch = ArrayPatch(shape, offset) if shape is not None else None
    replacer = capable(node.adapter, ReplaceableDataSources, "replacing its data sources")
    stored = await replacer.put_data_source(body.data_source, patch)
    described = data_source_json(stored, client_dialect(request).omit_asset_size)
    return document_response(request, {"data_source": described})
