"""Prometheus metrics at ``/api/v1/metrics`` (upstream's names, on by default as upstream's).

What a server answers is read with prometheus_client's own parser of the text format, as a
Prometheus server would read it.
"""

from __future__ import annotations

import os
import time

import httpx
import numpy
import pytest

from tiled.adapters.array import ArrayAdapter
from tiled.adapters.mapping import MapAdapter
from tiled.server.app import build_app

from .live_server import serve
from .processes import free_port, running_tiled

parser = pytest.importorskip("prometheus_client.parser")
KEY = {"Authorization": "Apikey secret"}


def families(text: str) -> dict:
    return {family.name: family for family in parser.text_string_to_metric_families(text)}


def sample(found: dict, name: str, suffix: str, **labels) -> float | None:
    family = found[name]
    for item in family.samples:
        if item.name == name + suffix and all(item.labels.get(k) == v for k, v in labels.items()):
            return item.value
    return None


def _tree() -> MapAdapter:
    return MapAdapter({"x": ArrayAdapter.from_array(numpy.arange(1000))})


@pytest.fixture(scope="module")
def server():
    app = build_app(_tree(), {"single_user_api_key": "secret", "allow_anonymous_access": True})
    with serve(app) as live:
        yield live.url


def test_requests_are_counted_by_endpoint_code_and_method(server):
    before = families(httpx.get(f"{server}/api/v1/metrics", headers=KEY).text)
    duration = "tiled_request_duration_seconds"
    counted = sample(before, duration, "_count", method="GET", code="200", endpoint="data") or 0
    for _ in range(3):
        assert httpx.get(f"{server}/api/v1/array/full/x").status_code == 200
    httpx.get(f"{server}/zarr/v3/x/zarr.json")
    httpx.get(f"{server}/api/v1/metadata/nope")
    found = families(httpx.get(f"{server}/api/v1/metrics", headers=KEY).text)
    assert found[duration].type == "histogram"
    data = {"method": "GET", "code": "200", "endpoint": "data"}
    assert sample(found, duration, "_count", **data) == counted + 3
    assert sample(found, duration, "_count", method="GET", code="200", endpoint="zarr") >= 1
    assert sample(found, duration, "_count", method="GET", code="404", endpoint="metadata") >= 1
    # Buckets are cumulative, ending with +Inf at the count.
    size = "tiled_response_content_length_bytes"
    assert sample(found, size, "_bucket", le="+Inf", **data) == counted + 3
    assert sample(found, size, "_bucket", le="1000.0", **data) <= sample(
        found, size, "_bucket", le="10000.0", **data
    )
    # The array is 8000 bytes: each answer counts in the 10,000 bucket, not the 1,000 one.
    assert (
        sample(found, size, "_bucket", le="10000.0", **data)
        - sample(found, size, "_bucket", le="1000.0", **data)
        >= 3
    )
    assert sample(found, duration, "_sum", **data) > 0


def test_the_metrics_need_the_metrics_scope(server):
    anonymous = httpx.get(f"{server}/api/v1/metrics")
    assert anonymous.status_code == 401
    assert "metrics" in anonymous.json()["detail"]
    allowed = httpx.get(f"{server}/api/v1/metrics", headers=KEY)
    assert allowed.status_code == 200
    assert allowed.headers["content-type"].startswith("text/plain; version=0.0.4")


def test_metrics_off():
    app = build_app(_tree(), {"single_user_api_key": "secret"},
                    server_settings={"metrics": {"prometheus": False}})  # fmt: skip
    with serve(app) as live:
        assert httpx.get(f"{live.url}/api/v1/metrics", headers=KEY).status_code == 404
        assert httpx.get(f"{live.url}/api/v1/array/full/x", headers=KEY).status_code == 200
    assert app.edge.metrics is None


