"""Benchmark of the write path that a running experiment uses, against upstream Tiled 0.2.20
measured in the same run:

1. **Frames**: an array of (1, 256, 256) float64 frames grown one frame at a time with
   ``ArrayClient.patch(frame, offset=(n,), extend=True)``: frames per second.
2. **Rows**: an appendable table (``create_appendable_table``, SQL-backed) grown by
   ``append_partition(0, rows)`` in batches of 10 rows: rows per second.

Each project's own client writes to its own ``tiled serve catalog --temp`` (a new SQLite
catalog with a data directory and, for tables, SQL storage), one after the other, for
``--rounds`` rounds; the best round of each counts. The same script runs in both projects'
interpreters (upstream's in its own virtual environment, started outside this repository and
without ``PYTHONPATH``), so the figures compare servers and clients as a user gets them.
Target: this project >= upstream on both.

Run: ``python benchmarks/append.py [--frames N] [--batches N] [--rounds N]``. Upstream's
package is installed into ``$TILED_BENCH_UPSTREAM_VENV`` (default
``/tmp/tiled-upstream-venv``) on first use.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import tempfile
from pathlib import Path

from _common import clean_env, our_bin, run_json, running_server, upstream_venv

API_KEY = "secret"

# Run by each project's interpreter: append, time, check, print JSON.
WRITER = r"""
import json, sys, time
import numpy, pyarrow
from tiled.client import from_uri

url, frames, batches = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
client = from_uri(url, api_key="secret")
key = f"run{time.time_ns()}"
run = client.create_container(key)

frame = numpy.random.default_rng(0).random((1, 256, 256))
array = run.write_array(frame, key="frames")
started = time.perf_counter()
for n in range(1, frames):
    array.patch(frame + n, offset=(n,), extend=True)
frame_seconds = time.perf_counter() - started
stored = from_uri(url, api_key="secret")[key]["frames"]
assert stored.shape == (frames, 256, 256), stored.shape
assert float(stored[frames - 1, 0, 0]) == float(frame[0, 0, 0] + frames - 1)

schema = pyarrow.schema([("time", pyarrow.float64()), ("counts", pyarrow.int64())])
table = run.create_appendable_table(schema, key="events")
started = time.perf_counter()
for b in range(batches):
    # Arrow tables: upstream's server refuses pandas appends from its own client (a 500).
    rows = pyarrow.table({"time": numpy.arange(10) + 10.0 * b,
                          "counts": numpy.arange(10, dtype="int64") + 10 * b})
    table.append_partition(0, rows)
row_seconds = time.perf_counter() - started
read = from_uri(url, api_key="secret")[key]["events"].read()
assert len(read) == 10 * batches, len(read)
assert read["counts"].tolist() == list(range(10 * batches))

print(json.dumps({
    "frames_per_s": (frames - 1) / frame_seconds,
    "rows_per_s": 10 * batches / row_seconds,
}))
"""


def measure(python: Path, url: str, scratch: Path, frames: int, batches: int) -> dict:
    return run_json(
        [str(python), "-c", WRITER, url, str(frames), str(batches)], cwd=scratch, env=clean_env()
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--frames", type=int, default=300)
    parser.add_argument("--batches", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    upstream = upstream_venv()
    serve = ["serve", "catalog", "--temp", "--api-key", API_KEY]
    results: dict[str, list[dict]] = {"here": [], "upstream": []}
    with tempfile.TemporaryDirectory() as folder, contextlib.ExitStack() as stack:
        scratch = Path(folder)
        ours = stack.enter_context(
            running_server([str(our_bin() / "tiled"), *serve], scratch, clean_env())
        )
        theirs = stack.enter_context(
            running_server([str(upstream / "tiled"), *serve], scratch, clean_env())
        )
        for _ in range(args.rounds):  # taking turns, so that the machine's load falls on both
            results["here"].append(
                measure(our_bin() / "python", ours, scratch, args.frames, args.batches)
            )
            results["upstream"].append(
                measure(upstream / "python", theirs, scratch, args.frames, args.batches)
            )
    best = {
        who: {k: max(r[k] for r in runs) for k in ("frames_per_s", "rows_per_s")}
        for who, runs in results.items()
    }
    report = {
        "frames": args.frames,
        "rows": 10 * args.batches,
        **best,
        "frames_ratio": best["here"]["frames_per_s"] / best["upstream"]["frames_per_s"],
        "rows_ratio": best["here"]["rows_per_s"] / best["upstream"]["rows_per_s"],
    }
    json.dump(report, sys.stdout, indent=2)
    print()


if __name__ == "__main__":
    main()
