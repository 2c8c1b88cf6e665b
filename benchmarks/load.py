"""Proof under load and faults: two Tiled processes behind HAProxy, one PostgreSQL catalog.

On loopback only, the script starts what it needs itself: a throwaway PostgreSQL cluster (the
script is skipped, with the reason, where none can be started), a temporary directory for
written data (or, with ``--storage bucket``, a moto S3 server), two ``tiled serve config``
processes sharing both, and HAProxy in front of them (round robin per request, health checks
of ``/healthz`` every 500 ms). Then:

1. **Seed**: four 2048 x 2048 float32 arrays in 256 x 256 chunks and a table, written through
   ``/api/v1``, for readers to read.
2. **Mixed load** for ``--seconds`` through the balancer: ``--readers`` reading clients (zarr v3
   chunks and ``zarr.json``, native metadata, native blocks, searches, table partitions, in a
   seeded random order) and ``--writers`` writing clients (an array node and its data, a table
   node and a partition, in turn), run in several OS processes (Python clients saturate before
   the server does). The same load again against one worker alone (HAProxy with one backend,
   so both runs pay for the proxy), and the ratio of the two.
3. **Faults**, each under the same mixed load for ``--fault-seconds``: a worker SIGKILLed while
   8 MiB arrays are being written, then restarted on its port as a process manager would; the
   PostgreSQL cluster halted for 3 s and resumed under running servers; the object store
   frozen (``--storage bucket`` only).

Every write a writer saw acknowledged is read back from both workers directly (not through the
balancer) and compared with the data it wrote, byte for byte; nodes whose write was never
acknowledged are read back too and classified (complete, unwritten, partly written: whole
chunks only, never a torn one). The exit status is non-zero when a check fails: any 500, any
other server 5xx outside a fault, a 503 without ``Retry-After``, a mismatch, a torn chunk, no
recovery. Progress goes to stderr, the JSON report to stdout (and ``--json PATH``).

Run: ``python benchmarks/load.py [--seconds 60] [--readers 16] [--writers 2] [--no-faults]
[--quick] [--json report.json]``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import csv
import io
import json
import multiprocessing
import os
import random
import re
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import time
import zlib
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy
import pandas
import pyarrow
import yaml
from _common import free_port

from tiled.structures.array import ArrayStructure, data_type_from_numpy
from tiled.structures.table import TableStructure

PROJECT = Path(__file__).resolve().parents[1]
SEED_ARRAYS, SEED_SHAPE, SEED_CHUNK = 4, (2048, 2048), 256
SEED_TABLE_ROWS = 10_000
# Writers' arrays: 1 MiB in ordinary runs; 8 MiB while a worker is killed, so that the kill
# is likely to land in the middle of a write.
WRITE_SHAPE, KILL_WRITE_SHAPE, WRITE_CHUNK = (512, 512), (1024, 2048), 256
WRITE_TABLE_ROWS = 2_000
READER_PROCESSES = 4
WRITE_TRIES = 5  # the first try and four retries, 0.25 s to 2 s apart
RETRYABLE = {502, 503, 504}
REQUEST_TIMEOUT = 60
PROCESS_MANAGER_DELAY = 1.0  # how long a process manager waits before restarting a worker
OUTAGE_SECONDS = 3.0
RECOVERY_TIMEOUT = 60.0
ARROW_FILE = "application/vnd.apache.arrow.file"
OCTET_STREAM = "application/octet-stream"

READ_KINDS = ("zarr_chunk", "zarr_json", "metadata", "block", "search", "table")
WRITE_KINDS = ("create_array", "write_array", "create_table", "write_table")
KINDS = READ_KINDS + WRITE_KINDS
# Bits of an event's flags: what a response carried.
RETRY_AFTER, FROM_TILED = 1, 2


def progress(message: str) -> None:
    print(f"[load {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# --- deterministic data: a writer's content follows from its key alone ---


def _rng(key: str) -> numpy.random.Generator:
    return numpy.random.default_rng(zlib.crc32(key.encode()))


def expected_array(key: str, shape: tuple[int, ...]) -> numpy.ndarray:
    """The array written under ``key``: never 0 (unwritten chunks read as 0, the fill)."""
    return (_rng(key).random(shape, dtype=numpy.float32) + numpy.float32(1)).astype("<f4")


def expected_table(key: str, rows: int) -> pandas.DataFrame:
    rng = _rng(key)
    return pandas.DataFrame(
        {
            "i": numpy.arange(rows, dtype=numpy.int64),
            "x": rng.random(rows),
            "label": [f"{key}-{n}" for n in range(rows)],
        }
    )


def arrow_bytes(frame: pandas.DataFrame) -> bytes:
    table = pyarrow.Table.from_pandas(frame, preserve_index=False)
    sink = io.BytesIO()
    with pyarrow.ipc.new_file(sink, table.schema) as writer:
        writer.write_table(table)
    return sink.getvalue()


def read_arrow(content: bytes) -> pyarrow.Table:
    return pyarrow.ipc.open_file(pyarrow.BufferReader(content)).read_all()


def array_node(key: str, shape: tuple[int, ...], chunk: int, metadata: dict) -> dict:
    chunks = tuple(tuple(min(chunk, n - start) for start in range(0, n, chunk)) for n in shape)
    structure = ArrayStructure(data_type_from_numpy(numpy.dtype("<f4")), chunks, shape)
    return _node(key, "array", structure.to_json(), metadata)


def table_node(key: str, frame: pandas.DataFrame, metadata: dict) -> dict:
    structure = TableStructure.from_pandas(frame, npartitions=1)
    return _node(key, "table", structure.to_json(), metadata)


def _node(key: str, family: str, structure: dict, metadata: dict) -> dict:
    source = {
        "structure_family": family,
        "structure": structure,
        "assets": [],
        "management": "writable",
    }
    return {
        "id": key,
        "structure_family": family,
        "metadata": metadata,
        "specs": [],
        "data_sources": [source],
    }


# --- processes: workers, the balancer, the object store ---


def log_tail(path: Path, lines: int = 40) -> str:
    if not path.exists():
        return f"({path.name}: no log)"
    text = path.read_text(errors="replace").splitlines()
    return f"--- {path.name}, last {lines} lines ---\n" + "\n".join(text[-lines:])


def _answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=2).status_code == 200
    except httpx.TransportError:
        return False


def process_cpu_seconds(process: subprocess.Popen | None) -> float:
    """User and system CPU seconds a running process has used so far (0 once it is gone)."""
    if process is None:
        return 0.0
    try:
        fields = Path(f"/proc/{process.pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    # utime and stime: fields 14 and 15 of stat(5), counted after the command's parenthesis.
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class Worker:
    """One ``tiled serve config`` process on a fixed port, restartable on that port."""

    def __init__(self, name: str, config: Path, directory: Path) -> None:
        self.name = name
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = directory / f"{name}.log"
        self.directory = directory
        # The worktree's code serves, whichever environment's interpreter runs it.
        self.env = {**os.environ, "PYTHONPATH": str(PROJECT)}
        self.command = [
            sys.executable,
            "-m",
            "tiled",
            "serve",
            "config",
            str(config),
            "--port",
            str(self.port),
        ]
        self.process: subprocess.Popen | None = None

    def start(self, timeout: float = 120) -> None:
        with open(self.log, "a") as log:  # a restart appends: the first life's log is evidence
            self.process = subprocess.Popen(
                self.command,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.directory,
                env=self.env,
            )
        deadline = time.monotonic() + timeout
        while not _answers(f"{self.url}/api/v1/"):
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"{self.name} exited with {self.process.returncode}\n" + log_tail(self.log)
                )
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"{self.name} did not answer in {timeout} s\n" + log_tail(self.log)
                )
            time.sleep(0.2)

    def cpu_seconds(self) -> float:
        return process_cpu_seconds(self.process)

    def kill(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=30)

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGINT)
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=30)


class Balancer:
    """HAProxy in front of ``workers``: round robin per request, dead workers taken out by
    health checks; its status is read from its stats socket."""

    def __init__(self, name: str, workers: list[Worker], directory: Path) -> None:
        self.name = name
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.socket = directory / f"{name}.sock"
        self.config = directory / f"{name}.cfg"
        self.log = directory / f"{name}.log"
        servers = "\n".join(
            f"    server {w.name} 127.0.0.1:{w.port} check inter 500ms fall 2 rise 2"
            for w in workers
        )
        # A refused connection (a worker just killed, not yet marked down) is retried on
        # another worker, as any deployment would have it; requests already inside a worker
        # that dies are answered 502 and counted.
        self.config.write_text(f"""
