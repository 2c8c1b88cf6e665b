"""Concurrent writers against a scaled-out deployment: two ``tiled serve catalog`` processes
on one catalog database (SQLite file, or PostgreSQL) and one storage directory, and many
clients writing to the same nodes through both at once.

What holds: one winner among creators of one name, whole chunks for readers while writers
replace them, every append landing. The tests marked ``xfail(strict=True)`` are bugs found
here (each reason says what goes wrong): remove the mark once fixed.
"""

from __future__ import annotations

import base64
import collections
import io
import os
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy
import pandas
import pyarrow
import pytest

from tiled.adapters.files import path_from_uri

from .postgres import temporary_database
from .processes import TILED, server_process
from .test_catalog_http import arrow_bytes

KEY = "secret"
HEADERS = {"Authorization": f"Apikey {KEY}"}
OCTETS = {**HEADERS, "Content-Type": "application/octet-stream"}
ARROW = "application/vnd.apache.arrow.file"
TIMEOUT = 60


@dataclass
class Deployment:
    urls: list[str]  # one per server process
    data: Path  # the storage directory they share
    logs: Path  # where their logs are

    def url(self, i: int) -> str:
        """Requests spread over the processes, alternately."""
        return self.urls[i % len(self.urls)]

    def tracebacks(self) -> list[str]:
        return [
            log.read_text()
            for log in self.logs.glob("server-*.log")
            if "Traceback" in log.read_text()
        ]


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def deployment(request, tmp_path_factory) -> Iterator[Deployment]:
    """Two server processes on one catalog and one storage directory (started one after the
    other: the first creates the schema)."""
    directory = tmp_path_factory.mktemp(f"concurrent-{request.param}")
    with ExitStack() as stack:
        if request.param == "sqlite":
            catalog = f"sqlite:///{directory / 'catalog.db'}"
            tables = f"sqlite:///{directory / 'tables.db'}"
        else:
            catalog = stack.enter_context(temporary_database("tiled_concurrent_catalog"))
            tables = stack.enter_context(temporary_database("tiled_concurrent_tables"))
        data = directory / "data"
        command = [
            *TILED, "serve", "catalog", catalog, "--init", "-w", str(data), "-w", tables,
            "--api-key", KEY,
        ]  # fmt: skip
        urls = [stack.enter_context(server_process(command, directory)) for _ in range(2)]
        yield Deployment(urls, data, directory)


def _in_parallel(count: int, function: Callable[[int], Any], threads: int = 16) -> list[Any]:
    with ThreadPoolExecutor(min(count, threads)) as pool:
        return list(pool.map(function, range(count)))


def _statuses(responses: list[httpx.Response]) -> collections.Counter:
    return collections.Counter(response.status_code for response in responses)


def _zarr_array(shape: list[int], chunks: list[int], fill_value: float = 0.0) -> dict:
    return {
        "zarr_format": 3, "node_type": "array", "shape": shape, "data_type": "float64",
        "chunk_grid": {"name": "regular", "configuration": {"chunk_shape": chunks}},
        "chunk_key_encoding": {"name": "default", "configuration": {"separator": "/"}},
        "fill_value": fill_value, "attributes": {},
        "codecs": [{"name": "bytes", "configuration": {"endian": "little"}}],
    }  # fmt: skip


def _array_node(key: str, size: int = 8) -> dict:
    structure = {
        "data_type": {"endianness": "little", "kind": "f", "itemsize": 8, "dt_units": None},
        "chunks": [[size]], "shape": [size], "dims": None, "resizable": False,
    }  # fmt: skip
    source = {"structure_family": "array", "structure": structure, "assets": []}
    return {"id": key, "structure_family": "array", "metadata": {}, "data_sources": [source]}


def _container(key: str, metadata: dict | None = None) -> dict:
    return {"id": key, "structure_family": "container", "metadata": metadata or {},
            "data_sources": []}  # fmt: skip


def _metadata(deployment: Deployment, path: str) -> dict:
    response = httpx.get(f"{deployment.urls[0]}/api/v1/metadata/{path}", headers=HEADERS)
    assert response.status_code == 200, response.text
    return response.json()["data"]["attributes"]["metadata"]


def _storage_directories(deployment: Deployment) -> set[str]:
    return set(os.listdir(deployment.data)) if deployment.data.exists() else set()


