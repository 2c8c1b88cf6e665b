"""Errors, retries and small helpers shared by the client's modules."""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx

# Statuses worth another try: the server or a proxy in front of it is briefly unavailable.
RETRY_STATUSES = frozenset({502, 503, 504})


class ClientError(httpx.HTTPStatusError):
    """A 4xx or 5xx answer; the message is the server's ``detail``."""

    def __init__(self, message: str, request: httpx.Request, response: httpx.Response):
        super().__init__(message, request=request, response=response)

    @property
    def status_code(self) -> int:
        return self.response.status_code


class AuthenticationRequired(ClientError):
    """401: the server wants credentials (an API key, or ``context.authenticate()``)."""


class PermissionDenied(ClientError):
    """403: the credentials given may not do this."""


_BY_STATUS: dict[int, type[ClientError]] = {401: AuthenticationRequired, 403: PermissionDenied}


def detail_of(response: httpx.Response) -> str:
    """The server's explanation of an error answer."""
    try:
        body = response.json()
    except ValueError:
        return response.text or response.reason_phrase
    detail = body.get("detail") if isinstance(body, dict) else None
    return str(detail) if detail is not None else response.text


def handle_error(response: httpx.Response) -> httpx.Response:
    """``response`` if it succeeded; else a :class:`ClientError` carrying the ``detail``."""
    if response.is_success or response.is_redirect:
        return response
    response.read()
    message = f"{response.status_code}: {detail_of(response)} {response.request.url}"
    raise _BY_STATUS.get(response.status_code, ClientError)(
        message, request=response.request, response=response
    )


def should_retry(error: BaseException) -> bool:
    """Whether a failed request may succeed if sent again (the connection broke, the server
    was restarting, a proxy had no server for it)."""
    if isinstance(error, httpx.TransportError):
        return True
    if isinstance(error, httpx.HTTPStatusError):
        return error.response.status_code in RETRY_STATUSES
    return False


def retry_attempts() -> int:
    return int(os.environ.get("TILED_RETRY_ATTEMPTS", "10"))


def retry_timeout() -> float:
    return float(os.environ.get("TILED_RETRY_TIMEOUT", "45"))


# Failures after which a request surely never reached the server: safe to send again even
# when sending twice would not be (a POST creating a node, a PATCH appending rows).
NEVER_SENT = (httpx.ConnectError, httpx.ConnectTimeout)


def with_retries(
    send: Callable[[], httpx.Response],
    *,
    attempts: int | None = None,
    timeout: float | None = None,
    idempotent: bool = True,
) -> httpx.Response:
    """``send()`` until it answers something other than a retryable failure, with exponential
    backoff (0.1 s doubling, at most 5 s), for at most ``attempts`` tries and ``timeout``
    seconds; ``Retry-After`` is honoured when the server gives one."""
    attempts = retry_attempts() if attempts is None else attempts
    deadline = time.monotonic() + (retry_timeout() if timeout is None else timeout)
    delay = 0.1
    for attempt in range(1, max(attempts, 1) + 1):
        try:
            response = send()
        except httpx.TransportError as error:
            if attempt >= attempts or time.monotonic() + delay > deadline:
                raise
            if not idempotent and not isinstance(error, NEVER_SENT):
                raise  # it may have been processed: the caller decides
        else:
            retryable = RETRY_STATUSES if idempotent else {503}
            if response.status_code not in retryable or attempt >= attempts:
                return response
            after = response.headers.get("retry-after", "")
            if after.isdigit():
                delay = max(delay, float(after))
            if time.monotonic() + delay > deadline:
                return response
            response.close()
        time.sleep(delay)
        delay = min(delay * 2, 5.0)
    raise AssertionError("unreachable")  # pragma: no cover


@contextlib.contextmanager
def retry_context() -> Iterator[None]:
    """Kept for upstream's callers: retrying happens inside each request here."""
    yield


class DictView(dict):
    """A read-only dict (node metadata): change it with ``update_metadata``."""

    def _refuse(self, *args: Any, **kwargs: Any) -> None:
        raise TypeError(
            "Metadata is read-only here; use node.update_metadata(...) or node.metadata_copy()"
        )

    __setitem__ = __delitem__ = clear = pop = popitem = setdefault = update = _refuse  # type: ignore[assignment]
    __ior__ = _refuse  # type: ignore[assignment]  # ``metadata |= {...}`` would change it silently

    def __copy__(self) -> dict:
        return dict(self)

    def __deepcopy__(self, memo: dict) -> dict:
        import copy

        return copy.deepcopy(dict(self), memo)


def is_interactive() -> bool:
    """Whether someone watches: standard error is a terminal (progress bars appear only then)."""
    import sys

    return bool(getattr(sys.stderr, "isatty", lambda: False)())


def json_default(value: Any) -> Any:
    """JSON for what metadata often holds besides JSON: numpy values, dates, bytes (as a data
    URI, as upstream sends them)."""
    import base64
    import datetime

    if hasattr(value, "tolist"):  # numpy arrays and scalars
        return value.tolist()
    if isinstance(value, datetime.datetime | datetime.date):
        return value.isoformat()
    if isinstance(value, bytes):
        return "data:application/octet-stream;base64," + base64.b64encode(value).decode()
    if isinstance(value, set | frozenset | tuple):
        return list(value)
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")


def json_body(value: Any) -> dict[str, Any]:
    """``httpx`` request arguments sending ``value`` as JSON (with :func:`json_default`)."""
    import json

    content = json.dumps(value, default=json_default, allow_nan=False)
    return {"content": content, "headers": {"Content-Type": "application/json"}}


def path_url(parts: list[str] | tuple[str, ...]) -> str:
    """The path segments of a node as a URL path (each segment quoted)."""
    from urllib.parse import quote

    return "/".join(quote(part, safe="") for part in parts)


__all__ = [
    "AuthenticationRequired",
    "ClientError",
    "DictView",
    "PermissionDenied",
    "handle_error",
    "retry_context",
    "should_retry",
    "with_retries",
]
