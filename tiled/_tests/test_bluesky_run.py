"""A Bluesky-shaped run: one writer grows an array frame by frame (and a table row batch by
row batch) while readers poll it through /api/v1 and through /zarr/v3; every read sees a
consistent prefix of what is being written, and the final data equal what was written, on
SQLite and PostgreSQL."""

from __future__ import annotations

import threading

import httpx
import numpy
import pytest
import zarr
from fsspec.implementations.http import HTTPFileSystem

from .test_catalog import database_uri, postgres_database, storage  # noqa: F401 (fixtures)
from .test_catalog_http import HEADERS, array_request, live_catalog  # noqa: F401 (fixtures)

# The run starts with FIRST frames (one chunk of the array's grid) and adds FRAMES more.
FIRST = 50
FRAMES = 1000
FRAME = (8, 8)
READ_INTERVAL = 0.1  # seconds between one reader's reads


def frame(n: int) -> numpy.ndarray:
    return numpy.full((1, *FRAME), float(n))


class Readers:
    """Threads reading the growing array until told to stop; what each saw is checked as it
    arrives (a prefix: frame i holds i; never fewer frames than the read before)."""

    def __init__(self, url: str):
        self.url = url
        self.stop = threading.Event()
        self.errors: list[str] = []
        self.reads = {"api": 0, "zarr": 0}
        self.threads = [
            threading.Thread(target=self._loop, args=(name, read), daemon=True)
            for name, read in (("api", self._read_api), ("zarr", self._read_zarr))
        ]

    def __enter__(self) -> Readers:
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(timeout=60)

    def _read_api(self, client: httpx.Client) -> numpy.ndarray:
        response = client.get("/api/v1/array/full/run/frames")
        response.raise_for_status()
        return numpy.frombuffer(response.content).reshape(-1, *FRAME)

    def _read_zarr(self, client: httpx.Client) -> numpy.ndarray:
        fs = HTTPFileSystem(client_kwargs={"headers": HEADERS})
        return zarr.open_array(fs.get_mapper(f"{self.url}/zarr/v3/run/frames"), mode="r")[...]

    def _loop(self, name: str, read) -> None:
        seen = 0
        with httpx.Client(base_url=self.url, headers=HEADERS, timeout=30) as client:
            while not self.stop.is_set():
                try:
                    values = read(client)
                except Exception as err:  # reported, not raised in a thread
                    self.errors.append(f"{name}: {err!r}")
                    return
                count = len(values)
                expected = numpy.arange(count, dtype=float)[:, None, None]
                if count < seen or not numpy.array_equal(
                    values, numpy.broadcast_to(expected, values.shape)
                ):
                    self.errors.append(f"{name}: not a prefix after {seen} frames: {count}")
                    return
                seen = count
                self.reads[name] += 1
                # Read at a reader's pace, not flat out: the writer shares the machine's cores.
                self.stop.wait(READ_INTERVAL)


@pytest.mark.slow
def test_readers_see_a_growing_array_as_a_prefix(live_catalog):  # noqa: F811
    server_context, _ = live_catalog()
    with server_context as server, httpx.Client(base_url=server.url, headers=HEADERS) as client:
        assert client.post(
            "/api/v1/metadata/", json={"id": "run", "structure_family": "container"}
        ).is_success
        first = numpy.concatenate([frame(n) for n in range(FIRST)])
        created = client.post(
            "/api/v1/metadata/run", json=array_request("frames", first, [[FIRST], [8], [8]])
        )
        assert created.status_code == 200, created.text
        assert client.put("/api/v1/array/full/run/frames", content=first.tobytes()).is_success
        with Readers(server.url) as readers:
            for n in range(FIRST, FIRST + FRAMES):
                response = client.patch(
                    "/api/v1/array/full/run/frames",
                    params={
                        "offset": str(n),
                        "shape": f"1,{FRAME[0]},{FRAME[1]}",
                        "extend": "true",
                    },
                    content=frame(n).tobytes(),
                    headers={"Content-Type": "application/octet-stream"},
                )
                assert response.status_code == 200, response.text
        assert not readers.errors, readers.errors
        assert readers.reads["api"] > 5 and readers.reads["zarr"] > 5, readers.reads
        final = numpy.frombuffer(client.get("/api/v1/array/full/run/frames").content)
        expected = numpy.concatenate([frame(n) for n in range(FIRST + FRAMES)])
        numpy.testing.assert_array_equal(final.reshape(expected.shape), expected)
