"""Turn a request's credentials into an :class:`Identity`.

Two authenticators share one surface (``required``, ``identify``, ``router``,
``providers_json``, ``links_json``, ``startup``, ``shutdown``):

- :class:`SingleUserAuthenticator`: one API key with every scope (no providers configured);
- :class:`MultiUserAuthenticator`: username/password providers, JWT sessions and per-principal
  API keys kept (hashed) in the authentication database; it serves ``/api/v1/auth``.

Credentials are read in this order: ``?api_key=``, ``Authorization: Apikey``, the
``tiled_api_key`` cookie, ``Authorization: Bearer``. Secrets never appear in messages or logs.
"""

from __future__ import annotations

import asyncio
import functools
import hmac
import inspect
import logging
import secrets
from collections import OrderedDict
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qs

from fastapi import Request
from starlette.requests import cookie_parser
from starlette.responses import PlainTextResponse

from ..access.identity import Identity
from ..access.scopes import PUBLIC_SCOPES, SINGLE_USER_SCOPES
from ..config import Authentication, Database
from ..errors import BadRequest, NotFound, Unauthenticated

logger = logging.getLogger(__name__)

ANONYMOUS = Identity(principal=None, scopes=frozenset())
ANONYMOUS_PUBLIC = Identity(principal=None, scopes=PUBLIC_SCOPES)
SINGLE_USER = Identity(principal="single-user", scopes=SINGLE_USER_SCOPES, authenticated=True)
BEARER = {"WWW-Authenticate": "Bearer"}
INVALID_TOKEN = "Could not validate credentials"
EXPIRED_ACCESS_TOKEN = "Access token has expired. Refresh token."
EXPIRED_SESSION = "Session has expired. Please re-authenticate."
# Most API keys one principal may hold, and most sessions it may have open (unexpired,
# revoked or not), as upstream limits them; read at each use, so they may be changed.
API_KEY_LIMIT = 100
SESSION_LIMIT = 200


class UnscalableConfig(ValueError):
    """The configuration only works in one server process (``build_app(scalable=True)``)."""


@dataclass(frozen=True)
class Credentials:
    kind: str  # "apikey" or "bearer"
    secret: str
    source: str  # "query", "header" or "cookie"


def read_credentials(request: Request) -> Credentials | None:
    """The first credential a request carries, in upstream's order of precedence."""
    key = request.query_params.get("api_key")
    if key:
        return Credentials("apikey", key, "query")
    bearer = None
    header = request.headers.get("authorization")
    if header:
        scheme, _, secret = header.partition(" ")
        secret = secret.strip()
        if scheme.lower() == "apikey" and secret:
            return Credentials("apikey", secret, "header")
        if scheme.lower() != "bearer" or not secret:
            raise BadRequest(
                "Authorization header must include the authorization type followed by a space "
                "and then the secret, as in 'Bearer SECRET' or 'Apikey SECRET'. "
            )
        bearer = secret
    cookie = request.cookies.get("tiled_api_key")
    if cookie:
        return Credentials("apikey", cookie, "cookie")
    return Credentials("bearer", bearer, "header") if bearer else None


def credentials_from(request: Request) -> str | None:
    """The API key a request carries (single-user mode, where bearer tokens are invalid)."""
    credentials = read_credentials(request)
    if credentials is None:
        return None
    if credentials.kind == "bearer":
        raise Unauthenticated(INVALID_TOKEN, BEARER)
    return credentials.secret


# How credentials reach the server (see read_credentials), as OpenAPI security schemes. They
# document the API only: every route's identity comes from get_identity, which reads them all.
API_KEY_SCHEMES: dict[str, dict[str, Any]] = {
    "APIKeyQuery": {"type": "apiKey", "in": "query", "name": "api_key"},
    "APIKeyHeader": {
        "type": "apiKey",
        "in": "header",
        "name": "Authorization",
        "description": "'Apikey SECRET' (or 'Bearer ACCESS_TOKEN' from a login)",
    },
    "APIKeyCookie": {"type": "apiKey", "in": "cookie", "name": "tiled_api_key"},
}
TOKEN_ROUTE = "/auth/provider/{provider}/token"


