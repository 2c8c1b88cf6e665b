"""A second reference for request rates: the least work a zarr chunk GET can do in Python.

Served by the same uvicorn as Tiled and the bare app (``bare_asgi.py``), it finds its array and
chunk from the path, slices the chunk's values, hashes them (xxh3, as Tiled's encoded-chunk
cache does), takes the encoded bytes from a dict and answers with the headers Tiled sends (ETag,
request id, ...), and nothing else: no authentication, access policy, adapter protocol,
conditional or ranged answers, or errors. Its rate bounds what any Python handler of a chunk
can reach here; Tiled's chunk rate is reported as a fraction of it too.
"""

import itertools

import numpy
import xxhash

CHUNK = 100
ARRAYS = {"low_entropy": numpy.arange(CHUNK * CHUNK, dtype="<f8").reshape(CHUNK, CHUNK) % 7}
ENCODED: dict[bytes, bytes] = {}
REQUEST_IDS = itertools.count()


async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    seen = {}  # what the edge reads of every request
    for name, value in scope["headers"]:
        if name in (b"authorization", b"cookie", b"origin", b"user-agent"):
            seen[name] = value
    _, _, _, node, _, *key = scope["path"].split("/")  # /zarr/v3/<node>/c/<i>/<j>
    i, j = (int(part) for part in key)
    values = ARRAYS[node][i * CHUNK : (i + 1) * CHUNK, j * CHUNK : (j + 1) * CHUNK]
    digest = xxhash.xxh3_128_digest(numpy.ascontiguousarray(values))
    body = ENCODED.get(digest)
    if body is None:
        body = ENCODED[digest] = values.tobytes()[:400]
    headers = [
        (b"etag", b'"%s"' % xxhash.xxh3_128_hexdigest(body).encode()),
        (b"accept-ranges", b"bytes"),
        (b"content-type", b"application/octet-stream"),
        (b"content-length", b"%d" % len(body)),
        (b"x-tiled-request-id", b"%016x" % next(REQUEST_IDS)),
    ]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": body})
