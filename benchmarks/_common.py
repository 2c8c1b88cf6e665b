"""Helpers shared by the benchmark scripts: a server subprocess and timing statistics."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until_up(url: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(httpx.TransportError):
            httpx.get(url, timeout=2)
            return
        time.sleep(0.1)
    raise RuntimeError(f"{url} did not come up")


@contextlib.contextmanager
def tiled_demo_server() -> Iterator[str]:
    """``tiled serve demo`` in a subprocess, so client and server do not share a GIL."""
    port = free_port()
    tiled = Path(sys.executable).parent / "tiled"
    process = subprocess.Popen(
        [str(tiled), "serve", "demo", "--port", str(port)], stderr=subprocess.DEVNULL
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_up(f"{url}/healthz")
        yield url
    finally:
        process.send_signal(signal.SIGINT)
        process.wait(timeout=30)


@contextlib.contextmanager
def static_server(directory: Path) -> Iterator[str]:
    """Serve ``directory`` as static files: nginx when installed, else Python's http.server."""
    port = free_port()
    nginx = _nginx_command(directory, port)
    command = nginx or [
        sys.executable,
        "-m",
        "http.server",
        str(port),
        "--bind",
        "127.0.0.1",
        "-d",
        str(directory),
    ]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_up(url + "/")
        yield url
    finally:
        process.terminate()
        process.wait(timeout=30)


def _nginx_binary() -> str | None:
    return next((p for p in ("/usr/sbin/nginx", "/usr/bin/nginx") if os.path.exists(p)), None)


def static_server_kind() -> str:
    return "nginx" if _nginx_binary() else "python http.server"


def _nginx_command(directory: Path, port: int) -> list[str] | None:
    binary = _nginx_binary()
    if binary is None:
        return None
    conf = directory.parent / f"nginx-{port}.conf"
    conf.write_text(
        f"daemon off; worker_processes 2; pid {directory.parent}/nginx-{port}.pid; error_log /dev/null;\n"
        f"events {{ worker_connections 1024; }}\n"
        f"http {{ access_log off; sendfile on; client_body_temp_path {directory.parent};\n"
        f"  server {{ listen 127.0.0.1:{port}; root {directory}; autoindex on; }} }}\n"
    )
    return [binary, "-c", str(conf), "-p", str(directory.parent)]


def latency_summary(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    return {
        "p50_ms": 1000 * statistics.median(ordered),
        "p95_ms": 1000 * ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))],
    }


def timed_gets(client: httpx.Client, url: str, count: int) -> list[float]:
    samples = []
    for _ in range(count):
        start = time.perf_counter()
        response = client.get(url)
        samples.append(time.perf_counter() - start)
        response.raise_for_status()
    return samples


# --- upstream Tiled 0.2.20 beside this project (its package is named tiled too) ---

UPSTREAM_REQUIREMENT = "tiled[all]==0.2.20"


def upstream_venv() -> Path:
    venv = Path(os.environ.get("TILED_BENCH_UPSTREAM_VENV", "/tmp/tiled-upstream-venv"))
    if not (venv / "bin" / "tiled").exists():
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        subprocess.run(
            [str(venv / "bin" / "pip"), "install", "-q", UPSTREAM_REQUIREMENT], check=True
        )
    return venv / "bin"


def our_bin() -> Path:
    return Path(sys.executable).parent


def clean_env(**extra: str) -> dict[str, str]:
    """This environment without PYTHONPATH (so that neither project sees the other)."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "TILED_API_KEY")}
    env.update(extra)
    return env


@contextlib.contextmanager
def running_server(
    command: list[str], cwd: Path, env: dict[str, str], timeout: float = 300
) -> Iterator[str]:
    """``command --port P`` in a subprocess, until it answers ``/api/v1/``; stopped on exit
    (SIGINT, then kill)."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    process = subprocess.Popen(
        [*command, "--port", str(port)], cwd=cwd, env=env,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + timeout
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"{command} exited with {process.returncode}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"{command} did not answer within {timeout} s")
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(f"{url}/api/v1/", timeout=5).status_code == 200:
                    break
            time.sleep(0.2)
        yield url
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGINT)
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def run_json(command: list[str], cwd: Path, env: dict[str, str]) -> dict[str, Any]:
    """Run ``command``; its last line of output, as JSON."""
    done = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True)
    if done.returncode:
        raise RuntimeError(f"{command[:3]} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def wrk_rate(
    url: str, seconds: int, connections: int = 16, script: Path | None = None, *args: str
) -> float:
    """Requests per second wrk measures on ``url`` (one thread: the other core serves),
    optionally driven by a Lua ``script`` given ``args``; error answers raise RuntimeError."""
    command = ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s"]
    if script is not None:
        command += ["-s", str(script)]
    command.append(url)
    if args:
        command += ["--", *args]
    done = subprocess.run(command, capture_output=True, text=True, check=True)
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", done.stdout)
    if errors:
        raise RuntimeError(f"{url}: {errors.group(1)} error responses")
    return float(re.search(r"Requests/sec:\s+([\d.]+)", done.stdout).group(1))