global
    maxconn 4096
    stats socket {self.socket} mode 600 level admin
defaults
    mode http
    timeout connect 5s
    timeout client 120s
    timeout server 120s
    timeout check 2s
    retries 3
    option redispatch
    option http-server-close
frontend tiled
    bind 127.0.0.1:{self.port}
    default_backend workers
backend workers
    balance roundrobin
    option httpchk GET /healthz
{servers}
""")
        self.process: subprocess.Popen | None = None

    def start(self, timeout: float = 30) -> None:
        with open(self.log, "w") as log:
            self.process = subprocess.Popen(
                [haproxy_binary() or "haproxy", "-db", "-f", str(self.config)],
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + timeout
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(f"haproxy exited\n{log_tail(self.log)}")
            with contextlib.suppress(OSError):
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                if all(s.startswith("UP") for s in self.statuses().values()):
                    return
            if time.monotonic() > deadline:
                raise RuntimeError(f"haproxy did not see its workers up\n{log_tail(self.log)}")
            time.sleep(0.1)

    def cpu_seconds(self) -> float:
        return process_cpu_seconds(self.process)

    def statuses(self) -> dict[str, str]:
        """Each worker's status as HAProxy sees it (UP, DOWN, "UP 1/2" while changing...)."""
        with socket.socket(socket.AF_UNIX) as connection:
            connection.settimeout(5)
            connection.connect(str(self.socket))
            connection.sendall(b"show stat\n")
            chunks = []
            while chunk := connection.recv(65536):
                chunks.append(chunk)
        text = b"".join(chunks).decode().lstrip("# ")
        rows = csv.DictReader(io.StringIO(text))
        return {
            row["svname"]: row["status"]
            for row in rows
            if row["pxname"] == "workers" and row["svname"] not in ("BACKEND", "FRONTEND")
        }

    def wait_for(self, worker: str, status: str, timeout: float) -> float | None:
        """Seconds until HAProxy reports ``worker`` as ``status``, or None on timeout."""
        started = time.monotonic()
        while time.monotonic() - started < timeout:
            with contextlib.suppress(OSError):
                if self.statuses().get(worker) == status:
                    return time.monotonic() - started
            time.sleep(0.05)
        return None

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=10)


def haproxy_binary() -> str | None:
    import shutil

    return shutil.which("haproxy") or next(
        (p for p in ("/usr/sbin/haproxy",) if Path(p).exists()), None
    )


class TcpFront:
    """HAProxy in TCP mode in front of one port: stopping it is an object store that is down
    (connections refused) while the store itself, and what it holds, live on."""

    def __init__(self, name: str, target_port: int, directory: Path) -> None:
        self.port = free_port()
        self.config = directory / f"{name}.cfg"
        self.log = directory / f"{name}.log"
        self.config.write_text(
            "defaults\n    mode tcp\n    timeout connect 5s\n    timeout client 120s\n"
            "    timeout server 120s\n"
            f"frontend front\n    bind 127.0.0.1:{self.port}\n    default_backend store\n"
            f"backend store\n    server store 127.0.0.1:{target_port}\n"
        )
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        with open(self.log, "a") as log:
            self.process = subprocess.Popen(
                [haproxy_binary() or "haproxy", "-db", "-f", str(self.config)],
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + 30
        while True:
            with contextlib.suppress(OSError):
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"haproxy (tcp) did not start\n{log_tail(self.log)}")
            time.sleep(0.05)

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()  # haproxy closes every connection at once on SIGTERM
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=10)


class ObjectStore:
    """A moto S3 server with one bucket, for ``--storage bucket``, reached by the servers
    through a TCP front that a fault may stop (moto keeps its data in memory: stopping moto
    itself would lose them)."""

    def __init__(self, directory: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.bucket = "tiled-load"
        self.log = directory / "moto.log"
        self.process: subprocess.Popen | None = None
        self.front = TcpFront("moto-front", self.port, directory)

    def start(self) -> None:
        moto = Path(sys.executable).parent / "moto_server"
        with open(self.log, "w") as log:
            self.process = subprocess.Popen(
                [str(moto), "-H", "127.0.0.1", "-p", str(self.port)],
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + 30
        while not _answers(f"{self.url}/moto-api/"):
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"moto_server did not start\n{log_tail(self.log)}")
            time.sleep(0.1)
        # moto does not check signatures, so an unsigned request makes the bucket.
        httpx.put(f"{self.url}/{self.bucket}", timeout=10).raise_for_status()
        self.front.start()

    def storage(self) -> dict:
        return {
            "provider": "s3",
            "uri": f"http://127.0.0.1:{self.front.port}/{self.bucket}",
            "config": {
                "access_key_id": "load",
                "secret_access_key": "load",
                "region": "us-east-1",
                "virtual_hosted_style_request": False,
                "client_options": {"allow_http": True},
            },
        }

    def stop(self) -> None:
        self.front.stop()
        if self.process is None or self.process.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            self.process.send_signal(signal.SIGCONT)  # it may have been frozen by a fault
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=10)


# --- load clients (each in its own OS process) ---


