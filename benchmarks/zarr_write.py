"""Benchmark of writes through ``/zarr/v3``: Tiled against nginx (WebDAV PUT of the same chunk
files) and against upstream Tiled 0.2.20's own write path, measured in the same run.

1. **Bulk**: one float32 dataset, 1 GiB by default (``(256 * gib, 1024, 1024)`` in chunks of
   ``(8, 512, 512)``, 8 MiB uncompressed; integers below 4096, so zstd shrinks them somewhat),
   written as wall-clock MB/s (10^6 bytes of uncompressed data per second) of the user-visible
   call, by

   - xarray: ``Dataset.to_zarr(url, storage_options=..., zarr_format=3, consolidated=True,
     mode="w-")``, and
   - zarr-python: ``zarr.create_array`` on an ``FsspecStore``, then ``array[...] = data``,

   with each of two compressors (``--codec``): zarr-python's default, zstd (level 0), and
   blosc-lz4 (the codec Tiled stores its own arrays with). zstd costs the client about 50 ms per
   8 MiB chunk to encode and the server about 12 ms to check that it decodes, both holding the
   GIL; blosc-lz4 costs a fraction of that, in threads. Each into Tiled (``tiled serve catalog --temp``, one process) at ``/zarr/v3/<new name>`` and
   into nginx (``dav_methods PUT``, two workers, a temporary root); both through fsspec's HTTP
   filesystem, with the same data, chunks and zarr-python's default concurrency. Every store is
   read back once and compared with the data. For scale: zarr-python writing the same array into
   a ``MemoryStore`` (the client's encoding alone, no HTTP), and the stored (compressed) size.

   Upstream: its released client's ``write_array`` into its own ``tiled serve catalog --temp``,
   run by its interpreter (its own virtual environment, without ``PYTHONPATH``), given a
   numpy array (the client picks chunks of up to 100 MB) and a dask array in the chunks above;
   the faster counts. Targets: Tiled >= 0.5x nginx's MB/s (the same client) and >= 3x upstream's.

2. **Small chunks**: PUTs per second of 4 KiB chunks (an uncompressed ``(32, 32)`` float32
   chunk, cycling over a 64 x 64 grid of keys of one array) with 16 requests in flight, by wrk
   (a compiled load generator: Python clients saturate before the servers) when installed, else
   aiohttp; into Tiled and into nginx.

Each bulk target runs ``--rounds`` times, taking turns (so that the machine's load falls on
all); the best round counts. Parts whose server is missing (nginx, upstream's venv) are skipped
with the reason in the report.

Run: ``python benchmarks/zarr_write.py [--gib 1] [--rounds 2] [--seconds 8]``. Upstream's package
is installed into ``$TILED_BENCH_UPSTREAM_VENV`` (default ``/tmp/tiled-upstream-venv``) on first
use; ``--no-upstream`` skips it.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import httpx
import numpy
import xarray
import zarr
from _common import (
    _nginx_binary,
    clean_env,
    free_port,
    our_bin,
    run_json,
    running_server,
    upstream_venv,
    wait_until_up,
    wrk_rate,
)
from zarr.codecs import BloscCodec

API_KEY = "secret"
HEADERS = {"Authorization": f"Apikey {API_KEY}"}
STORAGE_OPTIONS = {"client_kwargs": {"headers": HEADERS}}  # fsspec's HTTPFileSystem
PLANE, CHUNK = (1024, 1024), (8, 512, 512)  # float32: 8 MiB chunks
# The compressors written with (None: zarr-python's default, zstd).
CODECS: dict[str, Any] = {
    "zstd": None,
    "blosc-lz4": BloscCodec(cname="lz4", clevel=5, shuffle="shuffle"),
}
SMALL_SHAPE, SMALL_CHUNK = (2048, 2048), (32, 32)  # float32: 4 KiB chunks, a 64 x 64 grid
CONCURRENCY = 16
MB = 1e6

# Run by upstream's interpreter: its client's write_array, timed around the call, spot-checked.
UPSTREAM_WRITER = r"""
import json, sys, time
import dask.array, numpy
from tiled.client import from_uri

