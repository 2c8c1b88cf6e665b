"""Prometheus metrics at ``/api/v1/metrics``, with upstream Tiled's names.

Every request is counted, by method, status code and endpoint (``about``, ``metadata``,
``search``, ``data``, ``auth``, ``metrics``, ``zarr``, else ``unknown``), in two histograms:
its duration (``tiled_request_duration_seconds``) and the bytes of its body
(``tiled_response_content_length_bytes``). The connection pools of the catalog and of the
authentication database are counted too (``tiled_db_pool_*``).

The counting is plain Python arithmetic on the request's path (a bisection per histogram): it
costs a request about a microsecond, where a client library's labelled histogram costs
several. The text is made when the metrics are read.

Several server processes (``--workers``) count apart. With ``PROMETHEUS_MULTIPROC_DIR`` set (as
upstream reads it), each writes what it counted to a file there every second, and each answers
``/metrics`` with the sum over all files: counters and histograms of every process that has
run, gauges of the running ones only.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import weakref
from bisect import bisect_left
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Request, Response

from .authenticators import CurrentIdentity
from .dependencies import require_scope
from .middleware import route_path

logger = logging.getLogger(__name__)

DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0)
SIZE_BUCKETS = (1, 10, 100, 1000, 10_000, 100_000, 1_000_000, 10_000_000, 100_000_000,
                1_000_000_000, 10_000_000_000)  # fmt: skip
HISTOGRAMS = {
    "tiled_request_duration_seconds": ("request duration for all HTTP requests",
                                       DURATION_BUCKETS),
    "tiled_response_content_length_bytes": ("response size in bytes for all HTTP requests",
                                            SIZE_BUCKETS),
}  # fmt: skip
POOL_GAUGES = {
    "tiled_db_pool_established": "Number of established connections",
    "tiled_db_pool_active": (
        "Number of currently active (in-use) connections checked out from the pool"
    ),
}
POOL_COUNTERS = {
    "tiled_db_pool_opened_total": "Total number of established connections over time",
    "tiled_db_pool_closed_total": "Total number of closed connections over time",
    "tiled_db_pool_checkouts_total": (
        "Total number of checked out connections from the pool over time"
    ),
    "tiled_db_pool_checkins_total": "Total number of returned connections to the pool over time",
    "tiled_db_pool_invalid_total": "Total number of invalidated connections over time",
    "tiled_db_pool_reset_total": "Total number of reset connections over time",
    "tiled_db_pool_first_overflow_total": (
        "Number of times a checkout caused the first overflow connection to be used"
    ),
    "tiled_db_pool_at_max_total": (
        "Number of times a checkout occurred when the pool was at its absolute capacity"
    ),
}
# The first path segment under /api/v1 -> the endpoint label (upstream's names).
ENDPOINTS = {
    "": "about",
    "metadata": "metadata",
    "search": "search",
    "search-deep": "search",
    "distinct": "search",
    "array": "data",
    "table": "data",
    "container": "data",
    "node": "data",
    "awkward": "data",
    "ragged": "data",
    "auth": "auth",
    "metrics": "metrics",
}
# Upstream's label values that exist (at zero) before any request.
INITIAL_ENDPOINTS = ("about", "auth", "data", "entries", "metadata", "metrics", "search")
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "PROPFIND"})
SNAPSHOT_SECONDS = 1.0
MULTIPROCESS_VARIABLE = "PROMETHEUS_MULTIPROC_DIR"


def endpoint_of(path: str) -> str:
    if path.startswith("/api/v1/"):
        return ENDPOINTS.get(path[8:].split("/", 1)[0], "unknown")
    if path.startswith("/zarr/"):
        return "zarr"
    return "unknown"


class Metrics:
    """What this process counted: histograms by (name, method, code, endpoint), and pool
    gauges and counters by (name, pool)."""

    def __init__(self, directory: str | os.PathLike | None = None):
        # (method, code, endpoint) -> [durations by bucket..., sum, sizes by bucket..., sum]
        self.requests: dict[tuple[str, str, str], list[float]] = {}
        self.pools: dict[tuple[str, str], float] = {}
        self.directory = Path(directory) if directory else None
        self._unsubscribe: Any = None
        self._write_failed = False
        self._unwatch: Any = None
        # Upstream's series that exist before any request (for dashboards and alerts).
        for code in ("200", "304", "500"):
            for endpoint in INITIAL_ENDPOINTS:
                self.requests[("GET", code, endpoint)] = _empty_counts()

    def observe(self, method: str, code: int, endpoint: str, seconds: float, size: int) -> None:
        # A label per method a client makes up would grow the series without end.
        key = (method if method in METHODS else "other", str(code), endpoint)
        counts = self.requests.get(key)
        if counts is None:
            counts = self.requests[key] = _empty_counts()
        # Per bucket (not cumulative; summed when read), then the sum, for each histogram.
        counts[bisect_left(DURATION_BUCKETS, seconds)] += 1
        counts[len(DURATION_BUCKETS) + 1] += seconds
        sizes = len(DURATION_BUCKETS) + 2
        counts[sizes + bisect_left(SIZE_BUCKETS, size)] += 1
        counts[-1] += size

    def request_done(self, scope: Any, status: int, seconds: float, size: int) -> None:
        """Count an HTTP request (what the edge middleware calls)."""
        self.observe(scope["method"], status, endpoint_of(route_path(scope)), seconds, size)

    def pool_add(self, name: str, pool: str, amount: float = 1) -> None:
        key = (name, pool)
        self.pools[key] = self.pools.get(key, 0) + amount

    def pool_seen(self, engine: Any) -> None:
        """The gauges and counters of the pool of ``engine`` (as upstream's name them),
        present at zero before anything happens; :meth:`pool_event` counts from then on."""
        for name in (*POOL_GAUGES, *POOL_COUNTERS):
            self.pool_add(name, _pool_label_of(engine), 0)

    def pool_event(self, engine: Any, name: str) -> None:
        """Count an event of the pool of ``engine`` (see :mod:`tiled.database_pools`)."""
        label = _pool_label_of(engine)
        for counter, amount in POOL_EVENT_COUNTS.get(name, ()):
            self.pool_add(counter, label, amount)
        if name == "checkout":
            pool = engine.sync_engine.pool
            limit = getattr(pool, "_max_overflow", None)
            if limit is None or limit < 0:
                return  # a pool of one connection, or unbounded
            if pool.overflow() == 1:
                self.pool_add("tiled_db_pool_first_overflow_total", label)
            if pool.checkedout() == pool.size() + limit:
                self.pool_add("tiled_db_pool_at_max_total", label)

    # --- several processes ---

    def _snapshot_file(self) -> Path:
        return self.directory / f"tiled-{os.getpid()}.json"

    def write_snapshot(self) -> None:
        """This process's counts, for the others (a full disk is logged once, not fatal)."""
        document = {
            "pid": os.getpid(),
            "requests": [[*key, counts] for key, counts in self.requests.items()],
            "pools": [[*key, value] for key, value in self.pools.items()],
        }
        temporary = self._snapshot_file().with_suffix(".tmp")
        try:
            temporary.write_text(json.dumps(document))
            temporary.replace(self._snapshot_file())  # readers never see half a file
        except OSError as error:
            temporary.unlink(missing_ok=True)
            if not self._write_failed:
                logger.warning("Cannot share this process's metrics in %s: %s",
                               self.directory, error)  # fmt: skip
            self._write_failed = True
        else:
            self._write_failed = False

    def _take_over_file_of_this_pid(self) -> None:
        """Counts an earlier process with this pid left (pids are reused): added to this
        one's, so that no counter goes down when the file is written again."""
        try:
            document = json.loads(self._snapshot_file().read_text())
        except (OSError, ValueError):
            return
        for key, counts in _requests_of(document):
            mine = self.requests.setdefault(key, _empty_counts())
            for index, count in enumerate(counts[: len(mine)]):
                mine[index] += count
        for name, pool, value in _pools_of(document):
            if name in POOL_COUNTERS:
                self.pool_add(name, pool, value)

    async def start(self) -> None:
        from .. import database_pools

        # Engines are made at startup and later (a catalog's, per event loop).
        self._unwatch = database_pools.watch_pools(self.pool_event)
        self._unsubscribe = database_pools.subscribe(self.pool_seen)
        if self.directory is not None:
            self._take_over_file_of_this_pid()
            self.write_snapshot()

    async def share(self) -> None:
        """Write this process's counts for the others every second (a background task of
        the application: it runs until shutdown)."""
        if self.directory is None:
            return
        while True:
            await asyncio.sleep(SNAPSHOT_SECONDS)
            self.write_snapshot()

    async def stop(self) -> None:
        for stop in (self._unsubscribe, self._unwatch):
            if stop is not None:
                stop()
        if self.directory is not None:
            self.write_snapshot()

    def _merged(self) -> tuple[dict, dict]:
        """Counts of every process: this one's as of now, the others' from their files.

        This process's file is written first and read back with the others: every process
        answers the sum of the same files, each of which only grows, so that no counter goes
        down from one answer to the next, whichever process gives it."""
        if self.directory is None:
            return {key: list(counts) for key, counts in self.requests.items()}, dict(self.pools)
        self.write_snapshot()
        requests: dict = {}
        pools: dict = {}
        for path in self.directory.glob("tiled-*.json"):
            try:
                document = json.loads(path.read_text())
                pid = document["pid"]
                file_requests, file_pools = _requests_of(document), _pools_of(document)
            except (OSError, ValueError, TypeError, KeyError):
                continue  # being replaced, or not ours
            if pid == os.getpid() and self._write_failed:
                continue  # stale: this process's counts are added as of now below
            running = pid == os.getpid() or _running(pid)
            for key, counts in file_requests:
                merged = requests.setdefault(key, _empty_counts())
                for index, count in enumerate(counts[: len(merged)]):
                    merged[index] += count
            for name, pool, value in file_pools:
                if name in POOL_GAUGES and not running:
                    continue  # a stopped process holds no connections
                pools[(name, pool)] = pools.get((name, pool), 0) + value
        if self._write_failed:
            for key, counts in self.requests.items():
                merged = requests.setdefault(key, _empty_counts())
                for index, count in enumerate(counts):
                    merged[index] += count
            for key, value in self.pools.items():
                pools[key] = pools.get(key, 0) + value
        return requests, pools

    def exposition(self) -> bytes:
        """The Prometheus text format (version 0.0.4) of every metric."""
        requests, pools = self._merged()
        lines: list[str] = []
        offsets = {"tiled_request_duration_seconds": 0,
                   "tiled_response_content_length_bytes": len(DURATION_BUCKETS) + 2}  # fmt: skip
        for name, (description, buckets) in HISTOGRAMS.items():
            lines += [f"# HELP {name} {description}", f"# TYPE {name} histogram"]
            start = offsets[name]
            for (method, code, endpoint), counts in sorted(requests.items()):
                labels = f'method="{method}",code="{code}",endpoint="{endpoint}"'
                cumulative = 0.0
                for index, bound in enumerate((*buckets, float("inf"))):
                    cumulative += counts[start + index]
                    lines.append(
                        f'{name}_bucket{{{labels},le="{_number(bound)}"}} {_number(cumulative)}'
                    )
                lines.append(f"{name}_count{{{labels}}} {_number(cumulative)}")
                lines.append(f"{name}_sum{{{labels}}} {_number(counts[start + len(buckets) + 1])}")
        for names, kind in ((POOL_GAUGES, "gauge"), (POOL_COUNTERS, "counter")):
            for name, description in names.items():
                lines += [f"# HELP {name} {description}", f"# TYPE {name} {kind}"]
                for (metric, pool), value in sorted(pools.items()):
                    if metric == name:
                        lines.append(f'{name}{{uri="{_escaped(pool)}"}} {_number(value)}')
        return ("\n".join(lines) + "\n").encode()


def _empty_counts() -> list[float]:
    return [0.0] * (len(DURATION_BUCKETS) + len(SIZE_BUCKETS) + 4)


def _requests_of(document: Any) -> list[tuple[tuple[str, str, str], list[float]]]:
    return [((method, code, endpoint), [float(c) for c in counts])
            for method, code, endpoint, counts in document.get("requests", ())]  # fmt: skip


def _pools_of(document: Any) -> list[tuple[str, str, float]]:
    return [(str(name), str(pool), float(value))
            for name, pool, value in document.get("pools", ())]  # fmt: skip


def _running(pid: Any) -> bool:
    if not isinstance(pid, int):
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _number(value: float) -> str:
    """A value as prometheus_client writes it (and so upstream's ``le`` labels): Go's
    notation, which turns to an exponent for numbers of more than six digits."""
    value = float(value)
    if value == float("inf"):
        return "+Inf"
    if value == float("-inf"):
        return "-Inf"
    if value != value:
        return "NaN"
    text = repr(value)
    dot = text.find(".")
    if value > 0 and dot > 6:
        mantissa = f"{text[0]}.{text[1:dot]}".rstrip("0.")
        return f"{mantissa}e+0{dot - 1}"
    return text


def _escaped(text: str) -> str:
    return text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


# What each event of a pool moves: (gauge or counter, by how much).
POOL_EVENT_COUNTS: dict[str, tuple[tuple[str, int], ...]] = {
    "connect": (("tiled_db_pool_established", 1), ("tiled_db_pool_opened_total", 1)),
    "close": (("tiled_db_pool_established", -1), ("tiled_db_pool_closed_total", 1)),
    "checkout": (("tiled_db_pool_active", 1), ("tiled_db_pool_checkouts_total", 1)),
    "checkin": (("tiled_db_pool_active", -1), ("tiled_db_pool_checkins_total", 1)),
    "invalidate": (("tiled_db_pool_invalid_total", 1),),
    "reset": (("tiled_db_pool_reset_total", 1),),
}


# Engine -> its label (pool events come on every checkout; engines are not kept alive here).
_POOL_LABELS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _pool_label_of(engine: Any) -> str:
    label = _POOL_LABELS.get(engine)
    if label is None:
        label = _POOL_LABELS[engine] = pool_label(engine.url)
    return label


def pool_label(url: Any) -> str:
    """A database URL without its password (the label of its pool's metrics)."""
    try:
        return url.render_as_string(hide_password=True)
    except AttributeError:
        return str(url)


def metrics_router(metrics: Metrics) -> Any:
    """``GET /metrics`` (under ``/api/v1``): credentials with the ``metrics`` scope."""
    router = APIRouter()

    @router.get("/metrics", include_in_schema=False)
    async def prometheus_metrics(request: Request, identity: CurrentIdentity) -> Response:
        require_scope(identity, "metrics", request)
        return Response(metrics.exposition(), media_type=EXPOSITION_MEDIA_TYPE)

    return router


EXPOSITION_MEDIA_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def metrics_from_environment() -> Metrics:
    """Counts of this process, shared through ``PROMETHEUS_MULTIPROC_DIR`` when it is set
    (which must then be a writable directory, as upstream requires)."""
    directory = os.environ.get(MULTIPROCESS_VARIABLE)
    if directory:
        if not Path(directory).is_dir():
            raise ValueError(
                f"prometheus enabled and {MULTIPROCESS_VARIABLE} is set but ({directory}) is "
                "not a directory"
            )
        if not os.access(directory, os.W_OK):
            raise ValueError(
                f"prometheus enabled and {MULTIPROCESS_VARIABLE} is set but ({directory}) is "
                "not writable"
            )
    return Metrics(directory or None)
