"""Errors, retries and small helpers shared by the client's modules."""

from __future__ import annotations

import logging
import os
import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx

# Statuses worth another try: the server or a proxy in front of it is briefly unavailable.
RETRY_STATUSES = frozenset({502, 503, 504})
# The client's HTTP timeouts, in seconds (upstream's name): long reads, for large chunks over
# slow links.
DEFAULT_TIMEOUT_PARAMS = {"connect": 30.0, "read": 120.0, "write": 30.0, "pool": 30.0}
TOO_MANY_REQUESTS = 429
retry_logger = logging.getLogger("tiled.client")


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


MSGPACK = "application/x-msgpack"
# What the client accepts for documents: msgpack first, JSON from servers without it.
DOCUMENT_TYPES = f"{MSGPACK}, application/json;q=0.9"


def decode_document(response: httpx.Response) -> Any:
    """The body of a document response, msgpack (timestamps as datetimes) or JSON."""
    if response.headers.get("content-type", "").split(";")[0].strip() == MSGPACK:
        import msgpack

        return msgpack.unpackb(response.content, timestamp=3)
    return response.json()


def handle_error(response: httpx.Response) -> httpx.Response:
    """``response`` if it succeeded; else a :class:`ClientError` carrying the ``detail``.

    A 429 (too many requests) is raised as a plain ``httpx.HTTPStatusError``, as upstream
    does: it is not the caller's mistake, and :func:`retry_context` sends it again after the
    server's ``Retry-After``."""
    if response.is_success or response.is_redirect:
        return response
    response.read()
    message = f"{response.status_code}: {detail_of(response)} {response.request.url}"
    if response.status_code == TOO_MANY_REQUESTS:
        raise httpx.HTTPStatusError(message, request=response.request, response=response)
    raise _BY_STATUS.get(response.status_code, ClientError)(
        message, request=response.request, response=response
    )


def _retry_after(response: httpx.Response) -> bool | float:
    """A 429's verdict: the server's ``Retry-After`` (seconds) if it gave one, else True
    (the usual backoff)."""
    try:
        return float(response.headers.get("retry-after", ""))
    except ValueError:
        return True


# Transport errors that no second try can mend: the request itself is wrong (a scheme
# like 'htps://', a header value with a line break).
NEVER_RETRIED = (httpx.UnsupportedProtocol, httpx.LocalProtocolError)


def should_retry(error: BaseException) -> bool | float:
    """Whether a failed request may succeed if sent again (the connection broke, the server
    was restarting, a proxy had no server for it, the server asked us to slow down). A float
    is how many seconds the server asked us to wait first."""
    if isinstance(error, httpx.HTTPStatusError):
        if error.response.status_code == TOO_MANY_REQUESTS:
            return _retry_after(error.response)
        return error.response.status_code in RETRY_STATUSES
    if isinstance(error, NEVER_RETRIED):
        return False
    return isinstance(error, httpx.TransportError)


# Failures after which a request surely never reached the server: safe to send again even
# when sending twice would not be (a POST creating a node, a PATCH appending rows).
NEVER_SENT = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)
# Answers saying the server did not act on the request: asked to slow down (429), or not
# serving at all (503).
NOT_PROCESSED = frozenset({TOO_MANY_REQUESTS, 503})


def should_retry_if_unprocessed(error: BaseException) -> bool | float:
    """:func:`should_retry` for requests that must not be applied twice: only failures that
    show the server never acted on the request are retried."""
    if isinstance(error, httpx.HTTPStatusError):
        if error.response.status_code == TOO_MANY_REQUESTS:
            return _retry_after(error.response)
        return error.response.status_code in NOT_PROCESSED
    return isinstance(error, NEVER_SENT)


def retry_attempts() -> int:
    return int(os.environ.get("TILED_RETRY_ATTEMPTS", "10"))


def retry_timeout() -> float:
    return float(os.environ.get("TILED_RETRY_TIMEOUT", "45"))


def retries_active() -> bool:
    """False when retries were switched off the way upstream's users switch them off:
    ``stamina.set_active(False)`` (upstream retries through stamina; test suites written for
    upstream turn it off so that failures surface at once). This package does not use
    stamina, and does not import it: only a stamina that the program loaded is asked."""
    stamina = sys.modules.get("stamina")
    is_active = getattr(stamina, "is_active", None)
    return bool(is_active()) if callable(is_active) else True


FIRST_WAIT = 0.1  # seconds before the second attempt; doubling after each failure
LONGEST_WAIT = 5.0


