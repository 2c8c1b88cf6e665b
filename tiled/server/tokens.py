"""Signed JSON Web Tokens (HS256) for multi-user servers: access and refresh tokens."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from ..errors import Unauthenticated
from .credentials import BEARER_CHALLENGE, INVALID_TOKEN

EXPIRED_ACCESS_TOKEN = "Access token has expired. Refresh token."
EXPIRED_SESSION = "Session has expired. Please re-authenticate."


class TokenSigner:
    """HS256 JWTs: signed with the first secret key, verified with any of them (so that keys
    can be rotated without ending every session)."""

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

    def decode(
        self, token: str, kind: str, expired_message: str, verify_exp: bool = True
    ) -> dict[str, Any]:
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
                raise Unauthenticated(expired_message, BEARER_CHALLENGE) from None
            except jwt.InvalidSignatureError:
                continue
            except jwt.InvalidTokenError:
                break
            if claims.get("type") == kind and isinstance(claims.get(subject), str):
                return claims
            break
        raise Unauthenticated(INVALID_TOKEN, BEARER_CHALLENGE)


def create_access_token(data: dict[str, Any], secret_key: str, expires_delta: timedelta) -> str:
    """An access token with the claims ``data``, signed with ``secret_key``, expiring after
    ``expires_delta`` (negative: already expired). Upstream's name, for tests and tools that
    mint tokens."""
    return TokenSigner([secret_key]).encode({**data, "type": "access"}, expires_delta)


def decode_token(token: str, secret_keys: list[str]) -> dict[str, Any]:
    """The claims of an access token signed with any of ``secret_keys``; Unauthenticated if
    it is invalid or expired. Upstream's name, for tests and tools."""
    return TokenSigner(secret_keys).decode(token, "access", EXPIRED_ACCESS_TOKEN)
