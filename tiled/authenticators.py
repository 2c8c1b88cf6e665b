"""Authenticators for multi-user servers.

Username/password ("internal") providers check credentials themselves (against a mapping,
the host's PAM stack or an LDAP directory); OpenID Connect ("external") providers send the user to an identity provider and read who logged in from
the ID token it issues (:class:`OIDCAuthenticator`).

An authenticator is any object with ``async authenticate(username, password)`` returning a
:class:`UserSessionState` on success and ``None`` on failure (a plain, non-async method is
accepted too). Configure one per provider::

    authentication:
      providers:
        - provider: toy
          authenticator: tiled.authenticators:DictionaryAuthenticator
          args:
            users_to_passwords: {alice: ${ALICE_PASSWORD}}
"""

from __future__ import annotations

import hmac
import json
import logging
import re
import time
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .errors import ServiceUnavailable

if TYPE_CHECKING:
    from fastapi import Request

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class UserSessionState:
    """Who logged in (``user_name``, the id within the provider) and provider state."""

    user_name: str
    state: dict[str, Any] = field(default_factory=dict)


class InternalAuthenticator(ABC):
    """The interface of a username/password (PAM-style) authenticator."""

    mode = "internal"
    confirmation_message: str | None = None

    @abstractmethod
    async def authenticate(self, username: str, password: str) -> UserSessionState | None:
        """Return the session state for valid credentials, None otherwise."""


class DictionaryAuthenticator(InternalAuthenticator):
    """Users and passwords from a mapping: for tests, demos and tiny deployments."""

    def __init__(
        self, users_to_passwords: Mapping[str, str], confirmation_message: str | None = None
    ):
        self._passwords = {user: password.encode() for user, password in users_to_passwords.items()}
        self.confirmation_message = confirmation_message

    async def authenticate(self, username: str, password: str) -> UserSessionState | None:
        expected = self._passwords.get(username)
        # Compare even for unknown users, so timing does not tell which names exist.
        matches = hmac.compare_digest(password.encode(), expected or b"\0" * 32)
        if expected is None or not matches:
            return None
        return UserSessionState(username)


class DummyAuthenticator(InternalAuthenticator):
    """Any username with any password logs in: for development only (upstream's name)."""

    def __init__(self, confirmation_message: str | None = None):
        self.confirmation_message = confirmation_message

    async def authenticate(self, username: str, password: str) -> UserSessionState | None:
        return UserSessionState(username)


class PAMAuthenticator(InternalAuthenticator):
    """Check credentials against the host's PAM stack (needs the ``pamela`` package)."""

    def __init__(self, service: str = "login", confirmation_message: str | None = None):
        try:
            import pamela
        except ImportError:
            raise ImportError(
                "PAMAuthenticator needs the 'pamela' package: pip install pamela"
            ) from None
        self._pamela = pamela
        self.service = service
        self.confirmation_message = confirmation_message

    async def authenticate(self, username: str, password: str) -> UserSessionState | None:
        from .utils import run_sync

        def check() -> bool:
            try:
                self._pamela.authenticate(username, password, service=self.service)
            except self._pamela.PAMError:
                return False
            return True

        return UserSessionState(username) if await run_sync(check) else None


class ExternalAuthenticator(ABC):
    """The interface of a provider that logs users in elsewhere (a browser redirect) and
    hands back an authorization code: ``authenticate(request)`` reads the request that
    carries the code."""

    mode = "external"
    confirmation_message: str | None = None
    redirect_on_success: str | None = None
    redirect_on_failure: str | None = None

    async def authorization_url(self, redirect_uri: str, state: str | None = None) -> str:
        """Where to send the user's browser to log in; it comes back to ``redirect_uri``.

        By default, the OAuth2 authorization request to the ``authorization_endpoint`` with
        this ``client_id`` (the attributes upstream's external authenticators have)."""
        return authorization_request(
            str(self.authorization_endpoint), self.client_id, redirect_uri, state
        )

    @abstractmethod
    async def authenticate(self, request: Request) -> UserSessionState | None:
        """The session state for the login whose code ``request`` carries, None if refused
        (a plain method is accepted too)."""


def authorization_request(
    endpoint: str, client_id: str, redirect_uri: str, state: str | None = None
) -> str:
    """The URL of an OpenID Connect authorization request (authorization code flow)."""
    from urllib.parse import urlencode

    params = {
        "client_id": client_id,
        "response_type": "code",
        "scope": "openid",
        "redirect_uri": redirect_uri,
        "prompt": "login",
    }
    if state is not None:
        params["state"] = state
    return f"{endpoint}{'&' if '?' in endpoint else '?'}{urlencode(params)}"


class IdentityProviderUnavailable(ServiceUnavailable):
    """The identity provider could not be reached or answered something unusable."""

    def __init__(self, reason: str):
        super().__init__(f"The identity provider cannot be used now: {reason}")


