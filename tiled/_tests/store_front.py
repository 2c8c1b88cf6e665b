"""An HTTP front of an S3-compatible server that refuses the requests a test names.

A store that fails part-way through a write is what the bucket's atomicity is about; the
front makes that failure happen at a chosen request, deterministically, in front of the real
server (moto's): every other request is forwarded unchanged, and the refused ones are answered
as S3 answers a denied request (403 AccessDenied, which clients do not retry).
"""

from __future__ import annotations

import asyncio
import dataclasses
import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import httpx

from tiled.server.simple import BackgroundServer

DENIED = (
    b'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>AccessDenied</Code>'
    b"<Message>Access Denied (refused by the test's store front)</Message></Error>"
)
# Headers the front sets itself (the body is forwarded whole, not streamed).
HOP_HEADERS = {"host", "content-length", "transfer-encoding", "connection"}


@dataclass(frozen=True)
class Refusal:
    """Requests refused: ``method`` and a path matching ``path`` (a regular expression);
    ``copies`` is True for server-side copies only, False for plain requests only. With
    ``forwarded``, the request reaches the store and only its answer is replaced (an answer
    lost on its way back). With ``delay`` (seconds), the request is not refused, only held
    that long before it is forwarded (a slow store)."""

    method: str
    path: str
    copies: bool | None = None
    forwarded: bool = False
    delay: float = 0.0

    def formatted(self, **names: str) -> Refusal:
        """This refusal with ``{name}`` in its path replaced (escaped)."""
        path = self.path
        for name, value in names.items():
            path = path.replace("{" + name + "}", re.escape(value))
        return dataclasses.replace(self, path=path)

    def matches(self, method: str, path: str, headers: dict[str, str]) -> bool:
        if method != self.method or not re.search(self.path, path):
            return False
        copying = "x-amz-copy-source" in headers
        return self.copies is None or self.copies == copying


class StoreFront:
    """The ASGI app of the front; ``refusals`` may change while it serves."""

    def __init__(self, upstream: str):
        self.upstream = upstream
        self.refusals: list[Refusal] = []
        self.refused: list[str] = []  # "METHOD path" of each refused request
        self._lock = threading.Lock()
        self._client: httpx.AsyncClient | None = None

    @contextmanager
    def refusing(self, *refusals: Refusal) -> Iterator[None]:
        with self._lock:
            self.refusals = list(refusals)
        try:
            yield
        finally:
            with self._lock:
                self.refusals = []

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] == "lifespan":
            while True:
                event = (await receive())["type"]
                if event == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif event == "lifespan.shutdown":
                    if self._client is not None:
                        await self._client.aclose()
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        body = bytearray()
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        headers = {k.decode().lower(): v.decode() for k, v in scope["headers"]}
        method, path = scope["method"], scope["raw_path"].decode()
        with self._lock:
            refusal = next((r for r in self.refusals if r.matches(method, path, headers)), None)
            if refusal is not None:
                self.refused.append(f"{method} {path}")
        if refusal is not None and refusal.delay:
            await asyncio.sleep(refusal.delay)
            refusal = None
        if refusal is not None and not refusal.forwarded:
            await _answer(send, 403, [(b"content-type", b"application/xml")], DENIED)
            return
        if self._client is None:
            self._client = httpx.AsyncClient(timeout=30)
        query = scope["query_string"].decode()
        url = f"{self.upstream}{path}" + (f"?{query}" if query else "")
        forwarded = {k: v for k, v in headers.items() if k not in HOP_HEADERS}
        answer = await self._client.request(method, url, headers=forwarded, content=bytes(body))
        if refusal is not None:
            await _answer(send, 403, [(b"content-type", b"application/xml")], DENIED)
            return
        kept = [
            (k.encode(), v.encode())
            for k, v in answer.headers.items()
            if k.lower() not in HOP_HEADERS | {"content-encoding"}
        ]
        await _answer(send, answer.status_code, kept, answer.content, method == "HEAD")


async def _answer(send, status: int, headers: list, body: bytes, head: bool = False) -> None:
    length = (b"content-length", str(len(body)).encode())
    await send({"type": "http.response.start", "status": status, "headers": [*headers, length]})
    await send({"type": "http.response.body", "body": b"" if head else body})


@contextmanager
def store_front(upstream: str) -> Iterator[tuple[StoreFront, str]]:
    """A front of ``upstream`` served on a loopback port: the app and its endpoint."""
    front = StoreFront(upstream)
    server = BackgroundServer(front).start()
    try:
        yield front, server.url
    finally:
        server.stop()
