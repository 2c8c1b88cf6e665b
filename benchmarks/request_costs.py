"""CPU time per request of the demo application's most frequent GETs, driven in-process.

Calls the ASGI application directly (no sockets, no HTTP parsing, no load generator) with
prebuilt scopes and reports ``time.process_time`` per request, the best of a few rounds: a
figure that another busy process on the machine disturbs far less than a request rate. The
wrk figures (``zarr_read.py``) include the server and the network on top of this.

A second part measures what a credential adds on a multi-user server (authentication database
in a SQLite file): the same small chunk GET anonymous, with an API key and with an access
token.

Run: ``python benchmarks/request_costs.py [requests per round]``.
"""

from __future__ import annotations

import asyncio
import json
import sys
import tempfile
import time
import warnings

PATHS = {
    "small_zarr_chunk": "/zarr/v3/low_entropy/c/0/0",
    "zarr_json": "/zarr/v3/low_entropy/zarr.json",
    "native_metadata": "/api/v1/metadata/low_entropy",
    "healthz": "/healthz",
}
ROUNDS = 3


def _scope(path: str, credentials: list[tuple[bytes, bytes]] = ()) -> dict:
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
        "headers": [
            (b"host", b"127.0.0.1:8000"),
            (b"user-agent", b"wrk"),
            (b"accept", b"*/*"),
            *credentials,
        ],
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

    async def cost(path: str, credentials: list = ()) -> float:
        for _ in range(200):  # warm up (caches, memos)
            await app(_scope(path, credentials), receive, send)
        best = float("inf")
        for _ in range(ROUNDS):
            start = time.process_time()
            for _ in range(requests):
                await app(_scope(path, credentials), receive, send)
            best = min(best, (time.process_time() - start) / requests)
        if set(statuses) != {200}:
            raise RuntimeError(f"{path} answered {sorted(set(statuses))}")
        statuses.clear()
        return round(best * 1e6, 1)

    costs = {name: await cost(path) for name, path in PATHS.items()}
    with tempfile.TemporaryDirectory() as directory:
        app = build_app(
            tree,
            authentication=MULTI_USER,
            server_settings={
                "database": {"uri": f"sqlite:///{directory}/authn.db", "init_if_not_exists": True}
            },
        )
        async with app.router.lifespan_context(app):
            token, key = await _credentials(app)
            chunk = PATHS["small_zarr_chunk"]
            costs["multi_user_small_zarr_chunk"] = {
                "anonymous": await cost(chunk),
                "api_key": await cost(chunk, [(b"authorization", b"Apikey " + key)]),
                "access_token": await cost(chunk, [(b"authorization", b"Bearer " + token)]),
            }
    return costs


MULTI_USER = {
    "providers": [
        {
            "provider": "toy",
            "authenticator": "tiled.authenticators:DictionaryAuthenticator",
            "args": {"users_to_passwords": {"alice": "secret"}},
        }
    ],
    "secret_keys": ["0123456789abcdef0123456789abcdef"],
    "allow_anonymous_access": True,
}


async def _credentials(app) -> tuple[bytes, bytes]:
    """An access token of a user who logged in, and an API key of theirs."""
    import httpx

    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://bench") as client:
        login = {"username": "alice", "password": "secret"}
        response = await client.post("/api/v1/auth/provider/toy/token", data=login)
        token = response.raise_for_status().json()["access_token"]
        response = await client.post(
            "/api/v1/auth/apikey", json={}, headers={"Authorization": f"Bearer {token}"}
        )
        return token.encode(), response.raise_for_status().json()["secret"].encode()


def main() -> None:
    warnings.simplefilter("ignore")
    requests = int(sys.argv[1]) if len(sys.argv) > 1 else 5000
    print(json.dumps({"cpu_us_per_request": asyncio.run(_costs(requests))}, indent=2))


if __name__ == "__main__":
    main()
