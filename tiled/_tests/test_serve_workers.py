"""``tiled serve ... --workers N``: several real server processes behind one port.

Which process answered is told by the ``x-tiled-request-id`` header: its first 8 hex digits
are drawn at random by each process (tiled/server/middleware.py), nothing is added for tests.
"""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import numpy
import pytest
from typer.testing import CliRunner

from tiled.commandline.main import cli_app
from tiled.structures.array import ArrayStructure, data_type_from_numpy

from .processes import free_port, running_tiled

KEY = {"Authorization": "Apikey secret"}


def _process_of(response: httpx.Response) -> str:
    return response.headers["x-tiled-request-id"][:8]


def _base(url: str) -> str:
    return url.split("?")[0].replace("localhost", "127.0.0.1")


def _answers_by_process(
    request, wanted: int = 2, seconds: float = 120
) -> dict[str, httpx.Response]:
    """One answer of each process, asking on a new connection each time (the kernel hands
    each connection to one of the processes listening on the shared socket). Asked for
    ``seconds``, not a number of times: the server answers as soon as one process has
    started, and on a loaded machine another may take many seconds more to start."""
    answers: dict[str, httpx.Response] = {}
    asked = 0
    deadline = time.monotonic() + seconds
    while len(answers) < wanted and time.monotonic() < deadline:
        response = request()
        asked += 1
        answers.setdefault(_process_of(response), response)
    assert len(answers) == wanted, f"{len(answers)} process(es) answered {asked} requests"
    return answers


@pytest.mark.slow
def test_the_demo_is_served_by_two_processes_with_the_same_data():
    args = ["serve", "demo", "--workers", "2", "--port", str(free_port())]
    with running_tiled(*args) as (url, banner):
        assert "(2 workers)" in banner
        base = _base(url)
        answers = _answers_by_process(
            lambda: httpx.get(f"{base}/api/v1/array/full/nested/images/tiny_image")
        )
        bodies = {process: response.content for process, response in answers.items()}
        assert all(response.status_code == 200 for response in answers.values())
        assert len(set(bodies.values())) == 1  # the same seeded data in each process
        assert len(next(iter(bodies.values()))) == 50 * 50 * 8
        zarr = _answers_by_process(lambda: httpx.get(f"{base}/zarr/v3/zarr.json"))
        assert {response.json()["node_type"] for response in zarr.values()} == {"group"}


def _array_node(key: str, data: numpy.ndarray) -> dict:
    chunks = tuple((n,) for n in data.shape)
    structure = ArrayStructure(data_type_from_numpy(data.dtype), chunks, data.shape).to_json()
    source = {"structure_family": "array", "structure": structure, "assets": []}
    return {"id": key, "structure_family": "array", "metadata": {"n": 1}, "data_sources": [source]}


@pytest.mark.slow
def test_a_catalog_file_served_by_two_processes_shares_writes(tmp_path):
    database = tmp_path / "catalog.db"
    args = ["serve", "catalog", str(database), "--init", "--write", str(tmp_path / "data")]
    args += ["--api-key", "secret", "--workers", "2", "--port", str(free_port())]
    with running_tiled(*args) as (url, _):
        base = _base(url)
        with httpx.Client(headers=KEY) as client:  # one connection: one process writes
            data = numpy.arange(12.0).reshape(3, 4)
            created = client.post(f"{base}/api/v1/metadata/", json=_array_node("x", data))
            assert created.status_code == 200, created.text
            written = client.put(f"{base}/api/v1/array/full/x", content=data.tobytes())
            assert written.status_code == 200, written.text
            writer = _process_of(written)

        def read():
            return httpx.get(f"{base}/api/v1/array/full/x", headers=KEY)

        answers = _answers_by_process(read)
        other = next(process for process in answers if process != writer)
        seen = numpy.frombuffer(answers[other].content, "<f8").reshape(3, 4)
        numpy.testing.assert_array_equal(seen, data)
        metadata = _answers_by_process(lambda: httpx.get(f"{base}/api/v1/metadata/x", headers=KEY))
        assert {r.json()["data"]["attributes"]["metadata"]["n"] for r in metadata.values()} == {1}


