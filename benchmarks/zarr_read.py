"""Benchmark of the /zarr endpoints on the demo tree, beside a static copy of the same chunks.

The static copy (the same zarr v3 documents and chunk bytes, fetched from Tiled) is served by
nginx when it is installed, else by Python's http.server; every figure is reported with the
static server's figure from the same run and their ratio.

- small-chunk requests/second with 8 concurrent clients (``low_entropy``, one 40 kB chunk);
- p50/p95 latency of an array's ``zarr.json``;
- time to read ``medium_image`` and ``big_image`` whole with zarr-python;
- requests needed to open and walk the whole demo tree, with and without consolidated metadata;
- request rates measured by wrk (a compiled load generator: Python clients saturate before the
  server) on one server process: a small zarr chunk, an array's ``zarr.json``, native metadata
  and ``/healthz``, each as a fraction of a bare ASGI app served by the same uvicorn in the same
  run (``bare_asgi.py``); and the least work a chunk GET can do in Python
  (``least_chunk_app.py``), as a fraction of the bare app, with Tiled's chunk as a fraction of
  it. Skipped, with a message, where wrk is not installed.

Run: ``python benchmarks/zarr_read.py`` (after ``pip install -e '.[all,dev]'``).
"""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import warnings
from pathlib import Path

import aiohttp
import fsspec
import httpx
import zarr
from _common import (
    free_port,
    latency_summary,
    static_server,
    tiled_demo_server,
    timed_gets,
    wait_until_up,
    wrk_rate,
)

SMALL = "low_entropy"
IMAGES = ["nested/images/medium_image", "nested/images/big_image"]


def copy_store(url: str, node: str, root: Path) -> None:
    """Copy one array's zarr v3 documents and chunks from Tiled into ``root`` as files."""
    with httpx.Client(base_url=f"{url}/zarr/v3/", timeout=600) as client:
        document = client.get(f"{node}/zarr.json").raise_for_status()
        target = root / node
        (target / "c").mkdir(parents=True, exist_ok=True)
        (target / "zarr.json").write_bytes(document.content)
        meta = document.json()
        chunk = meta["chunk_grid"]["configuration"]["chunk_shape"]
        grid = [-(-s // c) for s, c in zip(meta["shape"], chunk, strict=True)]
        for index in range(max(1, _product(grid))):
            coords = _unravel(index, grid)
            key = "/".join(["c", *map(str, coords)])
            (target / key).parent.mkdir(parents=True, exist_ok=True)
            (target / key).write_bytes(client.get(f"{node}/{key}").raise_for_status().content)


def _product(values) -> int:
    result = 1
    for v in values:
        result *= v
    return result


def _unravel(index: int, grid: list[int]) -> list[int]:
    coords = []
    for size in reversed(grid):
        coords.append(index % size)
        index //= size
    return list(reversed(coords))


async def _hammer(url: str, clients: int = 8, per_client: int = 400) -> float:
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=clients)) as session:

        async def worker(n: int) -> None:
            for _ in range(n):
                async with session.get(url) as response:
                    await response.read()
                    assert response.status == 200

        await worker(20)  # warm up
        start = time.perf_counter()
        await asyncio.gather(*(worker(per_client) for _ in range(clients)))
        return clients * per_client / (time.perf_counter() - start)


def requests_per_second(tiled: str, static: str) -> dict:
    ours = asyncio.run(_hammer(f"{tiled}/zarr/v3/{SMALL}/c/0/0"))
    theirs = asyncio.run(_hammer(f"{static}/{SMALL}/c/0/0"))
    return {"tiled_rps": ours, "static_rps": theirs, "ratio": ours / theirs}


def document_latency(tiled: str, static: str) -> dict:
    path = "nested/images/medium_image/zarr.json"
    with httpx.Client() as client:
        timed_gets(client, f"{tiled}/zarr/v3/{path}", 20)
        ours = latency_summary(timed_gets(client, f"{tiled}/zarr/v3/{path}", 200))
        theirs = latency_summary(timed_gets(client, f"{static}/{path}", 200))
    return {"tiled": ours, "static": theirs, "ratio_p50": ours["p50_ms"] / theirs["p50_ms"]}


def read_time(tiled: str, static: str, node: str) -> dict:
    def timed(url: str) -> float:
        array = zarr.open_array(zarr.storage.FsspecStore.from_url(url, read_only=True), mode="r")
        start = time.perf_counter()
        array[...]
        return time.perf_counter() - start

    ours, theirs = timed(f"{tiled}/zarr/v3/{node}"), timed(f"{static}/{node}")
    return {"tiled_s": ours, "static_s": theirs, "ratio": ours / theirs}