def install_openapi_security(app: Any, prefix: str = "/api/v1") -> None:
    """Describe the server's credentials in its OpenAPI document (``/openapi.json``).

    With login providers, upstream's ``OAuth2PasswordBearer`` scheme names the first
    provider's token route as ``tokenUrl``; that route is documented under its concrete path
    too, so the ``tokenUrl`` is one of the document's paths (documentation tools follow it).
    """
    build_schema = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        schema = build_schema()
        schemes = schema.setdefault("components", {}).setdefault("securitySchemes", {})
        schemes.update(API_KEY_SCHEMES)
        providers = list(getattr(app.state.authenticator, "providers", None) or ())
        templated = schema.get("paths", {}).get(prefix + TOKEN_ROUTE)
        if providers and templated is not None:
            token_url = prefix + TOKEN_ROUTE.format(provider=providers[0])
            schemes["OAuth2PasswordBearer"] = {
                "type": "oauth2",
                "flows": {
                    "password": {
                        "tokenUrl": token_url,
                        "refreshUrl": f"{prefix}/auth/session/refresh",
                        "scopes": {},
                    }
                },
            }
            for name in providers:
                schema["paths"][prefix + TOKEN_ROUTE.format(provider=name)] = _concrete(
                    templated, name
                )
        app.openapi_schema = schema
        return schema

    app.openapi = openapi


def _concrete(path_item: dict[str, Any], provider: str) -> dict[str, Any]:
    """The token route's documentation for one provider: without the ``provider`` parameter."""
    item = {}
    for method, operation in path_item.items():
        parameters = [p for p in operation.get("parameters", []) if p.get("name") != "provider"]
        item[method] = {
            **operation,
            "parameters": parameters,
            "operationId": f"{operation.get('operationId', 'login')}_{provider}",
        }
    return item


class SingleUserAuthenticator:
    """One API key with every scope; optionally anonymous read access."""

    router = None

    def __init__(self, authentication: Authentication):
        self.api_key = authentication.single_user_api_key or secrets.token_hex(32)
        self.allow_anonymous_access = authentication.allow_anonymous_access
        self._key_bytes = self.api_key.encode()

    @property
    def required(self) -> bool:
        return not self.allow_anonymous_access

    async def identify(self, request: Request) -> Identity:
        key = credentials_from(request)
        if key is None:
            return ANONYMOUS_PUBLIC if self.allow_anonymous_access else ANONYMOUS
        if hmac.compare_digest(key.encode(), self._key_bytes):
            return SINGLE_USER
        raise Unauthenticated("Invalid API key")

    def providers_json(self, base_url: str) -> list:
        return []

    def links_json(self, base_url: str) -> None:
        return None

    async def startup(self) -> None:
        pass

    async def shutdown(self) -> None:
        pass


class FailureDelays:
    """How long to wait before answering a failed login: doubles per consecutive failure."""

    def __init__(self, base: float = 0.05, cap: float = 2.0, max_entries: int = 10_000):
        self.base, self.cap, self.max_entries = base, cap, max_entries
        self._failures: OrderedDict[Any, int] = OrderedDict()

    def record(self, key: Any) -> float:
        count = self._failures.pop(key, 0) + 1
        self._failures[key] = count
        while len(self._failures) > self.max_entries:
            self._failures.popitem(last=False)
        return min(self.base * 2 ** (count - 1), self.cap)

    def reset(self, key: Any) -> None:
        self._failures.pop(key, None)


