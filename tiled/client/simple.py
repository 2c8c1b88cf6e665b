"""``tiled.client.simple()``: a throw-away server and a client of it, in one call."""

from __future__ import annotations

from pathlib import Path
from typing import Any

# The servers simple() started, kept running until closed (``SERVERS.pop().close()``) or until
# Python exits; upstream's name.
SERVERS: list[Any] = []


def simple(
    directory: str | Path | None = None,
    api_key: str | None = None,
    port: int = 0,
    readable_storage: str | Path | list[str | Path] | None = None,
    quiet: bool = False,
) -> Any:
    """Start a :class:`~tiled.server.simple.SimpleTiledServer` (recorded in :data:`SERVERS`)
    and return a client of its root; ``client.server`` is the server too."""
    from ..server.simple import SimpleTiledServer
    from .constructors import from_uri

    server = SimpleTiledServer(directory, api_key, port, readable_storage)
    SERVERS.append(server)
    if not quiet:
        print(f"Tiled server running at {server.uri}")
    client = from_uri(server.uri)
    client.server = server
    return client


__all__ = ["SERVERS", "simple"]