@dataclass
class ClientSpec:
    """What one load-client process does; sent to it pickled."""

    role: str  # "reader" or "writer"
    number: int
    base_url: str
    api_key: str
    coroutines: int
    phase: str
    write_shape: tuple[int, int] = WRITE_SHAPE
    seed: int = 0


@dataclass
class ClientResult:
    """Every request a client process made: (start time, seconds, kind, status, flags);
    status 0 is a transport error. Writers add what became of each write."""

    number: int
    events: list[tuple[float, float, int, int, int]] = field(default_factory=list)
    writes: list[dict] = field(default_factory=list)
    error: str | None = None
    cpu_seconds: float = 0.0


async def _timed(
    client: httpx.AsyncClient, method: str, kind: str, url: str, events: list, **kwargs: Any
) -> httpx.Response | None:
    started, clock = time.time(), time.perf_counter()
    try:
        response = await client.request(method, url, **kwargs)
    except httpx.HTTPError:
        events.append((started, time.perf_counter() - clock, KINDS.index(kind), 0, 0))
        return None
    flags = (RETRY_AFTER if "retry-after" in response.headers else 0) | (
        FROM_TILED if "x-tiled-request-id" in response.headers else 0
    )
    events.append(
        (started, time.perf_counter() - clock, KINDS.index(kind), response.status_code, flags)
    )
    return response


def _read_request(kind: str, rng: random.Random) -> tuple[str, dict, dict]:
    """(path, query parameters, headers) of one read of ``kind`` on the seeded data."""
    array = f"seed{rng.randrange(SEED_ARRAYS)}"
    grid = SEED_SHAPE[0] // SEED_CHUNK
    i, j = rng.randrange(grid), rng.randrange(grid)
    if kind == "zarr_chunk":
        return f"/zarr/v3/{array}/c/{i}/{j}", {}, {}
    if kind == "zarr_json":
        return f"/zarr/v3/{array}/zarr.json", {}, {}
    if kind == "metadata":
        return f"/api/v1/metadata/{array}", {}, {}
    if kind == "block":
        return f"/api/v1/array/block/{array}", {"block": f"{i},{j}"}, {"Accept": OCTET_STREAM}
    if kind == "search":
        query = {
            "filter[eq][condition][key]": "kind",
            "filter[eq][condition][value]": '"seed"',
            "page[limit]": 10,
        }
        return "/api/v1/search/", query, {}
    return "/api/v1/table/partition/seed_table", {"partition": 0}, {"Accept": ARROW_FILE}


async def _reader(
    client: httpx.AsyncClient, rng: random.Random, deadline: float, events: list
) -> None:
    while time.time() < deadline:
        kind = rng.choice(READ_KINDS)
        path, params, headers = _read_request(kind, rng)
        await _timed(client, "GET", kind, path, events, params=params, headers=headers)


async def _with_retries(record: dict, attempt: Callable[[], Any]) -> httpx.Response | None:
    """``attempt()`` again while it fails in transit or is answered 502/503/504, at most
    WRITE_TRIES times in all, with a growing pause."""
    response = None
    for number in range(WRITE_TRIES):
        if number:
            record["retries"] += 1
            await asyncio.sleep(0.25 * 2 ** (number - 1))
        response = await attempt()
        if response is not None and response.status_code not in RETRYABLE:
            return response
    return response


async def _write_one(
    client: httpx.AsyncClient, record: dict, events: list, shape: tuple[int, int], in_flight: Any
) -> None:
    key, family = record["key"], record["family"]
    metadata = {"kind": "written", "phase": record["phase"]}
    if family == "array":
        node = array_node(key, shape, WRITE_CHUNK, metadata)
        body = expected_array(key, shape).tobytes()
        path, params, headers = f"/api/v1/array/full/{key}", {}, {"Content-Type": OCTET_STREAM}
    else:
        frame = expected_table(key, WRITE_TABLE_ROWS)
        node = table_node(key, frame, metadata)
        body = arrow_bytes(frame)
        path, params, headers = (
            f"/api/v1/table/partition/{key}",
            {"partition": 0},
            {"Content-Type": ARROW_FILE},
        )
    created = await _with_retries(
        record,
        lambda: _timed(client, "POST", f"create_{family}", "/api/v1/metadata/", events, json=node),
    )
    # 409 after a retry: the lost try had created the node; its data is written below all the
    # same (a PUT of the whole array or partition may be repeated).
    exists = created is not None and created.status_code == 409 and record["retries"]
    if not exists and (created is None or created.status_code != 200):
        record["error"] = _describe("create", created)
        return
    record["created"] = True

    async def put() -> httpx.Response | None:
        # Counted, so that a fault can be timed to land while data is being written.
        with in_flight.get_lock():
            in_flight.value += 1
        try:
            return await _timed(
                client,
                "PUT",
                f"write_{family}",
                path,
                events,
                params=params,
                headers=headers,
                content=body,
            )
        finally:
            with in_flight.get_lock():
                in_flight.value -= 1

    written = await _with_retries(record, put)
    if written is not None and written.status_code == 200:
        record["acknowledged"] = True
    else:
        record["error"] = _describe("write", written)


def _describe(step: str, response: httpx.Response | None) -> str:
    if response is None:
        return f"{step}: transport error"
    return f"{step}: {response.status_code} {response.text[:300]}"


async def _writer(
    client: httpx.AsyncClient,
    spec: ClientSpec,
    number: int,
    deadline: float,
    result: ClientResult,
    in_flight: Any,
) -> None:
    count = 0
    while time.time() < deadline:
        family = "array" if count % 2 == 0 else "table"
        record = {
            "key": f"{spec.phase}-p{spec.number}w{number}-{count}",
            "family": family,
            "phase": spec.phase,
            "shape": list(spec.write_shape),
            "created": False,
            "acknowledged": False,
            "retries": 0,
            "started": time.time(),
        }
        result.writes.append(record)
        await _write_one(client, record, result.events, spec.write_shape, in_flight)
        record["finished"] = time.time()
        count += 1


async def _client_main(
    spec: ClientSpec, start: float, seconds: float, in_flight: Any
) -> ClientResult:
    result = ClientResult(spec.number)
    cpu = time.process_time()
    headers = {"Authorization": f"Apikey {spec.api_key}"}
    limits = httpx.Limits(
        max_connections=spec.coroutines, max_keepalive_connections=spec.coroutines
    )
    async with httpx.AsyncClient(
        base_url=spec.base_url, headers=headers, limits=limits, timeout=REQUEST_TIMEOUT
    ) as client:
        await asyncio.sleep(max(0.0, start - time.time()))
        deadline = start + seconds
        if spec.role == "reader":
            tasks = [
                _reader(client, random.Random(spec.seed * 1000 + n), deadline, result.events)
                for n in range(spec.coroutines)
            ]
        else:
            tasks = [
                _writer(client, spec, n, deadline, result, in_flight)
                for n in range(spec.coroutines)
            ]
        await asyncio.gather(*tasks)
    result.cpu_seconds = time.process_time() - cpu
    return result