class TokenSigner:
    """HS256 JWTs: signed with the first secret key, verified with any of them."""

    def __init__(self, secret_keys: list[str]):
        if not secret_keys:
            raise ValueError("at least one secret key is needed to sign tokens")
        self.secret_keys = list(secret_keys)

    def encode(self, claims: dict[str, Any], max_age: timedelta) -> str:
        import jwt

        # Whole seconds, rounded up: a token never lives shorter than max_age.
        now = datetime.now(UTC).timestamp()
        expires = int(-(-(now + max_age.total_seconds()) // 1))
        return jwt.encode({**claims, "exp": expires}, self.secret_keys[0], algorithm="HS256")

    def decode(self, token: str, kind: str, expired_message: str, verify_exp=True) -> dict:
        """The claims of a valid token of type ``kind``; Unauthenticated otherwise.

        Access tokens name their principal (``sub``), refresh tokens their session (``sid``;
        upstream's carry no ``sub``, and work here too).
        """
        import jwt

        options = {"require": ["exp", "type"], "verify_exp": verify_exp}
        subject = "sid" if kind == "refresh" else "sub"
        for key in self.secret_keys:
            try:
                claims = jwt.decode(token, key, algorithms=["HS256"], options=options)
            except jwt.ExpiredSignatureError:
                raise Unauthenticated(expired_message, BEARER) from None
            except jwt.InvalidSignatureError:
                continue
            except jwt.InvalidTokenError:
                break
            if claims.get("type") == kind and isinstance(claims.get(subject), str):
                return claims
            break
        raise Unauthenticated(INVALID_TOKEN, BEARER)


def create_access_token(data: dict[str, Any], secret_key: str, expires_delta: timedelta) -> str:
    """An access token with the claims ``data``, signed with ``secret_key``, expiring after
    ``expires_delta`` (negative: already expired). Upstream's name, for tests and tools that
    mint tokens."""
    return TokenSigner([secret_key]).encode({**data, "type": "access"}, expires_delta)


def decode_token(token: str, secret_keys: list[str]) -> dict[str, Any]:
    """The claims of an access token signed with any of ``secret_keys``; Unauthenticated if
    it is invalid or expired. Upstream's name, for tests and tools."""
    return TokenSigner(secret_keys).decode(token, "access", EXPIRED_ACCESS_TOKEN)


def _secret_keys(authentication: Authentication, scalable: bool) -> list[str]:
    keys = [key for key in authentication.secret_keys if key]
    if keys:
        return keys
    if scalable:
        raise UnscalableConfig(
            "With several server processes, every process must sign tokens with the same "
            "keys: set authentication.secret_keys or TILED_SECRET_KEYS."
        )
    logger.warning(
        "No secret keys configured: tokens are signed with a key generated at startup, so "
        "sessions end when the server restarts (set TILED_SECRET_KEYS to keep them)."
    )
    return [secrets.token_hex(32)]


class MultiUserAuthenticator:
    """Logins through providers, JWT sessions and API keys kept in the authn database."""

    def __init__(
        self,
        authentication: Authentication,
        database: Database | None = None,
        scalable: bool = False,
    ):
        from ..authn_database.connection import AuthnDatabase

        self.settings = authentication
        self.providers = authentication.authenticators
        self.allow_anonymous_access = authentication.allow_anonymous_access
        self.admins = {(entry["provider"], entry["id"]) for entry in authentication.tiled_admins}
        self.signer = TokenSigner(_secret_keys(authentication, scalable))
        self.database = AuthnDatabase(database)
        if scalable and self.database.in_memory:
            raise UnscalableConfig(
                "An in-memory authentication database cannot be shared by several server "
                "processes: set database.uri."
            )
        self.failures = FailureDelays()

    @property
    def required(self) -> bool:
        return not self.allow_anonymous_access

    @functools.cached_property
    def router(self):
        """The ``/auth`` routes (mounted under ``/api/v1``)."""
        from fastapi import APIRouter

        from .api import auth, principals

        router = APIRouter()
        router.include_router(auth.router)
        router.include_router(principals.router)
        return router

    def providers_json(self, base_url: str) -> list[dict[str, Any]]:
        return [
            {
                "provider": name,
                "mode": "internal",
                "links": {"auth_endpoint": f"{base_url}/auth/provider/{name}/token"},
                "confirmation_message": getattr(provider, "confirmation_message", None),
            }
            for name, provider in self.providers.items()
        ]

    def links_json(self, base_url: str) -> dict[str, str]:
        return {
            "whoami": f"{base_url}/auth/whoami",
            "apikey": f"{base_url}/auth/apikey",
            "refresh_session": f"{base_url}/auth/session/refresh",
            "revoke_session": f"{base_url}/auth/session/revoke/{{session_id}}",
            "logout": f"{base_url}/auth/logout",
        }

    async def startup(self) -> None:
        from ..authn_database import crud

        await self.database.startup()
        async with self.database.session() as db:
            await crud.ensure_admins(db, sorted(self.admins))

    async def shutdown(self) -> None:
        await self.database.shutdown()

    async def identify(self, request: Request) -> Identity:
        credentials = read_credentials(request)
        if credentials is None:
            return ANONYMOUS_PUBLIC if self.allow_anonymous_access else ANONYMOUS
        if credentials.kind == "apikey":
            return await self._identify_api_key(credentials.secret)
        claims = self.signer.decode(credentials.secret, "access", EXPIRED_ACCESS_TOKEN)
        try:
            scopes = frozenset(claims.get("scp") or ())
            identities = tuple(
                (str(entry.get("idp")), str(entry["id"])) for entry in claims.get("ids") or ()
            )
            principal_type = str(claims.get("sub_typ") or "user")
        except (TypeError, KeyError, AttributeError):
            raise Unauthenticated(INVALID_TOKEN, BEARER) from None
        return Identity(
            claims["sub"], scopes, authenticated=True, identities=identities,
            principal_type=principal_type,
        )  # fmt: skip

    async def _identify_api_key(self, secret: str) -> Identity:
        from ..authn_database import crud
        from ..authn_database.orm import utcnow

        async with self.database.session() as db:
            key = await crud.lookup_api_key(db, secret)
            if key is None:
                raise Unauthenticated("Invalid API key")
            if key.expiration_time is not None and key.expiration_time <= utcnow():
                raise Unauthenticated("API key has expired")
            await crud.touch_api_key(db, key)
        principal = key.principal
        return Identity(
            principal.uuid.hex,
            crud.api_key_scopes(key),
            authenticated=True,
            identities=tuple((i.provider, i.id) for i in principal.identities),
            api_key_first_eight=key.first_eight,
            principal_type=str(principal.type),
            access_tags=frozenset(key.access_tags) if key.access_tags is not None else None,
        )

    async def login(self, provider_name: str, username: str, password: str) -> dict[str, Any]:
        """Check a username and password with a provider; open a session; return tokens."""
        from ..authn_database import crud

        provider = self.providers.get(provider_name)
        if provider is None:
            raise NotFound(f"No authentication provider named {provider_name!r}")
        state = None
        if username and password:
            state = provider.authenticate(username, password)
            state = await state if inspect.isawaitable(state) else state
        attempt = (provider_name, username)
        if state is None:
            await asyncio.sleep(self.failures.record(attempt))
            raise Unauthenticated("Incorrect username or password", BEARER)
        self.failures.reset(attempt)
        admin = (provider_name, state.user_name) in self.admins
        async with self.database.session() as db:
            principal = await crud.login(db, provider_name, state.user_name, admin)
            open_sessions = len(await crud.live_sessions(db, principal.id))
            if open_sessions >= SESSION_LIMIT:
                raise BadRequest(
                    f"This principal already has {open_sessions} sessions, the most allowed "
                    f"({SESSION_LIMIT}); some must expire before another login"
                )
            session = await crud.create_session(
                db, principal, self.settings.session_max_age, getattr(state, "state", {}) or {}
            )
        tokens = self._tokens(principal, session)
        tokens["identity"] = {"id": state.user_name, "provider": provider_name}
        tokens["principal"] = principal.uuid.hex
        return tokens

    async def refresh(self, refresh_token: str) -> dict[str, Any]:
        """New tokens for a live session named by a valid refresh token."""
        from ..authn_database import crud
        from ..authn_database.orm import utcnow

        claims = self.signer.decode(refresh_token, "refresh", EXPIRED_SESSION)
        async with self.database.session() as db:
            session = await crud.session_by_uuid(db, str(claims.get("sid")))
            if session is None or session.revoked or session.expiration_time <= utcnow():
                raise Unauthenticated(EXPIRED_SESSION, BEARER)
            await crud.mark_refreshed(db, session)
        tokens = self._tokens(session.principal, session)
        for name in ("expires_in", "refresh_token_expires_in"):
            tokens[name] = int(tokens[name])
        return tokens

    async def revoke(self, refresh_token: str) -> None:
        """Revoke the session a refresh token names (even if the token itself expired)."""
        from ..authn_database import crud

        claims = self.signer.decode(refresh_token, "refresh", EXPIRED_SESSION, verify_exp=False)
        async with self.database.session() as db:
            await crud.revoke_session(db, str(claims.get("sid")))

    def _tokens(self, principal, session) -> dict[str, Any]:
        from ..authn_database import crud
        from ..authn_database.orm import utcnow

        access_age = self.settings.access_token_max_age
        refresh_age = min(self.settings.refresh_token_max_age, session.expiration_time - utcnow())
        access_claims = {
            "sub": principal.uuid.hex,
            "sub_typ": principal.type,
            "scp": sorted(crud.principal_scopes(principal)),
            "state": session.state or {},
            "ids": [{"id": i.id, "idp": i.provider} for i in principal.identities],
            "type": "access",
        }
        refresh_claims = {"sid": session.uuid.hex, "sub": principal.uuid.hex, "type": "refresh"}
        return {
            "access_token": self.signer.encode(access_claims, access_age),
            "expires_in": access_age.total_seconds(),
            "refresh_token": self.signer.encode(refresh_claims, refresh_age),
            "refresh_token_expires_in": refresh_age.total_seconds(),
            "token_type": "bearer",
        }


def build_authenticator(
    authentication: Authentication, database: Database | None = None, scalable: bool = False
):
    """Multi-user if any provider is configured, else single-user."""
    if authentication.providers:
        return MultiUserAuthenticator(authentication, database, scalable)
    if scalable and not authentication.single_user_api_key:
        raise UnscalableConfig(
            "With several server processes, every process must use the same API key: "
            "set authentication.single_user_api_key or TILED_SINGLE_USER_API_KEY."
        )
    return SingleUserAuthenticator(authentication)


async def get_identity(request: Request) -> Identity:
    return await request.app.state.authenticator.identify(request)


SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "TRACE"})