def _live_storage(deployment: Deployment) -> set[str]:
    """The storage directories the catalog's nodes (all of them) refer to."""
    live: set[str] = set()
    pending = [""]
    while pending:
        path = pending.pop()
        offset = 0
        while True:
            page = httpx.get(
                f"{deployment.urls[0]}/api/v1/search/{path}", headers=HEADERS, timeout=TIMEOUT,
                params={"include_data_sources": "true", "page[offset]": offset},
            ).json()  # fmt: skip
            for item in page["data"]:
                attributes = item["attributes"]
                if attributes["structure_family"] == "container":
                    pending.append(f"{path}/{item['id']}".lstrip("/"))
                for source in attributes.get("data_sources") or []:
                    for asset in source["assets"]:
                        if asset["data_uri"].startswith("file:"):
                            # A node's place is the folder right below the storage directory
                            # (a table's assets are the files in it).
                            where = Path(path_from_uri(asset["data_uri"]))
                            live.add(where.relative_to(deployment.data.resolve()).parts[0])
            offset += len(page["data"])
            if not page["data"] or offset >= page["meta"]["count"]:
                break
    return live


# --- guarantees that hold -----------------------------------------------------------------------


def test_one_creator_of_a_name_wins(deployment):
    """Creators of one name, through both processes and both APIs: one 200 (or 201), the
    others 409 (or, conditional, 412); no 500, one storage directory per node."""
    base = deployment.urls[0]
    before = _storage_directories(deployment)

    def container(i: int) -> httpx.Response:
        return httpx.post(
            f"{deployment.url(i)}/api/v1/metadata/", json=_container("same", {"i": i}),
            headers=HEADERS, timeout=TIMEOUT,
        )  # fmt: skip

    assert _statuses(_in_parallel(16, container)) == {200: 1, 409: 15}

    def array(i: int) -> httpx.Response:
        return httpx.post(
            f"{deployment.url(i)}/api/v1/metadata/same", json=_array_node("a"),
            headers=HEADERS, timeout=TIMEOUT,
        )  # fmt: skip

    assert _statuses(_in_parallel(16, array)) == {200: 1, 409: 15}

    def group(i: int) -> httpx.Response:
        return httpx.put(
            f"{deployment.url(i)}/zarr/v3/same/g/zarr.json",
            json={"zarr_format": 3, "node_type": "group", "attributes": {"i": i}},
            headers={**HEADERS, "If-None-Match": "*"}, timeout=TIMEOUT,
        )  # fmt: skip

    assert _statuses(_in_parallel(16, group)) == {201: 1, 412: 15}

    def zarr_array(i: int) -> httpx.Response:
        return httpx.put(
            f"{deployment.url(i)}/zarr/v3/same/z/zarr.json", json=_zarr_array([4], [2]),
            headers=HEADERS, timeout=TIMEOUT,
        )  # fmt: skip

    assert _statuses(_in_parallel(16, zarr_array)) == {201: 1, 204: 15}
    listed = httpx.get(f"{base}/api/v1/search/same", headers=HEADERS).json()
    assert sorted(item["id"] for item in listed["data"]) == ["a", "g", "z"]
    assert len(_storage_directories(deployment) - before) == 2  # a and z


def test_readers_never_see_a_torn_chunk(deployment):
    """Writers replace one chunk through /zarr/v3 and /api/v1/array/block, through both
    processes, while readers read it through both: every read is one writer's chunk."""
    base = deployment.urls[0]
    created = httpx.put(f"{base}/zarr/v3/torn/zarr.json", json=_zarr_array([2000], [1000]),
                        headers=HEADERS)  # fmt: skip
    assert created.status_code == 201, created.text
    stop = threading.Event()
    seen: list[Any] = []

    def reader(i: int) -> None:
        n = i
        while not stop.is_set():
            n += 1
            if n % 2:
                response = httpx.get(f"{deployment.url(n)}/zarr/v3/torn/c/0", headers=HEADERS,
                                     timeout=TIMEOUT)  # fmt: skip
            else:
                response = httpx.get(
                    f"{deployment.url(n)}/api/v1/array/block/torn", params={"block": "0"},
                    headers={**HEADERS, "Accept": "application/octet-stream"}, timeout=TIMEOUT,
                )  # fmt: skip
            if response.status_code == 404:
                continue  # not written yet
            assert response.status_code == 200, response.text
            seen.append(numpy.unique(numpy.frombuffer(response.content, "<f8")).tolist())

    def writer(i: int) -> httpx.Response:
        body = numpy.full(1000, float(i + 1)).tobytes()
        if i % 2:
            return httpx.put(f"{deployment.url(i)}/zarr/v3/torn/c/0", content=body,
                             headers=HEADERS, timeout=TIMEOUT)  # fmt: skip
        return httpx.put(f"{deployment.url(i)}/api/v1/array/block/torn", params={"block": "0"},
                         content=body, headers=OCTETS, timeout=TIMEOUT)  # fmt: skip

    with ThreadPoolExecutor(3) as readers:
        running = [readers.submit(reader, i) for i in range(3)]
        try:
            written = _in_parallel(40, writer, 8)
        finally:
            stop.set()
        for future in running:
            future.result()
    assert _statuses(written) == {200: 20, 204: 19, 201: 1} or _statuses(written) == {
        200: 20, 204: 20,
    }  # fmt: skip
    assert seen and all(len(values) == 1 for values in seen), [v for v in seen if len(v) != 1]


