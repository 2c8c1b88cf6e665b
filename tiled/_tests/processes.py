"""Run the ``tiled`` command as a user would: a real process on a real port."""

from __future__ import annotations

import re
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import httpx

TILED = [str(Path(sys.executable).parent / "tiled")]


@contextmanager
def running_tiled(*args: str, env: dict | None = None, cwd: Path | None = None):
    """A ``tiled`` server process; yields the URL it prints and everything it printed before."""
    process = subprocess.Popen(
        [*TILED, *args], stderr=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env, cwd=cwd
    )
    try:
        banner = ""
        deadline = time.monotonic() + 60
        while "running at" not in banner:
            line = process.stderr.readline()
            if not line and process.poll() is not None:
                raise AssertionError(f"server exited: {banner}{process.stderr.read()}")
            banner += line
            assert time.monotonic() < deadline, banner
        url = re.search(r"http://\S+", banner.split("running at")[1]).group(0)
        base = url.split("?")[0].replace("localhost", "127.0.0.1")
        for _ in range(200):  # the banner comes just before uvicorn binds
            try:
                httpx.get(f"{base}/healthz")
                break
            except httpx.TransportError:
                time.sleep(0.05)
        yield url, banner
    finally:
        process.terminate()
        process.wait(timeout=20)