class Attempt:
    """One try of a :func:`retry_context` loop: ``with attempt: ...``.

    On leaving, a failure the policy deems retryable is held back (the loop goes on to the
    next attempt) while attempts and time remain; any other failure, or the last one, is
    raised."""

    def __init__(self, num: int, policy: Callable[[BaseException], bool | float],
                 last: bool, deadline: float, backoff: float):  # fmt: skip
        self.num = num
        self._policy = policy
        self._last = last
        self._deadline = deadline
        self._backoff = backoff
        self.failure: BaseException | None = None
        self.wait: float | None = None  # set when a retry is scheduled

    def __enter__(self) -> Attempt:
        return self

    def __exit__(self, exc_type: Any, error: BaseException | None, tb: Any) -> bool:
        if error is None or not isinstance(error, Exception) or self._last:
            return False
        verdict = self._policy(error)
        if verdict is False:
            return False
        # A float is the server's Retry-After; True means our own backoff.
        wait = self._backoff if verdict is True else max(float(verdict), 0.0)
        if time.monotonic() + wait > self._deadline:
            return False
        self.failure, self.wait = error, wait
        if isinstance(error, httpx.HTTPStatusError):
            error.response.close()  # this answer is dropped for the next one
        retry_logger.debug("Attempt %d failed with %r", self.num, error)
        return True


def retry_context(
    context: Any = None,
    *,
    on: Callable[[BaseException], bool | float] | None = None,
    attempts: int | None = None,
    timeout: float | None = None,
) -> Iterator[Attempt]:
    """Attempts at an operation, until one succeeds::

        for attempt in retry_context(context):
            with attempt:
                response = handle_error(context.http_client.get(url))

    A failure that ``on`` (default :func:`should_retry`) deems retryable is tried again after
    an exponential backoff (0.1 s doubling, at most 5 s) or the server's ``Retry-After``, for
    at most ``attempts`` tries (``TILED_RETRY_ATTEMPTS``, 10) and ``timeout`` seconds
    (``TILED_RETRY_TIMEOUT``, 45); other failures are raised at once. Retries are announced
    through ``context.signal_retry()`` (a spinner or a line on standard error; a standalone
    indicator without a context) and logged on the ``tiled.client`` logger at DEBUG.
    """
    policy = should_retry if on is None else on
    attempts = retry_attempts() if attempts is None else attempts
    if not retries_active():
        attempts = 1
    deadline = time.monotonic() + (retry_timeout() if timeout is None else timeout)
    standalone = StandaloneRetryIndicator() if context is None else None
    backoff = FIRST_WAIT
    try:
        num = 1
        while True:
            attempt = Attempt(num, policy, num >= max(attempts, 1), deadline, backoff)
            yield attempt
            if attempt.wait is None:  # it succeeded (a failure would have left the loop)
                return
            # Sleeping here (not in __exit__) lets a Ctrl-C end the loop and its indicator.
            time.sleep(attempt.wait)
            num += 1
            backoff = min(backoff * 2, LONGEST_WAIT)
            retry_logger.debug("Retrying (attempt %d)…", num)
            if context is not None:
                context.signal_retry()
            else:
                standalone.show()
    finally:
        # Whatever ended the loop (success, a failure raised, Ctrl-C during a wait).
        if standalone is not None:
            standalone.reset()
        elif context is not None:
            context.signal_retry_resolved()


class _RetryableAnswer(httpx.HTTPStatusError):
    """An answer worth sending the request again for, raised inside :func:`with_retries`."""


def with_retries(
    send: Callable[[], httpx.Response],
    *,
    context: Any = None,
    attempts: int | None = None,
    timeout: float | None = None,
    idempotent: bool = True,
) -> httpx.Response:
    """``send()`` through :func:`retry_context` until it answers something other than a
    retryable failure; the last answer is returned even if it is one (the caller checks it).
    Requests that must not be applied twice (``idempotent=False``) are retried only when
    the server surely did not act on them."""
    policy = should_retry if idempotent else should_retry_if_unprocessed
    retry_statuses = (RETRY_STATUSES | {TOO_MANY_REQUESTS}) if idempotent else NOT_PROCESSED
    try:
        for attempt in retry_context(context, on=policy, attempts=attempts, timeout=timeout):
            with attempt:
                response = send()
                if response.status_code in retry_statuses:
                    raise _RetryableAnswer(
                        f"{response.status_code} {response.reason_phrase}",
                        request=response.request, response=response,
                    )  # fmt: skip
    except _RetryableAnswer as exhausted:
        return exhausted.response
    return response


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


def _on_main_thread() -> bool:
    # Indicators are drawn from the main thread only: dask's worker threads, retrying their
    # own fetches, must not write over the terminal.
    return threading.current_thread() is threading.main_thread()


