"""Who wants to know of each database engine Tiled creates (the metrics count their pools).

The catalog and the authentication database announce each engine they create; a listener
subscribed then (the server's metrics) sees it. A light module below both, so that neither
imports the server.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

_listeners: list[Callable[[Any], None]] = []


def subscribe(listener: Callable[[Any], None]) -> Callable[[], None]:
    """Call ``listener(engine)`` for each engine created from now on; returns the way to
    stop."""
    _listeners.append(listener)
    return lambda: _listeners.remove(listener) if listener in _listeners else None


def announce(engine: Any) -> None:
    for listener in list(_listeners):
        listener(engine)
