"""CPU time per request of the demo application's most frequent GETs, driven in-process.

Calls the ASGI application directly (no sockets, no HTTP parsing, no load generator) with
prebuilt scopes and reports ``time.process_time`` per request, the best of a few rounds: a
figure that another busy process on the machine disturbs far less than a request rate. The
wrk figures (``zarr_read.py``) include the server and the network on top of this.

Run: ``python benchmarks/request_costs.py [requests per round]``.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
import warnings

PATHS = {
    "small_zarr_chunk": "/zarr/v3/low_entropy/c/0/0",
    "zarr_json": "/zarr/v3/low_entropy/zarr.json",
    "native_metadata": "/api/v1/metadata/low_entropy",
    "healthz": "/healthz",
}
ROUNDS = 3


def _scope(path: str) -> dict:
    return {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "query_string": b"",
        "headers": [(b"host", b"127.0.0.1:8000"), (b"user-agent", b"wrk"), (b"accept", b"*/*")],
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 8000),
        "state": {},
    }


async def _costs(requests: int) -> dict[str, float]:
    from tiled.examples.generated import tree
    from tiled.server.app import build_app

    app = build_app(tree, authentication={"allow_anonymous_access": True})
    statuses: list[int] = []

    async def receive() -> dict:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict) -> None:
        if message["type"] == "http.response.start":
            statuses.append(message["status"])

    costs = {}
    for name, path in PATHS.items():
        for _ in range(200):  # warm up (caches, memos)
            await app(_scope(path), receive, send)
        best = float("inf")
        for _ in range(ROUNDS):
            start = time.process_time()
            for _ in range(requests):
                await app(_scope(path), receive, send)
            best = min(best, (time.process_time() - start) / requests)
        if set(statuses) != {200}:
            raise RuntimeError(f"{path} answered {sorted(set(statuses))}")
        statuses.clear()
        costs[name] = round(best * 1e6, 1)
    return costs


def main() -> None:
    warnings.simplefilter("ignore")
    requests = int(sys.argv[1]) if len(sys.argv) > 1 else 5000
    print(json.dumps({"cpu_us_per_request": asyncio.run(_costs(requests))}, indent=2))


if __name__ == "__main__":
    main()