url, path, chunks = sys.argv[1], sys.argv[2], tuple(json.loads(sys.argv[3]))
data = numpy.load(path)
client = from_uri(url, api_key="secret")
seconds = {}
for how in ("numpy", "dask"):
    array = data if how == "numpy" else dask.array.from_array(data, chunks=chunks)
    started = time.perf_counter()
    node = client.write_array(array, key=f"{how}{time.time_ns()}")
    seconds[how] = time.perf_counter() - started
    for index in (0, -1):
        assert numpy.array_equal(node[index], data[index]), how
print(json.dumps(seconds))
"""

# wrk: PUT the same body to the keys of a grid of chunks in turn (args: grid side, body file).
WRK_PUT_SCRIPT = r"""
local grid, body, prefix, counter = 0, "", "", 0
function init(args)
  grid = tonumber(args[1])
  local file = io.open(args[2], "rb")
  body = file:read("*a")
  file:close()
  prefix = wrk.path
end
function request()
  local n = counter % (grid * grid)
  counter = counter + 1
  local path = string.format("%s/c/%d/%d", prefix, math.floor(n / grid), n % grid)
  return wrk.format("PUT", path, {
    ["Authorization"] = "Apikey secret",
    ["Content-Type"] = "application/octet-stream",
  }, body)
