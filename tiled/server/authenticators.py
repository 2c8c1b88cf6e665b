"""Turn a request's credentials into an :class:`Identity`.

Two authenticators share one surface (``required``, ``identify``, ``router``,
``authentication_json``, ``startup``, ``shutdown``):

- :class:`SingleUserAuthenticator`: one API key with every scope (no providers configured);
- :class:`MultiUserAuthenticator`: username/password providers, JWT sessions and per-principal
  API keys kept (hashed) in the authentication database; it serves ``/api/v1/auth``.

Credentials are read by :mod:`tiled.server.credentials`, tokens signed by
:mod:`tiled.server.tokens`.
"""

from __future__ import annotations

import functools
import hmac
import inspect
import logging
import secrets
import time
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import Depends, Request

from ..access.identity import Identity
from ..access.scopes import PUBLIC_SCOPES, SINGLE_USER_SCOPES
from ..config import Authentication, Database
from ..errors import BadRequest, NotFound, Unauthenticated
from .credentials import BEARER_CHALLENGE, INVALID_TOKEN, read_api_key, read_credentials
from .failure_delays import FailureDelays
from .kept_identities import AccessTokenIdentities, APIKeyIdentities, digest
from .tokens import EXPIRED_ACCESS_TOKEN, EXPIRED_SESSION, TokenSigner

logger = logging.getLogger(__name__)

ANONYMOUS = Identity(principal=None, scopes=frozenset())
ANONYMOUS_PUBLIC = Identity(principal=None, scopes=PUBLIC_SCOPES)
SINGLE_USER = Identity(principal="single-user", scopes=SINGLE_USER_SCOPES, authenticated=True)


def provider_mode(authenticator: Any) -> str:
    """``external`` for providers that log users in elsewhere (OpenID Connect), else
    ``internal`` (username and password)."""
    return "external" if getattr(authenticator, "mode", None) == "external" else "internal"


class AuthorizationPending(BadRequest):
    """A device-code login the user has not finished yet: its client asks again later."""

    def __init__(self):
        super().__init__("authorization_pending")
        # The body upstream's clients read: {"detail": {"error": "authorization_pending"}}.
        self.json_detail = {"error": "authorization_pending"}


class UnscalableConfig(ValueError):
    """The configuration only works in one server process (``build_app(scalable=True)``)."""


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
        key = read_api_key(request)
        if key is None:
            return ANONYMOUS_PUBLIC if self.allow_anonymous_access else ANONYMOUS
        if hmac.compare_digest(key.encode(), self._key_bytes):
            return SINGLE_USER
        raise Unauthenticated("Invalid API key")

    async def authentication_json(self, base_url: str) -> dict[str, Any]:
        """The about document's ``authentication`` section."""
        return {"required": self.required, "providers": [], "links": None}

    async def startup(self) -> None:
        pass

    async def shutdown(self) -> None:
        pass


def _algorithm(token: str) -> str | None:
    """The signature algorithm a token's header names (None: not a JSON Web Token)."""
    import jwt

    try:
        algorithm = jwt.get_unverified_header(token).get("alg")
    except jwt.PyJWTError:
        return None
    return algorithm if isinstance(algorithm, str) else None


