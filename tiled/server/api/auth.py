"""``/api/v1/auth``: logins, sessions and API keys (multi-user servers only).

The administrators' routes under ``/auth/principal`` are in ``principals.py``.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated, Any
from urllib.parse import parse_qsl, urlencode

from fastapi import APIRouter, Depends, Request, Response
from fastapi.responses import JSONResponse, RedirectResponse
from pydantic import BaseModel, Field

from ...access.identity import Identity
from ...authn_database import crud, orm
from ...authn_database.schemas import api_key_json, principal_json
from ...errors import BadRequest, Forbidden, NotFound, TiledError, Unauthenticated
from ..authenticators import CurrentIdentity, MultiUserAuthenticator, provider_mode
from ..bodies import request_body
from ..credentials import BEARER_CHALLENGE, read_credentials
from ..dependencies import require_scope
from ..errors import status_for
from ..state import tiled_state
from ..urls import base_url
from . import device_pages

router = APIRouter(prefix="/auth", tags=["authentication"])


def _authenticator(request: Request) -> MultiUserAuthenticator:
    return tiled_state(request).authenticator


Authenticator = Annotated[MultiUserAuthenticator, Depends(_authenticator)]


class RefreshToken(BaseModel):
    refresh_token: str


# About 300 years: past that, an expiry time is out of the range of dates.
MAX_KEY_LIFETIME = 1e10


class APIKeyParams(BaseModel):
    expires_in: float | None = Field(
        None, gt=0, le=MAX_KEY_LIFETIME, allow_inf_nan=False, description="Lifetime in seconds"
    )
    scopes: list[str] | None = Field(None, description="None means ['inherit']")
    access_tags: list[str] | None = None
    note: str | None = Field(None, max_length=1023)


async def principal_of(db, identity: Identity) -> orm.Principal:
    """The principal the request's credentials name (401 without credentials)."""
    if identity.principal is None:
        raise Unauthenticated("This route needs credentials", BEARER_CHALLENGE)
    principal = await crud.principal_by_uuid(db, identity.principal)
    if principal is None:
        raise Unauthenticated("The credentials name an unknown principal", BEARER_CHALLENGE)
    return principal


async def principal_named(db, principal_uuid: str) -> orm.Principal:
    """The principal ``principal_uuid`` (404 if there is none), for administrators' routes."""
    principal = await crud.principal_by_uuid(db, principal_uuid)
    if principal is None:
        raise NotFound(f"No principal {principal_uuid!r}")
    return principal


@asynccontextmanager
async def checked_principal(
    request: Request,
    identity: Identity,
    auth: MultiUserAuthenticator,
    scope: str,
    principal_uuid: str | None = None,
) -> AsyncIterator[tuple[Any, orm.Principal]]:
    """The checks every route on a principal's keys makes, in their order: ``scope`` held
    (401 otherwise), then, in one database session, the principal: the caller's own, or the
    one ``principal_uuid`` names (404 if there is none)."""
    require_scope(identity, scope, request)
    async with auth.database.session() as db:
        if principal_uuid is None:
            principal = await principal_of(db, identity)
        else:
            principal = await principal_named(db, principal_uuid)
        yield db, principal


async def revoke_key(db, principal: orm.Principal, first_eight: str, whose: str) -> Response:
    """Delete ``principal``'s key that starts ``first_eight``; 404 if it has none such (the
    message calls the principal ``whose``)."""
    if not await crud.delete_api_keys(db, principal.id, first_eight):
        raise NotFound(f"No API key {first_eight!r} of {whose}")
    return Response(status_code=204)


def key_scopes(requested: list[str] | None, allowed: frozenset[str], narrowed: bool):
    """Scopes for a new key: never more than ``allowed``; ``inherit`` only if not narrowed."""
    if requested is None:
        return sorted(allowed) if narrowed else [crud.INHERIT]
    excess = set(requested) - allowed - ({crud.INHERIT} if not narrowed else set())
    if excess:
        # Upstream's wording, which its clients and tests look for.
        raise Forbidden(
            f"Requested scopes {sorted(excess)} must be a subset of the principal's scopes "
            f"(or of the credentials of this request): {sorted(allowed)}"
        )
    return list(dict.fromkeys(requested))


# A key limited to some tags may not carry scopes that reach past tags (as upstream rules).
NOT_LIMITED_BY_TAGS = frozenset({"admin:apikeys", crud.INHERIT})


