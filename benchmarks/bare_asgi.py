"""The reference for request rates: an ASGI app that answers every request with 400 bytes.

Served by the same uvicorn (same loop and HTTP parser) as Tiled, it measures what the server
and the load generator cost by themselves; Tiled's rates are reported as fractions of it.
"""

BODY = b"x" * 400
HEADERS = [(b"content-type", b"application/octet-stream"), (b"content-length", b"400")]


async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    await send({"type": "http.response.start", "status": 200, "headers": HEADERS})
    await send({"type": "http.response.body", "body": BODY})
