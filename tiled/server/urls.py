"""The absolute base URL of the API, as the client reached it, and node paths in links."""

import functools
from collections.abc import Iterable
from urllib.parse import quote

from fastapi import Request

from .headers import header_map

# What a path segment may hold as is (RFC 3986 pchar, besides letters, digits and "-._~"):
# a key's "?", "#", "%", spaces and non-ASCII letters are percent-encoded in links.
_SEGMENT_SAFE = "!$&'()*+,;=:@"


def _origin(request: Request) -> str:
    headers = header_map(request)
    host = headers.get("x-forwarded-host") or headers.get("host") or "localhost"
    scheme = headers.get("x-forwarded-proto") or request.scope.get("scheme", "http")
    return f"{scheme}://{host}"


def base_url(request: Request) -> str:
    return f"{_origin(request)}{request.scope.get('root_path', '')}/api/v1"


def request_url_without_query(request: Request) -> str:
    """The URL of ``request`` as the client sent it, without the query (a login's redirect
    URI, which must be the same when the code is exchanged)."""
    root_path, path = request.scope.get("root_path", ""), request.scope.get("path", "")
    # Servers differ on whether the path includes the root path.
    if not path.startswith(root_path):
        path = root_path + path
    return f"{_origin(request)}{path}"


def url_path(parts: Iterable[str]) -> str:
    """A node's path as it goes into a link (each key percent-encoded where it must be)."""
    return _encoded_path(parts if type(parts) is tuple else tuple(parts))


# Every metadata answer links its node: the same few paths are asked for over and over, and
# quoting costs more than finding the answer again.
@functools.lru_cache(maxsize=4096)
def _encoded_path(parts: tuple[str, ...]) -> str:
    return "/".join(quote(part, safe=_SEGMENT_SAFE) for part in parts)