async def new_key(db, principal, params: APIKeyParams, scopes: list[str]) -> dict:
    from .. import authentication  # where the key limit is set (upstream's module)

    limit = authentication.API_KEY_LIMIT
    held = len(await crud.principal_api_keys(db, principal.id))
    if held >= limit:
        raise BadRequest(
            f"This principal already has {held} API keys, the most allowed "
            f"({limit}); revoke some before creating another"
        )
    if params.access_tags is not None and NOT_LIMITED_BY_TAGS & set(scopes):
        raise Forbidden(
            f"Requested scopes {scopes} contain scopes {sorted(NOT_LIMITED_BY_TAGS & set(scopes))}"
            ", which cannot be combined with access tag restrictions."
        )
    secret, key = await crud.create_api_key(
        db, principal, scopes, params.expires_in, params.note, params.access_tags
    )
    return api_key_json(key, secret)


async def describe(db, principal: orm.Principal) -> dict:
    keys = await crud.principal_api_keys(db, principal.id)
    return principal_json(principal, keys, await crud.live_sessions(db, principal.id))


@router.post("/provider/{provider}/token")
async def login(request: Request, provider: str, auth: Authenticator):
    """OAuth2 password grant: form fields ``username`` and ``password`` (URL-encoded or
    multipart, as OAuth2 forms are sent; JSON is accepted too). For an OpenID Connect
    provider, the poll of a device-code login: ``device_code`` (JSON or form)."""
    content_type = request.headers.get("content-type", "")
    # A login form is two short fields: a body of a megabyte is not one.
    form = _login_fields(content_type, await request_body(request, 2**20))
    if provider_mode(auth.providers.get(provider)) == "external":
        device_code = form.get("device_code")
        if not isinstance(device_code, str):
            raise BadRequest("Expected a device_code")
        return await auth.device_tokens(provider, device_code)
    username, password = str(form.get("username", "")), str(form.get("password", ""))
    return await auth.login(provider, username, password)


# Seconds a device-code client waits between polls (upstream's figure).
DEVICE_CODE_POLLING_INTERVAL = 5


@router.get("/provider/{provider}/authorize")
async def authorize(request: Request, provider: str, auth: Authenticator, state: str | None = None):
    """Send the browser to the identity provider; it comes back to ``.../code``."""
    authenticator = auth.provider(provider, "external")
    redirect_uri = f"{base_url(request)}/auth/provider/{provider}/code"
    return RedirectResponse(await authenticator.authorization_url(redirect_uri, state))


@router.get("/provider/{provider}/code")
async def authorization_code(request: Request, provider: str, auth: Authenticator):
    """The identity provider's answer: tokens (JSON), or a redirect to the configured page
    with the tokens in its query (a web application's login)."""
    authenticator = auth.provider(provider, "external")
    try:
        tokens = await auth.external_login(provider, request)
    except Unauthenticated:
        if authenticator.redirect_on_failure:
            return RedirectResponse(authenticator.redirect_on_failure, status_code=302)
        raise
    if not authenticator.redirect_on_success:
        return tokens
    params = {
        "access_token": tokens["access_token"],
        "refresh_token": tokens["refresh_token"],
        "identity.id": tokens["identity"]["id"],
        "identity.provider": tokens["identity"]["provider"],
        "principal": tokens["principal"],
    }
    if "state" in request.query_params:
        params["state"] = request.query_params["state"]
    target = authenticator.redirect_on_success
    return RedirectResponse(f"{target}{'&' if '?' in target else '?'}{urlencode(params)}", 302)


@router.post("/provider/{provider}/authorize")
async def start_device_login(request: Request, provider: str, auth: Authenticator):
    """Start a device-code login (a terminal's): the user opens ``authorization_uri`` in a
    browser, logs in, and types ``user_code``; the terminal polls ``verification_uri``."""
    authenticator = auth.provider(provider, "external")
    base = f"{base_url(request)}/auth/provider/{provider}"
    authorization_uri = await authenticator.authorization_url(f"{base}/device_code")
    device_code, user_code = await auth.start_device_login(provider)
    return {
        "authorization_uri": authorization_uri,
        "verification_uri": f"{base}/token",
        "interval": DEVICE_CODE_POLLING_INTERVAL,
        "device_code": device_code,
        "expires_in": int(crud.DEVICE_CODE_MAX_AGE.total_seconds()),
        "user_code": user_code,
    }


@router.get("/provider/{provider}/device_code")
async def device_code_form(request: Request, provider: str, auth: Authenticator, code: str = ""):
    """The page the identity provider sends the browser back to: asks for the user code."""
    auth.provider(provider, "external")
    return device_pages.form(code)


