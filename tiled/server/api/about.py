"""The about document at ``/api/v1/``."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from fastapi import APIRouter, Request

from ..._version import __version__
from ..responses import document_response
from ..state import tiled_state
from ..urls import base_url

router = APIRouter()


@router.get("/")
async def about(request: Request):
    state = tiled_state(request)
    base = base_url(request)
    root_path = request.scope.get("root_path", "")
    expires = datetime.now(UTC) + timedelta(seconds=600)
    payload = {
        "api_version": 0,
        "library_version": __version__,
        "formats": state.serialization_registry.formats(),
        "aliases": state.serialization_registry.aliases(),
        "queries": state.query_registry.names,
        "authentication": await state.authenticator.authentication_json(base),
        "links": {"self": base, "documentation": f"{base}/docs"},
        "meta": {"root_path": root_path or "/api"},
    }
    headers = {"Expires": expires.strftime("%a, %d %b %Y %H:%M:%S GMT")}
    return document_response(request, payload, headers)