def _signed_here(token: str) -> bool:
    """Whether a bearer token is one of this server's (HS256, signed with its secret keys)
    rather than an identity provider's (signed with a public key). What is no token at all
    is refused as this server's tokens are."""
    return _algorithm(token) in ("HS256", None)


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
        # Identities established lately (see .kept_identities). A key is looked up again as
        # often as its latest activity is recorded.
        from ..authn_database.crud import ACTIVITY_RESOLUTION

        self.access_tokens = AccessTokenIdentities()
        self.api_keys = APIKeyIdentities(ACTIVITY_RESOLUTION.total_seconds())
        # Providers whose own access tokens are accepted as bearer tokens.
        from ..authenticators import ProxiedOIDCAuthenticator

        self.proxied = {
            name: provider
            for name, provider in self.providers.items()
            if isinstance(provider, ProxiedOIDCAuthenticator)
        }

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

    async def authentication_json(self, base_url: str) -> dict[str, Any]:
        """The about document's ``authentication`` section (each proxied provider's own
        endpoints looked up once)."""
        elsewhere = {name: await self._provider_endpoints(name) for name in self.proxied}
        return {
            "required": self.required,
            "providers": self._providers_json(base_url, elsewhere),
            "links": self._links_json(base_url, elsewhere),
        }

    def _providers_json(
        self, base_url: str, elsewhere: dict[str, dict[str, Any] | None]
    ) -> list[dict[str, Any]]:
        # An internal provider's endpoint takes a password; an external one's sends the user
        # to the identity provider (GET) or starts a device-code login (POST).
        endpoints = {"internal": "token", "external": "authorize"}
        described = []
        for name, provider in self.providers.items():
            mode = provider_mode(provider)
            own_endpoint = f"{base_url}/auth/provider/{name}/{endpoints[mode]}"
            entry = {
                "provider": name,
                "mode": mode,
                "links": {"auth_endpoint": own_endpoint},
                "confirmation_message": getattr(provider, "confirmation_message", None),
            }
            endpoints_there = elsewhere.get(name)
            if endpoints_there is not None:
                # Clients log in at the identity provider itself (device flow), as upstream's.
                entry["links"] = {
                    "auth_endpoint": endpoints_there["device_authorization_endpoint"],
                    "authorize_endpoint": own_endpoint,
                    "client_id": provider.device_flow_client_id,
                    "token_endpoint": endpoints_there["token_endpoint"],
                }
                entry["extra_scopes"] = list(getattr(provider, "extra_scopes", ()))
            described.append(entry)
        return described

    async def _proxied_reachable(self) -> None:
        """Raise IdentityProviderUnavailable (503) if a proxied provider cannot be reached."""
        for provider in self.proxied.values():
            await provider.configuration()

    async def _provider_endpoints(self, name: str) -> dict[str, Any] | None:
        """The endpoints of proxied provider ``name`` that clients use directly, if it can
        be reached; else None, and the about document describes it as a plain OpenID
        Connect provider (Tiled's own login routes): the document still answers, in the
        shape upstream's clients read, for anonymous reads and API keys."""
        from ..authenticators import IdentityProviderUnavailable

        try:
            endpoints = await self.proxied[name].endpoints()
        except IdentityProviderUnavailable as error:
            logger.warning("Provider %r: %s", name, error)
            return None
        return endpoints if all(endpoints.values()) else None

    def provider(self, name: str, mode: str) -> Any:
        """The authenticator of provider ``name`` if it logs in that way (404 otherwise)."""
        provider = self.providers.get(name)
        if provider is None or provider_mode(provider) != mode:
            kind = "an OpenID Connect" if mode == "external" else "a username/password"
            raise NotFound(f"No {kind} authentication provider named {name!r}")
        return provider

    def _links_json(
        self, base_url: str, elsewhere: dict[str, dict[str, Any] | None]
    ) -> dict[str, str | None]:
        links = {
            "whoami": f"{base_url}/auth/whoami",
            "apikey": f"{base_url}/auth/apikey",
            "refresh_session": f"{base_url}/auth/session/refresh",
            "revoke_session": f"{base_url}/auth/session/revoke/{{session_id}}",
            "logout": f"{base_url}/auth/logout",
        }
        if len(self.providers) == 1 and self.proxied:
            # Clients hold the identity provider's tokens: they refresh and log out there.
            endpoints = elsewhere[next(iter(self.proxied))]
            if endpoints is not None:
                links["refresh_session"] = endpoints["token_endpoint"]
                links["logout"] = endpoints["end_session_endpoint"]
        return links

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
        key = digest(credentials.secret)
        kept = self.access_tokens.identity(key)
        if kept is not None:
            return kept
        if self.proxied and not _signed_here(credentials.secret):
            identity, expiry = await self._provider_token_identity(credentials.secret)
        else:
            claims = self.signer.decode(credentials.secret, "access", EXPIRED_ACCESS_TOKEN)
            identity, expiry = self._token_identity(claims), claims["exp"]
        self.access_tokens.keep_token(key, identity, expiry)
        return identity

    async def _provider_token_identity(self, token: str) -> tuple[Identity, Any]:
        """The identity an access token of a proxied provider proves, and its expiry.

        The provider is the one that issued it (``iss``). The principal is the provider's
        user (created on first sight); the scopes are the token's, and an admin's also
        the admin role's (its other roles add nothing: the provider decides what its tokens
        grant)."""
        import jwt

        from ..authenticators import ExpiredToken, IdentityProviderUnavailable, InvalidIDToken
        from ..authn_database import crud

        try:
            issuer = jwt.decode(token, options={"verify_signature": False}).get("iss")
        except jwt.PyJWTError:
            raise Unauthenticated(INVALID_TOKEN, BEARER_CHALLENGE) from None
        if not isinstance(issuer, str):
            raise Unauthenticated(INVALID_TOKEN, BEARER_CHALLENGE)
        issuers, unreachable = {}, None
        for name, provider in self.proxied.items():
            try:
                issuers[(await provider.configuration())["issuer"]] = name
            except IdentityProviderUnavailable as error:
                unreachable = error  # the token may be its: 503 unless another issued it
        if issuer not in issuers:
            if unreachable is not None:
                raise unreachable
            raise Unauthenticated(INVALID_TOKEN, BEARER_CHALLENGE)
        name = issuers[issuer]
        provider = self.proxied[name]
        try:
            claims = await provider.access_claims(token)
        except ExpiredToken:
            raise Unauthenticated(EXPIRED_ACCESS_TOKEN, BEARER_CHALLENGE) from None
        except InvalidIDToken as error:
            logger.info("A token of provider %r refused: %s", name, error)
            raise Unauthenticated(INVALID_TOKEN, BEARER_CHALLENGE) from None
        user = provider.token_user(claims)
        if user is None:
            raise Unauthenticated(INVALID_TOKEN, BEARER_CHALLENGE)
        scopes = provider.token_scopes(claims)
        async with self.database.session() as db:
            principal = await crud.principal_of_identity(
                db, name, user, (name, user) in self.admins
            )
            for role in principal.roles:
                if role.name == "admin":
                    scopes |= frozenset(role.scopes)
            identity = Identity(
                principal.uuid.hex, scopes, authenticated=True,
                identities=tuple((i.provider, i.id) for i in principal.identities),
                principal_type=str(principal.type),
            )  # fmt: skip
        return identity, claims["exp"]

    @staticmethod
    def _token_identity(claims: dict[str, Any]) -> Identity:
        try:
            scopes = frozenset(claims.get("scp") or ())
            identities = tuple(
                (str(entry.get("idp")), str(entry["id"])) for entry in claims.get("ids") or ()
            )
            principal_type = str(claims.get("sub_typ") or "user")
        except (TypeError, KeyError, AttributeError):
            raise Unauthenticated(INVALID_TOKEN, BEARER_CHALLENGE) from None
        return Identity(
            claims["sub"], scopes, authenticated=True, identities=identities,
            principal_type=principal_type,
        )  # fmt: skip

    async def _identify_api_key(self, secret: str) -> Identity:
        from ..authn_database import crud
        from ..authn_database.connection import RECORDS_ACTIVITY_ONLY
        from ..authn_database.orm import utcnow

        key_digest = digest(secret)
        # Read before the lookup: a commit after it makes what the lookup found stale.
        looked_up = time.monotonic()
        generation = await self.database.generation()
        kept = self.api_keys.identity(key_digest, generation, utcnow())
        if kept is not None:
            return kept
        async with self.database.session() as db:
            key = await crud.lookup_api_key(db, secret)
            if key is None:
                raise Unauthenticated("Invalid API key")
            if key.expiration_time is not None and key.expiration_time <= utcnow():
                raise Unauthenticated("API key has expired")
            db.info[RECORDS_ACTIVITY_ONLY] = True
            await crud.touch_api_key(db, key)
        principal = key.principal
        identity = Identity(
            principal.uuid.hex,
            crud.api_key_scopes(key),
            authenticated=True,
            identities=tuple((i.provider, i.id) for i in principal.identities),
            api_key_first_eight=key.first_eight,
            principal_type=str(principal.type),
            access_tags=frozenset(key.access_tags) if key.access_tags is not None else None,
        )
        self.api_keys.keep_key(key_digest, identity, generation, key.expiration_time, looked_up)
        return identity

    async def login(self, provider_name: str, username: str, password: str) -> dict[str, Any]:
        """Check a username and password with a provider; open a session; return tokens."""
        provider = self.provider(provider_name, "internal")
        state = None
        if username and password:
            state = provider.authenticate(username, password)
            state = await state if inspect.isawaitable(state) else state
        attempt = (provider_name, username)
        if state is None:
            await self.failures.wait_after_failure(attempt)
            raise Unauthenticated("Incorrect username or password", BEARER_CHALLENGE)
        self.failures.reset(attempt)
        async with self.database.session() as db:
            principal, session = await self._open_session(db, provider_name, state)
        return self._login_tokens(principal, session, provider_name, state.user_name)

    async def _open_session(self, db, provider_name: str, state: Any) -> tuple[Any, Any]:
        """A new session of the principal ``state`` names (created on first login), and
        the principal."""
        from ..authn_database import crud
        from . import authentication  # where the session limit is set (upstream's module)

        admin = (provider_name, state.user_name) in self.admins
        principal = await crud.login(db, provider_name, state.user_name, admin)
        open_sessions = len(await crud.live_sessions(db, principal.id))
        limit = authentication.SESSION_LIMIT
        if open_sessions >= limit:
            raise BadRequest(
                f"This principal already has {open_sessions} sessions, the most allowed "
                f"({limit}); some must expire before another login"
            )
        session = await crud.create_session(
            db, principal, self.settings.session_max_age, getattr(state, "state", {}) or {}
        )
        return principal, session

    def _login_tokens(self, principal, session, provider_name: str, user_name: str) -> dict:
        tokens = self._tokens(principal, session)
        tokens["identity"] = {"id": user_name, "provider": provider_name}
        tokens["principal"] = principal.uuid.hex
        return tokens

    async def _external_state(self, provider_name: str, request: Request) -> Any:
        """Who the identity provider says logged in, from the code ``request`` brings back
        (None when the provider refuses)."""
        provider = self.provider(provider_name, "external")
        state = provider.authenticate(request)
        state = await state if inspect.isawaitable(state) else state
        return state if state is not None and getattr(state, "user_name", None) else None

    async def external_login(self, provider_name: str, request: Request) -> dict[str, Any]:
        """Tokens for the login an identity provider sent back to ``request``."""
        state = await self._external_state(provider_name, request)
        if state is None:
            raise Unauthenticated("Authentication failure")
        async with self.database.session() as db:
            principal, session = await self._open_session(db, provider_name, state)
        return self._login_tokens(principal, session, provider_name, state.user_name)

    async def start_device_login(self, provider_name: str) -> tuple[str, str]:
        """A pending device-code login with provider ``provider_name``: its device code
        and user code."""
        from ..authn_database import crud

        self.provider(provider_name, "external")
        async with self.database.session() as db:
            return await crud.create_pending_session(db)

    async def finish_device_login(self, provider_name: str, user_code: str, request: Request):
        """Give the pending login of ``user_code`` the session of the user the identity
        provider sent back to ``request``; raise NotFound for an unknown or expired code and
        Unauthenticated when the provider refuses. A login finished already (the form sent
        twice) is no error."""
        from ..authn_database import crud

        self.provider(provider_name, "external")
        # Wrong codes slow down the address that sends them (a key a guesser cannot choose
        # freely), with no database connection held while it waits; nor while the identity
        # provider is asked.
        attempt = ("user_code", request.client.host if request.client else None)
        async with self.database.session() as db:
            pending = await crud.pending_session(db, user_code=user_code)
            found = None if pending is None else (pending.hashed_device_code, pending.session_id)
        if found is None:
            await self.failures.wait_after_failure(attempt)
            raise NotFound("No pending login has this code, or it has expired")
        self.failures.reset(attempt)
        hashed_device_code, finished = found
        if finished is not None:
            return
        state = await self._external_state(provider_name, request)
        if state is None:
            # The form sent twice at once: the other submit spent the code, and finishes the
            # login in a moment.
            if await self._finished_soon(hashed_device_code):
                return
            raise Unauthenticated("Authentication failure")
        async with self.database.session() as db:
            _, session = await self._open_session(db, provider_name, state)
            if await crud.finish_pending_session(db, hashed_device_code, session.id):
                return
            await crud.revoke_session(db, session.uuid.hex)  # a session no one will use
            if not await crud.pending_session_finished(db, hashed_device_code):
                raise NotFound("No pending login has this code, or it has expired")

    async def _finished_soon(self, hashed_device_code: bytes, seconds: float | None = None) -> bool:
        """Whether the pending login is finished, or is within ``seconds`` (default: as long
        as the other submission may take, which waits for the provider's answer)."""
        import asyncio

        from ..authenticators import PROVIDER_DEADLINE_SECONDS
        from ..authn_database import crud

        if seconds is None:
            seconds = PROVIDER_DEADLINE_SECONDS + 5
        deadline = time.monotonic() + seconds
        while True:
            async with self.database.session() as db:
                if await crud.pending_session_finished(db, hashed_device_code):
                    return True
            if time.monotonic() > deadline:
                return False
            await asyncio.sleep(0.1)

    async def device_tokens(self, provider_name: str, device_code_hex: str) -> dict[str, Any]:
        """The tokens of a finished device-code login, once; raises AuthorizationPending
        while the user has not finished it."""
        from ..authn_database import crud, orm

        self.provider(provider_name, "external")
        try:
            device_code = bytes.fromhex(device_code_hex)
        except ValueError:
            raise Unauthenticated("Invalid device code") from None
        async with self.database.session() as db:
            pending = await crud.pending_session(db, device_code=device_code)
            if pending is None:
                raise NotFound("No such device_code. The pending request may have expired.")
            if pending.session_id is None:
                raise AuthorizationPending()
            if not await crud.claim_pending_session(db, pending):
                raise NotFound("No such device_code. The pending request may have expired.")
            session = await db.get(orm.Session, pending.session_id)
            principal = session.principal
        # The identity the user logged in with at the browser (its latest login).
        never = datetime.min.replace(tzinfo=UTC)
        latest = max(principal.identities, key=lambda i: i.latest_login or never)
        return self._login_tokens(principal, session, latest.provider, latest.id)

    async def refresh(self, refresh_token: str) -> dict[str, Any]:
        """New tokens for a live session named by a valid refresh token."""
        from ..authn_database import crud
        from ..authn_database.orm import utcnow

        if self.proxied and _algorithm(refresh_token) != "HS256":
            # Perhaps a provider's refresh token (a JWT of its own, or opaque), sent here by a
            # client that read the about document while the provider was out of reach: a 503
            # then, which the client survives, not a 401, which ends its login.
            await self._proxied_reachable()
        claims = self.signer.decode(refresh_token, "refresh", EXPIRED_SESSION)
        async with self.database.session() as db:
            session = await crud.session_by_uuid(db, str(claims.get("sid")))
            if session is None or session.revoked or session.expiration_time <= utcnow():
                raise Unauthenticated(EXPIRED_SESSION, BEARER_CHALLENGE)
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
) -> SingleUserAuthenticator | MultiUserAuthenticator:
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
    """Who sent ``request``, as the application's authenticator decides."""
    return await request.app.state.tiled.authenticator.identify(request)


# The identity of the request, as a route parameter.
CurrentIdentity = Annotated[Identity, Depends(get_identity)]