# Signature algorithms an ID token may use, and the type of key of each: public-key ones
# only. "none" proves nothing, and an HMAC token would be checked with a key taken from the
# JWKS document, which is public.
KEY_TYPES = {
    **dict.fromkeys(("RS256", "RS384", "RS512", "PS256", "PS384", "PS512"), "RSA"),
    **dict.fromkeys(("ES256", "ES384", "ES512"), "EC"),
    "EdDSA": "OKP",
}
# Clocks of the identity provider and of this server drift apart.
CLOCK_SKEW_SECONDS = 60
KEYS_MAX_AGE_SECONDS = 3600.0
# A token naming an unknown key fetches the keys again (the provider rotated them), at most
# this often, so that forged key ids cannot make the server fetch on every request.
KEYS_REFETCH_SECONDS = 60.0
PROVIDER_TIMEOUT_SECONDS = 10.0
PROVIDER_DEADLINE_SECONDS = 15.0
PROVIDER_BODY_LIMIT = 2**20  # discovery documents, keys and tokens are a few kB
CONFIGURATION_RETRY_SECONDS = 30.0


class OIDCAuthenticator(ExternalAuthenticator):
    """Log in through an OpenID Connect provider (Google, ORCID, Keycloak, ...) with the
    authorization code flow; upstream Tiled's configuration::

        authentication:
          providers:
            - provider: orcid
              authenticator: tiled.authenticators:OIDCAuthenticator
              args:
                audience: ${ORCID_CLIENT_ID}
                client_id: ${ORCID_CLIENT_ID}
                client_secret: ${ORCID_CLIENT_SECRET}
                well_known_uri: https://orcid.org/.well-known/openid-configuration

    The provider's discovery document and keys are fetched when first needed (a server starts
    while the provider is away). The ID token must be signed with one of the provider's
    public keys, name the provider as issuer and ``audience`` among its audiences, be
    unexpired, and match the access token issued with it (``at_hash``). The user is the
    ``user_id_claim`` of the token (``sub``: stable, where an e-mail address may change).
    """

    def __init__(
        self,
        audience: str,
        client_id: str,
        client_secret: str,
        well_known_uri: str,
        confirmation_message: str = "",
        redirect_on_success: str | None = None,
        redirect_on_failure: str | None = None,
        user_id_claim: str = "sub",
    ):
        self.audience = audience
        self.client_id = client_id
        self._client_secret = client_secret
        self.well_known_uri = well_known_uri
        self.confirmation_message = confirmation_message
        self.redirect_on_success = redirect_on_success
        self.redirect_on_failure = redirect_on_failure
        self.user_id_claim = user_id_claim
        self._configuration: dict[str, Any] | None = None
        self._configuration_failure: tuple[float, IdentityProviderUnavailable] | None = None
        self._keys: dict[str, Any] = {}
        self._keys_fetched = -float("inf")

    def __repr__(self) -> str:  # the secret stays out of logs and tracebacks
        return f"{type(self).__name__}(client_id={self.client_id!r}, {self.well_known_uri!r})"

    async def _exchange(self, method: str, url: str, **kwargs: Any) -> tuple[int, Any]:
        """The status and JSON body of a request to the provider (None: no JSON body)."""
        import asyncio

        import httpx

        async def send() -> tuple[int, bytes]:
            async with httpx.AsyncClient(timeout=PROVIDER_TIMEOUT_SECONDS) as client:
                async with client.stream(method, url, **kwargs) as response:
                    body = bytearray()
                    async for piece in response.aiter_bytes():
                        body += piece
                        if len(body) > PROVIDER_BODY_LIMIT:
                            raise IdentityProviderUnavailable(f"{url}: an answer past 1 MiB")
                    return response.status_code, bytes(body)

        try:
            # A whole deadline: httpx's timeout is per read, which a trickling answer meets.
            status, body = await asyncio.wait_for(send(), PROVIDER_DEADLINE_SECONDS)
        except (httpx.HTTPError, httpx.InvalidURL, TimeoutError) as error:
            raise IdentityProviderUnavailable(f"{url}: {type(error).__name__} {error}") from None
        try:
            return status, json.loads(body)
        except (ValueError, RecursionError):
            return status, None

    async def _document(self, url: str) -> dict[str, Any]:
        status, document = await self._exchange("GET", url)
        if status != 200 or not isinstance(document, dict):
            raise IdentityProviderUnavailable(f"{url} answered {status}, not a JSON object")
        return document

    async def configuration(self) -> dict[str, Any]:
        """The provider's discovery document (fetched once; after a failure, asked again
        no sooner than CONFIGURATION_RETRY_SECONDS, so that requests meanwhile do not each
        wait out the provider's deadline)."""
        if self._configuration is None:
            failed = self._configuration_failure
            if failed is not None and time.monotonic() - failed[0] < CONFIGURATION_RETRY_SECONDS:
                raise failed[1]
            try:
                document = await self._fetch_configuration()
            except IdentityProviderUnavailable as error:
                self._configuration_failure = (time.monotonic(), error)
                raise
            self._configuration, self._configuration_failure = document, None
        return self._configuration

    async def _fetch_configuration(self) -> dict[str, Any]:
        document = await self._document(self.well_known_uri)
        needed = ("issuer", "authorization_endpoint", "token_endpoint", "jwks_uri")
        if not all(_is_url(document.get(name)) for name in needed[1:]) or not isinstance(
            document.get("issuer"), str
        ):
            raise IdentityProviderUnavailable(
                f"{self.well_known_uri} is not an OpenID Connect discovery document "
                f"(it needs {', '.join(needed)})"
            )
        offered = document.get("id_token_signing_alg_values_supported")
        if offered is not None and not (
            isinstance(offered, list) and all(isinstance(name, str) for name in offered)
        ):
            raise IdentityProviderUnavailable(
                f"{self.well_known_uri}: id_token_signing_alg_values_supported is not a "
                "list of names"
            )
        return document

    async def authorization_url(self, redirect_uri: str, state: str | None = None) -> str:
        configuration = await self.configuration()
        endpoint = configuration["authorization_endpoint"]
        return authorization_request(endpoint, self.client_id, redirect_uri, state)

    async def authenticate(self, request: Request) -> UserSessionState | None:
        from .server.urls import request_url_without_query

        code = request.query_params.get("code")
        if not code:
            logger.warning("OpenID Connect login refused: no authorization code")
            return None
        configuration = await self.configuration()
        # The same redirect URI as the authorization request's: the route that got the code.
        redirect_uri = request_url_without_query(request)
        form = {
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": redirect_uri,
            "client_id": self.client_id,
            **self._token_request_extras(),
        }
        # The client authenticates as the provider says it may (OAuth2's default, HTTP Basic,
        # when it does not say); some providers take the secret in the form only.
        methods = configuration.get("token_endpoint_auth_methods_supported") or []
        if "client_secret_basic" in methods or "client_secret_post" not in methods:
            secret = {"auth": (_form_encoded(self.client_id), _form_encoded(self._client_secret))}
        else:
            form["client_secret"] = self._client_secret
            secret = {}
        status, body = await self._exchange(
            "POST", configuration["token_endpoint"], data=form, **secret
        )
        if status >= 500 or body is None:
            raise IdentityProviderUnavailable(f"the token endpoint answered {status}")
        if status != 200 or not isinstance(body, dict) or not isinstance(body.get("id_token"), str):
            # The error only: a body of tokens without an ID token would leak them to the log.
            error = body.get("error") if isinstance(body, dict) else None
            description = body.get("error_description") if isinstance(body, dict) else None
            logger.warning(
                "OpenID Connect login refused by the token endpoint (%s): %s %s",
                status, error or "no ID token", description or "",
            )  # fmt: skip
            return None
        try:
            access_token = body.get("access_token")
            claims = await self.verified_claims(
                body["id_token"], access_token if isinstance(access_token, str) else None
            )
        except InvalidIDToken as error:
            logger.warning("OpenID Connect login refused: %s", error)
            return None
        user = self.user_of(claims)
        if user is None:
            logger.warning("OpenID Connect login refused: no %r claim", self.user_id_claim)
            return None
        return UserSessionState(user, self._session_state(body))

    def user_of(self, claims: Mapping[str, Any]) -> str | None:
        """The user a token's verified claims name (None when they name none)."""
        user = claims.get(self.user_id_claim)
        return user if isinstance(user, str) and user else None

    def _session_state(self, tokens: Mapping[str, Any]) -> dict[str, Any]:
        """What the session keeps of the provider's tokens (nothing, by default)."""
        return {}

    def _token_request_extras(self) -> dict[str, str]:
        """Fields added to the code's exchange at the token endpoint."""
        return {}

    async def _key(self, key_id: str | None, algorithm: str) -> Any:
        import jwt

        now = time.monotonic()
        stale = now - self._keys_fetched > KEYS_MAX_AGE_SECONDS
        unknown = key_id not in self._keys and not (key_id is None and len(self._keys) == 1)
        if stale or (unknown and now - self._keys_fetched > KEYS_REFETCH_SECONDS):
            configuration = await self.configuration()
            document = await self._document(configuration["jwks_uri"])
            entries = document.get("keys")
            keys = {}
            for entry in entries if isinstance(entries, list) else []:
                if isinstance(entry, dict) and entry.get("use", "sig") == "sig":
                    keys[entry.get("kid")] = entry
            self._keys, self._keys_fetched = keys, now
        if key_id is None and len(self._keys) == 1:
            # A token may leave out which key signed it when the provider has only one.
            entry = next(iter(self._keys.values()))
        elif key_id in self._keys:
            entry = self._keys[key_id]
        else:
            raise InvalidIDToken(f"no key {key_id!r} among the provider's keys")
        if entry.get("alg", algorithm) != algorithm or entry.get("kty") != KEY_TYPES[algorithm]:
            raise InvalidIDToken(f"the key {key_id!r} is not a key for {algorithm}")
        try:
            # The token's algorithm, not the key type's default: an RSA key without "alg"
            # signs PS256 tokens too.
            return jwt.PyJWK(entry, algorithm)
        except (jwt.PyJWTError, TypeError, ValueError, KeyError) as error:
            raise InvalidIDToken(f"the key {key_id!r} cannot be used: {error}") from None

    async def verified_claims(
        self, id_token: str, access_token: str | None, *, issued_to_us: bool = True
    ) -> dict[str, Any]:
        """The claims of ``id_token`` once its signature, issuer, audience, times and
        ``at_hash`` are checked (:class:`InvalidIDToken` otherwise). ``issued_to_us=False``
        leaves out the check that the token was issued to this server's client (``azp``): an
        access token for this server's audience may have been issued to another client (a
        command-line client logging in with the device flow)."""
        import jwt

        configuration = await self.configuration()
        try:
            header = jwt.get_unverified_header(id_token)
        except jwt.PyJWTError as error:
            raise InvalidIDToken(str(error)) from None
        algorithm, key_id = header.get("alg"), header.get("kid")
        offered = configuration.get("id_token_signing_alg_values_supported") or ["RS256"]
        if not isinstance(algorithm, str) or algorithm not in KEY_TYPES or algorithm not in offered:
            raise InvalidIDToken(f"signature algorithm {algorithm!r} is not accepted")
        if key_id is not None and not isinstance(key_id, str):
            raise InvalidIDToken("the key id is not text")
        key = await self._key(key_id, algorithm)
        try:
            claims = jwt.decode(
                id_token,
                key=key,
                algorithms=[algorithm],
                audience=self.audience,
                issuer=configuration["issuer"],
                leeway=CLOCK_SKEW_SECONDS,
                options={"require": ["exp", "iat", "iss", "aud", "sub"]},
            )
        except jwt.ExpiredSignatureError as error:
            raise ExpiredToken(str(error)) from None
        except jwt.PyJWTError as error:
            raise InvalidIDToken(str(error)) from None
        audiences = claims["aud"] if isinstance(claims["aud"], list) else [claims["aud"]]
        if (
            issued_to_us
            and ("azp" in claims or len(audiences) > 1)
            and claims.get("azp") != self.client_id
        ):
            raise InvalidIDToken("the token was issued to another client (azp)")
        if "at_hash" in claims:
            if not access_token:
                raise InvalidIDToken("at_hash without an access token to check it against")
            if claims["at_hash"] != _token_hash(algorithm, access_token):
                raise InvalidIDToken("at_hash does not match the access token")
        return claims


