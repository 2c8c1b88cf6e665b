"""Benchmark of files served as nodes (issue 10), every figure a ratio to a reference measured
in the same run:

1. Index a directory of small HDF5 files (and one of TIFFs) with ``tiled serve directory``:
   seconds to the first answer and to the whole directory listed, this server against
   upstream Tiled 0.2.20 (in a virtual environment of its own). Target: 10x faster.
2. Read a 1 GiB gzip-chunked HDF5 dataset through ``/zarr/v3`` with zarr-python (chunks passed
   through, never decoded by the server) against h5py reading the same file locally. Target:
   within 1.5x of h5py's time. Also reported: the server's CPU seconds per chunk and MB/s.
3. One small read from a large HDF5 file, p50 latency through ``/api/v1`` and ``/zarr/v3``,
   against h5py opening the file and reading the same values.

Run: ``python benchmarks/files.py [--files N] [--gib G]`` after ``pip install -e '.[all,dev]'``.
Upstream's package is installed into ``$TILED_BENCH_UPSTREAM_VENV`` (default
``/tmp/tiled-upstream-venv``) on first use; ``--no-upstream`` skips part 1's reference.
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import h5py
import httpx
import numpy
from _common import free_port, upstream_venv

API_KEY = "secret"
HEADERS = {"Authorization": f"Apikey {API_KEY}"}


def upstream_tiled() -> Path:
    return upstream_venv() / "tiled"


def our_tiled() -> Path:
    return Path(sys.executable).parent / "tiled"


def without_pythonpath() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}


def make_small_hdf5_files(directory: Path, count: int) -> None:
    directory.mkdir(parents=True)
    rng = numpy.random.default_rng(0)
    for i in range(count):
        with h5py.File(directory / f"scan_{i:05d}.h5", "w") as file:
            file.attrs["scan_id"] = i
            entry = file.create_group("entry")
            entry.attrs["NX_class"] = "NXentry"
            entry.create_dataset("counts", data=rng.integers(0, 1000, (64, 64), dtype="int32"))
            entry.create_dataset("energy", data=numpy.linspace(7.0, 8.0, 64))


def make_tiff_files(directory: Path, count: int) -> None:
    import tifffile

    directory.mkdir(parents=True)
    rng = numpy.random.default_rng(1)
    for i in range(count):
        # Distinct names per file, so that no two files group into one sequence.
        tifffile.imwrite(directory / f"image_{chr(97 + i % 26)}{i:05d}x.tif",
                         rng.integers(0, 255, (64, 64), dtype="uint8"))  # fmt: skip


def time_to_index(tiled: Path, directory: Path, expected: int, env: dict) -> tuple[float, float]:
    """Seconds from launching ``tiled serve directory`` to its first answer, and to a root
    listing that counts ``expected`` nodes."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    command = [str(tiled), "serve", "directory", str(directory), "--api-key", API_KEY]
    started = time.perf_counter()
    process = subprocess.Popen(
        [*command, "--port", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        env=env,
    )  # fmt: skip
    first = None
    try:
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"{command} exited with {process.returncode}")
            try:
                response = httpx.get(f"{url}/api/v1/search/", headers=HEADERS, timeout=30)
            except httpx.TransportError:
                time.sleep(0.05)
                continue
            if response.status_code == 200:
                if first is None:
                    first = time.perf_counter() - started
                if response.json()["meta"]["count"] >= expected:
                    return first, time.perf_counter() - started
            time.sleep(0.05)
    finally:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()


