"""Who wants to know of each database engine Tiled creates, and of its pool's events.

The catalog and the authentication database announce each engine they create, before its
first connection; a listener (the server's metrics) sees each engine in use when it
subscribes, and each one made later. The pool's events (connections opened, checked out, ...)
reach the pool watchers through listeners attached once, when the engine is announced: adding
a SQLAlchemy listener to a pool that is opening a connection at that moment, in another thread
or task, breaks that connection ("deque mutated during iteration"), so watchers come and go
here instead. A light module below both, so that neither imports the server.
"""

from __future__ import annotations

import functools
import weakref
from collections.abc import Callable
from typing import Any

# The events of a SQLAlchemy pool passed on to the watchers.
POOL_EVENTS = ("connect", "close", "checkout", "checkin", "invalidate", "reset")

_listeners: list[Callable[[Any], None]] = []
_pool_watchers: list[Callable[[Any, str], None]] = []
# Engines announced and still in use: a listener subscribing later sees them too.
_engines: weakref.WeakSet = weakref.WeakSet()


def subscribe(listener: Callable[[Any], None]) -> Callable[[], None]:
    """Call ``listener(engine)`` for each engine in use and each one created from now on;
    returns the way to stop."""
    _listeners.append(listener)
    for engine in list(_engines):
        listener(engine)
    return lambda: _listeners.remove(listener) if listener in _listeners else None


def watch_pools(watcher: Callable[[Any, str], None]) -> Callable[[], None]:
    """Call ``watcher(engine, event)`` for each event (:data:`POOL_EVENTS`) of the pool of
    every engine announced; returns the way to stop."""
    _pool_watchers.append(watcher)
    return lambda: _pool_watchers.remove(watcher) if watcher in _pool_watchers else None


def announce(engine: Any) -> None:
    """Make ``engine`` known (call it before the engine's first connection)."""
    from sqlalchemy import event

    reference = weakref.ref(engine)
    for name in POOL_EVENTS:
        event.listen(engine.sync_engine.pool, name, functools.partial(_pass_on, reference, name))
    _engines.add(engine)
    for listener in list(_listeners):
        listener(engine)


def _pass_on(reference: weakref.ref, name: str, *_: Any) -> None:
    engine = reference()
    if engine is not None:
        for watcher in list(_pool_watchers):
            watcher(engine, name)
