"""Benchmark of the Python client ``tiled.client``, every figure beside a reference measured in
the same run:

1. Read ``nested/images/big_image`` (10,000 x 10,000 float64, 800 MB) and ``medium_image``
   (1,000 x 1,000, 8 MB) of the demo tree whole, three ways, taking turns for ``--repeats``
   rounds (one read each per round of ``big_image``, five of ``medium_image``); best time:
   - here: ``from_uri(url)["nested"]["images"][name].read()`` against this project's
     ``tiled serve demo`` (a selection of 4 MiB or more goes through the ``/zarr/v3`` chunk
     routes, concurrently, via zarr-python);
   - zarr-python directly: ``zarr.open_array(FsspecStore.from_url(f"{url}/zarr/v3/..."))[...]``
     against the same server (the open is timed too, as ``read()`` opens the array);
   - upstream: Tiled 0.2.20's client (in a subprocess of its own virtual environment) against
     upstream's ``tiled serve demo``, timing its own ``read()`` (no process start-up).
   Targets: here >= 2x upstream's MB/s, and here's time <= 1.2x zarr-python's. The values are
   checked: here against zarr-python element for element, and here against upstream by a
   SHA-1 of the bytes (both demos draw the same values from ``default_rng(seed=42)``).
   Upstream's demo holds its arrays in memory; this project's draws ``big_image`` per chunk.
2. List a container of 10,000 nodes (one-element arrays in a ``MapAdapter``, served by each
   project with ``tiled serve pyobject``): ``list(node)`` (keys) and ``list(node.items())``,
   best of ``--repeats`` rounds, here against upstream's client and server.
3. ``import tiled.client`` and ``from tiled.client import from_uri`` in a fresh interpreter
   (timed by that interpreter, around the statement alone), best of 5: here against upstream.
   (This project's ``tiled.client`` imports its names on first use, so the second is the one
   that counts.)

Run: ``python benchmarks/client.py [--repeats N] [--nodes N]`` after
``pip install -e '.[all,dev]'`` (a few minutes, most of it upstream's reads). Upstream's
package is installed into ``$TILED_BENCH_UPSTREAM_VENV`` (default ``/tmp/tiled-upstream-venv``)
on first use; it only ever runs in subprocesses (its package is named ``tiled`` too), started
outside this repository and without ``PYTHONPATH`` so that it never imports this one. This
client reads with ``show_progress=False`` (upstream shows no bar outside interactive sessions).
The machine's other load shows in every figure: compare the ratios, not the seconds.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import subprocess
import tempfile
import textwrap
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy
from _common import clean_env, our_bin, run_json, running_server, upstream_venv

API_KEY = "secret"
IMAGES = ("big_image", "medium_image")
IMPORTS = ("import tiled.client", "from tiled.client import from_uri")

# Run by upstream's interpreter: time ``read()`` of one demo array, print JSON.
UPSTREAM_READ = """
import hashlib, json, sys, time
import numpy
from tiled.client import from_uri

url, path, repeats = sys.argv[1], sys.argv[2], int(sys.argv[3])
node = from_uri(url)
for part in path.split("/"):
    node = node[part]
seconds = []
for _ in range(repeats):
    values = None
    started = time.perf_counter()
    values = node.read()
    seconds.append(time.perf_counter() - started)
digest = hashlib.sha1(numpy.ascontiguousarray(values).data).hexdigest()
print(json.dumps({"seconds": seconds, "shape": list(values.shape), "sha1": digest}))
"""

# Run by upstream's interpreter: time listing the keys and the items of one container.
UPSTREAM_LIST = """
import json, sys, time
from tiled.client import from_uri

url, api_key, repeats = sys.argv[1], sys.argv[2], int(sys.argv[3])
node = from_uri(url, api_key=api_key)["many"]
result = {"keys": [], "items": []}
for _ in range(repeats):
    started = time.perf_counter()
    keys = list(node)
    result["keys"].append(time.perf_counter() - started)
    started = time.perf_counter()
    items = list(node.items())
    result["items"].append(time.perf_counter() - started)
result["count"] = len(keys)
result["items_count"] = len(items)
print(json.dumps(result))
"""

# Served by both projects with ``tiled serve pyobject many_nodes:tree``.
TREE_MODULE = """
import os

import numpy
from tiled.adapters.array import ArrayAdapter
from tiled.adapters.mapping import MapAdapter