def client_process(
    spec: ClientSpec,
    start: Any,
    ready: Any,
    go: Any,
    results: Any,
    seconds: float,
    in_flight: Any,
) -> None:
    """Entry point of a load-client process: signals ready, waits for the common start time,
    runs, and sends its result back."""
    ready.put(spec.number)
    if not go.wait(120):
        return
    try:
        result = asyncio.run(_client_main(spec, start.value, seconds, in_flight))
    except Exception as error:  # noqa: BLE001 - reported, so that the run fails visibly
        result = ClientResult(spec.number, error=f"{type(error).__name__}: {error}")
    results.put(result)


def run_load(
    base_url: str,
    api_key: str,
    seconds: float,
    readers: int,
    writers: int,
    phase: str,
    write_shape: tuple[int, int] = WRITE_SHAPE,
    during: Callable[[float, Any], dict] | None = None,
) -> tuple[list, list[dict], float, dict, float]:
    """The mixed load for ``seconds``; ``during(start, puts_in_flight)`` runs in this process
    meanwhile (a fault). Returns (events, writes, start time, what ``during`` reported, CPU
    seconds the clients used)."""
    # Forked clients start at once; spawned ones would import numpy, pandas and pyarrow anew,
    # seconds per phase on a busy machine. This process runs no threads to fork with.
    methods = multiprocessing.get_all_start_methods()
    context = multiprocessing.get_context("fork" if "fork" in methods else "spawn")
    specs = []
    processes = min(READER_PROCESSES, readers)
    for n in range(processes):
        share = readers // processes + (1 if n < readers % processes else 0)
        specs.append(ClientSpec("reader", n, base_url, api_key, share, phase, seed=n + 1))
    if writers:
        specs.append(
            ClientSpec("writer", processes, base_url, api_key, writers, phase, write_shape)
        )
    start, go = context.Value("d", 0.0), context.Event()
    ready, results = context.Queue(), context.Queue()
    in_flight = context.Value("i", 0)
    children = [
        context.Process(
            target=client_process, args=(s, start, ready, go, results, seconds, in_flight)
        )
        for s in specs
    ]
    for child in children:
        child.start()
    collected: list[ClientResult] = []
    fault: dict = {}
    try:
        for _ in children:
            ready.get(timeout=120)
        # A common start a moment ahead: every process begins at once, whatever its spawn.
        start.value = time.time() + 0.5
        go.set()
        if during is not None:
            fault = during(start.value, in_flight)
        for _ in children:
            collected.append(results.get(timeout=seconds + 4 * REQUEST_TIMEOUT))
    finally:
        for child in children:
            child.join(timeout=30)
            if child.is_alive():
                child.terminate()
                child.join(timeout=10)
    errors = [r.error for r in collected if r.error]
    if errors:
        raise RuntimeError(f"load clients failed: {errors}")
    events = [e for r in collected for e in r.events]
    writes = [w for r in collected for w in r.writes]
    return events, writes, start.value, fault, sum(r.cpu_seconds for r in collected)


# --- summaries ---


def _status_name(status: int, flags: int) -> str:
    if status == 0:
        return "transport_error"
    name = str(status)
    if status >= 500:
        name += " tiled" if flags & FROM_TILED else " haproxy"
        if status == 503:
            name += ", Retry-After" if flags & RETRY_AFTER else ", no Retry-After"
    return name


def summarize(events: list, seconds: float) -> dict:
    """Per kind and in total: count, requests/s, p50 and p99 latency, error counts."""

    def stats(chosen: list) -> dict:
        latencies = numpy.array([e[1] for e in chosen if e[3]]) * 1000
        return {
            "count": len(chosen),
            "requests_per_s": round(len(chosen) / seconds, 1),
            "p50_ms": round(float(numpy.percentile(latencies, 50)), 2) if len(latencies) else None,
            "p99_ms": round(float(numpy.percentile(latencies, 99)), 2) if len(latencies) else None,
            "status_5xx": sum(1 for e in chosen if e[3] >= 500),
            "other_non_2xx": sum(1 for e in chosen if 0 < e[3] < 200 or 300 <= e[3] < 500),
            "transport_errors": sum(1 for e in chosen if e[3] == 0),
        }

    by_kind = {kind: stats([e for e in events if KINDS[e[2]] == kind]) for kind in KINDS}
    report = {kind: value for kind, value in by_kind.items() if value["count"]}
    report["total"] = stats(events)
    report["total_reads"] = stats([e for e in events if KINDS[e[2]] in READ_KINDS])
    report["total_writes"] = stats([e for e in events if KINDS[e[2]] in WRITE_KINDS])
    return report


def statuses_between(events: list, begin: float, end: float) -> dict[str, int]:
    """Status counts of the requests under way at any moment from ``begin`` to ``end``: those
    a fault cut short had begun before it."""
    counts = Counter(
        _status_name(e[3], e[4]) for e in events if e[0] <= end and e[0] + e[1] >= begin
    )
    return dict(sorted(counts.items()))


def _failed(event: tuple) -> bool:
    return event[3] == 0 or event[3] >= 500


def recovery(events: list, since: float) -> dict:
    """When requests started after ``since`` succeed again: the first success, and the end of
    the last failure (None: none failed)."""
    after = sorted((e for e in events if e[0] >= since), key=lambda e: e[0])
    first_ok = next((e[0] for e in after if not _failed(e)), None)
    failures = [e[0] + e[1] for e in after if _failed(e)]
    last_failure = max(failures) if failures else None
    return {
        "first_success_s": None if first_ok is None else round(first_ok - since, 3),
        "last_failure_end_s": None if last_failure is None else round(last_failure - since, 3),
        "requests_after": len(after),
        "failures_after": len(failures),
    }


def server_5xx(events: list) -> dict[str, int]:
    """Any 500, and any other 5xx answered by a worker itself but a 503 with Retry-After (a
    database out of reach, by design). A 500 counts whoever sent it: one that escaped the
    application would come from uvicorn, without Tiled's request id."""
    counts = Counter(
        _status_name(e[3], e[4])
        for e in events
        if e[3] == 500
        or (e[3] > 500 and e[4] & FROM_TILED and not (e[3] == 503 and e[4] & RETRY_AFTER))
    )
    return dict(counts)


# --- verification: every write read back from each worker directly ---