class _CountingApp:
    def __init__(self, app):
        self.app, self.count = app, 0

    async def __call__(self, scope, receive, send):
        self.count += scope["type"] == "http"
        await self.app(scope, receive, send)


def walk_requests() -> dict:
    """Requests zarr-python makes to open the demo tree and list every node's metadata."""
    import uvicorn

    from tiled.examples.generated import tree
    from tiled.server.app import build_app

    app = _CountingApp(build_app(tree, authentication={"allow_anonymous_access": True}))
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.01)
    base = f"http://127.0.0.1:{server.servers[0].sockets[0].getsockname()[1]}"
    results = {}
    try:
        for zarr_format in (2, 3):
            for consolidated in (True, False):
                app.count = 0
                mapper = fsspec.get_mapper(f"{base}/zarr/v{zarr_format}/")
                root = zarr.open_group(
                    mapper, mode="r", zarr_format=zarr_format, use_consolidated=consolidated
                )
                nodes = len(list(root.members(max_depth=None)))
                results[f"v{zarr_format}_{'consolidated' if consolidated else 'listing'}"] = {
                    "requests": app.count,
                    "nodes": nodes,
                }
    finally:
        server.should_exit = True
        thread.join()
    return results


WRK_TARGETS = {
    "small_zarr_chunk": f"/zarr/v3/{SMALL}/c/0/0",
    "zarr_json": f"/zarr/v3/{SMALL}/zarr.json",
    "native_metadata": f"/api/v1/metadata/{SMALL}",
    "healthz": "/healthz",
}


def _wrk(url: str, seconds: int, connections: int = 16) -> float:
    return wrk_rate(url, seconds, connections)


def _reference_app(module: str) -> tuple[subprocess.Popen, str]:
    """An app of this folder served by the same uvicorn as Tiled, and its URL."""
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "--app-dir", str(Path(__file__).parent),
         f"{module}:app", "--port", str(port), "--log-level", "warning", "--no-access-log"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    return process, f"http://127.0.0.1:{port}"


def wrk_request_rates(tiled: str, seconds: int = 8) -> dict:
    """Each target's rate as a fraction of the bare ASGI app's (measured before and after),
    and the least a chunk GET can do in Python as a fraction of it."""
    if shutil.which("wrk") is None:
        return {"skipped": "wrk is not installed (Debian: apt-get install wrk)"}
    bare, bare_url = _reference_app("bare_asgi")
    least, least_url = _reference_app("least_chunk_app")
    least_url += WRK_TARGETS["small_zarr_chunk"]
    try:
        wait_until_up(bare_url)
        wait_until_up(least_url)
        for url in (bare_url, least_url, *(tiled + path for path in WRK_TARGETS.values())):
            _wrk(url, 1)  # warm up all
        before = _wrk(bare_url, seconds)
        rates = {name: _wrk(tiled + path, seconds) for name, path in WRK_TARGETS.items()}
        least_rate = _wrk(least_url, seconds)
        reference = (before + _wrk(bare_url, seconds)) / 2
    finally:
        for process in (bare, least):
            process.terminate()
            process.wait(timeout=30)
    results: dict = {"bare_asgi_rps": round(reference)}
    for name, rate in rates.items():
        results[name] = {"rps": round(rate), "fraction_of_bare": round(rate / reference, 3)}
    results["least_chunk_work"] = {
        "rps": round(least_rate),
        "fraction_of_bare": round(least_rate / reference, 3),
        "small_zarr_chunk_fraction_of_it": round(rates["small_zarr_chunk"] / least_rate, 3),
    }
    return results


def main() -> None:
    warnings.simplefilter("ignore")
    results: dict = {}
    with tempfile.TemporaryDirectory() as tmp, tiled_demo_server() as tiled:
        results["wrk_request_rates"] = wrk_request_rates(tiled)
        root = Path(tmp) / "static"
        for node in [SMALL, *IMAGES]:
            copy_store(tiled, node, root)
        with static_server(root) as static:
            results["static_server"] = (
                "nginx" if (Path(tmp) / "static").parent.glob("nginx-*.conf") else "http.server"
            )
            results["small_chunk_requests_per_second"] = requests_per_second(tiled, static)
            results["zarr_json_latency"] = document_latency(tiled, static)
            for node in IMAGES:
                results[f"read_{node.rsplit('/', 1)[-1]}"] = read_time(tiled, static, node)
    results["walk_demo_tree"] = walk_requests()
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