count = int(os.environ["BENCH_NODES"])
tree = MapAdapter(
    {"many": MapAdapter(
        {f"node_{i:05d}": ArrayAdapter.from_array(numpy.zeros(1)) for i in range(count)}
    )}
)
"""


def timed(function: Callable[[], Any]) -> tuple[float, Any]:
    started = time.perf_counter()
    value = function()
    return time.perf_counter() - started, value


def sha1(values: numpy.ndarray) -> str:
    return hashlib.sha1(numpy.ascontiguousarray(values).data).hexdigest()


# --- 1. reads ---


def read_image(
    name: str, ours_url: str, upstream_url: str, upstream: Path, scratch: Path,
    rounds: int, per_round: int,
) -> dict[str, Any]:  # fmt: skip
    """Best times of ``rounds`` rounds of ``per_round`` reads by each reader in turn (turns, so
    that a change of load on the machine falls on all three alike)."""
    import zarr
    from zarr.storage import FsspecStore

    from tiled.client import from_uri

    path = f"nested/images/{name}"
    node = from_uri(ours_url, show_progress=False)["nested"]["images"][name]

    def zarr_read() -> numpy.ndarray:
        store = FsspecStore.from_url(f"{ours_url}/zarr/v3/{path}", read_only=True)
        return zarr.open_array(store, mode="r")[...]

    here_s, zarr_s, upstream_s = [], [], []
    equal_zarr, theirs, here = True, {}, None
    for _ in range(rounds):
        for _ in range(per_round):
            here = None  # free the previous result before the next read
            seconds, here = timed(node.read)
            here_s.append(seconds)
        for _ in range(per_round):
            seconds, direct = timed(zarr_read)
            zarr_s.append(seconds)
            equal_zarr = equal_zarr and numpy.array_equal(here, direct)
            direct = None
        theirs = run_json(
            [str(upstream / "python"), "-c", UPSTREAM_READ, upstream_url, path, str(per_round)],
            cwd=scratch, env=clean_env(),
        )  # fmt: skip
        upstream_s.extend(theirs["seconds"])
    assert here is not None
    megabytes = here.nbytes / 1e6
    best = {"here": min(here_s), "zarr": min(zarr_s), "upstream": min(upstream_s)}
    return {
        "MB": megabytes,
        **{f"{k}_s": v for k, v in best.items()},
        **{f"{k}_MBps": megabytes / v for k, v in best.items()},
        "speedup_vs_upstream": best["upstream"] / best["here"],
        "time_ratio_to_zarr": best["here"] / best["zarr"],
        "equal_to_zarr": equal_zarr,
        "equal_to_upstream": (list(here.shape) == theirs["shape"] and sha1(here) == theirs["sha1"]),
    }


# --- 2. listing ---


def list_nodes(
    ours_url: str, upstream_url: str, upstream: Path, scratch: Path, rounds: int
) -> dict[str, Any]:
    """Best times of ``rounds`` rounds, each listing keys then items, here then upstream."""
    from tiled.client import from_uri

    node = from_uri(ours_url, api_key=API_KEY)["many"]
    times: dict[str, list[float]] = {"keys": [], "items": [], "up_keys": [], "up_items": []}
    counts: dict[str, int] = {}
    for _ in range(rounds):
        seconds, keys = timed(lambda: list(node))
        times["keys"].append(seconds)
        seconds, items = timed(lambda: list(node.items()))
        times["items"].append(seconds)
        counts.update(keys=len(keys), items=len(items))
        theirs = run_json(
            [str(upstream / "python"), "-c", UPSTREAM_LIST, upstream_url, API_KEY, "1"],
            cwd=scratch, env=clean_env(),
        )  # fmt: skip
        times["up_keys"].extend(theirs["keys"])
        times["up_items"].extend(theirs["items"])
        counts.update(up_keys=theirs["count"], up_items=theirs["items_count"])
    return {"counts": counts, **{name: min(values) for name, values in times.items()}}


# --- 3. import ---


def import_seconds(python: Path, scratch: Path, statement: str, repeats: int = 5) -> float:
    """Best of ``repeats`` fresh interpreters timing their own ``statement`` (so that the
    interpreter's start-up, and its noise, stay out of the figure)."""
    code = f"import time; t = time.perf_counter(); {statement}; print(time.perf_counter() - t)"
    return min(
        float(
            subprocess.run(
                [str(python), "-c", code], cwd=scratch, env=clean_env(), check=True,
                capture_output=True, text=True,
            ).stdout
        )
        for _ in range(repeats)
    )  # fmt: skip


def verdict(ok: bool) -> str:
    return "met" if ok else "MISSED"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=3, help="timed rounds per figure")
    parser.add_argument("--nodes", type=int, default=10_000, help="children of the listed node")
    args = parser.parse_args()
    warnings.simplefilter("ignore")
    upstream = upstream_venv()
    summary: list[str] = []
    with tempfile.TemporaryDirectory() as scratch_name, contextlib.ExitStack() as stack:
        scratch = Path(scratch_name)

        # 1. reads of the demo's images
        ours_demo = stack.enter_context(
            running_server([str(our_bin() / "tiled"), "serve", "demo"], scratch, clean_env())
        )
        upstream_demo = stack.enter_context(
            running_server([str(upstream / "tiled"), "serve", "demo"], scratch, clean_env())
        )
        for name in IMAGES:
            per_round = 1 if name == "big_image" else 5
            r = read_image(
                name, ours_demo, upstream_demo, upstream, scratch, args.repeats, per_round
            )
            print(
                f"read {name} ({r['MB']:.0f} MB): here {r['here_s']:.3f} s "
                f"({r['here_MBps']:.0f} MB/s), zarr-python {r['zarr_s']:.3f} s "
                f"({r['zarr_MBps']:.0f} MB/s), upstream {r['upstream_s']:.3f} s "
                f"({r['upstream_MBps']:.0f} MB/s); here/upstream MB/s "
                f"{r['speedup_vs_upstream']:.2f}x (target >= 2), here/zarr-python time "
                f"{r['time_ratio_to_zarr']:.2f}x (target <= 1.2); equal to zarr-python "
                f"{r['equal_to_zarr']}, to upstream {r['equal_to_upstream']}",
                flush=True,
            )
            summary.append(
                f"{name}: {r['speedup_vs_upstream']:.2f}x upstream's MB/s "
                f"({verdict(r['speedup_vs_upstream'] >= 2)}), "
                f"{r['time_ratio_to_zarr']:.2f}x zarr-python's time "
                f"({verdict(r['time_ratio_to_zarr'] <= 1.2)}), values "
                f"{'equal' if r['equal_to_zarr'] and r['equal_to_upstream'] else 'DIFFER'}"
            )
        stack.close()  # the demo servers hold GBs; stop them before the next part

        # 2. listing a container of many nodes
        (scratch / "many_nodes.py").write_text(textwrap.dedent(TREE_MODULE))
        env = clean_env(PYTHONPATH=str(scratch), BENCH_NODES=str(args.nodes))
        serve = ["serve", "pyobject", "many_nodes:tree", "--api-key", API_KEY]
        ours_tree = stack.enter_context(
            running_server([str(our_bin() / "tiled"), *serve], scratch, env)
        )
        upstream_tree = stack.enter_context(
            running_server([str(upstream / "tiled"), *serve], scratch, env)
        )
        r = list_nodes(ours_tree, upstream_tree, upstream, scratch, args.repeats)
        stack.close()
        keys_x, items_x = r["up_keys"] / r["keys"], r["up_items"] / r["items"]
        c = r["counts"]
        counts_ok = set(c.values()) == {args.nodes}
        print(
            f"list {args.nodes} nodes: keys here {r['keys']:.3f} s, upstream "
            f"{r['up_keys']:.3f} s ({keys_x:.2f}x faster); items here {r['items']:.3f} s, "
            f"upstream {r['up_items']:.3f} s ({items_x:.2f}x faster); counted here "
            f"{c['keys']}/{c['items']}, upstream {c['up_keys']}/{c['up_items']}",
            flush=True,
        )
        summary.append(
            f"listing {args.nodes}: keys {keys_x:.2f}x, items {items_x:.2f}x faster than "
            f"upstream{'' if counts_ok else ' (COUNTS DIFFER)'}"
        )

        # 3. import time
        for statement in IMPORTS:
            here_s = import_seconds(our_bin() / "python", scratch, statement)
            upstream_s = import_seconds(upstream / "python", scratch, statement)
            print(
                f"{statement}: here {1000 * here_s:.1f} ms, upstream {1000 * upstream_s:.1f} ms "
                f"({upstream_s / here_s:.1f}x faster; best of 5 fresh interpreters)",
                flush=True,
            )
            summary.append(f"{statement}: {upstream_s / here_s:.1f}x faster")
    print("summary: " + "; ".join(summary), flush=True)


if __name__ == "__main__":
    main()