@pytest.mark.parametrize("sql", [True, False], ids=["appendable", "parquet"])
def test_every_append_lands(deployment, sql):
    """Appends to one partition of one table, through both processes: every row lands."""
    base = deployment.urls[0]
    key = f"log_{'sql' if sql else 'parquet'}"
    schema = pyarrow.schema([("i", pyarrow.int64()), ("x", pyarrow.float64())])
    encoded = base64.b64encode(schema.serialize().to_pybytes()).decode()
    structure = {
        "arrow_schema": f"data:{ARROW};base64,{encoded}", "npartitions": 1,
        "columns": ["i", "x"], "resizable": False,
    }  # fmt: skip
    source = {"structure_family": "table", "structure": structure, "assets": []}
    if sql:
        source["mimetype"] = "application/x-tiled-sql-table"
    node = {"id": key, "structure_family": "table", "metadata": {}, "data_sources": [source]}
    created = httpx.post(f"{base}/api/v1/metadata/", json=node, headers=HEADERS)
    assert created.status_code == 200, created.text
    if not sql:
        first = arrow_bytes(pandas.DataFrame({"i": [-1], "x": [0.0]}))
        written = httpx.put(f"{base}/api/v1/table/full/{key}", content=first,
                            headers={**HEADERS, "Content-Type": ARROW})  # fmt: skip
        assert written.status_code == 200, written.text

    def append(i: int) -> httpx.Response:
        rows = arrow_bytes(pandas.DataFrame({"i": [i] * 3, "x": [float(i)] * 3}))
        return httpx.patch(
            f"{deployment.url(i)}/api/v1/table/partition/{key}", params={"partition": 0},
            content=rows, headers={**HEADERS, "Content-Type": ARROW}, timeout=TIMEOUT,
        )  # fmt: skip

    responses = _in_parallel(30, append, 10)
    assert _statuses(responses) == {200: 30}, [r.text for r in responses if r.status_code != 200]
    read = httpx.get(f"{base}/api/v1/table/full/{key}", headers={**HEADERS, "Accept": ARROW})
    table = pyarrow.ipc.open_file(io.BytesIO(read.content)).read_all().to_pandas()
    expected = {i: 3 for i in range(30)} | ({} if sql else {-1: 1})
    assert table["i"].value_counts().to_dict() == expected


def test_conditional_zarr_resizes_take_turns(deployment):
    """Conditional (If-Match) resizes through both processes, each one row longer than the
    shape its writer read: none is lost, none shrinks the array."""
    base = deployment.urls[0]
    made = httpx.put(f"{base}/zarr/v3/turns/zarr.json", json=_zarr_array([1, 2], [1, 2]),
                     headers=HEADERS)  # fmt: skip
    assert made.status_code == 201, made.text

    def grow_by_one(i: int) -> int:
        for attempt in range(200):
            url = f"{deployment.url(i + attempt)}/zarr/v3/turns/zarr.json"
            seen = httpx.get(url, headers=HEADERS, timeout=TIMEOUT)
            document = {**seen.json(), "shape": [seen.json()["shape"][0] + 1, 2]}
            put = httpx.put(url, json=document, headers={**HEADERS, "If-Match": seen.headers["etag"]},
                            timeout=TIMEOUT)  # fmt: skip
            if put.status_code != 412:
                assert put.status_code == 204, put.text
                return attempt
        raise AssertionError("no turn in 200 attempts")

    _in_parallel(12, grow_by_one, 6)
    shape = httpx.get(f"{base}/zarr/v3/turns/zarr.json", headers=HEADERS).json()["shape"]
    assert shape == [13, 2]


# --- bugs -----------------------------------------------------------------------------------------