@router.post("/provider/{provider}/device_code")
async def device_code_submit(request: Request, provider: str, auth: Authenticator):
    """The user code typed in: the pending login gets the session of who logged in."""
    auth.provider(provider, "external")
    content_type = request.headers.get("content-type", "")
    form = _login_fields(content_type, await request_body(request, 2**16))
    code = str(request.query_params.get("code") or form.get("code") or "")
    user_code = str(form.get("user_code", ""))
    try:
        await auth.finish_device_login(provider, user_code, request)
    except NotFound:
        return device_pages.form(code, device_pages.UNKNOWN_CODE, status_code=401)
    except Unauthenticated:
        return device_pages.failure()
    except TiledError as error:  # a person reads this answer: a page, not JSON
        return device_pages.failure(str(error), status_for(error))
    return device_pages.success()


def _login_fields(content_type: str, body: bytes) -> dict[str, Any]:
    media_type = content_type.split(";")[0].strip().lower()
    if media_type == "application/json":
        try:
            return dict(json.loads(body.decode("utf-8", "replace")))
        except (ValueError, TypeError, RecursionError):
            raise BadRequest("Expected a JSON object with username and password") from None
    if media_type == "multipart/form-data":
        return _multipart_fields(content_type, body)
    return dict(parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True))


def _multipart_fields(content_type: str, body: bytes) -> dict[str, str]:
    """The named fields of a ``multipart/form-data`` body (the standard library's MIME parser:
    a login form is two small fields, not worth a parser of its own)."""
    import email.parser
    import email.policy

    head = b"Content-Type: " + content_type.encode("latin-1") + b"\r\n\r\n"
    message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(head + body)
    if not message.is_multipart():
        raise BadRequest("Expected a multipart/form-data body with username and password")
    fields = {}
    for part in message.iter_parts():
        name = part.get_param("name", header="content-disposition")
        payload = part.get_payload(decode=True)
        if isinstance(name, str) and isinstance(payload, bytes):
            fields.setdefault(name, payload.decode("utf-8", "replace"))
    return fields


@router.post("/session/refresh")
async def refresh_session(body: RefreshToken, auth: Authenticator):
    return await auth.refresh(body.refresh_token)


@router.post("/session/revoke", status_code=204)
async def revoke_session(body: RefreshToken, auth: Authenticator):
    await auth.revoke(body.refresh_token)
    return Response(status_code=204)


@router.delete("/session/revoke/{session_id}", status_code=204)
async def revoke_session_by_id(session_id: str, identity: CurrentIdentity, auth: Authenticator):
    async with auth.database.session() as db:
        principal = await principal_of(db, identity)
        if not await crud.revoke_session(db, session_id, principal.id):
            raise NotFound(f"No session {session_id!r} of this principal")
    return Response(status_code=204)


@router.get("/whoami")
async def whoami(identity: CurrentIdentity, auth: Authenticator):
    if identity.principal is None:
        return None
    async with auth.database.session() as db:
        return await describe(db, await principal_of(db, identity))


@router.post("/apikey")
async def create_apikey(
    request: Request, params: APIKeyParams, identity: CurrentIdentity, auth: Authenticator
):
    async with checked_principal(request, identity, auth, "create:apikeys") as (db, principal):
        owned = crud.principal_scopes(principal)
        allowed = identity.scopes & owned  # a token's scopes may predate a change of roles
        limited = identity.access_tags is not None
        params = _within_tags_of(identity, params)
        scopes = key_scopes(params.scopes, allowed, narrowed=allowed < owned or limited)
        return await new_key(db, principal, params, scopes)


def _within_tags_of(identity: Identity, params: APIKeyParams) -> APIKeyParams:
    """``params`` for a key made with a key limited to some access tags: limited to those
    tags (by default), or to some of them, never more (else a limited key could make an
    unlimited one)."""
    held = identity.access_tags
    if held is None:
        return params
    if params.access_tags is None:
        return params.model_copy(update={"access_tags": sorted(held)})
    beyond = set(params.access_tags) - held
    if beyond:
        raise Forbidden(
            f"Requested access tags {sorted(beyond)} are not among the tags the API key of "
            f"this request is limited to: {sorted(held)}"
        )
    return params


@router.get("/apikey")
async def current_apikey(request: Request, identity: CurrentIdentity, auth: Authenticator):
    if identity.api_key_first_eight is None:
        raise Unauthenticated("No API key was provided with this request.")
    async with auth.database.session() as db:
        key = await crud.lookup_api_key(db, read_credentials(request).secret)
    if key is None:
        raise Unauthenticated("Invalid API key")
    return api_key_json(key)


@router.delete("/apikey", status_code=204)
async def revoke_apikey(
    request: Request, first_eight: str, identity: CurrentIdentity, auth: Authenticator
):
    async with checked_principal(request, identity, auth, "revoke:apikeys") as (db, principal):
        return await revoke_key(db, principal, first_eight, "this principal")


@router.post("/logout", include_in_schema=False)
async def logout():
    response = JSONResponse({})
    response.delete_cookie("tiled_api_key")
    return response
