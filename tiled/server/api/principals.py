"""``/api/v1/auth/principal``: principals and their API keys, for administrators."""

from __future__ import annotations

from fastapi import APIRouter, Request

from ...authn_database import crud
from ...errors import BadRequest
from ..authenticators import CurrentIdentity
from ..dependencies import require_scope
from ..resources import PageLimit, PageOffset, page_links
from ..urls import base_url
from .auth import (
    APIKeyParams,
    Authenticator,
    checked_principal,
    describe,
    key_scopes,
    new_key,
    revoke_key,
)

router = APIRouter(prefix="/auth/principal", tags=["authentication"])


@router.get("")
async def list_principals(
    request: Request,
    identity: CurrentIdentity,
    auth: Authenticator,
    offset: PageOffset = 0,
    limit: PageLimit = 100,
):
    require_scope(identity, "read:principals", request)
    async with auth.database.session() as db:
        principals, count = await crud.list_principals(db, offset, limit)
        data = [await describe(db, principal) for principal in principals]
    links = page_links(f"{base_url(request)}/auth/principal", offset, limit, count)
    return {"data": data, "error": None, "links": links, "meta": {"count": count}}


@router.post("")
async def create_service_principal(
    request: Request, role: str, identity: CurrentIdentity, auth: Authenticator
):
    require_scope(identity, "write:principals", request)
    async with auth.database.session() as db:
        try:
            principal = await crud.create_service_principal(db, role)
        except ValueError as err:
            raise BadRequest(str(err)) from None
        return await describe(db, principal)


@router.get("/{principal_uuid}")
async def get_principal(
    request: Request, principal_uuid: str, identity: CurrentIdentity, auth: Authenticator
):
    checked = checked_principal(request, identity, auth, "read:principals", principal_uuid)
    async with checked as (db, principal):
        return await describe(db, principal)


@router.post("/{principal_uuid}/apikey")
async def create_principal_apikey(
    request: Request,
    principal_uuid: str,
    params: APIKeyParams,
    identity: CurrentIdentity,
    auth: Authenticator,
):
    checked = checked_principal(request, identity, auth, "admin:apikeys", principal_uuid)
    async with checked as (db, principal):
        scopes = key_scopes(params.scopes, crud.principal_scopes(principal), narrowed=False)
        return await new_key(db, principal, params, scopes)


@router.delete("/{principal_uuid}/apikey", status_code=204)
async def revoke_principal_apikey(
    request: Request,
    principal_uuid: str,
    first_eight: str,
    identity: CurrentIdentity,
    auth: Authenticator,
):
    checked = checked_principal(request, identity, auth, "admin:apikeys", principal_uuid)
    async with checked as (db, principal):
        return await revoke_key(db, principal, first_eight, f"principal {principal_uuid!r}")