def _refusal(*args: str) -> str:
    """What ``tiled *args`` says when it refuses to start (run in this process: a refusal
    comes before any server or worker process)."""
    result = CliRunner().invoke(cli_app, [*args, "--port", str(free_port())])
    assert result.exit_code == 1, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), result.output
    return result.output


def test_what_cannot_work_in_several_processes_is_refused(tmp_path):
    temp = _refusal("serve", "catalog", "--temp", "--workers", "2")
    assert "--temp" in temp and "tiled catalog init" in temp
    memory = _refusal("serve", "catalog", str(tmp_path / "c.db"), "--cache", "memory",
                      "--workers", "2")  # fmt: skip
    assert "--cache memory" in memory and "redis://" in memory
    watched = _refusal("serve", "directory", str(tmp_path), "--watch", "--workers", "2")
    assert "--watch" in watched
    in_memory = tmp_path / "in_memory.yml"
    in_memory.write_text(
        "trees: [{path: /, tree: 'tiled.catalog:in_memory'}]\n"
        "authentication: {single_user_api_key: secret}\n"
    )
    assert "in-memory database" in _refusal("serve", "config", str(in_memory), "--workers", "2")
    duckdb = tmp_path / "duckdb.yml"
    duckdb.write_text(
        f"catalog: {{uri: 'sqlite:///{tmp_path}/c.db', init_if_not_exists: true,"
        f" writable_storage: ['duckdb:///{tmp_path}/t.duckdb']}}\n"
    )
    assert "DuckDB" in _refusal("serve", "config", str(duckdb), "--workers", "2")
    logins = tmp_path / "logins.yml"
    logins.write_text(
        f"trees: [{{path: /, tree: 'tiled.examples.generated_minimal:tree'}}]\n"
        "authentication:\n"
        "  providers:\n"
        "  - provider: toy\n"
        "    authenticator: tiled.authenticators:DictionaryAuthenticator\n"
        "    args: {users_to_passwords: {alice: pw}}\n"
        f"database: {{uri: 'sqlite:///{tmp_path}/authn.db', init_if_not_exists: true}}\n"
    )
    unsigned = _refusal("serve", "config", str(logins), "--workers", "2")
    assert "--workers" in unsigned and "secret_keys" in unsigned
    # uvicorn.workers in the file asks the same as --workers.
    logins.write_text(logins.read_text() + "uvicorn: {workers: 2}\n")
    assert "secret_keys" in _refusal("serve", "config", str(logins))


@pytest.mark.slow
def test_a_directory_is_indexed_once_and_served_by_two_processes(tmp_path):
    served = tmp_path / "files"
    served.mkdir()
    (served / "table.csv").write_text("a,b\n1,2\n3,4\n")
    args = ["serve", "directory", str(served), "--api-key", "secret", "--workers", "2"]
    with running_tiled(*args, "--port", str(free_port())) as (url, banner):
        index = Path(banner.split("Serving the index at ")[1].split()[0])
        assert index.exists()
        base = _base(url)
        answers = _answers_by_process(
            lambda: httpx.get(
                f"{base}/api/v1/table/full/table", params={"format": "csv"}, headers=KEY
            )
        )
        assert {response.text.replace("\r", "") for response in answers.values()} == {
            "a,b\n1,2\n3,4\n"
        }
    assert not index.parent.exists()  # removed when the server stopped


@pytest.mark.slow
def test_uvicorn_workers_of_a_configuration_file(tmp_path):
    config = tmp_path / "config.yml"
    config.write_text(
        "trees: [{path: /, tree: 'tiled.examples.generated_minimal:tree'}]\n"
        "authentication: {single_user_api_key: secret}\n"
        "uvicorn: {workers: 2}\n"
    )
    with running_tiled("serve", "config", str(config), "--port", str(free_port())) as (url, banner):
        assert "(2 workers)" in banner
        answers = _answers_by_process(lambda: httpx.get(f"{_base(url)}/api/v1/", headers=KEY))
        assert all(response.status_code == 200 for response in answers.values())
