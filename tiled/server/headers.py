"""A request's headers as a plain dict, made once per request.

Starlette's ``request.headers.get`` scans and decodes the whole header list on every call, and
the metadata routes ask several headers of each request (host, forwarding, accept, encodings,
client version, conditionals): one pass into a dict costs less than two such scans.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

_KEY = "tiled.headers"


def header_map(request: Any) -> dict[str, str]:
    """Header names (lower case, as ASGI gives them) to values; the first of a repeated header
    wins, as Starlette's ``headers.get`` answers."""
    scope = request.scope
    found = scope.get(_KEY)
    if found is None:
        found = {}
        for name, value in scope["headers"]:
            found.setdefault(name.decode("latin-1"), value.decode("latin-1"))
        scope[_KEY] = found
    return found


def header(request: Any, name: str, default: str = "") -> str:
    """The value of header ``name`` (lower case) of ``request``, or ``default``."""
    return header_map(request).get(name, default)


def attachment(filename: str) -> str:
    """A ``Content-Disposition`` naming ``filename`` safely (RFC 6266): an ASCII ``filename``
    for every client, and the exact name as ``filename*`` where it is not plain ASCII. A name
    holding quotes or line breaks cannot add parameters or headers."""
    printable = "".join(c for c in filename if c.isprintable())
    fallback = "".join(c if c.isascii() and c not in '"\\' else "_" for c in printable)
    disposition = f'attachment; filename="{fallback}"'
    if fallback != printable:
        disposition += f"; filename*=UTF-8''{quote(printable, safe='')}"
    return disposition
