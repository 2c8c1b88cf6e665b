"""Run the ``tiled`` command as a user would: a real process on a real port."""

from __future__ import annotations

import os
import random
import re
import socket
import subprocess
import sys
import threading
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
        # With --workers the banner comes once the socket is bound, before any worker process
        # has started (each imports and builds the application: many seconds on a loaded
        # machine). Until the deadline, not a number of tries, and never on regardless.
        deadline = time.monotonic() + 120
        while True:
            try:
                httpx.get(f"{base}/healthz", timeout=10)
                break
            except httpx.TransportError:
                if process.poll() is not None:
                    raise AssertionError(f"server exited: {banner}") from None
                assert time.monotonic() < deadline, f"{base}/healthz did not answer: {banner}"
                time.sleep(0.05)
        yield url, banner
    finally:
        process.terminate()
        process.wait(timeout=20)


# Ports handed out by free_port in this process (none is handed out twice while others remain).
_HANDED_OUT: set[int] = set()
_HANDED_OUT_LOCK = threading.Lock()
# The lowest port free_port draws from (below it: well-known services' ports).
_LOWEST_DRAWN = 10000


def free_port() -> int:
    """A loopback port nothing listens on now, for a server told to listen on it next.

    Between this probe and the server's bind (seconds, for a process that starts on a loaded
    machine) any other process could take a port the kernel picked: the kernel hands ports of
    its ephemeral range to every ``bind(("", 0))`` and every outgoing connection, of the other
    pytest-xdist worker too. So the port is drawn below that range, from a band of this
    worker's own, and never twice by one process while others remain.
    """
    band = _own_band()
    if band is not None:
        with _HANDED_OUT_LOCK:
            for _ in range(200):
                port = random.choice(band)
                if port not in _HANDED_OUT and _bindable(port):
                    _HANDED_OUT.add(port)
                    return port
            _HANDED_OUT.clear()
    with socket.socket() as probe:  # no band (an unusual port range): any free port
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _own_band() -> range | None:
    """The ports between 10000 and the kernel's ephemeral range that are this worker's (the
    band is split evenly among the run's workers), or None when there is no such band."""
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as ports:
            lowest_ephemeral = int(ports.read().split()[0])
    except (OSError, ValueError, IndexError):
        return None
    worker = os.environ.get("PYTEST_XDIST_WORKER", "gw0").removeprefix("gw")
    number = int(worker) if worker.isdigit() else 0
    count = max(int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1") or 1), number + 1)
    size = (lowest_ephemeral - _LOWEST_DRAWN) // count
    if size < 100:
        return None
    start = _LOWEST_DRAWN + number * size
    return range(start, start + size)


def _bindable(port: int) -> bool:
    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def without_pythonpath() -> dict[str, str]:
    """This environment without PYTHONPATH, which would lend our package to another
    environment's commands (upstream's ``tiled``, isolated by its own virtual environment)."""
    return {name: value for name, value in os.environ.items() if name != "PYTHONPATH"}


@contextmanager
def server_process(
    command: list,
    cwd: Path,
    *,
    env: dict | None = None,
    timeout: float = 120,
    port: int | None = None,
):
    """``command --port P`` (any Tiled server's command line) on ``port`` (default a free
    one); yields its base URL once ``/api/v1/`` answers. Its output goes to a log file in
    ``cwd``, shown on failure."""
    port = port or free_port()
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