async def _state_of(client: httpx.AsyncClient, record: dict) -> str:
    """What a worker serves under a write's key: absent, complete, unwritten (all fill),
    partial (some whole chunks written), torn (a chunk that is neither), or an error."""
    key = record["key"]
    meta = await client.get(f"/api/v1/metadata/{key}")
    if meta.status_code == 404:
        return "absent"
    if meta.status_code != 200:
        return f"error: metadata {meta.status_code} {meta.text[:200]}"
    if record["family"] == "array":
        shape = tuple(record["shape"])
        response = await client.get(f"/api/v1/array/full/{key}", headers={"Accept": OCTET_STREAM})
        if response.status_code != 200:
            return f"error: data {response.status_code} {response.text[:200]}"
        expected = expected_array(key, shape)
        if response.content == expected.tobytes():
            return "complete"
        if len(response.content) != expected.nbytes:
            return f"torn: {len(response.content)} bytes, not {expected.nbytes}"
        stored = numpy.frombuffer(response.content, "<f4").reshape(shape)
        chunk_states = set()
        for i in range(0, shape[0], WRITE_CHUNK):
            for j in range(0, shape[1], WRITE_CHUNK):
                part = stored[i : i + WRITE_CHUNK, j : j + WRITE_CHUNK]
                if numpy.array_equal(part, expected[i : i + WRITE_CHUNK, j : j + WRITE_CHUNK]):
                    chunk_states.add("written")
                elif not part.any():
                    chunk_states.add("fill")
                else:
                    chunk_states.add("torn")
        if "torn" in chunk_states:
            return "torn"
        return "unwritten" if chunk_states == {"fill"} else "partial"
    response = await client.get(
        f"/api/v1/table/partition/{key}", params={"partition": 0}, headers={"Accept": ARROW_FILE}
    )
    if response.status_code != 200:
        # A table node whose partition was never written has nothing to serve.
        return f"unwritten: partition {response.status_code}"
    try:
        table = read_arrow(response.content)
    except pyarrow.ArrowInvalid as error:
        return f"torn: {error}"
    if table.num_rows == 0:
        return "unwritten"  # a partition never written reads as an empty table
    expected = pyarrow.Table.from_pandas(
        expected_table(key, WRITE_TABLE_ROWS), preserve_index=False
    )
    return "complete" if table.equals(expected) else "torn: table differs"


async def _verify(writes: list[dict], workers: list[Worker], api_key: str) -> dict:
    headers = {"Authorization": f"Apikey {api_key}"}
    limit = asyncio.Semaphore(8)
    async with contextlib.AsyncExitStack() as stack:
        clients = [
            await stack.enter_async_context(
                httpx.AsyncClient(base_url=w.url, headers=headers, timeout=REQUEST_TIMEOUT)
            )
            for w in workers
        ]

        async def states(record: dict) -> list[str]:
            async with limit:
                found = []
                for client in clients:
                    try:
                        found.append(await _state_of(client, record))
                    except httpx.HTTPError as error:
                        found.append(f"error: {type(error).__name__}")
                return found

        all_states = await asyncio.gather(*(states(r) for r in writes))
    acknowledged = [r for r in writes if r["acknowledged"]]
    mismatches, torn, unacknowledged, disagreements = [], [], [], []
    for record, found in zip(writes, all_states, strict=True):
        entry = {
            "key": record["key"],
            "family": record["family"],
            "retries": record["retries"],
            "states": dict(zip((w.name for w in workers), found, strict=True)),
        }
        if any(s.startswith("torn") for s in found):
            torn.append(entry)
        if len(set(found)) > 1:
            disagreements.append(entry)
        if record["acknowledged"]:
            if any(s != "complete" for s in found):
                mismatches.append(entry)
        elif any(s != "absent" for s in found):
            unacknowledged.append({**entry, "error": record.get("error")})
    return {
        "writes_attempted": len(writes),
        "writes_acknowledged": len(acknowledged),
        "read_back_from": [w.name for w in workers],
        "mismatches": len(mismatches),
        "mismatch_examples": mismatches[:5],
        "torn": len(torn),
        "torn_examples": torn[:5],
        "workers_disagree": len(disagreements),
        "disagreement_examples": disagreements[:5],
        # Nodes that exist although their write was never acknowledged (kill or outage).
        "unacknowledged_but_present": unacknowledged,
        "write_retries": sum(r["retries"] for r in writes),
        "write_errors": Counter(r["error"].split(" {")[0][:120] for r in writes if r.get("error")),
    }


def verify(writes: list[dict], workers: list[Worker], api_key: str) -> dict:
    return asyncio.run(asyncio.wait_for(_verify(writes, workers, api_key), 600))


# --- the run ---


@dataclass
class Checks:
    """Named checks; any failure makes the exit status non-zero."""

    results: list[dict] = field(default_factory=list)

    def add(self, name: str, ok: bool, detail: Any = None) -> None:
        self.results.append({"check": name, "ok": bool(ok), "detail": detail})
        if not ok:
            progress(f"CHECK FAILED: {name}: {detail}")

    @property
    def ok(self) -> bool:
        return all(r["ok"] for r in self.results)


def seed(base_url: str, api_key: str) -> dict:
    headers = {"Authorization": f"Apikey {api_key}"}
    with httpx.Client(base_url=base_url, headers=headers, timeout=REQUEST_TIMEOUT) as client:
        for n in range(SEED_ARRAYS):
            key = f"seed{n}"
            node = array_node(key, SEED_SHAPE, SEED_CHUNK, {"kind": "seed", "n": n})
            _ok(client.post("/api/v1/metadata/", json=node), f"create {key}")
            data = expected_array(key, SEED_SHAPE).tobytes()
            _ok(
                client.put(
                    f"/api/v1/array/full/{key}",
                    content=data,
                    headers={"Content-Type": OCTET_STREAM},
                ),
                f"write {key}",
            )
        frame = expected_table("seed_table", SEED_TABLE_ROWS)
        _ok(
            client.post(
                "/api/v1/metadata/", json=table_node("seed_table", frame, {"kind": "seed"})
            ),
            "create seed_table",
        )
        _ok(
            client.put(
                "/api/v1/table/partition/seed_table",
                params={"partition": 0},
                content=arrow_bytes(frame),
                headers={"Content-Type": ARROW_FILE},
            ),
            "write seed_table",
        )
    return {
        "arrays": SEED_ARRAYS,
        "array_shape": list(SEED_SHAPE),
        "chunks": [SEED_CHUNK] * 2,
        "dtype": "float32",
        "table_rows": SEED_TABLE_ROWS,
    }


class Unsupported(Exception):
    """The server refused the storage asked for."""


def _ok(response: httpx.Response, what: str) -> None:
    if response.status_code != 200:
        raise RuntimeError(f"seeding: {what}: {response.status_code} {response.text[:1000]}")


def check_phase(checks: Checks, name: str, events: list, verified: dict, fault_free: bool) -> None:
    fives = server_5xx(events)
    checks.add(f"{name}: no 500 and no other worker 5xx", not fives, fives or None)
    if fault_free:
        failed = sum(1 for e in events if _failed(e))
        checks.add(
            f"{name}: no 5xx and no transport error without a fault",
            failed == 0,
            statuses_between(events, 0, float("inf")) if failed else None,
        )
    checks.add(
        f"{name}: every acknowledged write reads back exactly from both workers",
        verified["mismatches"] == 0,
        verified["mismatch_examples"] or None,
    )
    checks.add(
        f"{name}: no torn chunk or table", verified["torn"] == 0, verified["torn_examples"] or None
    )
    checks.add(
        f"{name}: both workers serve the same",
        verified["workers_disagree"] == 0,
        verified["disagreement_examples"] or None,
    )


