"""Benchmark of zarr-native storage: a 256 MiB float32 array written through the API into a
catalog, then read with zarr-python through /zarr/v3, beside nginx (or Python's http.server)
serving the same store directory. Also: warm ``zarr.json`` requests per second on the catalog.

Targets (issue 6): at least 0.6 of the static server's MB/s; at least 1,000 zarr.json req/s.
Run: ``python benchmarks/catalog_zarr.py`` (after ``pip install -e '.[all,dev]'``).
"""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import aiohttp
import httpx
import numpy
import zarr
from _common import free_port, static_server, static_server_kind, wait_until_up

SHAPE, CHUNK = (8192, 8192), 1024  # float32: 256 MiB in 64 chunks of 4 MiB
HEADERS = {"Authorization": "Apikey secret"}


def start_catalog(directory: Path) -> tuple[subprocess.Popen, str]:
    port = free_port()
    tiled = Path(sys.executable).parent / "tiled"
    command = [str(tiled), "serve", "catalog", str(directory / "catalog.db"), "--init"]
    command += ["-w", str(directory / "data"), "--api-key", "secret", "--port", str(port)]
    process = subprocess.Popen(command, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    wait_until_up(f"{url}/healthz")
    return process, url


def write_array(client: httpx.Client) -> tuple[Path, float]:
    structure = {
        "data_type": {"endianness": "little", "kind": "f", "itemsize": 4, "dt_units": None},
        "chunks": [[CHUNK] * (SHAPE[0] // CHUNK), [CHUNK] * (SHAPE[1] // CHUNK)],
        "shape": list(SHAPE),
        "dims": None,
        "resizable": False,
    }
    body = {
        "id": "big",
        "structure_family": "array",
        "metadata": {},
        "specs": [],
        "data_sources": [
            {
                "structure_family": "array",
                "structure": structure,
                "assets": [],
                "management": "writable",
            }
        ],
    }
    created = client.post("/api/v1/metadata/", json=body).raise_for_status().json()
    rng = numpy.random.default_rng(0)
    start = time.perf_counter()
    for i in range(SHAPE[0] // CHUNK):
        for j in range(SHAPE[1] // CHUNK):
            block = rng.random((CHUNK, CHUNK), dtype="float32")
            client.put(
                "/api/v1/array/block/big", params={"block": f"{i},{j}"}, content=block.tobytes()
            ).raise_for_status()
    elapsed = time.perf_counter() - start
    uri = created["data_sources"][0]["assets"][0]["data_uri"]
    return Path(uri.removeprefix("file://localhost").removeprefix("file://")), 256 / elapsed


def read_seconds(store) -> float:
    array = zarr.open_array(store, mode="r")
    start = time.perf_counter()
    array[...]
    return time.perf_counter() - start


async def zarr_json_rps(url: str, clients: int = 8, per_client: int = 300) -> float:
    async with aiohttp.ClientSession(headers=HEADERS) as session:

        async def worker(n: int) -> None:
            for _ in range(n):
                async with session.get(url) as response:
                    assert response.status == 200
                    await response.read()

        await worker(20)
        start = time.perf_counter()
        await asyncio.gather(*(worker(per_client) for _ in range(clients)))
        return clients * per_client / (time.perf_counter() - start)


def main() -> None:
    warnings.simplefilter("ignore")
    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp)
        process, url = start_catalog(directory)
        try:
            with httpx.Client(base_url=url, headers=HEADERS, timeout=600) as client:
                store_path, write_mbps = write_array(client)
            fs_kwargs = {"client_kwargs": {"headers": HEADERS}}
            tiled_store = zarr.storage.FsspecStore.from_url(
                f"{url}/zarr/v3/big", read_only=True, storage_options=fs_kwargs
            )
            with static_server(store_path.parent) as static_url:
                static_store = zarr.storage.FsspecStore.from_url(
                    f"{static_url}/{store_path.name}", read_only=True
                )
                # Alternate the two servers and keep each one's best of three, so page cache
                # and connection warm-up favour neither.
                timings = [
                    (read_seconds(tiled_store), read_seconds(static_store)) for _ in range(3)
                ]
            tiled_seconds = min(t for t, _ in timings)
            static_seconds = min(s for _, s in timings)
            rps = asyncio.run(zarr_json_rps(f"{url}/zarr/v3/big/zarr.json"))
        finally:
            process.send_signal(signal.SIGINT)
            process.wait(timeout=30)
    results = {
        "static_server": static_server_kind(),
        "write_MBps_through_api": write_mbps,
        "read_256MiB": {
            "tiled_MBps": 256 / tiled_seconds,
            "static_MBps": 256 / static_seconds,
            "ratio_to_static": static_seconds / tiled_seconds,
            "target_ratio": 0.6,
        },
        "warm_zarr_json_requests_per_second": {"tiled": rps, "target": 1000},
    }
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