def test_concurrent_metadata_patches_all_land(deployment):
    base = deployment.urls[0]
    assert (
        httpx.post(
            f"{base}/api/v1/metadata/", json=_container("patched"), headers=HEADERS
        ).status_code
        == 200
    )

    def json_patch(i: int) -> httpx.Response:
        body = {"content-type": "application/json-patch+json",
                "metadata": [{"op": "add", "path": f"/json{i}", "value": i}]}  # fmt: skip
        return httpx.patch(f"{deployment.url(i)}/api/v1/metadata/patched", json=body,
                           headers=HEADERS, timeout=TIMEOUT)  # fmt: skip

    def merge_patch(i: int) -> httpx.Response:
        body = {"content-type": "application/merge-patch+json", "metadata": {f"merge{i}": i}}
        return httpx.patch(f"{deployment.url(i)}/api/v1/metadata/patched", json=body,
                           headers=HEADERS, timeout=TIMEOUT)  # fmt: skip

    succeeded = set()
    for prefix, patch in (("json", json_patch), ("merge", merge_patch)):
        for i, response in enumerate(_in_parallel(16, patch, 8)):
            assert response.status_code in (200, 500), response.text  # 500: see the next test
            if response.status_code == 200:
                succeeded.add(f"{prefix}{i}")
    assert succeeded <= set(_metadata(deployment, "patched"))


@pytest.mark.slow
def test_json_patch_test_op_is_a_compare_and_set(deployment):
    base = deployment.urls[0]
    made = httpx.post(
        f"{base}/api/v1/metadata/", json=_container("counter", {"n": 0}), headers=HEADERS
    )
    assert made.status_code == 200, made.text

    def increment(i: int) -> int:
        done = 0
        for attempt in range(400):
            if done == 3:
                return done
            url = f"{deployment.url(i + attempt)}/api/v1/metadata/counter"
            seen = httpx.get(url, headers=HEADERS, timeout=TIMEOUT)
            n = seen.json()["data"]["attributes"]["metadata"]["n"]
            body = {"content-type": "application/json-patch+json", "metadata": [
                {"op": "test", "path": "/n", "value": n},
                {"op": "replace", "path": "/n", "value": n + 1},
            ]}  # fmt: skip
            response = httpx.patch(url, json=body, headers=HEADERS, timeout=TIMEOUT)
            assert response.status_code in (200, 400, 500), response.text
            done += response.status_code == 200
        return done

    successes = sum(_in_parallel(6, increment))
    assert _metadata(deployment, "counter")["n"] == successes


def _concurrent_metadata_puts(deployment: Deployment, key: str) -> None:
    base = deployment.urls[0]
    assert (
        httpx.post(f"{base}/api/v1/metadata/", json=_container(key), headers=HEADERS).status_code
        == 200
    )

    def put(i: int) -> httpx.Response:
        return httpx.put(f"{deployment.url(i)}/api/v1/metadata/{key}",
                         json={"metadata": {"writer": i}}, headers=HEADERS, timeout=TIMEOUT)  # fmt: skip

    responses = _in_parallel(32, put, 16)
    assert _statuses(responses) == {200: 32}, [r.text for r in responses if r.status_code != 200]
    revisions = httpx.get(f"{base}/api/v1/revisions/{key}", headers=HEADERS,
                          params={"page[limit]": 300}).json()  # fmt: skip
    assert revisions["meta"]["count"] == 32


def test_revisions_through_two_processes(deployment, request):
    """PUT /metadata through both processes at once: every write keeps a revision, none is a
    500. On SQLite the revision number is max+1 read outside the write transaction (pysqlite
    begins it at the INSERT; `with_for_update()` is a no-op there, and the in-process write
    lock does not reach the other process): `UNIQUE constraint failed: revisions.node_id,
    revisions.revision_number` surfaces as 500."""
    _concurrent_metadata_puts(deployment, "revised")