end
"""


def make_data(gib: float) -> numpy.ndarray:
    """Random integers below 4096 as float32: random-ish, yet compressible (low bits are 0)."""
    depth = max(CHUNK[0], round(256 * gib))
    rng = numpy.random.default_rng(0)
    return rng.integers(0, 4096, (depth, *PLANE), dtype=numpy.uint16).astype(numpy.float32)


# --- servers ---


@contextlib.contextmanager
def webdav_nginx(folder: Path) -> Iterator[str]:
    """nginx accepting PUT (and DELETE) of files under ``folder / "root"``, on a free port;
    directories are listed (autoindex: fsspec lists a group when xarray opens it)."""
    port = free_port()
    root = folder / "root"
    for sub in ("root", "body"):
        (folder / sub).mkdir(parents=True, exist_ok=True)
    # As root, nginx's workers would run as nobody, who may not write into the temporary root.
    user = "user root;\n" if os.geteuid() == 0 else ""
    conf = folder / "nginx.conf"
    conf.write_text(
        f"{user}daemon off; worker_processes 2; pid {folder}/nginx.pid;\n"
        f"error_log {folder}/error.log;\n"
        "events { worker_connections 1024; }\n"
        f"http {{ access_log off; sendfile on; client_max_body_size 0;\n"
        f"  client_body_temp_path {folder}/body;\n"
        f"  server {{ listen 127.0.0.1:{port}; root {root}; autoindex on;\n"
        "    location / { dav_methods PUT DELETE; create_full_put_path on; dav_access user:rw; }\n"
        "  } }\n"
    )
    command = [str(_nginx_binary()), "-p", str(folder), "-e", str(folder / "error.log")]
    command += ["-c", str(conf)]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_up(url + "/", timeout=30)
        yield url
    finally:
        process.terminate()
        process.wait(timeout=30)


@contextlib.contextmanager
def catalog_server(bin_dir: Path, folder: Path) -> Iterator[str]:
    """``tiled serve catalog --temp`` of ``bin_dir``, its temporary catalog inside ``folder``
    (``--temp`` leaves it behind) and its stderr in ``folder / "server.log"`` (kept for the
    report: ``running_server`` adds ``--port P`` and discards the output)."""
    folder.mkdir(parents=True)
    tiled = [str(bin_dir / "tiled"), "serve", "catalog", "--temp", "--api-key", API_KEY]
    command = ["/bin/sh", "-c", f'exec "$@" 2>>"{folder / "server.log"}"', "sh", *tiled]
    with running_server(command, folder, clean_env(TMPDIR=str(folder))) as url:
        yield url


def server_errors(folder: Path) -> str:
    """The tracebacks a server logged (empty when none)."""
    log = folder / "server.log"
    text = log.read_text(errors="replace") if log.exists() else ""
    return text[text.find("Traceback") :] if "Traceback" in text else ""


# --- bulk writes ---


def _compressors(codec: str) -> dict[str, Any]:
    return {} if CODECS[codec] is None else {"compressors": CODECS[codec]}


def write_with_xarray(store_url: str, data: numpy.ndarray, codec: str) -> float:
    dataset = xarray.Dataset({"v": (("t", "y", "x"), data)})
    started = time.perf_counter()
    dataset.to_zarr(
        store_url, storage_options=STORAGE_OPTIONS, zarr_format=3, consolidated=True,
        mode="w-", encoding={"v": {"chunks": CHUNK, **_compressors(codec)}},
    )  # fmt: skip
    return time.perf_counter() - started


def write_with_zarr(store_url: str, data: numpy.ndarray, codec: str) -> float:
    started = time.perf_counter()
    store = zarr.storage.FsspecStore.from_url(
        store_url, storage_options=STORAGE_OPTIONS, read_only=False
    )
    array = zarr.create_array(
        store, shape=data.shape, chunks=CHUNK, dtype=data.dtype, **_compressors(codec)
    )
    array[...] = data
    return time.perf_counter() - started


def check_written(store_url: str, data: numpy.ndarray, path: str = "") -> None:
    store = zarr.storage.FsspecStore.from_url(
        store_url, storage_options=STORAGE_OPTIONS, read_only=True
    )
    stored = zarr.open_array(store, path=path, mode="r")
    if not numpy.array_equal(stored[...], data):
        raise AssertionError(f"{store_url}/{path} does not read back as written")


WRITERS: dict[str, tuple[Callable[[str, numpy.ndarray, str], float], str]] = {
    "xarray_to_zarr": (write_with_xarray, "v"),
    "zarr_python": (write_with_zarr, ""),
}


def bulk_round(
    stores: dict[str, str],
    data: numpy.ndarray,
    codec: str,
    round_: int,
    results: dict[str, list[float]],
) -> None:
    """One write by each client into each store (``stores``: server name -> base URL)."""
    for client, (write, path) in WRITERS.items():
        for server, base in stores.items():
            url = f"{base}/{client}_{codec}_{round_}"
            seconds = write(url, data, codec)
            results.setdefault(f"{server}/{client}/{codec}", []).append(data.nbytes / MB / seconds)
            if round_ == 0:
                check_written(url, data, path)
    # The client's own ceiling: the same encoding into memory, no HTTP.
    started = time.perf_counter()
    array = zarr.create_array(
        zarr.storage.MemoryStore(), shape=data.shape, chunks=CHUNK, dtype=data.dtype,
        **_compressors(codec),
    )  # fmt: skip
    array[...] = data
    seconds = time.perf_counter() - started
    results.setdefault(f"memory_store/zarr_python/{codec}", []).append(data.nbytes / MB / seconds)


def upstream_round(bin_dir: Path, url: str, data_file: Path, scratch: Path, nbytes: int) -> dict:
    seconds = run_json(
        [str(bin_dir / "python"), "-c", UPSTREAM_WRITER, url, str(data_file), json.dumps(CHUNK)],
        cwd=scratch, env=clean_env(),
    )  # fmt: skip
    return {how: nbytes / MB / s for how, s in seconds.items()}


# --- small-chunk PUTs ---


def create_small_array(store_url: str) -> None:
    store = zarr.storage.FsspecStore.from_url(
        store_url, storage_options=STORAGE_OPTIONS, read_only=False
    )
    zarr.create_array(
        store, shape=SMALL_SHAPE, chunks=SMALL_CHUNK, dtype="float32", compressors=None,
        fill_value=0,
    )  # fmt: skip


def small_chunk_body() -> bytes:
    return numpy.arange(SMALL_CHUNK[0] * SMALL_CHUNK[1], dtype="<f4").tobytes()


def _wrk_puts(array_url: str, body_file: Path, script: Path, seconds: int) -> float:
    grid = SMALL_SHAPE[0] // SMALL_CHUNK[0]
    return wrk_rate(array_url, seconds, CONCURRENCY, script, str(grid), str(body_file))


async def _aiohttp_puts(array_url: str, body: bytes, seconds: int) -> float:
    grid = SMALL_SHAPE[0] // SMALL_CHUNK[0]
    counter = 0
    deadline = time.perf_counter() + seconds
    connector = aiohttp.TCPConnector(limit=CONCURRENCY)
    async with aiohttp.ClientSession(connector=connector, headers=HEADERS) as session:

        async def worker() -> int:
            nonlocal counter
            done = 0
            while time.perf_counter() < deadline:
                n, counter = counter % (grid * grid), counter + 1
                key = f"{array_url}/c/{n // grid}/{n % grid}"
                async with session.put(key, data=body) as response:
                    await response.read()
                    if response.status >= 300:
                        raise RuntimeError(f"PUT {key}: {response.status}")
                done += 1
            return done

        started = time.perf_counter()
        count = sum(await asyncio.gather(*(worker() for _ in range(CONCURRENCY))))
        return count / (time.perf_counter() - started)


def small_put_rates(stores: dict[str, str], scratch: Path, seconds: int) -> dict:
    body = small_chunk_body()
    body_file, script = scratch / "small-chunk.bin", scratch / "put.lua"
    body_file.write_bytes(body)
    script.write_text(WRK_PUT_SCRIPT)
    wrk = shutil.which("wrk") is not None
    results: dict = {
        "chunk_bytes": len(body),
        "in_flight": CONCURRENCY,
        "load_generator": "wrk" if wrk else "aiohttp (wrk is not installed)",
    }
    for server, base in stores.items():
        array_url = f"{base}/small_puts"
        create_small_array(array_url)
        # One PUT first: a refusal shows its status and body rather than a bare count.
        key = f"{array_url}/c/0/0"
        answer = httpx.put(key, content=body, headers=HEADERS, timeout=30)
        if answer.status_code >= 300:
            results[server] = {"error": f"PUT {key}: {answer.status_code} {answer.text[:500]}"}
            continue
        try:
            if wrk:
                _wrk_puts(array_url, body_file, script, 1)  # warm up
                rate = _wrk_puts(array_url, body_file, script, seconds)
            else:
                rate = asyncio.run(_aiohttp_puts(array_url, body, seconds))
        except (RuntimeError, subprocess.CalledProcessError) as error:
            results[server] = {"error": str(error)}
            continue
        results[server] = {"puts_per_s": round(rate)}
    with contextlib.suppress(KeyError, TypeError):
        results["ratio_tiled_to_nginx"] = round(
            results["tiled"]["puts_per_s"] / results["nginx"]["puts_per_s"], 3
        )
    return results


# --- report ---


def _ratio(numerator: float | None, denominator: float | None) -> float | None:
    return round(numerator / denominator, 3) if numerator and denominator else None


def summarize(args: argparse.Namespace, data: numpy.ndarray, bulk: dict, upstream: list) -> dict:
    best = {name: round(max(rates), 1) for name, rates in bulk.items()}
    report: dict = {
        "data": {"shape": list(data.shape), "chunks": list(CHUNK), "gib": data.nbytes / 2**30},
        "rounds": args.rounds,
        "mb_per_s": best,
        "mb_per_s_each_round": {k: [round(r, 1) for r in rates] for k, rates in bulk.items()},
    }
    if upstream:
        upstream_best = {how: round(max(r[how] for r in upstream), 1) for how in upstream[0]}
        report["mb_per_s"]["upstream/write_array"] = upstream_best
        report["mb_per_s_each_round"]["upstream/write_array"] = [
            {how: round(rate, 1) for how, rate in r.items()} for r in upstream
        ]
    ratios: dict = {}
    for codec in args.codecs:
        for client in WRITERS:
            tiled = best.get(f"tiled/{client}/{codec}")
            if f"nginx/{client}/{codec}" in best:
                ratios[f"{client}/{codec}: tiled/nginx (target >= 0.5)"] = _ratio(
                    tiled, best[f"nginx/{client}/{codec}"]
                )
            if upstream:
                ratios[f"{client}/{codec}: tiled/upstream (target >= 3)"] = _ratio(
                    tiled, max(upstream_best.values())
                )
    report["ratios"] = ratios
    return report


def print_summary(report: dict) -> None:
    data = report["data"]
    lines = [f"zarr writes: {data['gib']:.2f} GiB float32, chunks {data['chunks']}"]
    for name, rate in report["mb_per_s"].items():
        lines.append(f"  {name:32} {rate} MB/s")
    for name, value in report["ratios"].items():
        lines.append(f"  {name:44} {value}")
    for name, reason in report.get("skipped", {}).items():
        lines.append(f"  skipped {name}: {reason}")
    small = report.get("small_chunk_puts", {})
    for server in ("tiled", "nginx"):
        if server in small:
            lines.append(f"  small {small.get('chunk_bytes')} B PUTs, {server:6} {small[server]}")
    if "ratio_tiled_to_nginx" in small:
        lines.append(f"  small PUTs tiled/nginx {small['ratio_tiled_to_nginx']}")
    print("\n".join(lines), file=sys.stderr)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--gib", type=float, default=1.0, help="dataset size (default 1)")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--seconds", type=int, default=8, help="per small-PUT measurement")
    parser.add_argument("--no-upstream", action="store_true")
    parser.add_argument(
        "--codec", choices=[*CODECS, "both"], default="both", help="compressor (default both)"
    )
    args = parser.parse_args()
    args.codecs = list(CODECS) if args.codec == "both" else [args.codec]
    warnings.simplefilter("ignore")  # zarr: "consolidated metadata is not part of v3"
    data = make_data(args.gib)
    skipped: dict[str, str] = {}
    bulk: dict[str, list[float]] = {}
    upstream: list[dict] = []
    with tempfile.TemporaryDirectory() as folder, contextlib.ExitStack() as stack:
        scratch = Path(folder)
        ours = stack.enter_context(catalog_server(our_bin(), scratch / "tiled"))
        stores = {"tiled": f"{ours}/zarr/v3"}
        if _nginx_binary() is None:
            skipped["nginx"] = "nginx is not installed (Debian: apt-get install nginx)"
        else:
            stores["nginx"] = stack.enter_context(webdav_nginx(scratch / "nginx"))
        theirs = None
        if args.no_upstream:
            skipped["upstream"] = "--no-upstream"
        else:
            try:
                upstream_bin = upstream_venv()
                theirs = stack.enter_context(catalog_server(upstream_bin, scratch / "upstream"))
                data_file = scratch / "data.npy"
                numpy.save(data_file, data)
            except (OSError, RuntimeError, subprocess.CalledProcessError) as error:
                skipped["upstream"] = f"upstream Tiled unavailable: {error}"
        try:
            for round_ in range(args.rounds):
                for codec in args.codecs:
                    bulk_round(stores, data, codec, round_, bulk)
                if theirs is not None:
                    upstream.append(
                        upstream_round(upstream_bin, theirs, data_file, scratch, data.nbytes)
                    )
            report = summarize(args, data, bulk, upstream)
            for codec in args.codecs:
                written = scratch / "nginx" / "root" / f"zarr_python_{codec}_0"
                if written.exists():
                    stored = sum(f.stat().st_size for f in written.rglob("*") if f.is_file())
                    report["data"][f"stored_fraction/{codec}"] = round(stored / data.nbytes, 3)
            report["small_chunk_puts"] = small_put_rates(stores, scratch, args.seconds)
        finally:
            for server in ("tiled", "upstream"):
                if errors := server_errors(scratch / server):
                    print(f"{server} server's log, from its first traceback:", file=sys.stderr)
                    print(errors[-8000:], file=sys.stderr)
    if skipped:
        report["skipped"] = skipped
    print_summary(report)
    json.dump(report, sys.stdout, indent=2)
    print()


if __name__ == "__main__":
    main()
