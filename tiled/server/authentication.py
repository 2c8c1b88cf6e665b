"""Turn a request's credentials into an :class:`Identity`."""

from __future__ import annotations

import hmac
import secrets

from fastapi import Request

from ..access.identity import Identity
from ..access.scopes import PUBLIC_SCOPES, SINGLE_USER_SCOPES
from ..config import Authentication
from ..errors import BadRequest, Unauthenticated

ANONYMOUS = Identity(principal=None, scopes=frozenset())
ANONYMOUS_PUBLIC = Identity(principal=None, scopes=PUBLIC_SCOPES)
SINGLE_USER = Identity(principal="single-user", scopes=SINGLE_USER_SCOPES, authenticated=True)


def credentials_from(request: Request) -> str | None:
    """The API key a request carries: ``?api_key=``, ``Authorization: Apikey``, or the cookie."""
    key = request.query_params.get("api_key")
    if key:
        return key
    header = request.headers.get("authorization")
    if header:
        scheme, _, secret = header.partition(" ")
        if scheme.lower() == "apikey" and secret.strip():
            return secret.strip()
        if scheme.lower() != "bearer" or not secret.strip():
            raise BadRequest(
                "Authorization header must include the authorization type followed by a space "
                "and then the secret, as in 'Bearer SECRET' or 'Apikey SECRET'. "
            )
        raise Unauthenticated("Could not validate credentials", {"WWW-Authenticate": "Bearer"})
    return request.cookies.get("tiled_api_key")


class SingleUserAuthenticator:
    """One API key with every scope; optionally anonymous read access."""

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


async def get_identity(request: Request) -> Identity:
    return await request.app.state.authenticator.identify(request)