class ProxiedOIDCAuthenticator(OIDCAuthenticator):
    """An OpenID Connect provider whose own access tokens this server accepts.

    Besides logging users in as :class:`OIDCAuthenticator` does (the browser's authorization
    code flow, which opens a Tiled session), it lets clients log in at the identity provider
    itself, with the device flow (``device_flow_client_id`` names that public client), and
    send the provider's access tokens as bearer tokens: this server checks them with the
    provider's keys (issuer, ``audience``, expiry) and refreshes nothing itself (the
    ``/api/v1/`` document sends clients to the provider's token and logout endpoints).
    Upstream Tiled's configuration::

        authentication:
          providers:
            - provider: keycloak
              authenticator: tiled.authenticators:ProxiedOIDCAuthenticator
              args:
                audience: tiled
                client_id: tiled
                device_flow_client_id: tiled-cli
                well_known_uri: https://idp.example.org/.well-known/openid-configuration
                scopes_map: {"tiled.read": ["read:metadata", "read:data"]}

    A request with a provider's token holds the token's scopes: with ``scopes_map``, the
    Tiled scopes its provider scopes (``scp``, else ``scope``) map to, and none for a token
    with neither (upstream grants such a token every scope of the map: an application's own
    token, which has none, would hold them all); without a map, the token's own ``scope``
    (or ``scp``). ``scopes`` is accepted as upstream's is (it adds to :attr:`scopes`).
    The user is the token's ``user`` claim, else its ``sub`` (a browser login's user is
    ``user_id_claim``, as with :class:`OIDCAuthenticator`).
    """

    def __init__(
        self,
        audience: str,
        client_id: str,
        well_known_uri: str,
        device_flow_client_id: str,
        client_secret: str = "",
        scopes: list[str] | None = None,
        scopes_map: Mapping[str, list[str]] | None = None,
        confirmation_message: str = "",
        redirect_on_success: str | None = None,
        redirect_on_failure: str | None = None,
        user_id_claim: str = "sub",
    ):
        super().__init__(
            audience, client_id, client_secret, well_known_uri,
            confirmation_message, redirect_on_success, redirect_on_failure, user_id_claim,
        )  # fmt: skip
        if scopes is not None and not _is_list_of_text(scopes):
            raise ValueError("scopes must be a list of scope names")
        if scopes_map is not None and not (
            isinstance(scopes_map, Mapping)
            and all(isinstance(k, str) and _is_list_of_text(v) for k, v in scopes_map.items())
        ):
            raise ValueError("scopes_map must map provider scopes to lists of Tiled scopes")
        self.device_flow_client_id = device_flow_client_id
        self._scopes = list(scopes) if scopes is not None else None
        self.scopes_map = {key: list(value) for key, value in (scopes_map or {}).items()}

    @property
    def scopes(self) -> list[str]:
        """The Tiled scopes this provider may grant: ``scopes``, and all that the map does."""
        combined = set(self._scopes or ())
        for mapped in self.scopes_map.values():
            combined.update(mapped)
        return sorted(combined)

    def translated_claims(self, claims: dict[str, Any]) -> dict[str, Any]:
        """``claims`` with ``scope`` set to the Tiled scopes the provider's scopes map to
        (untouched without a ``scopes_map``)."""
        if not self.scopes_map:
            return claims
        # Entra names the provider's scopes scp; Keycloak and most others, scope.
        provider_scopes = claims["scp"] if "scp" in claims else claims.get("scope")
        if isinstance(provider_scopes, str):
            provider_scopes = provider_scopes.split()
        granted: set[str] = set()
        for scope in provider_scopes if isinstance(provider_scopes, list) else ():
            mapped = self.scopes_map.get(scope) if isinstance(scope, str) else None
            if mapped is not None:
                granted.update(mapped)
        # Always set, so that the unmapped provider scopes are never read as Tiled scopes.
        return {**claims, "scope": " ".join(sorted(granted))}

    async def access_claims(self, access_token: str) -> dict[str, Any]:
        """The translated claims of one of the provider's access tokens, once it is checked
        (:class:`InvalidIDToken` otherwise)."""
        claims = await self.verified_claims(access_token, None, issued_to_us=False)
        return self.translated_claims(claims)

    @staticmethod
    def token_scopes(claims: Mapping[str, Any]) -> frozenset[str]:
        """The scopes of translated claims: ``scope`` (space-separated), else ``scp``."""
        value = claims["scope"] if "scope" in claims else claims.get("scp")
        if isinstance(value, str):
            return frozenset(value.split())
        if isinstance(value, list):
            return frozenset(item for item in value if isinstance(item, str))
        return frozenset()

    @staticmethod
    def token_user(claims: Mapping[str, Any]) -> str | None:
        """The user an access token's translated claims name: ``user``, else ``sub`` (as
        upstream reads the provider's tokens, whatever ``user_id_claim`` says)."""
        for name in ("user", "sub"):
            if isinstance(claims.get(name), str) and claims[name]:
                return claims[name]
        return None

    async def endpoints(self) -> dict[str, Any]:
        """The provider's endpoints that clients use directly (None where it has none):
        ``device_authorization_endpoint``, ``token_endpoint``, ``end_session_endpoint``."""
        configuration = await self.configuration()
        return {
            name: configuration.get(name) if _is_url(configuration.get(name)) else None
            for name in ("device_authorization_endpoint", "token_endpoint", "end_session_endpoint")
        }


