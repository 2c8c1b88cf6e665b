"""Benchmark of HTTP API v1 on the demo tree.

Measures, against references taken in the same run:
- metadata latency: 200 sequential ``/api/v1/metadata`` requests (p50/p95), relative to the
  trivial ``/healthz`` route of the same server;
- block throughput: every block of ``nested/images/big_image`` through ``/api/v1/array/block``
  with 8 threads (MB/s), relative to the same bytes served as static files.

Run: ``python benchmarks/api_v1.py`` (after ``pip install -e '.[all,dev]'``).
"""

from __future__ import annotations

import itertools
import json
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
from _common import latency_summary, static_server, tiled_demo_server, timed_gets

BIG = "nested/images/big_image"


def metadata_latency(url: str) -> dict:
    with httpx.Client(base_url=url) as client:
        timed_gets(client, "/api/v1/metadata/nested/images/medium_image", 20)  # warm up
        metadata = latency_summary(
            timed_gets(client, "/api/v1/metadata/nested/images/medium_image", 200)
        )
        health = latency_summary(timed_gets(client, "/healthz", 200))
    return {
        "metadata": metadata,
        "healthz_reference": health,
        "ratio_p50_to_reference": metadata["p50_ms"] / health["p50_ms"],
    }


def parallel_fetch(base: str, paths: list[str], threads: int = 8) -> tuple[int, float]:
    with httpx.Client(
        base_url=base, timeout=600, limits=httpx.Limits(max_connections=threads)
    ) as client:
        start = time.perf_counter()
        with ThreadPoolExecutor(threads) as pool:
            sizes = list(pool.map(lambda p: len(client.get(p).raise_for_status().content), paths))
        return sum(sizes), time.perf_counter() - start


def block_throughput(url: str) -> dict:
    blocks = [
        f"/api/v1/array/block/{BIG}?block={i},{j}" for i, j in itertools.product(range(3), repeat=2)
    ]
    total, elapsed = parallel_fetch(url, blocks)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "static"
        root.mkdir()
        with httpx.Client(base_url=url, timeout=600) as client:
            for n, path in enumerate(blocks):
                (root / f"block{n}").write_bytes(client.get(path).content)
        with static_server(root) as static_url:
            static_total, static_elapsed = parallel_fetch(
                static_url, [f"/block{n}" for n in range(len(blocks))]
            )
    tiled_rate, static_rate = total / elapsed / 1e6, static_total / static_elapsed / 1e6
    return {
        "tiled_MBps": tiled_rate,
        "static_MBps": static_rate,
        "ratio_to_static": tiled_rate / static_rate,
    }


def main() -> None:
    with tiled_demo_server() as url:
        results = {
            "metadata_latency": metadata_latency(url),
            "big_image_blocks": block_throughput(url),
        }
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
