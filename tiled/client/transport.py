"""The client's httpx transport: answers from a :class:`~tiled.client.cache.Cache` when the
server confirms them, and the proxies of the environment.

httpx reads ``HTTP_PROXY``, ``HTTPS_PROXY``, ``ALL_PROXY`` and ``NO_PROXY`` only for the transport
it builds itself; a client given a transport (this one) would connect directly, so
:class:`Transport` routes by those variables itself.
"""

from __future__ import annotations

import email.utils
import logging
import sqlite3
import time
import urllib.request
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import httpx

if TYPE_CHECKING:
    from .cache import Cache

logger = logging.getLogger(__name__)

# The proxy variables that route requests, by URL scheme; "all" serves any scheme without one.
PROXY_SCHEMES = ("http", "https", "all")
# Answers worth keeping: complete representations (not redirects, errors or partial content).
CACHEABLE_STATUSES = frozenset({httpx.codes.OK, httpx.codes.NON_AUTHORITATIVE_INFORMATION})


def proxies_from_env() -> dict[str, str]:
    """The proxy variables of the environment (either case), by scheme: ``{"https": url, "no":
    "host,..."}``. Python's reading of them, which also ignores ``HTTP_PROXY`` under CGI."""
    return {
        scheme: url
        for scheme, url in urllib.request.getproxies_environment().items()
        if scheme in (*PROXY_SCHEMES, "no") and url
    }


def cache_control(headers: httpx.Headers) -> dict[str, str | None]:
    """The directives of the ``Cache-Control`` headers: ``{"max-age": "60", "no-store": None}``."""
    directives: dict[str, str | None] = {}
    for directive in headers.get_list("cache-control", split_commas=True):
        name, sep, value = directive.partition("=")
        directives[name.strip().lower()] = value.strip().strip('"') if sep else None
    return directives


def _seconds(value: str | None) -> int | None:
    return int(value) if value is not None and value.isdigit() else None


def is_fresh(response: httpx.Response, now: float | None = None) -> bool:
    """Whether a kept answer may be used without asking the server: it has a ``max-age`` it
    has not outlived (dated by its ``Date`` header) and does not ask to be revalidated."""
    directives = cache_control(response.headers)
    if "no-cache" in directives:
        return False
    max_age = _seconds(directives.get("max-age"))
    date = response.headers.get("date")
    if not max_age or date is None:
        return False
    try:
        sent = email.utils.parsedate_to_datetime(date).timestamp()
    except (TypeError, ValueError):
        return False
    return (time.time() if now is None else now) - sent < max_age


def is_cacheable_request(request: httpx.Request) -> bool:
    """Whether the answer to ``request`` may come from, or go to, the cache: a plain GET.
    Requests carrying their own conditions or ranges, or refusing caches, are the caller's."""
    if request.method != "GET" or request.url.is_relative_url:
        return False
    headers = request.headers
    if any(name in headers for name in ("range", "if-none-match", "if-modified-since")):
        return False
    directives = cache_control(headers)
    return "no-store" not in directives and "no-cache" not in directives


def is_storable(response: httpx.Response) -> bool:
    """Whether an answer is worth keeping: a complete one the cache can later tell current,
    by its ``ETag`` (revalidated) or its ``max-age`` (dated)."""
    if response.status_code not in CACHEABLE_STATUSES:
        return False
    directives = cache_control(response.headers)
    if "no-store" in directives or response.headers.get("vary", "").strip() == "*":
        return False
    return "etag" in response.headers or bool(_seconds(directives.get("max-age")))


def _quietly(operation: Any, *args: Any) -> Any:
    """``operation(*args)``, or None if the cache file fails (locked past its timeout, disk
    full, closed): a cache is an optimization, and the request goes on without it."""
    try:
        return operation(*args)
    except sqlite3.Error as error:
        logger.warning("The HTTP response cache is unavailable (%s); going without it", error)
        return None


class _RecordingStream(httpx.SyncByteStream):
    """The body of an answer as it is read by the caller, handed to ``on_complete`` once it
    has all been read; past ``limit`` bytes no copy is held and ``on_complete`` gets None."""

    def __init__(self, stream: httpx.SyncByteStream, limit: int, on_complete: Any):
        self._stream = stream
        self._limit = limit
        self._on_complete = on_complete
        self._chunks: list[bytes] | None = []
        self._size = 0

    def __iter__(self) -> Iterator[bytes]:
        for chunk in self._stream:
            if self._chunks is not None:
                self._size += len(chunk)
                if self._size > self._limit:
                    self._chunks = None  # too large to keep: stop holding a copy
                else:
                    self._chunks.append(chunk)
            yield chunk
        self._on_complete(None if self._chunks is None else b"".join(self._chunks))

    def close(self) -> None:
        self._stream.close()