def receiving_a_write(worker: Worker) -> bool:
    """Whether a connection to ``worker`` has received more than a megabyte: a PUT of a
    writer's array in flight (reads send a few hundred bytes). Asked of the kernel (``ss``)."""
    try:
        done = subprocess.run(
            ["ss", "-Htin", "state", "established", f"( sport = :{worker.port} )"],
            capture_output=True,
            text=True,
            timeout=5,
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    return any(int(n) > 2**20 for n in re.findall(r"bytes_received:(\d+)", done.stdout))


def kill_fault(
    balancer: Balancer, workers: list[Worker], seconds: float, writers: int, checks: Checks
) -> Callable[[float, Any], dict]:
    """A fault for ``run_load``: a third of the way in, SIGKILL the worker that is receiving
    a writer's array (any worker, after a sixth more without one), restart it on its port
    after PROCESS_MANAGER_DELAY, and wait until HAProxy sees it up."""

    def fault(start: float, puts_in_flight: Any) -> dict:
        time.sleep(max(0.0, start + seconds / 3 - time.time()))
        latest = time.time() + seconds / 6
        victim = None
        while victim is None and time.time() < latest:
            if puts_in_flight.value:
                victim = next((w for w in workers if receiving_a_write(w)), None)
            time.sleep(0.005)
        mid_write = victim is not None
        victim = victim or workers[-1]
        in_flight_at_kill = puts_in_flight.value
        killed = time.time()
        progress(f"SIGKILL {victim.name} (pid {victim.process.pid})")
        victim.kill()
        marked_down = balancer.wait_for(victim.name, "DOWN", 30)
        time.sleep(max(0.0, killed + PROCESS_MANAGER_DELAY - time.time()))
        restarted = time.time()
        progress(f"restarting {victim.name} on port {victim.port}")
        victim.start()
        answering = time.time()
        marked_up = balancer.wait_for(victim.name, "UP", RECOVERY_TIMEOUT)
        up = time.time()
        checks.add("worker kill: HAProxy marks the killed worker down", marked_down is not None)
        checks.add("worker kill: the restarted worker is back in HAProxy", marked_up is not None)
        return {
            "times": {"killed": killed, "back_in_haproxy": up},
            "killed": victim.name,
            "killed_while_receiving_a_write": mid_write,
            "puts_in_flight_at_kill": in_flight_at_kill,
            "seconds_until_haproxy_marked_down": round(marked_down, 3) if marked_down else None,
            "seconds_from_restart_until_answering": round(answering - restarted, 3),
            "seconds_from_kill_until_back_in_haproxy": round(up - killed, 3),
        }

    return fault


def postgres_fault(cluster: Any, seconds: float) -> Callable[[float, Any], dict]:
    """A fault for ``run_load``: halt the PostgreSQL cluster a quarter of the way in, keep it
    down OUTAGE_SECONDS, resume it."""

    def fault(start: float, _: Any) -> dict:
        time.sleep(max(0.0, start + seconds / 4 - time.time()))
        progress("halting PostgreSQL")
        halting = time.time()
        cluster.halt()
        halted = time.time()
        time.sleep(OUTAGE_SECONDS)
        progress("resuming PostgreSQL")
        resuming = time.time()
        cluster.resume()
        resumed = time.time()
        return {
            "times": {
                "halt_started": halting,
                "halted": halted,
                "resume_started": resuming,
                "resumed": resumed,
            }
        }

    return fault


def freeze_fault(store: ObjectStore, seconds: float) -> Callable[[float, Any], dict]:
    """A fault for ``run_load``: the object store stops answering (SIGSTOP) for
    OUTAGE_SECONDS, then goes on (SIGCONT) with its data intact, as moto keeps it in memory."""

    def fault(start: float, _: Any) -> dict:
        time.sleep(max(0.0, start + seconds / 4 - time.time()))
        stopped = time.time()
        store.process.send_signal(signal.SIGSTOP)
        time.sleep(OUTAGE_SECONDS)
        store.process.send_signal(signal.SIGCONT)
        return {"times": {"stopped": stopped, "continued": time.time()}}

    return fault


def down_fault(store: ObjectStore, seconds: float) -> Callable[[float, Any], dict]:
    """A fault for ``run_load``: the object store is down (its front stopped: connections
    refused) for OUTAGE_SECONDS, then back, with its data intact."""

    def fault(start: float, _: Any) -> dict:
        time.sleep(max(0.0, start + seconds / 4 - time.time()))
        down = time.time()
        store.front.stop()
        time.sleep(OUTAGE_SECONDS)
        store.front.start()
        return {"times": {"down": down, "back": time.time()}}

    return fault


def _relative(fault: dict, start: float) -> dict:
    """The fault's report, its moments as seconds since the load started."""
    times = {name: round(moment - start, 3) for name, moment in fault["times"].items()}
    return {**{k: v for k, v in fault.items() if k != "times"}, "seconds_since_load_start": times}


TRACEBACK = "Traceback (most recent call last)"


def tracebacks(paths: list[Path]) -> dict:
    found = {}
    for path in paths:
        text = path.read_text(errors="replace") if path.exists() else ""
        count = text.count(TRACEBACK)
        if count:
            found[path.name] = {"count": count, "first": _first_traceback(text)}
    return found


def _first_traceback(text: str, limit: int = 6000) -> str:
    """The first traceback of ``text`` and what the log says after it, without the frames of
    installed packages: the framework's twenty layers would fill the budget before the frames
    and the exception that tell what failed."""
    kept: list[str] = []
    in_package_frame = False
    for line in text[text.find(TRACEBACK) :][: limit * 10].splitlines():
        if line.startswith('  File "'):
            in_package_frame = "site-packages" in line or "dist-packages" in line
        elif not line.startswith("    "):
            in_package_frame = False
        if not in_package_frame:
            kept.append(line)
    return "\n".join(kept)[:limit]


def configuration(catalog_uri: str, storage: Any, api_key: str) -> dict:
    return {
        "trees": [
            {
                "path": "/",
                "tree": "catalog",
                "args": {
                    "uri": catalog_uri,
                    "writable_storage": storage,
                    "init_if_not_exists": True,
                },
            }
        ],
        "authentication": {"single_user_api_key": api_key},
    }


def main_run(args: argparse.Namespace, stack: contextlib.ExitStack, directory: Path) -> dict:
    from tiled._tests.postgres import ThrowawayCluster, ThrowawayClusterError, _server_binaries

    checks = Checks()
    report: dict = {
        "settings": {
            "seconds": args.seconds,
            "fault_seconds": args.fault_seconds,
            "readers": args.readers,
            "writers": args.writers,
            "storage": args.storage,
            "reader_processes": min(READER_PROCESSES, args.readers),
            "writer_processes": 1,
            "cpus": os.cpu_count(),
            "balancer": "haproxy, round robin per request",
        },
    }
    binaries = _server_binaries()
    if binaries is None:
        return {"skipped": "the PostgreSQL server binaries (initdb, pg_ctl) are not installed"}
    if haproxy_binary() is None:
        return {"skipped": "haproxy is not installed (apt-get install haproxy)"}
    progress("starting a throwaway PostgreSQL cluster")
    try:
        cluster = ThrowawayCluster.start(binaries)
    except ThrowawayClusterError as error:
        return {"skipped": f"a PostgreSQL cluster could not be started: {error}"}
    stack.callback(cluster.stop)

    storage: Any = str(directory / "data")
    store = None
    if args.storage == "bucket":
        store = ObjectStore(directory)
        stack.callback(store.stop)
        store.start()
        storage = [store.storage()]
    api_key = secrets.token_hex(16)
    config = directory / "config.yml"
    config.write_text(yaml.safe_dump(configuration(cluster.uri, storage, api_key)))
    workers = [Worker(f"worker{n}", config, directory) for n in range(2)]
    for worker in workers:
        stack.callback(worker.stop)
    report["logs"] = [str(w.log) for w in workers]
    progress("starting worker0 alone (it creates the catalog's tables), then worker1")
    try:
        workers[0].start()
    except RuntimeError as error:
        if store is not None:
            raise Unsupported(f"the server refused bucket storage: {error}") from None
        raise
    workers[1].start()
    both = Balancer("haproxy-both", workers, directory)
    one = Balancer("haproxy-one", workers[:1], directory)
    proxies = (both, one)
    for balancer in proxies:
        stack.callback(balancer.stop)
        balancer.start()
    progress("seeding")
    try:
        report["seed"] = seed(both.url, api_key)
    except RuntimeError as error:
        if store is not None:
            raise Unsupported(str(error)) from None
        raise

    def phase(name: str, url: str, seconds: float, fault_free: bool, **kwargs: Any) -> tuple:
        progress(f"{name}: mixed load for {seconds:g} s through {url}")
        servers_before = [w.cpu_seconds() for w in workers] + [b.cpu_seconds() for b in proxies]
        events, writes, start, fault, client_cpu = run_load(
            url, api_key, seconds, args.readers, args.writers, name, **kwargs
        )
        servers_after = [w.cpu_seconds() for w in workers] + [b.cpu_seconds() for b in proxies]
        progress(f"{name}: {len(events)} requests; reading {len(writes)} writes back")
        verified = verify(writes, workers, api_key)
        check_phase(checks, name, events, verified, fault_free)
        result = {"load": summarize(events, seconds), "writes": verified}
        # Where the machine's time went: the load clients share the CPUs with the servers.
        cpu = {"load_clients": round(client_cpu, 1)}
        if fault_free:  # a restarted worker's count starts again from zero
            spent = [a - b for a, b in zip(servers_after, servers_before, strict=True)]
            cpu["workers"] = round(sum(spent[: len(workers)]), 1)
            cpu["haproxy"] = round(sum(spent[len(workers) :]), 1)
            if events:
                cpu["worker_cpu_ms_per_request"] = round(1000 * cpu["workers"] / len(events), 2)
        result["cpu_seconds"] = cpu
        # Other work on the machine slows every figure here: its load shows how much there was.
        result["load_average_1min_after"] = round(os.getloadavg()[0], 2)
        return events, writes, start, fault, result

    balanced = phase("two_workers", both.url, args.seconds, True)[-1]
    single = phase("one_worker", one.url, args.seconds, True)[-1]
    report["two_workers"], report["one_worker"] = balanced, single
    two_rate = balanced["load"]["total"]["requests_per_s"]
    one_rate = single["load"]["total"]["requests_per_s"]
    report["ratio_two_to_one_worker"] = {
        "requests_per_s": round(two_rate / one_rate, 3) if one_rate else None,
        "reads_per_s": _ratio(balanced, single, "total_reads"),
        "writes_per_s": _ratio(balanced, single, "total_writes"),
    }
    checks.add("load: requests were made", two_rate > 0 and one_rate > 0)

    faults: dict = {}
    if args.faults:
        faults["worker_kill"] = fault_kill(args, both, workers, phase, checks)
        faults["postgresql_restart"] = fault_postgres(args, cluster, both, phase, checks)
        if store is None:
            faults["object_store_down"] = "skipped: directory storage"
            faults["object_store_frozen"] = "skipped: directory storage"
        else:
            faults["object_store_down"] = fault_store_down(args, store, both, phase, checks)
            faults["object_store_frozen"] = fault_store(args, store, both, phase, checks)
    else:
        faults = {"skipped": "--no-faults"}
    report["faults"] = faults
    report["server_tracebacks"] = tracebacks([w.log for w in workers])
    report["checks"] = checks.results
    report["ok"] = checks.ok
    if not checks.ok:
        for path in [w.log for w in workers] + [both.log]:
            print(log_tail(path), file=sys.stderr)
    return report


def _ratio(two: dict, one: dict, total: str) -> float | None:
    denominator = one["load"][total]["requests_per_s"]
    return round(two["load"][total]["requests_per_s"] / denominator, 3) if denominator else None


def fault_kill(
    args: argparse.Namespace,
    balancer: Balancer,
    workers: list[Worker],
    phase: Callable,
    checks: Checks,
) -> dict:
    seconds = args.fault_seconds
    events, writes, start, fault, result = phase(
        "worker_kill",
        balancer.url,
        seconds,
        False,
        write_shape=KILL_WRITE_SHAPE,
        during=kill_fault(balancer, workers, seconds, args.writers, checks),
    )
    killed, up = fault["times"]["killed"], fault["times"]["back_in_haproxy"]
    result.update(_relative(fault, start))
    result["writer_array_mib"] = KILL_WRITE_SHAPE[0] * KILL_WRITE_SHAPE[1] * 4 / 2**20
    result["statuses_from_kill_until_back_in_haproxy"] = statuses_between(events, killed, up)
    result["recovery_after_kill"] = recovery(events, killed)
    result["statuses_after_back_in_haproxy"] = statuses_between(events, up, float("inf"))
    # Writes under way at the kill: begun before it, finished after it.
    result["writes_in_flight_at_kill"] = sum(
        1 for w in writes if w["started"] <= killed <= w.get("finished", float("inf"))
    )
    result["writes_retried"] = sum(1 for w in writes if w["retries"])
    # A write that had to be retried is one the kill cut short (HAProxy answered 502, or
    # the connection dropped); without one, this run's kill fell between writes.
    result["kill_cut_a_write_short"] = result["writes_retried"] > 0
    checks.add(
        "worker kill: writes were in flight at the kill",
        result["writes_in_flight_at_kill"] > 0 or not args.writers,
    )
    late = [e for e in events if e[0] > up + 1 and _failed(e)]
    checks.add(
        "worker kill: no failure once the worker is back in HAProxy",
        not late,
        result["statuses_after_back_in_haproxy"] if late else None,
    )
    return result


def fault_postgres(
    args: argparse.Namespace, cluster: Any, balancer: Balancer, phase: Callable, checks: Checks
) -> dict:
    # Long enough to see the recovery after the outage, whatever --fault-seconds says.
    seconds = max(args.fault_seconds, OUTAGE_SECONDS + 8)
    events, writes, start, fault, result = phase(
        "postgresql_restart",
        balancer.url,
        seconds,
        False,
        during=postgres_fault(cluster, seconds),
    )
    down, resumed = fault["times"]["halt_started"], fault["times"]["resumed"]
    outage = [e for e in events if down <= e[0] <= resumed]
    no_retry_after = sum(1 for e in outage if e[3] == 503 and not e[4] & RETRY_AFTER)
    after = recovery(events, resumed)
    result.update(_relative(fault, start))
    result["outage_seconds"] = round(resumed - down, 3)
    result["statuses_during_outage"] = statuses_between(events, down, resumed)
    result["answered_503_with_retry_after"] = sum(
        1 for e in outage if e[3] == 503 and e[4] & RETRY_AFTER
    )
    result["recovery_after_resume"] = after
    result["statuses_after_resume"] = statuses_between(events, resumed, float("inf"))
    result["writes_retried"] = sum(1 for w in writes if w["retries"])
    checks.add(
        "postgresql restart: every 503 carries Retry-After",
        no_retry_after == 0,
        no_retry_after or None,
    )
    checks.add(
        "postgresql restart: requests were refused during the outage",
        result["answered_503_with_retry_after"] > 0,
    )
    # Recovered: something succeeded after the resume, and nothing failed in the last seconds.
    late = _failures_once_settled(events, start, seconds, resumed)
    checks.add(
        "postgresql restart: requests succeed again after the resume",
        after["first_success_s"] is not None and not late,
        after,
    )
    return result


def _failures_once_settled(events: list, start: float, seconds: float, back: float) -> list:
    """Failures in the second half of the time left after a fault ended: none, once the
    servers have recovered."""
    settled = back + (start + seconds - back) / 2
    return [e for e in events if e[0] > settled and _failed(e)]


def _refusals(events: list, down: float, back: float) -> tuple[int, int]:
    """(503s with Retry-After, 503s without) among the requests made from down to back."""
    outage = [e for e in events if down <= e[0] <= back and e[3] == 503]
    with_retry_after = sum(1 for e in outage if e[4] & RETRY_AFTER)
    return with_retry_after, len(outage) - with_retry_after


def fault_store(
    args: argparse.Namespace,
    store: ObjectStore,
    balancer: Balancer,
    phase: Callable,
    checks: Checks,
) -> dict:
    seconds = max(args.fault_seconds, OUTAGE_SECONDS + 8)
    events, _, start, fault, result = phase(
        "object_store_frozen", balancer.url, seconds, False, during=freeze_fault(store, seconds)
    )
    stopped, continued = fault["times"]["stopped"], fault["times"]["continued"]
    result.update(_relative(fault, start))
    result["statuses_while_stopped"] = statuses_between(events, stopped, continued)
    result["recovery_after_continue"] = recovery(events, continued)
    late = _failures_once_settled(events, start, seconds, continued)
    checks.add(
        "object store frozen: requests succeed again after it goes on",
        not late,
        result["recovery_after_continue"],
    )
    return result


def fault_store_down(
    args: argparse.Namespace,
    store: ObjectStore,
    balancer: Balancer,
    phase: Callable,
    checks: Checks,
) -> dict:
    seconds = max(args.fault_seconds, OUTAGE_SECONDS + 8)
    events, writes, start, fault, result = phase(
        "object_store_down", balancer.url, seconds, False, during=down_fault(store, seconds)
    )
    down, back = fault["times"]["down"], fault["times"]["back"]
    refused, no_retry_after = _refusals(events, down, back)
    result.update(_relative(fault, start))
    result["statuses_while_down"] = statuses_between(events, down, back)
    result["answered_503_with_retry_after"] = refused
    result["recovery_after_back"] = recovery(events, back)
    result["writes_retried"] = sum(1 for w in writes if w["retries"])
    checks.add(
        "object store down: every 503 carries Retry-After",
        no_retry_after == 0,
        no_retry_after or None,
    )
    checks.add("object store down: requests that need it were refused (503)", refused > 0)
    late = _failures_once_settled(events, start, seconds, back)
    checks.add(
        "object store down: requests succeed again once it is back",
        not late,
        result["recovery_after_back"],
    )
    return result


def parse_arguments(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, help="mixed load per run (default 60)")
    parser.add_argument("--fault-seconds", type=float, help="load during each fault (default 20)")
    parser.add_argument("--readers", type=int, default=16)
    parser.add_argument("--writers", type=int, default=2)
    parser.add_argument(
        "--faults",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="inject faults (default: yes; --no-faults to skip)",
    )
    parser.add_argument("--quick", action="store_true", help="a smoke run: 10 s load, 8 s faults")
    parser.add_argument("--storage", choices=("directory", "bucket"), default="directory")
    parser.add_argument("--json", type=Path, help="also write the report here")
    args = parser.parse_args(argv)
    if args.seconds is None:
        args.seconds = 10.0 if args.quick else 60.0
    if args.fault_seconds is None:
        args.fault_seconds = 8.0 if args.quick else 20.0
    if args.readers < 1 or args.writers < 0:
        parser.error("--readers must be at least 1 and --writers at least 0")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_arguments(argv)
    started = time.monotonic()
    status = 0
    with tempfile.TemporaryDirectory(prefix="tiled-load-") as folder:
        directory = Path(folder)
        try:
            with contextlib.ExitStack() as stack:
                report = main_run(args, stack, directory)
        except Unsupported as error:
            report = {"error": f"--storage bucket: not yet supported: {error}"}
            progress(report["error"])
            status = 2
        except Exception:
            # The logs go with the temporary directory: show them while they exist.
            for log in sorted(directory.glob("*.log")):
                print(log_tail(log), file=sys.stderr)
            raise
    if "skipped" in report:
        progress(f"skipped: {report['skipped']}")
    elif "ok" in report and not report["ok"]:
        status = 1
    report["wall_seconds"] = round(time.monotonic() - started, 1)
    text = json.dumps(report, indent=2, default=str)
    if args.json:
        args.json.write_text(text + "\n")
    print(text)
    return status


if __name__ == "__main__":
    sys.exit(main())
