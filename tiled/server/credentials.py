"""The credentials a request carries, read in upstream's order of precedence.

``?api_key=``, then ``Authorization: Apikey SECRET``, then the ``tiled_api_key`` cookie, then
``Authorization: Bearer TOKEN``. Secrets never appear in messages or logs.
"""

from __future__ import annotations

from dataclasses import dataclass

from starlette.requests import Request, cookie_parser

from ..errors import BadRequest, Unauthenticated

# The challenge a 401 sends where a (new) bearer token would be accepted.
BEARER_CHALLENGE = {"WWW-Authenticate": "Bearer"}
INVALID_TOKEN = "Could not validate credentials"


@dataclass(frozen=True)
class Credentials:
    kind: str  # "apikey" or "bearer"
    secret: str
    source: str  # "query", "header" or "cookie"


def request_cookies(headers: list[tuple[bytes, bytes]]) -> dict[str, str]:
    """The cookies of every ``Cookie`` header, in order (HTTP/2 clients may split them over
    several), so that whoever reads them (credentials, the CSRF check) reads the same ones."""
    found = [value.decode("latin-1") for name, value in headers if name == b"cookie"]
    return cookie_parser("; ".join(found)) if found else {}


def read_credentials(request: Request) -> Credentials | None:
    """The first credential a request carries, in upstream's order of precedence; None if it
    carries none. A malformed ``Authorization`` header is a 400."""
    # Every request asks this: one pass over the raw headers, and the query string is parsed
    # only when it may hold a key.
    if b"api_key" in request.scope.get("query_string", b""):
        key = request.query_params.get("api_key")
        if key:
            return Credentials("apikey", key, "query")
    header = None
    has_cookies = False
    for name, value in request.scope["headers"]:
        if name == b"authorization" and header is None:
            header = value.decode("latin-1")
        elif name == b"cookie":
            has_cookies = True
    bearer_token = None
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
        bearer_token = secret
    # Upstream's order: the cookie outranks a bearer token, though not an Apikey header.
    cookie = request_cookies(request.scope["headers"]).get("tiled_api_key") if has_cookies else None
    if cookie:
        return Credentials("apikey", cookie, "cookie")
    return Credentials("bearer", bearer_token, "header") if bearer_token else None


def read_api_key(request: Request) -> str | None:
    """The API key a request carries, for servers without logins, where a bearer token can
    only be invalid (401); None if it carries no credentials."""
    credentials = read_credentials(request)
    if credentials is None:
        return None
    if credentials.kind == "bearer":
        raise Unauthenticated(INVALID_TOKEN, BEARER_CHALLENGE)
    return credentials.secret