class Transport(httpx.BaseTransport):
    """Sends requests through ``transport`` (default: an ``httpx.HTTPTransport`` with
    ``verify`` and ``limits``, routed through the environment's proxies when ``trust_env``),
    with answers kept in and served from ``cache`` (None: no caching).

    ``cache`` may be replaced at any time (``context.cache = ...``).
    """

    def __init__(
        self,
        *,
        transport: httpx.BaseTransport | None = None,
        cache: Cache | None = None,
        limits: httpx.Limits | None = None,
        verify: Any = True,
        trust_env: bool = True,
    ):
        self.cache = cache
        # Proxy routes: scheme ("http", "https", "all") -> the transport through its proxy.
        self._mounts: dict[str, httpx.BaseTransport] = {}
        # Hosts to reach directly whatever the proxies (NO_PROXY), as urllib reads them.
        self._no_proxy: str = ""
        if transport is not None:
            # Given (an in-process app's transport): it decides how to connect.
            self.transport = transport
            return
        options: dict[str, Any] = {"verify": verify}
        if limits is not None:
            options["limits"] = limits
        self.transport = httpx.HTTPTransport(**options)
        if trust_env:
            proxies = proxies_from_env()
            self._no_proxy = proxies.pop("no", "")
            self._mounts = {
                scheme: httpx.HTTPTransport(proxy=url, **options) for scheme, url in proxies.items()
            }

    def _transport_for_url(self, url: httpx.URL) -> httpx.BaseTransport:
        """The transport that reaches ``url``: through the proxy of its scheme (or of all
        schemes) unless its host is one of ``NO_PROXY``; else directly."""
        if not self._mounts:
            return self.transport
        proxied = self._mounts.get(url.scheme) or self._mounts.get("all")
        if proxied is None:
            return self.transport
        # urllib compares NO_PROXY entries with the host, with and without its port.
        host = url.host if url.port is None or ":" in url.host else f"{url.host}:{url.port}"
        if self._no_proxy and urllib.request.proxy_bypass_environment(host, {"no": self._no_proxy}):
            return self.transport
        return proxied

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        cache = self.cache  # once: another thread may replace it meanwhile
        if cache is None or not is_cacheable_request(request):
            return self._transport_for_url(request.url).handle_request(request)
        kept = _quietly(cache.get, request)
        if kept is not None:
            if is_fresh(kept):
                return kept
            etag = kept.headers.get("etag")
            if etag is not None:
                request.headers["If-None-Match"] = etag
        response = self._transport_for_url(request.url).handle_request(request)
        if kept is not None and response.status_code == httpx.codes.NOT_MODIFIED:
            response.close()
            return kept  # the server confirmed it: no body travelled
        writable = not cache.readonly and cache.write_safe()
        if not writable:
            return response
        if not is_storable(response):
            if kept is not None:
                _quietly(cache.delete, request)  # outdated, and its successor is not kept
            return response
        declared = response.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > cache.max_item_size:
            if kept is not None:
                _quietly(cache.delete, request)
            return response  # not worth holding a copy of as it streams
        if hasattr(response, "_content"):  # already read (decoded) by the inner transport
            _quietly(lambda: cache.set(request=request, response=response))
            return response

        def keep(body: bytes | None) -> None:
            # The caller may read the body in another thread than the one that asked.
            if not cache.write_safe():
                return
            if body is not None:
                _quietly(lambda: cache.set(request=request, response=response, content=body))
            elif kept is not None:
                _quietly(cache.delete, request)  # outdated; its successor is too large to keep

        response.stream = _RecordingStream(response.stream, cache.max_item_size, keep)  # type: ignore[arg-type]
        return response

    def close(self) -> None:
        # The cache is the caller's (it may serve other contexts): it is not closed here.
        self.transport.close()
        for transport in self._mounts.values():
            transport.close()


__all__ = [
    "Transport",
    "cache_control",
    "is_cacheable_request",
    "is_fresh",
    "is_storable",
    "proxies_from_env",
]
