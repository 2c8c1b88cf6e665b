"""``tiled.client.simple()``: a throw-away server and a client of it, in one call."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def simple(
    directory: str | Path | None = None,
    api_key: str | None = None,
    port: int = 0,
    readable_storage: list[str | Path] | None = None,
    quiet: bool = False,
) -> Any:
    """Start a :class:`~tiled.server.simple.SimpleTiledServer` and return a client of its root
    (the server stops when the interpreter exits)."""
    from ..server.simple import SimpleTiledServer
    from .constructors import from_uri

    server = SimpleTiledServer(directory, api_key, port, readable_storage)
    if not quiet:
        print(f"Tiled server running at {server.uri}")
    client = from_uri(server.uri)
    client.server = server  # keeps it alive as long as the client
    return client


__all__ = ["simple"]