def test_database_pools_are_counted_without_passwords(tmp_path):
    from tiled.catalog import from_uri

    catalog = from_uri(f"sqlite:///{tmp_path / 'catalog.db'}", init_if_not_exists=True,
                       writable_storage=str(tmp_path / "data"))  # fmt: skip
    app = build_app(catalog, {"single_user_api_key": "secret"})
    with serve(app) as live:
        for _ in range(3):
            assert httpx.get(f"{live.url}/api/v1/search/", headers=KEY).status_code == 200
        found = families(httpx.get(f"{live.url}/api/v1/metrics", headers=KEY).text)
    checkouts = [s for s in found["tiled_db_pool_checkouts"].samples
                 if s.name == "tiled_db_pool_checkouts_total"]  # fmt: skip
    assert any("catalog.db" in s.labels["uri"] and s.value >= 3 for s in checkouts), checkouts
    assert found["tiled_db_pool_active"].type == "gauge"


def test_password_of_a_database_url_stays_out_of_labels():
    from sqlalchemy.engine import make_url

    from tiled.server.metrics import pool_label

    label = pool_label(make_url("postgresql+asyncpg://tiled:hunter2@db.example/tiled"))
    assert "hunter2" not in label and "db.example/tiled" in label


def test_a_multiprocess_directory_that_is_not_one_is_refused(tmp_path, monkeypatch):
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path / "missing"))
    with pytest.raises(ValueError, match="not a directory"):
        build_app(_tree(), {"single_user_api_key": "secret"})


@pytest.mark.slow
def test_two_workers_answer_the_sum_of_their_counts(tmp_path):
    """With PROMETHEUS_MULTIPROC_DIR, each process of `--workers 2` answers the counts of
    both, whichever of them counted a request."""
    directory = tmp_path / "prometheus"
    directory.mkdir()
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(directory),
           "TILED_SINGLE_USER_API_KEY": "secret"}  # fmt: skip
    args = ["serve", "demo", "--workers", "2", "--port", str(free_port())]
    with running_tiled(*args, env=env) as (url, _):
        base = url.split("?")[0].replace("localhost", "127.0.0.1")
        labels = {"method": "GET", "code": "200", "endpoint": "metadata"}

        def scrape() -> dict:
            return families(httpx.get(f"{base}/api/v1/metrics", headers=KEY, timeout=30).text)

        # A new connection each: the kernel spreads them over both processes, once both
        # listen (the second may still be starting when the first answers): 40 requests at
        # least, and as many more as it takes for both to have answered.
        processes, sent = set(), 0
        deadline = time.monotonic() + 120
        while sent < 40 or len(processes) < 2:
            assert time.monotonic() < deadline, f"{sent} requests, all answered by {processes}"
            response = httpx.get(f"{base}/api/v1/metadata/", headers=KEY, timeout=30)
            assert response.status_code == 200, response.text
            processes.add(response.headers["x-tiled-request-id"][:8])
            sent += 1
        # Each process writes its counts every second (later, on a loaded machine); the one
        # that answers adds its own as of now. Once an answer holds every request, both files
        # hold their process's counts, and every later answer must too.
        deadline = time.monotonic() + 60
        while sample(scrape(), "tiled_request_duration_seconds", "_count", **labels) != sent:
            assert time.monotonic() < deadline, "the counts of the two processes never add up"
            time.sleep(0.2)
        answers, scrapes = set(), []
        for _ in range(12):
            found = scrape()
            answers.add(sample(found, "tiled_request_duration_seconds", "_count", **labels))
            scrapes.append(sample(found, "tiled_request_duration_seconds", "_count",
                                  method="GET", code="200", endpoint="metrics") or 0)  # fmt: skip
        assert answers == {float(sent)}
        # Whichever process answers, a counter never goes down from one answer to the next.
        assert scrapes == sorted(scrapes), scrapes


def test_series_and_labels_as_upstream_writes_them(server):
    text = httpx.get(f"{server}/api/v1/metrics", headers=KEY).text
    # Present before any such request, as upstream makes them.
    assert (
        'tiled_request_duration_seconds_count{method="GET",code="304",endpoint="entries"} 0.0'
        in text
    )
    # Bucket bounds in prometheus_client's notation (Prometheus tells series apart by it).
    assert 'le="1e+06"' in text and 'le="1000000.0"' not in text
    assert 'le="100000.0"' in text


