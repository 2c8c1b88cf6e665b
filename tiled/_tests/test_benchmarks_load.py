"""``benchmarks/load.py`` as a smoke run: two workers behind HAProxy on a throwaway PostgreSQL
cluster, a short mixed load on two workers and on one, a worker killed mid-write and
PostgreSQL restarted; every check it makes passes and its report has the shape documented in
``docs/source/how-to/scale-out.md``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from .load_balancer import haproxy_or_skip
from .postgres import _server_binaries

pytestmark = pytest.mark.slow

PROJECT = Path(__file__).resolve().parents[2]
SCRIPT = PROJECT / "benchmarks" / "load.py"
LOAD_FIELDS = {"count", "requests_per_s", "p50_ms", "p99_ms", "status_5xx", "other_non_2xx",
               "transport_errors"}  # fmt: skip


def test_a_quick_load_run_with_faults_passes_its_checks(tmp_path):
    haproxy_or_skip()
    if _server_binaries() is None:
        pytest.skip("the PostgreSQL server binaries (initdb, pg_ctl) are not installed")
    report_file = tmp_path / "report.json"
    command = [sys.executable, str(SCRIPT), "--quick", "--seconds", "4", "--fault-seconds", "6",
               "--readers", "4", "--json", str(report_file)]  # fmt: skip
    # The checkout's package serves, whatever is installed in the environment.
    env = {**os.environ, "PYTHONPATH": str(PROJECT)}
    done = subprocess.run(
        command, capture_output=True, text=True, timeout=240, env=env, cwd=tmp_path
    )
    report = json.loads(done.stdout) if done.stdout.strip() else {}
    if "skipped" in report:
        pytest.skip(report["skipped"])
    failed = [c for c in report.get("checks", []) if not c["ok"]]
    # What the workers logged comes first: a failure here is hard to make happen again.
    assert done.returncode == 0, (failed, report.get("server_tracebacks"), done.stderr[-3000:])
    assert report == json.loads(report_file.read_text())

    assert report["ok"] is True and report["checks"] and not failed
    for phase in ("two_workers", "one_worker"):
        load = report[phase]["load"]
        assert set(load["total"]) == LOAD_FIELDS
        assert {"zarr_chunk", "zarr_json", "metadata", "block", "search", "table"} <= set(load)
        assert {"create_array", "write_array", "create_table", "write_table"} <= set(load)
        assert load["total"]["count"] > 0 and load["total"]["status_5xx"] == 0
        writes = report[phase]["writes"]
        assert writes["writes_acknowledged"] > 0
        assert writes["mismatches"] == writes["torn"] == 0
        assert writes["read_back_from"] == ["worker0", "worker1"]
    assert report["ratio_two_to_one_worker"]["requests_per_s"] > 0

    faults = report["faults"]
    kill = faults["worker_kill"]
    assert kill["writes"]["mismatches"] == 0
    assert kill["seconds_until_haproxy_marked_down"] is not None
    assert kill["statuses_after_back_in_haproxy"].keys() <= {"200"}
    outage = faults["postgresql_restart"]
    assert outage["answered_503_with_retry_after"] > 0
    assert not [s for s in outage["statuses_during_outage"] if s.startswith("500")]
    assert outage["recovery_after_resume"]["first_success_s"] is not None
    assert faults["object_store_down"] == "skipped: directory storage"
    assert faults["object_store_frozen"] == "skipped: directory storage"