@pytest.mark.slow
def test_conditional_resize_and_patch_extend_lose_no_rows(deployment):
    base = deployment.urls[0]  # one process is enough
    lost = []
    for trial in range(1):
        name = f"grown{trial}"
        made = httpx.put(f"{base}/zarr/v3/{name}/zarr.json",
                         json=_zarr_array([1, 4], [1, 4], -1.0), headers=HEADERS)  # fmt: skip
        assert made.status_code == 201, made.text

        def extend(i: int, name=name) -> httpx.Response:
            return httpx.patch(
                f"{base}/api/v1/array/full/{name}",
                params={"offset": str(i), "shape": "1,4", "extend": "true"},
                content=numpy.full((1, 4), float(i)).tobytes(), headers=OCTETS, timeout=TIMEOUT,
            )  # fmt: skip

        def resize(i: int, name=name) -> httpx.Response:
            url = f"{base}/zarr/v3/{name}/zarr.json"
            for _ in range(200):
                seen = httpx.get(url, headers=HEADERS, timeout=TIMEOUT)
                document = {**seen.json(), "shape": [seen.json()["shape"][0] + 1, 4]}
                response = httpx.put(url, json=document, timeout=TIMEOUT,
                                     headers={**HEADERS, "If-Match": seen.headers["etag"]})  # fmt: skip
                if response.status_code != 412:
                    return response
            return response

        responses = _in_parallel(30, lambda i: extend(i) if i % 2 else resize(i), 10)
        assert set(_statuses(responses)) <= {200, 204}, [r.text for r in responses]
        full = httpx.get(f"{base}/api/v1/array/full/{name}",
                         headers={**HEADERS, "Accept": "application/octet-stream"})  # fmt: skip
        rows = numpy.frombuffer(full.content, "<f8").reshape(-1, 4)
        lost += [i for i in range(1, 30, 2) if not (i < len(rows) and rows[i, 0] == i)]
    assert lost == []


@pytest.mark.slow
def test_writes_racing_delete_and_recreate_are_never_500(deployment):
    responses = collections.Counter()
    failures: list[str] = []

    def worker(i: int) -> None:
        for n in range(20):
            url = deployment.url(i + n)
            step = (i + n) % 3
            if step == 0:
                response = httpx.delete(f"{url}/api/v1/metadata/churn", headers=HEADERS,
                                        params={"external_only": "false"}, timeout=TIMEOUT)  # fmt: skip
            elif step == 1:
                response = httpx.post(f"{url}/api/v1/metadata/", json=_array_node("churn"),
                                      headers=HEADERS, timeout=TIMEOUT)  # fmt: skip
            else:
                response = httpx.put(f"{url}/api/v1/array/full/churn", headers=OCTETS,
                                     content=numpy.full(8, float(i)).tobytes(), timeout=TIMEOUT)  # fmt: skip
            responses[(response.request.method, response.status_code)] += 1
            if response.status_code >= 500:
                failures.append(response.text)

    _in_parallel(8, worker)
    assert failures == [], responses
    assert _storage_directories(deployment) <= _live_storage(deployment)  # no orphans


@pytest.mark.slow
def test_deleting_while_creating_leaves_no_orphan_storage(deployment):
    def churn(i: int) -> None:
        for n in range(25):
            url = deployment.url(i + n)
            if (i + n) % 2:
                httpx.delete(f"{url}/api/v1/metadata/box", headers=HEADERS, timeout=TIMEOUT,
                             params={"external_only": "false", "recursive": "true"})  # fmt: skip
                httpx.delete(f"{url}/api/v1/metadata/lone", headers=HEADERS, timeout=TIMEOUT,
                             params={"external_only": "false"})  # fmt: skip
            else:
                httpx.post(f"{url}/api/v1/metadata/", json=_container("box"), headers=HEADERS,
                           timeout=TIMEOUT)  # fmt: skip
                httpx.put(f"{url}/zarr/v3/box/a{n % 3}/zarr.json", json=_zarr_array([4], [2]),
                          headers=HEADERS, timeout=TIMEOUT)  # fmt: skip
                httpx.post(f"{url}/api/v1/metadata/", json=_array_node("lone"), headers=HEADERS,
                           timeout=TIMEOUT)  # fmt: skip

    _in_parallel(8, churn)
    orphans = _storage_directories(deployment) - _live_storage(deployment)
    assert orphans == set()


@pytest.mark.slow
def test_only_one_delete_of_a_node_succeeds(deployment):
    base = deployment.urls[0]
    extra = 0
    for _ in range(4):
        assert (
            httpx.post(
                f"{base}/api/v1/metadata/", json=_container("once"), headers=HEADERS
            ).status_code
            == 200
        )
        # Warm both processes' lookups, then delete from 12 clients at once.
        for url in deployment.urls:
            httpx.get(f"{url}/api/v1/metadata/once", headers=HEADERS)

        def delete(i: int) -> httpx.Response:
            return httpx.delete(f"{deployment.url(i)}/api/v1/metadata/once", headers=HEADERS,
                                timeout=TIMEOUT)  # fmt: skip

        statuses = _statuses(_in_parallel(12, delete))
        assert set(statuses) <= {200, 404}, statuses
        extra += statuses[200] - 1
    assert extra == 0
