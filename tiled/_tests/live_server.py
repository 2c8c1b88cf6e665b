"""A real uvicorn server on a free loopback port, in a background thread."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from tiled.server.simple import BackgroundServer as LiveServer


@contextmanager
def serve(app) -> Iterator[LiveServer]:
    server = LiveServer(app).start()
    try:
        yield server
    finally:
        server.stop()