def test_preflights_are_counted(server):
    """A preflight is answered by the CORS layer, before the rest of the edge."""
    preflight = {"Origin": "https://elsewhere.example", "Access-Control-Request-Method": "GET"}
    httpx.options(f"{server}/api/v1/metadata/x", headers=preflight)
    found = families(httpx.get(f"{server}/api/v1/metrics", headers=KEY).text)
    duration = "tiled_request_duration_seconds"
    assert sample(found, duration, "_count", method="OPTIONS", endpoint="metadata") >= 1


def test_made_up_methods_share_one_label():
    """(uvicorn refuses them itself; another server might pass them on.)"""
    from tiled.server.metrics import Metrics

    metrics = Metrics()
    for method in ("FROB", "GET", "XYZZY"):
        metrics.observe(method, 200, "data", 0.01, 10)
    found = families(metrics.exposition().decode())
    methods = {s.labels["method"] for s in found["tiled_request_duration_seconds"].samples}
    assert methods == {"GET", "other"}


def test_counts_left_by_an_earlier_process_with_this_pid_are_kept(tmp_path):
    """Pids are reused (in containers, where the directory outlives processes)."""
    import asyncio
    import json

    from tiled.server.metrics import Metrics

    earlier = Metrics(tmp_path)
    earlier.observe("GET", 200, "data", 0.01, 10)
    earlier.write_snapshot()
    later = Metrics(tmp_path)

    async def run():
        await later.start()
        later.observe("GET", 200, "data", 0.01, 10)
        text = later.exposition().decode()
        await later.stop()
        return text

    text = asyncio.run(run())
    labels = {"method": "GET", "code": "200", "endpoint": "data"}
    assert sample(families(text), "tiled_request_duration_seconds", "_count", **labels) == 2
    assert len(json.loads((tmp_path / f"tiled-{os.getpid()}.json").read_text())["requests"])


def test_a_directory_that_cannot_be_written_costs_no_request(tmp_path, caplog):
    import asyncio
    import shutil

    from tiled.server.metrics import Metrics

    shared = tmp_path / "shared"
    shared.mkdir()
    metrics = Metrics(shared)

    async def run():
        await metrics.start()
        shutil.rmtree(shared)  # e.g. a full disk: every write fails from now on
        metrics.observe("GET", 200, "data", 0.01, 10)
        text = metrics.exposition().decode()
        await metrics.stop()
        return text

    text = asyncio.run(run())
    labels = {"method": "GET", "code": "200", "endpoint": "data"}
    assert sample(families(text), "tiled_request_duration_seconds", "_count", **labels) == 1
    assert sum("Cannot share" in record.getMessage() for record in caplog.records) == 1


def test_a_listener_sees_the_engines_made_before_it():
    """An engine made before the application started (in the loop that then serves it)."""
    from sqlalchemy.ext.asyncio import create_async_engine

    from tiled import database_pools

    engine = create_async_engine("sqlite+aiosqlite://")
    database_pools.announce(engine)
    seen = []
    stop = database_pools.subscribe(seen.append)
    try:
        assert engine in seen
    finally:
        stop()


def test_metrics_coming_and_going_leave_the_pools_listeners_alone():
    """A pool's SQLAlchemy listeners are attached once, when its engine is announced: adding
    one while another thread or task opens a connection breaks that connection ("deque
    mutated during iteration", a 500), so the metrics of applications that start and stop
    later watch through tiled.database_pools instead."""
    import asyncio

    from sqlalchemy.ext.asyncio import create_async_engine

    from tiled import database_pools
    from tiled.server.metrics import Metrics

    engine = create_async_engine("sqlite+aiosqlite://")
    database_pools.announce(engine)
    pool = engine.sync_engine.pool
    attached = {name: len(getattr(pool.dispatch, name)) for name in database_pools.POOL_EVENTS}

    async def connect_once() -> None:
        async with engine.connect() as connection:
            await connection.exec_driver_sql("SELECT 1")

    metrics = Metrics()
    asyncio.run(metrics.start())
    try:
        assert {name: len(getattr(pool.dispatch, name)) for name in attached} == attached
        asyncio.run(connect_once())
        label = next(key for key in metrics.pools if key[0] == "tiled_db_pool_checkouts_total")
        assert metrics.pools[label] >= 1
    finally:
        asyncio.run(metrics.stop())
        asyncio.run(engine.dispose())
    assert {name: len(getattr(pool.dispatch, name)) for name in attached} == attached
