"""Who wants to know of each database engine Tiled creates (the metrics count their pools).

The catalog and the authentication database announce each engine they create; a listener
(the server's metrics) sees each engine in use when it subscribes, and each one made later. A light module below both, so that neither
imports the server.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable
from typing import Any

_listeners: list[Callable[[Any], None]] = []
# Engines announced and still in use: a listener subscribing later sees them too.
_engines: weakref.WeakSet = weakref.WeakSet()


def subscribe(listener: Callable[[Any], None]) -> Callable[[], None]:
    """Call ``listener(engine)`` for each engine in use and each one created from now on;
    returns the way to stop."""
    _listeners.append(listener)
    for engine in list(_engines):
        listener(engine)
    return lambda: _listeners.remove(listener) if listener in _listeners else None


def announce(engine: Any) -> None:
    _engines.add(engine)
    for listener in list(_listeners):
        listener(engine)