class CSRFMiddleware:
    """Double-submit cookie check for requests that carry the ``tiled_api_key`` cookie.

    A state-changing request (not GET/HEAD/OPTIONS/TRACE) carrying that cookie must also carry
    the ``tiled_csrf`` cookie and the same value in the ``x-csrf`` header or ``csrf`` query
    parameter, else 403. Responses to such requests, to the about document and to the
    ``/api/v1/auth/`` routes set a ``tiled_csrf`` cookie if the request had none (the upstream
    Python client reads it after fetching the about document and sends it back when it
    refreshes its session). Other responses, zarr chunks included, carry no ``Set-Cookie``, so
    shared caches may keep them.
    """

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = {}
        for name, value in scope["headers"]:
            if name in (b"cookie", b"x-csrf"):
                headers[name] = value.decode("latin-1")
        cookies = cookie_parser(headers.get(b"cookie", ""))
        expected = cookies.get("tiled_csrf")
        if not cookies.get("tiled_api_key"):
            if expected or not _offers_csrf_cookie(scope["path"]):
                return await self.app(scope, receive, send)
            return await self.app(scope, receive, _with_csrf_cookie(send))
        if scope["method"] not in SAFE_METHODS:
            query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
            submitted = headers.get(b"x-csrf") or (query.get("csrf") or [""])[0]
            if not (expected and submitted and hmac.compare_digest(expected, submitted)):
                return await _csrf_refused(scope, receive, send)
        if expected:
            return await self.app(scope, receive, send)
        await self.app(scope, receive, _with_csrf_cookie(send))


def _offers_csrf_cookie(path: str) -> bool:
    return path.endswith("/api/v1/") or path.endswith("/api/v1") or "/api/v1/auth/" in path


async def _csrf_refused(scope, receive, send) -> None:
    response = PlainTextResponse(
        "Requests authenticated by the tiled_api_key cookie that change state must send the "
        "tiled_csrf cookie's value in the x-csrf header or the csrf query parameter.",
        status_code=403,
    )
    await response(scope, receive, send)


def _with_csrf_cookie(send):
    cookie = f"tiled_csrf={secrets.token_urlsafe(32)}; HttpOnly; Path=/; SameSite=lax"

    async def send_with_cookie(message):
        if message["type"] == "http.response.start":
            extra = (b"set-cookie", cookie.encode("latin-1"))
            message = {**message, "headers": [*message.get("headers", []), extra]}
        await send(message)

    return send_with_cookie
