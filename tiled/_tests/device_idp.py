"""A small but real OpenID Connect identity provider for tests, over HTTP on a loopback port.

Tests of the proxied-OIDC authenticator (the server checks IdP-issued access tokens against the
IdP's JWKS) and of the client's device-code login talk to it with ordinary HTTP clients, also
from subprocesses. It implements discovery, a JWKS with key rotation, the OAuth 2.0 Device
Authorization Grant (RFC 8628), the refresh-token grant with rotation, and logout. Access tokens
are RS256 JWTs carrying granted scopes in ``scp`` (the Microsoft Entra convention). Everything it
receives is recorded for assertions. Start one with :func:`run_idp`.
"""

from __future__ import annotations

import base64
import secrets
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from html import escape
from typing import Any
from urllib.parse import parse_qsl, unquote

import jwt
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Route

from tiled.client.context import DEVICE_GRANT
from tiled.server.simple import BackgroundServer

# No vowels, so no accidental words (RFC 8628 section 6.1).
_USER_CODE_ALPHABET = "BCDFGHJKLMNPQRSTVWXZ"
_AUTH_METHODS = ["none", "client_secret_post", "client_secret_basic"]
_NO_STORE = {"Cache-Control": "no-store"}  # token responses must not be cached (RFC 6749 5.1)


def _new_key() -> tuple[str, rsa.RSAPrivateKey]:
    return secrets.token_hex(8), rsa.generate_private_key(public_exponent=65537, key_size=2048)


def _error(code: str) -> JSONResponse:
    return JSONResponse({"error": code}, status_code=400, headers=_NO_STORE)


def _normalize(user_code: str) -> str:
    # People type codes in any case, with or without the dash.
    return "".join(c for c in user_code.upper() if c.isalnum())


async def _form(request: Request) -> dict[str, str]:
    # Parsed by hand: Starlette's request.form() needs python-multipart, which is not installed.
    form = dict(request.query_params)
    if request.method == "POST":
        form.update(parse_qsl((await request.body()).decode(), keep_blank_values=True))
    return form


def _client_id(request: Request, form: dict[str, str]) -> str | None:
    # client_secret_basic is advertised, so the id may come in the Authorization header.
    auth = request.headers.get("authorization", "")
    if auth[:6].lower() == "basic ":
        try:
            user = base64.b64decode(auth[6:]).decode().partition(":")[0]
        except ValueError:
            return None
        return unquote(user)  # form-encoded before Basic encoding (RFC 6749 2.3.1)
    return form.get("client_id")


@dataclass
class _Device:
    client_id: str
    user_code: str
    scopes: list[str]
    expires_at: float  # time.monotonic()
    status: str = "pending"  # pending | approved | denied | used
    subject: str = ""
    claims: dict[str, Any] = field(default_factory=dict)
    last_poll: float | None = None


@dataclass
class _Grant:
    """What a refresh token stands for."""

    client_id: str
    subject: str
    scopes: list[str]
    claims: dict[str, Any]
    expires_at: float  # time.time()


