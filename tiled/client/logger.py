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
    """An httpx event hook: every context's client calls it (cheap unless logging is on).
    The request rides along on the record, for :func:`record_history`."""
    if logger.isEnabledFor(logging.DEBUG):
        logger.debug("-> %s %s", request.method, request.url, extra={"request": request})


def log_response(response: Any) -> None:
    if logger.isEnabledFor(logging.DEBUG):
        logger.debug(
            "<- %s %s", response.status_code, response.request.url, extra={"response": response}
        )


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
    """Record the requests sent inside the block, from any thread: ``with record_history()
    as h: ...``; ``h.requests`` (``httpx.Request``), ``h.responses`` (``httpx.Response``),
    as upstream."""
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
        self.requests: list[Any] = []
        self.responses: list[Any] = []


class _Recorder(logging.Handler):
    def __init__(self, history: History):
        super().__init__(logging.DEBUG)
        self.history = history

    def emit(self, record: logging.LogRecord) -> None:
        if hasattr(record, "request"):
            self.history.requests.append(record.request)
        elif hasattr(record, "response"):
            self.history.responses.append(record.response)


__all__ = ["hide_logs", "record_history", "show_logs"]