class ProgressState:
    """A progress bar being shown (``Context.tracking_progress``): fetches ``advance()`` it,
    and retries show a spinner under it (``show_retrying`` / ``hide_retrying``)."""

    __slots__ = ("_progress", "_task_id", "_spinner", "_live", "_retrying")

    def __init__(self, progress: Any, task_id: Any, spinner: Any):
        self._progress = progress  # a rich Progress
        self._task_id = task_id
        self._spinner = spinner
        self._live: Any = None  # the rich Live drawing the bar, once started
        self._retrying = False

    def advance(self) -> None:
        self._progress.advance(self._task_id)

    def show_retrying(self) -> None:
        if self._retrying:
            return
        self._retrying = True
        if self._live is not None:
            from rich.console import Group

            self._live.update(Group(self._progress, self._spinner))

    def hide_retrying(self) -> None:
        if not self._retrying:
            return
        self._retrying = False
        if self._live is not None:
            self._live.update(self._progress)


class StandaloneRetryIndicator:
    """Tells the user that requests are being retried, when no progress bar is shown: a
    spinner on a terminal, else one "Retrying…" line on standard error."""

    def __init__(self) -> None:
        self._showing = False
        self._live: Any = None

    def show(self) -> None:
        """Start showing (once; later calls do nothing until :meth:`reset`)."""
        if self._showing or not _on_main_thread():
            return
        self._showing = True
        if getattr(sys.stderr, "isatty", lambda: False)():
            from rich.console import Console
            from rich.live import Live
            from rich.spinner import Spinner

            spinner = Spinner("dots", text="[yellow]Retrying…[/yellow]")
            self._live = Live(spinner, console=Console(stderr=True), transient=True)
            self._live.start()
        else:
            sys.stderr.write("Retrying…\n")
            sys.stderr.flush()

    def reset(self) -> None:
        """Stop showing (a transient spinner disappears; a written line stays)."""
        if not self._showing or not _on_main_thread():
            return
        self._showing = False
        if self._live is not None:
            self._live.stop()
            self._live = None


class AttributeDict(dict):
    """A JSON object read by key or by attribute, at any depth: the server's about document
    as ``context.server_info`` (``server_info.authentication.providers[0].provider``, as
    upstream's model reads, and ``server_info["formats"]``)."""

    def __getattr__(self, name: str) -> Any:
        try:
            value = self[name]
        except KeyError:
            raise AttributeError(name) from None
        return _attribute_view(value)

    def __getitem__(self, key: Any) -> Any:
        return _attribute_view(super().__getitem__(key))

    def get(self, key: Any, default: Any = None) -> Any:
        return _attribute_view(super().get(key, default))


def _attribute_view(value: Any) -> Any:
    if isinstance(value, dict) and not isinstance(value, AttributeDict):
        return AttributeDict(value)
    if isinstance(value, list):
        return [_attribute_view(item) for item in value]
    return value


def json_body(value: Any) -> dict[str, Any]:
    """``httpx`` request arguments sending ``value`` as JSON, by the server's rule for metadata
    (``tiled.structures.json``); a value without a JSON form is refused (TypeError)."""
    from ..structures.json import dumps, refuse

    content = dumps(value, refuse)  # integers past 64 bits too (WideInteger, a TypeError)
    return {"content": content, "headers": {"Content-Type": "application/json"}}


def path_url(parts: list[str] | tuple[str, ...]) -> str:
    """The path segments of a node as a URL path (each segment quoted)."""
    from urllib.parse import quote

    return "/".join(quote(part, safe="") for part in parts)


__all__ = [
    "AttributeDict",
    "AuthenticationRequired",
    "ClientError",
    "DictView",
    "PermissionDenied",
    "ProgressState",
    "StandaloneRetryIndicator",
    "handle_error",
    "retry_context",
    "should_retry",
    "should_retry_if_unprocessed",
    "with_retries",
]


def slices_to_dask_chunks(
    slice_dict: dict[tuple[int, ...], Any], shape: tuple[int, ...]
) -> tuple[tuple[int, ...], ...]:
    """Dask's ``chunks`` for the pieces of a selection (``tiled.ndslice.split_slice``'s result:
    grid position -> slice of an array of ``shape``): per dimension kept, the sizes of the
    pieces in grid order."""
    sizes: list[dict[int, int]] = []
    for position, piece in slice_dict.items():
        piece_shape = piece.shape_after_slice(shape)
        if not sizes:
            sizes = [{} for _ in position]
        for axis, (index, size) in enumerate(zip(position, piece_shape, strict=True)):
            sizes[axis][index] = size
    return tuple(tuple(size for _, size in sorted(axis.items())) for axis in sizes)


def get_asset_filepaths(node: Any) -> list[Any]:
    """The local paths of the files holding a node's data (its data sources' assets); a
    ValueError for an asset that is not a local file."""
    from ..utils import path_from_uri

    return [
        path_from_uri(asset.data_uri)
        for source in node.data_sources() or []
        for asset in source.assets
    ]


__all__ += ["get_asset_filepaths", "slices_to_dask_chunks"]