class EntraAuthenticator(ProxiedOIDCAuthenticator):
    """Microsoft Entra ID, as a :class:`ProxiedOIDCAuthenticator` (upstream's class).

    Entra's ``sub`` is opaque and differs per application: the user is named, as upstream
    names it (so that its authentication databases carry over), by the first of ``nameID``,
    ``preferred_username``, ``upn`` and ``email`` without the domain, else by the ``sub``.
    Accounts of two domains with one name are therefore one user (and one admin).
    A browser login keeps Entra's access and refresh tokens in the session's state
    (``entra_access_token``, ``entra_refresh_token``), where services behind Tiled find them.
    ``extra_scopes`` are asked for at login (an API's scopes, for such services).
    """

    def __init__(
        self,
        audience: str,
        client_id: str,
        well_known_uri: str,
        device_flow_client_id: str,
        extra_scopes: list[str] | None = None,
        scopes_map: Mapping[str, list[str]] | None = None,
        confirmation_message: str = "",
        client_secret: str = "",
        redirect_on_success: str | None = None,
    ):
        if extra_scopes is not None and not _is_list_of_text(extra_scopes):
            raise ValueError("extra_scopes must be a list of scope names")
        super().__init__(
            audience, client_id, well_known_uri, device_flow_client_id,
            client_secret=client_secret, scopes_map=scopes_map,
            confirmation_message=confirmation_message, redirect_on_success=redirect_on_success,
        )  # fmt: skip
        self.extra_scopes = list(extra_scopes or ())

    def translated_claims(self, claims: dict[str, Any]) -> dict[str, Any]:
        claims = super().translated_claims(claims)
        subject = claims.get("sub")
        username = next(
            (
                claims[name]
                for name in ("nameID", "preferred_username", "upn", "email")
                if isinstance(claims.get(name), str) and claims[name].strip()
            ),
            None,
        )
        if username is None:
            logger.warning(
                "Entra token without a readable user name (nameID, preferred_username, upn, "
                "email): the user is its sub; add preferred_username to the application's "
                "optional claims"
            )
            user = subject
        else:
            user = username.strip().rsplit("\\", 1)[-1].split("@", 1)[0]
        return {**claims, "user": user}

    def user_of(self, claims: Mapping[str, Any]) -> str | None:
        # The browser login's ID token names its user as access tokens do.
        return self.token_user(self.translated_claims(dict(claims)))

    def _session_state(self, tokens: Mapping[str, Any]) -> dict[str, Any]:
        state = {}
        for kind in ("access_token", "refresh_token"):
            if isinstance(tokens.get(kind), str):
                state[f"entra_{kind}"] = tokens[kind]
        return state

    def _token_request_extras(self) -> dict[str, str]:
        return {"scope": " ".join(["openid", *self.extra_scopes])} if self.extra_scopes else {}


