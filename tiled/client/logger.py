"""Logging of the client's HTTP traffic: ``show_logs()`` prints each request and answer."""

from __future__ import annotations

import contextlib
import logging
import sys
from collections.abc import Iterator
from typing import Any

logger = logging.getLogger("tiled.client")
_handler: logging.Handler | None = None


def log_request(request: Any) -> None:
    """An httpx event hook: every context's client calls it (cheap unless logging is on)."""
    if logger.isEnabledFor(logging.DEBUG):
        logger.debug("-> %s %s", request.method, request.url)


def log_response(response: Any) -> None:
    if logger.isEnabledFor(logging.DEBUG):
        logger.debug("<- %s %s", response.status_code, response.request.url)


def show_logs(level: int = logging.DEBUG) -> None:
    """Print every request the client sends and the status it gets, to standard error."""
    global _handler
    if _handler is None:
        _handler = logging.StreamHandler(sys.stderr)
        _handler.setFormatter(logging.Formatter("%(message)s"))
        logger.addHandler(_handler)
    logger.setLevel(level)


def hide_logs() -> None:
    global _handler
    if _handler is not None:
        logger.removeHandler(_handler)
        _handler = None
    logger.setLevel(logging.WARNING)


@contextlib.contextmanager
def record_history() -> Iterator[History]:
    """Record the requests sent inside the block: ``with record_history() as h: ...``;
    ``h.requests``, ``h.responses``."""
    history = History()
    handler = _Recorder(history)
    logger.addHandler(handler)
    previous = logger.level
    logger.setLevel(logging.DEBUG)
    try:
        yield history
    finally:
        logger.removeHandler(handler)
        logger.setLevel(previous)


class History:
    def __init__(self) -> None:
        self.requests: list[str] = []
        self.responses: list[str] = []


class _Recorder(logging.Handler):
    def __init__(self, history: History):
        super().__init__(logging.DEBUG)
        self.history = history

    def emit(self, record: logging.LogRecord) -> None:
        text = record.getMessage()
        (self.history.requests if text.startswith("->") else self.history.responses).append(
            text[3:]
        )


__all__ = ["hide_logs", "record_history", "show_logs"]