def make_big_hdf5(path: Path, gib: float) -> tuple[int, ...]:
    rows = int(gib * 2**30 / (4096 * 4))
    shape = (rows, 4096)
    with h5py.File(path, "w") as file:
        dataset = file.create_dataset(
            "data", shape=shape, dtype="float32", chunks=(256, 4096), compression="gzip",
            compression_opts=1, shuffle=True,
        )  # fmt: skip
        rng = numpy.random.default_rng(2)
        for start in range(0, rows, 4096):
            block = rng.standard_normal((min(4096, rows - start), 4096), dtype="float32")
            dataset[start : start + block.shape[0]] = numpy.round(block, 2)
    return shape


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def serve_directory(directory: Path) -> tuple[subprocess.Popen, str]:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    process = subprocess.Popen(
        [str(our_tiled()), "serve", "directory", str(directory), "--api-key", API_KEY,
         "--port", str(port)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/api/v1/search/", headers=HEADERS).json()["meta"]["count"]:
                return process, url
        except (httpx.TransportError, KeyError, ValueError):
            pass
        time.sleep(0.1)
    raise RuntimeError("the directory was not indexed")


def read_big(directory: Path, shape: tuple[int, ...]) -> dict[str, float]:
    import zarr
    from zarr.storage import FsspecStore

    path = directory / "big.h5"
    started = time.perf_counter()
    with h5py.File(path, "r") as file:
        local = file["data"][...]
    h5py_seconds = time.perf_counter() - started
    process, url = serve_directory(directory)
    try:
        store = FsspecStore.from_url(
            f"{url}/zarr/v3/big/data", read_only=True, storage_options={"headers": HEADERS}
        )
        array = zarr.open_array(store, mode="r", zarr_format=3)
        before = cpu_seconds(process.pid)
        started = time.perf_counter()
        served = array[...]
        zarr_seconds = time.perf_counter() - started
        cpu = cpu_seconds(process.pid) - before
        chunks = -(-shape[0] // array.chunks[0]) * -(-shape[1] // array.chunks[1])
        codecs = [c.to_dict()["name"] for c in array.metadata.codecs]
    finally:
        process.send_signal(signal.SIGINT)
        process.wait(timeout=30)
    assert numpy.array_equal(served, local)
    stored = path.stat().st_size
    return {
        "h5py_seconds": h5py_seconds,
        "zarr_seconds": zarr_seconds,
        "ratio_to_h5py": zarr_seconds / h5py_seconds,
        "server_cpu_ms_per_chunk": 1000 * cpu / chunks,
        "server_MB_per_s_served": stored / 1e6 / zarr_seconds,
        "codecs": codecs,
    }


def small_reads(directory: Path, repeats: int = 200) -> dict[str, float]:
    path = directory / "big.h5"
    timings: dict[str, list[float]] = {"h5py": [], "api_v1": [], "zarr_v3": []}
    for _ in range(repeats):
        started = time.perf_counter()
        with h5py.File(path, "r") as file:
            file["data"][1000:1010, 100:110]
        timings["h5py"].append(time.perf_counter() - started)
    process, url = serve_directory(directory)
    try:
        with httpx.Client(headers=HEADERS) as client:
            for _ in range(repeats):
                started = time.perf_counter()
                client.get(
                    f"{url}/api/v1/array/full/big/data",
                    params={"slice": "1000:1010,100:110"},
                    headers={"Accept": "application/octet-stream"},
                ).raise_for_status()
                timings["api_v1"].append(time.perf_counter() - started)
                started = time.perf_counter()
                client.get(f"{url}/zarr/v3/big/data/c/3/0").raise_for_status()
                timings["zarr_v3"].append(time.perf_counter() - started)
    finally:
        process.send_signal(signal.SIGINT)
        process.wait(timeout=30)
    p50 = {name: statistics.median(values) * 1000 for name, values in timings.items()}
    return {
        **{f"p50_ms_{name}": value for name, value in p50.items()},
        "api_v1_ratio_to_h5py": p50["api_v1"] / p50["h5py"],
        "zarr_v3_ratio_to_h5py": p50["zarr_v3"] / p50["h5py"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--files", type=int, default=1000)
    parser.add_argument("--gib", type=float, default=1.0)
    parser.add_argument("--no-upstream", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        scratch = Path(scratch)
        for kind, make in (("hdf5", make_small_hdf5_files), ("tiff", make_tiff_files)):
            directory = scratch / kind
            make(directory, args.files)
            ours = time_to_index(our_tiled(), directory, args.files, dict(os.environ))
            line = (
                f"index {args.files} {kind}: here first answer {ours[0]:.2f} s, all {ours[1]:.2f} s"
            )
            if not args.no_upstream:
                theirs = time_to_index(
                    upstream_tiled(), directory, args.files, without_pythonpath()
                )
                line += (
                    f"; upstream {theirs[0]:.2f} s, {theirs[1]:.2f} s; "
                    f"speedup first {theirs[0] / ours[0]:.1f}x, all {theirs[1] / ours[1]:.1f}x"
                )
            print(line, flush=True)
        big = scratch / "big"
        big.mkdir()
        shape = make_big_hdf5(big / "big.h5", args.gib)
        print("read through /zarr/v3 vs h5py:", read_big(big, shape), flush=True)
        print("small read p50:", small_reads(big), flush=True)


if __name__ == "__main__":
    main()