def _is_list_of_text(value: Any) -> bool:
    return isinstance(value, list | tuple) and all(isinstance(item, str) for item in value)


class InvalidIDToken(Exception):
    """An ID token that does not prove a login (signature, issuer, audience, time, hash)."""


class ExpiredToken(InvalidIDToken):
    """A token that was valid until its ``exp``."""


def _token_hash(algorithm: str, token: str) -> str:
    """OpenID Connect's ``at_hash``: the left half of the token's digest, base64url."""
    import base64

    import jwt

    if algorithm == "EdDSA":
        import hashlib

        # OpenID Connect's hash for Ed25519 (PyJWT has none for EdDSA).
        digest = hashlib.sha512(token.encode()).digest()
    else:
        digest = jwt.get_algorithm_by_name(algorithm).compute_hash_digest(token.encode())
    return base64.urlsafe_b64encode(digest[: len(digest) // 2]).rstrip(b"=").decode()


def _form_encoded(value: str) -> str:
    # RFC 6749 2.3.1: the client id and secret are form-encoded before HTTP Basic.
    from urllib.parse import quote_plus

    return quote_plus(value)


def _is_url(value: Any) -> bool:
    import httpx

    if not isinstance(value, str):
        return False
    try:
        return httpx.URL(value).scheme in ("http", "https")
    except httpx.InvalidURL:
        return False


class LDAPAuthenticator(InternalAuthenticator):
    """Check usernames and passwords by binding to an LDAP directory (needs ``ldap3``), with
    upstream Tiled's arguments (which follow JupyterHub's LDAP authenticator)::

        authentication:
          providers:
            - provider: ldap
              authenticator: tiled.authenticators:LDAPAuthenticator
              args:
                server_address: ldap.example.org
                bind_dn_template: "uid={username},ou=people,dc=example,dc=org"
                allowed_groups: ["cn=beamline,ou=groups,dc=example,dc=org"]

    A login binds as the DN each ``bind_dn_template`` makes of the username (the first that
    binds wins), or, with ``lookup_dn``, as the DN a search finds for it (as
    ``lookup_dn_search_user``, anonymously if unset). Then, if set, ``search_filter`` must
    find exactly one entry, and the user must be a member (``member``, ``uniqueMember`` or
    ``memberUid``) of one of ``allowed_groups``. The ``auth_state_attributes`` of the user's
    entry become the session's state. Usernames must match ``valid_username_regex`` (which
    keeps LDAP syntax out of them); values put in search filters are escaped besides. An empty
    password is refused before anything is sent: LDAP takes a bind without one as anonymous.
    A directory that cannot be reached is a ``503``.
    """

    def __init__(
        self,
        server_address: str | list[str],
        server_port: int | None = None,
        *,
        use_ssl: bool = False,
        use_tls: bool = True,
        connect_timeout: float = 5,
        receive_timeout: float = 60,
        bind_dn_template: str | list[str] | None = None,
        allowed_groups: list[str] | None = None,
        valid_username_regex: str = r"^[a-z][.a-z0-9_-]*$",
        lookup_dn: bool = False,
        user_search_base: str | None = None,
        user_attribute: str | None = None,
        lookup_dn_search_filter: str = "({login_attr}={login})",
        lookup_dn_search_user: str | None = None,
        lookup_dn_search_password: str | None = None,
        lookup_dn_user_dn_attribute: str | None = None,
        escape_userdn: bool = False,
        search_filter: str = "",
        attributes: list[str] | None = None,
        auth_state_attributes: list[str] | None = None,
        use_lookup_dn_username: bool = True,
        confirmation_message: str = "",
    ):
        try:
            import ldap3  # noqa: F401
        except ImportError:
            raise ImportError(
                "LDAPAuthenticator needs the 'ldap3' package: pip install ldap3"
            ) from None
        addresses = [server_address] if isinstance(server_address, str) else list(server_address)
        if not addresses or not all(isinstance(a, str) and a for a in addresses):
            raise ValueError("server_address must name at least one LDAP server")
        self.servers = [_host_and_port(a, server_port, use_ssl) for a in addresses]
        self.use_ssl, self.use_tls = use_ssl, use_tls
        self.connect_timeout, self.receive_timeout = connect_timeout, receive_timeout
        templates = [bind_dn_template] if isinstance(bind_dn_template, str) else bind_dn_template
        self.bind_dn_templates = [t for t in templates or [] if t]
        if not lookup_dn and not self.bind_dn_templates:
            raise ValueError("LDAPAuthenticator needs bind_dn_template, or lookup_dn: true")
        self.allowed_groups = list(allowed_groups or [])
        self.valid_username = re.compile(valid_username_regex)
        self.lookup_dn = lookup_dn
        self.user_search_base, self.user_attribute = user_search_base, user_attribute
        self.lookup_dn_search_filter = lookup_dn_search_filter
        self.lookup_dn_search_user = lookup_dn_search_user
        self._lookup_dn_search_password = lookup_dn_search_password
        self.lookup_dn_user_dn_attribute = lookup_dn_user_dn_attribute
        self.escape_userdn = escape_userdn
        self.search_filter = search_filter
        self.attributes = list(attributes or [])
        self.auth_state_attributes = list(auth_state_attributes or [])
        self.use_lookup_dn_username = use_lookup_dn_username
        self.confirmation_message = confirmation_message

    def __repr__(self) -> str:  # the search user's password stays out of logs
        return f"{type(self).__name__}({[f'{h}:{p}' for h, p in self.servers]!r})"

    async def authenticate(self, username: str, password: str) -> UserSessionState | None:
        from .utils import run_sync

        if not isinstance(username, str) or not self.valid_username.match(username):
            logger.warning("LDAP login refused: the username does not match valid_username_regex")
            return None
        if not isinstance(password, str) or not password.strip():
            return None  # an LDAP bind without a password is an anonymous bind: never a login
        return await run_sync(self._login, username, password)

    def _connection(self, dn: str | None, password: str | None) -> Any:
        import ldap3

        servers = [
            ldap3.Server(host, port=port, use_ssl=self.use_ssl,
                         connect_timeout=self.connect_timeout)
            for host, port in self.servers
        ]  # fmt: skip
        if len(servers) == 1:
            target = servers[0]
        else:
            # Each server tried once a connection (active=True would try them for ever).
            target = ldap3.ServerPool(servers, ldap3.ROUND_ROBIN, active=1, exhaust=False)
        tls = ldap3.AUTO_BIND_TLS_BEFORE_BIND if self.use_tls else ldap3.AUTO_BIND_NO_TLS
        return ldap3.Connection(
            target,
            user=dn,
            password=password,
            auto_bind=ldap3.AUTO_BIND_NO_TLS if self.use_ssl else tls,
            receive_timeout=self.receive_timeout,
        )

    def _bound(self, dn: str, password: str) -> Any:
        """A connection bound as ``dn``, or None if the directory refuses the password."""
        import ldap3

        try:
            return self._connection(dn, password)
        except ldap3.core.exceptions.LDAPBindError:
            return None
        except _unreachable() as error:
            raise IdentityProviderUnavailable(f"LDAP: {error}") from None
        except ldap3.core.exceptions.LDAPException as error:
            # e.g. a DN the template made of an odd username that is no DN at all
            logger.warning("LDAP login refused: cannot bind as %r: %s", dn, error)
            return None

    def _login(self, username: str, password: str) -> UserSessionState | None:
        import ldap3
        from ldap3.utils.conv import escape_filter_chars

        given = username
        templates = self.bind_dn_templates
        if self.lookup_dn:
            found = self._look_up(username)
            if found is None:
                return None
            username, found_dn = found
            if str(self.lookup_dn_user_dn_attribute).upper() == "CN":
                username = re.sub(r"(?<!\\),", r"\\,", username)  # a comma inside a CN
            templates = templates or [found_dn]
        connection, user_dn = None, None
        for template in templates:
            user_dn = template.format(username=username)
            if self.escape_userdn:
                user_dn = escape_filter_chars(user_dn)
            connection = self._bound(user_dn, password)
            if connection is not None:
                break
        if connection is None:
            logger.warning("LDAP login refused: wrong password or unknown user %r", given)
            return None
        with connection:
            try:
                if self.search_filter:
                    wanted = self.search_filter.format(
                        userattr=self.user_attribute, username=escape_filter_chars(username)
                    )
                    connection.search(self.user_search_base, wanted, ldap3.SUBTREE,
                                      attributes=self.attributes)  # fmt: skip
                    if len(connection.entries) != 1:
                        logger.warning(
                            "LDAP login refused: search_filter found %d entries for %r, not 1",
                            len(connection.entries), given,
                        )  # fmt: skip
                        return None
                if self.allowed_groups and not self._in_a_group(connection, user_dn, username):
                    logger.warning("LDAP login refused: %r is in none of allowed_groups", given)
                    return None
                state = self._state(connection, user_dn)
            except _unreachable() as error:
                raise IdentityProviderUnavailable(f"LDAP: {error}") from None
            except ldap3.core.exceptions.LDAPException as error:
                # A search the configuration makes and the directory refuses (a bad filter).
                logger.error("LDAP login refused: a search failed: %s", error)
                return None
        return UserSessionState(username if self.use_lookup_dn_username else given, state)

    def _look_up(self, username: str) -> tuple[str, str] | None:
        """The username (the ``lookup_dn_user_dn_attribute`` of the user's entry) and the
        entry's DN, found by a search as the search user; None if there is none."""
        import ldap3
        from ldap3.utils.conv import escape_filter_chars

        try:
            connection = self._connection(
                self.lookup_dn_search_user, self._lookup_dn_search_password
            )
        except ldap3.core.exceptions.LDAPBindError:
            logger.warning("LDAP: the search user cannot bind (lookup_dn_search_user)")
            return None
        except _unreachable() as error:
            raise IdentityProviderUnavailable(f"LDAP: {error}") from None
        wanted = self.lookup_dn_search_filter.format(
            login_attr=self.user_attribute, login=escape_filter_chars(username)
        )
        attribute = self.lookup_dn_user_dn_attribute
        with connection:
            try:
                connection.search(self.user_search_base, wanted, ldap3.SUBTREE,
                                  attributes=[attribute])  # fmt: skip
            except _unreachable() as error:
                raise IdentityProviderUnavailable(f"LDAP: {error}") from None
            except ldap3.core.exceptions.LDAPException as error:
                logger.error("LDAP login refused: the lookup_dn search failed: %s", error)
                return None
            entries = [e for e in connection.response if e.get("type") == "searchResEntry"]
        if not entries:
            logger.warning("LDAP login refused: no entry found for %r", username)
            return None
        value = entries[0]["attributes"].get(attribute)
        if isinstance(value, list):
            value = value[0] if value else None
        if not value:
            return None
        return str(value), entries[0]["dn"]

    def _in_a_group(self, connection: Any, user_dn: str, username: str) -> bool:
        import ldap3
        from ldap3.utils.conv import escape_filter_chars

        dn, uid = escape_filter_chars(user_dn), escape_filter_chars(username)
        membership = f"(|(member={dn})(uniqueMember={dn})(memberUid={uid}))"
        return any(
            connection.search(group, membership, ldap3.BASE, attributes=["cn"])
            for group in self.allowed_groups
        )

    def _state(self, connection: Any, user_dn: str) -> dict[str, Any]:
        """The ``auth_state_attributes`` of the user's entry, as JSON can hold them."""
        if not self.auth_state_attributes:
            return {}
        if not connection.search(user_dn, "(objectClass=*)", attributes=self.auth_state_attributes):
            return {}
        found = connection.entries[0].entry_attributes_as_dict
        return {name: [_text(v) for v in values] for name, values in found.items()}


def _text(value: Any) -> Any:
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return value if isinstance(value, str | int | float | bool) else str(value)


def _host_and_port(address: str, port: int | None, use_ssl: bool) -> tuple[str, int]:
    """``host:port`` or ``host`` (then ``port``, or 636 with SSL, 389 without)."""
    host, _, written = address.rpartition(":")
    if host and written.isdigit():
        return host, int(written)
    return address, port if port is not None else (636 if use_ssl else 389)


def _unreachable() -> tuple[type[Exception], ...]:
    """What ldap3 raises when no server of the directory can be used now."""
    from ldap3.core import exceptions

    return (
        exceptions.LDAPCommunicationError,
        exceptions.LDAPServerPoolExhaustedError,
        exceptions.LDAPStartTLSError,
    )
