"""Run the ``tiled`` command as a user would: a real process on a real port."""

from __future__ import annotations

import os
import re
import socket
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


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def without_pythonpath() -> dict[str, str]:
    """This environment without PYTHONPATH, which would lend our package to another
    environment's commands (upstream's ``tiled``, isolated by its own virtual environment)."""
    return {name: value for name, value in os.environ.items() if name != "PYTHONPATH"}


@contextmanager
def server_process(command: list, cwd: Path, *, env: dict | None = None, timeout: float = 120):
    """``command --port P`` (any Tiled server's command line) on a free port; yields its base
    URL once ``/api/v1/`` answers. Its output goes to a log file in ``cwd``, shown on failure."""
    port = free_port()
    log_path = cwd / f"server-{port}.log"
    url = f"http://127.0.0.1:{port}"
    with open(log_path, "w") as log:
        process = subprocess.Popen(
            [*map(str, command), "--port", str(port)],
            stdout=log, stderr=subprocess.STDOUT, cwd=cwd, env=env,
        )  # fmt: skip
        try:
            deadline = time.monotonic() + timeout
            while not _answers(url):
                assert process.poll() is None, log_path.read_text()
                assert time.monotonic() < deadline, log_path.read_text()
                time.sleep(0.2)
            yield url
        finally:
            process.terminate()
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def _answers(url: str) -> bool:
    try:
        return httpx.get(f"{url}/api/v1/", timeout=2).status_code == 200
    except httpx.TransportError:
        return False