class IdP:
    """The provider; ``start``/``stop`` it, or use :func:`run_idp`."""

    def __init__(
        self,
        *,
        audience: str = "tiled-api",
        access_token_seconds: int = 300,
        refresh_token_seconds: int = 3600,
        interval: int = 1,
        extra_claims: dict[str, Any] | None = None,
        clients: tuple[str, ...] | list[str] = ("tiled-cli", "tiled"),
        auto_approve: dict[str, Any] | None = None,
        device_code_seconds: int = 600,
        port: int = 0,
    ):
        self.audience = audience
        self.access_token_seconds = access_token_seconds
        self.refresh_token_seconds = refresh_token_seconds
        self.interval = interval
        self.extra_claims = dict(extra_claims or {})
        self.clients = tuple(clients)
        self.auto_approve = auto_approve
        self.device_code_seconds = device_code_seconds
        # Handlers run on the server's thread while tests call approve() etc. from theirs;
        # reentrant because public methods call each other.
        self._lock = threading.RLock()
        self._kid, self._key = _new_key()
        self._published = {self._kid: self._key}
        self._foreign: tuple[str, rsa.RSAPrivateKey] | None = None
        self._devices: dict[str, _Device] = {}  # by device_code, in creation order
        self._by_user_code: dict[str, str] = {}
        self._refresh: dict[str, _Grant] = {}
        self.token_requests: list[dict[str, str]] = []
        self.device_requests: list[dict[str, str]] = []
        self.logouts: list[dict[str, str]] = []
        self.jwks_fetches = 0
        self._server = BackgroundServer(self._app(), port=port)
        self.url = ""

    def start(self) -> IdP:
        self._server.start()
        self.url = self._server.url
        return self

    def stop(self) -> None:
        self._server.stop()

    @property
    def issuer(self) -> str:
        return self.url

    @property
    def well_known_uri(self) -> str:
        return f"{self.url}/.well-known/openid-configuration"

    @property
    def kid(self) -> str:
        return self._kid

    # Keys and tokens

    def rotate_key(self, keep_old: bool = False) -> str:
        """Sign with a new key from now on; the JWKS keeps the old one only if ``keep_old``."""
        kid, key = _new_key()
        with self._lock:
            if not keep_old:
                self._published.clear()
            self._published[kid] = key
            self._kid, self._key = kid, key
        return kid

    def sign(self, claims: dict[str, Any], kid: str | None = None) -> str:
        """Sign any claims with the current key; ``kid`` overrides the header's key id."""
        with self._lock:
            key, kid = self._key, kid or self._kid
        return jwt.encode(claims, key, algorithm="RS256", headers={"kid": kid})

    def foreign_token(self, claims: dict[str, Any]) -> str:
        """Sign with a key the JWKS never publishes."""
        with self._lock:
            if self._foreign is None:
                self._foreign = _new_key()
            kid, key = self._foreign
        return jwt.encode(claims, key, algorithm="RS256", headers={"kid": kid})

    def issue_access_token(
        self,
        subject: str = "alice",
        scopes: list[str] | tuple[str, ...] = (),
        client_id: str = "tiled-cli",
        claims: dict[str, Any] | None = None,
    ) -> str:
        """An access token as the token endpoint would issue it, without a flow."""
        now = int(time.time())
        return self.sign(
            {
                "iss": self.issuer,
                "aud": self.audience,
                "sub": subject,
                "azp": client_id,
                "iat": now,
                "nbf": now,
                "exp": now + self.access_token_seconds,
                "jti": uuid.uuid4().hex,
                "scp": " ".join(scopes),
                "preferred_username": f"{subject}@example.org",
                **self.extra_claims,
                **(claims or {}),  # last, so tests can override anything above
            }
        )

    # Approval, as the person at the browser would give it

    def _pending(self, user_code: str | None) -> _Device:
        now = time.monotonic()
        if user_code is None:
            pending = [
                d for d in self._devices.values() if d.status == "pending" and now <= d.expires_at
            ]
            if not pending:
                raise LookupError("No pending device code")
            return pending[-1]
        device = self._devices.get(self._by_user_code.get(_normalize(user_code), ""))
        if device is None or device.status != "pending" or now > device.expires_at:
            raise LookupError(f"No pending device code with user code {user_code!r}")
        return device

    def approve(
        self,
        user_code: str | None = None,
        subject: str = "alice",
        scopes: list[str] | None = None,
        claims: dict[str, Any] | None = None,
    ) -> None:
        """Approve a pending device code (the newest if no ``user_code``); ``scopes`` default
        to those requested. Raises LookupError if there is no such pending code."""
        with self._lock:
            device = self._pending(user_code)
            device.status, device.subject = "approved", subject
            if scopes is not None:
                device.scopes = list(scopes)
            device.claims = dict(claims or {})

    def deny(self, user_code: str | None = None) -> None:
        with self._lock:
            self._pending(user_code).status = "denied"

    def revoke_refresh_tokens(self, subject: str | None = None) -> int:
        """Revoke the subject's refresh tokens (everyone's if None); return how many."""
        with self._lock:
            doomed = [t for t, g in self._refresh.items() if subject in (None, g.subject)]
            for token in doomed:
                del self._refresh[token]
        return len(doomed)

    # HTTP

    def _app(self) -> Starlette:
        return Starlette(
            routes=[
                Route("/.well-known/openid-configuration", self._discovery),
                Route("/jwks", self._jwks),
                Route("/authorize", self._authorize, methods=["GET", "POST"]),
                Route("/device", self._device, methods=["POST"]),
                Route("/verify", self._verify, methods=["GET", "POST"]),
                Route("/token", self._token, methods=["POST"]),
                Route("/logout", self._logout, methods=["GET", "POST"]),
            ]
        )

    async def _discovery(self, request: Request) -> Response:
        url = self.url
        return JSONResponse(
            {
                "issuer": self.issuer,
                "authorization_endpoint": f"{url}/authorize",
                "token_endpoint": f"{url}/token",
                "jwks_uri": f"{url}/jwks",
                "device_authorization_endpoint": f"{url}/device",
                "end_session_endpoint": f"{url}/logout",
                "response_types_supported": ["code"],
                "subject_types_supported": ["public"],
                "id_token_signing_alg_values_supported": ["RS256"],
                "grant_types_supported": [DEVICE_GRANT, "refresh_token"],
                "token_endpoint_auth_methods_supported": _AUTH_METHODS,
            }
        )

    async def _jwks(self, request: Request) -> Response:
        with self._lock:
            self.jwks_fetches += 1
            published = list(self._published.items())
        keys = [
            {
                **RSAAlgorithm.to_jwk(k.public_key(), as_dict=True),
                "kid": kid,
                "use": "sig",
                "alg": "RS256",
            }
            for kid, k in published
        ]
        return JSONResponse({"keys": keys})

    async def _authorize(self, request: Request) -> Response:
        # Only the device flow is offered; the endpoint exists because discovery requires it.
        return JSONResponse({"error": "unsupported_response_type"}, status_code=400)

    async def _device(self, request: Request) -> Response:
        form = await _form(request)
        client_id = _client_id(request, form)
        with self._lock:
            self.device_requests.append(form)
            if client_id not in self.clients:
                return _error("invalid_client")
            device_code = secrets.token_urlsafe(32)
            while True:
                raw = "".join(secrets.choice(_USER_CODE_ALPHABET) for _ in range(8))
                if raw not in self._by_user_code:
                    break
            user_code = f"{raw[:4]}-{raw[4:]}"
            self._devices[device_code] = _Device(
                client_id,
                user_code,
                form.get("scope", "").split(),
                time.monotonic() + self.device_code_seconds,
            )
            self._by_user_code[raw] = device_code
            if self.auto_approve is not None:
                self.approve(user_code, **self.auto_approve)
        return JSONResponse(
            {
                "device_code": device_code,
                "user_code": user_code,
                "verification_uri": f"{self.url}/verify",
                "verification_uri_complete": f"{self.url}/verify?user_code={user_code}",
                "expires_in": self.device_code_seconds,
                "interval": self.interval,
            },
            headers=_NO_STORE,
        )

    async def _verify(self, request: Request) -> Response:
        form = await _form(request)
        if request.method == "GET":
            code = escape(form.get("user_code", ""))
            return HTMLResponse(
                '<form method="post" action="/verify">'
                f'Code <input name="user_code" value="{code}"> '
                'User <input name="subject" value="alice"> '
                'Scopes <input name="scopes" placeholder="as requested"> '
                '<button>Approve</button> <button name="action" value="deny">Deny</button>'
                "</form>"
            )
        try:
            if form.get("action") == "deny":
                self.deny(form.get("user_code", ""))
            else:
                scopes = form.get("scopes")  # a blank field means "as requested"
                self.approve(
                    form.get("user_code", ""),
                    subject=form.get("subject") or "alice",
                    scopes=scopes.split() if scopes else None,
                )
        except LookupError:
            return HTMLResponse("<p>Unknown or expired code.</p>", status_code=400)
        return HTMLResponse("<p>Done. You may close this window.</p>")

    async def _token(self, request: Request) -> Response:
        form = await _form(request)
        client_id = _client_id(request, form)
        with self._lock:
            self.token_requests.append(form)
            grant_type = form.get("grant_type")
            if grant_type not in (DEVICE_GRANT, "refresh_token"):
                return _error("unsupported_grant_type")
            if client_id not in self.clients:
                return _error("invalid_client")
            if grant_type == DEVICE_GRANT:
                return self._device_grant(form.get("device_code", ""), client_id)
            token = form.get("refresh_token", "")
            grant = self._refresh.get(token)
            if grant is None or grant.expires_at < time.time() or grant.client_id != client_id:
                return _error("invalid_grant")
            del self._refresh[token]  # rotation: each refresh token works once
            return self._tokens(client_id, grant.subject, grant.scopes, grant.claims)

    def _device_grant(self, device_code: str, client_id: str) -> Response:
        now = time.monotonic()
        device = self._devices.get(device_code)
        if device is None or device.status == "used":
            return _error("invalid_grant")
        if device.client_id != client_id:
            return _error("invalid_client")
        if now > device.expires_at:
            return _error("expired_token")
        # A little slack, so a client sleeping exactly `interval` is never told to slow down.
        too_fast = (
            self.interval > 0
            and device.last_poll is not None
            and now - device.last_poll < self.interval - 0.05
        )
        device.last_poll = now
        if device.status == "denied":
            return _error("access_denied")
        if device.status == "pending":
            return _error("slow_down" if too_fast else "authorization_pending")
        device.status = "used"
        return self._tokens(client_id, device.subject, device.scopes, device.claims)

    def _tokens(
        self, client_id: str, subject: str, scopes: list[str], claims: dict[str, Any]
    ) -> Response:
        refresh_token = secrets.token_urlsafe(32)
        self._refresh[refresh_token] = _Grant(
            client_id, subject, scopes, claims, time.time() + self.refresh_token_seconds
        )
        now = int(time.time())
        id_token = self.sign(
            {
                "iss": self.issuer,
                "sub": subject,
                "aud": client_id,
                "iat": now,
                "exp": now + self.access_token_seconds,
                "preferred_username": f"{subject}@example.org",
            }
        )
        return JSONResponse(
            {
                "access_token": self.issue_access_token(subject, scopes, client_id, claims),
                "token_type": "Bearer",
                "expires_in": self.access_token_seconds,
                "refresh_token": refresh_token,
                "refresh_expires_in": self.refresh_token_seconds,
                "id_token": id_token,
                "scope": " ".join(scopes),
            },
            headers=_NO_STORE,
        )

    async def _logout(self, request: Request) -> Response:
        form = await _form(request)
        with self._lock:
            self.logouts.append(form)
        hint = form.get("id_token_hint")
        if hint:
            # Expired or rotated-out hints are normal at logout, so the signature is not checked.
            try:
                subject = jwt.decode(hint, options={"verify_signature": False}).get("sub")
            except jwt.InvalidTokenError:
                return _error("invalid_request")
            if subject:
                self.revoke_refresh_tokens(subject)
        return HTMLResponse("<p>Signed out.</p>")


@contextmanager
def run_idp(**options: Any) -> Iterator[IdP]:
    """Serve an :class:`IdP` (keyword ``options`` as its constructor) until the block exits."""
    idp = IdP(**options).start()
    try:
        yield idp
    finally:
        idp.stop()
