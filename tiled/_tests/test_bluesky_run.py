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
FRAMES = 400  # eight more chunks: the readers see the grid grow many times
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


ROWS_PER_APPEND = 10
APPENDS = 100


@pytest.mark.slow
def test_readers_see_a_growing_table_as_a_prefix(database_uri, storage, tmp_path):  # noqa: F811
    """1,000 rows appended in 100 appends to a table in SQL storage (the catalog's database
    kind) while readers poll /api/v1 and a column through /zarr/v3: each read is a prefix of
    whole appends; the final rows are those written."""
    import pyarrow

    from tiled.catalog import from_uri
    from tiled.client import from_uri as client_from_uri
    from tiled.server.app import build_app

    from .live_server import serve

    sql_storage = (
        f"sqlite:///{tmp_path / 'tables.sqlite'}" if "sqlite" in database_uri else database_uri
    )
    tree = from_uri(database_uri, writable_storage=[storage, sql_storage], init_if_not_exists=True)
    app = build_app(tree, authentication={"single_user_api_key": "secret"})
    errors: list[str] = []
    reads = {"api": 0, "zarr": 0}
    stop = threading.Event()

    def check(name: str, counts: numpy.ndarray, seen: int) -> int:
        count = len(counts)
        if (
            count < seen
            or count % ROWS_PER_APPEND
            or not numpy.array_equal(counts, numpy.arange(count))
        ):
            errors.append(f"{name}: not a prefix of whole appends after {seen} rows: {count}")
        reads[name] += 1
        return count

    def poll(url: str, name: str) -> None:
        seen = 0
        fs = HTTPFileSystem(client_kwargs={"headers": HEADERS})
        with httpx.Client(base_url=url, headers=HEADERS, timeout=30) as http:
            while not stop.is_set() and not errors:
                try:
                    if name == "api":
                        response = http.get(
                            "/api/v1/table/full/run/events",
                            headers={"Accept": "application/vnd.apache.arrow.file"},
                        )
                        response.raise_for_status()
                        table = pyarrow.ipc.open_file(pyarrow.py_buffer(response.content))
                        counts = table.read_all()["counts"].to_numpy()
                    else:
                        group = zarr.open_group(
                            fs.get_mapper(f"{url}/zarr/v3/run/events"), mode="r"
                        )
                        counts = group["counts"][...]
                except Exception as err:  # reported, not raised in a thread
                    errors.append(f"{name}: {err!r}")
                    return
                seen = check(name, counts, seen)
                stop.wait(READ_INTERVAL)

    with serve(app) as server:
        client = client_from_uri(server.url, api_key="secret")
        run = client.create_container("run")
        schema = pyarrow.schema([("time", pyarrow.float64()), ("counts", pyarrow.int64())])
        events = run.create_appendable_table(schema, key="events")
        readers = [threading.Thread(target=poll, args=(server.url, n)) for n in ("api", "zarr")]
        for reader in readers:
            reader.start()
        try:
            for n in range(APPENDS):
                first = n * ROWS_PER_APPEND
                counts = numpy.arange(first, first + ROWS_PER_APPEND)
                events.append_partition(0, pyarrow.table({"time": counts * 0.1, "counts": counts}))
        finally:
            stop.set()
            for reader in readers:
                reader.join(timeout=60)
        assert not errors, errors
        assert reads["api"] > 2 and reads["zarr"] > 2, reads
        final = events.read()
        assert final["counts"].tolist() == list(range(APPENDS * ROWS_PER_APPEND))
