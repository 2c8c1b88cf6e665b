"""A real load balancer (HAProxy, from Debian's package) in front of server processes.

Round robin per request, so that consecutive requests of one client, even on one kept-alive
connection, go to different servers: what a deployment behind a balancer must survive.
Tests that need it skip, with the reason, where ``haproxy`` is not installed (`.ci/run`
installs it when it can).
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from .processes import free_port


def haproxy_or_skip() -> str:
    found = shutil.which("haproxy") or next(
        (p for p in ("/usr/sbin/haproxy",) if Path(p).exists()), None
    )
    if found is None:
        pytest.skip("haproxy is not installed (apt-get install haproxy): no load balancer")
    return found


def _configuration(port: int, backends: list[str]) -> str:
    servers = "\n".join(
        f"    server worker{number} {backend.removeprefix('http://')}"
        for number, backend in enumerate(backends)
    )
    return f"""
global
    maxconn 2048
defaults
    mode http
    timeout connect 5s
    timeout client 120s
    timeout server 120s
    # A new server-side connection per request: each request is balanced on its own.
    option http-server-close
frontend tiled
    bind 127.0.0.1:{port}
    default_backend workers
backend workers
    balance roundrobin
{servers}
"""


@contextmanager
def load_balancer(backends: list[str], directory: Path) -> Iterator[str]:
    """HAProxy balancing ``backends`` (base URLs); yields its own base URL."""
    executable = haproxy_or_skip()
    port = free_port()
    configuration = directory / f"haproxy-{port}.cfg"
    configuration.write_text(_configuration(port, backends))
    log_path = directory / f"haproxy-{port}.log"
    with open(log_path, "w") as log:
        process = subprocess.Popen(
            [executable, "-db", "-f", str(configuration)], stdout=log, stderr=subprocess.STDOUT
        )
        try:
            deadline = time.monotonic() + 30
            while True:
                assert process.poll() is None, log_path.read_text()
                try:
                    socket.create_connection(("127.0.0.1", port), timeout=1).close()
                    break
                except OSError:
                    assert time.monotonic() < deadline, log_path.read_text()
                    time.sleep(0.05)
            yield f"http://127.0.0.1:{port}"
        finally:
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
