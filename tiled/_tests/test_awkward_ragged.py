"""The awkward and ragged families on a live catalog server: written and read back with this
package's client and with upstream 0.2.20's, rebuilt from zarr-python reads of their zarr
view (both formats), bad writes refused with a 4xx that changes nothing. Ragged arrays are
stored in SQL (DuckDB or PostgreSQL storage) in upstream's layout: catalogs written by
upstream's server are read here; readers during appends see whole appends only."""

from __future__ import annotations

import contextlib
import io
import json
import threading
import zipfile

import awkward
import httpx
import numpy
import pytest
import ragged
import zarr
from fsspec.implementations.http import HTTPFileSystem

from tiled.catalog import from_uri as catalog_from_uri
from tiled.client import from_uri
from tiled.server.app import build_app
from tiled.structures.awkward import AwkwardStructure
from tiled.structures.ragged import RaggedStructure, make_ragged_array

from .live_server import serve
from .test_catalog import database_uri, postgres_database, storage  # noqa: F401 (fixtures)
from .test_catalog_http import HEADERS, live_catalog  # noqa: F401 (fixtures)

RECORDS = awkward.Array(
    [
        [{"x": 1.1, "y": [1]}, {"x": 2.2, "y": [1, 2]}],
        [],
        [{"x": 3.3, "y": [1, 2, 3]}],
    ]
)
ROWS = [[[1.1, 2.2, 3.3], []], [[4.4]], [], [[5.5, 6.6, 7.7, 8.8], [9.9]]]


def _zarr_root(server, zarr_format: int):
    fs = HTTPFileSystem(client_kwargs={"headers": HEADERS})
    return zarr.open(fs.get_mapper(f"{server.url}/zarr/v{zarr_format}/"), mode="r")


def _rebuilt_from_zarr(group) -> awkward.Array:
    """The array of a zarr group of awkward buffers, with only zarr-python's reads."""
    spec = group.attrs["awkward"]
    buffers = {name: group[name][...] for name in group.array_keys()}
    return awkward.from_buffers(awkward.forms.from_dict(spec["form"]), spec["length"], buffers)


def test_awkward_round_trip_native_and_zarr(live_catalog, storage):  # noqa: F811
    server_context, _ = live_catalog()
    with server_context as server:
        client = from_uri(server.url, api_key="secret")
        written = client.write_awkward(RECORDS, key="records", metadata={"color": "red"})
        for node in (written, client["records"]):
            assert awkward.almost_equal(node.read(), RECORDS)
            assert awkward.almost_equal(node[0, "y"], RECORDS[0, "y"])
            assert awkward.almost_equal(node[2, "y", 1:], RECORDS[2, "y", 1:])
        # Stored as upstream stores it: one file per buffer, named as the buffer.
        (directory,) = [p for p in storage.iterdir() if p.is_dir()]
        assert {p.name for p in directory.iterdir()} == {
            "node0-offsets", "node2-data", "node3-offsets", "node4-data",
        }  # fmt: skip
        for zarr_format in (2, 3):
            group = _zarr_root(server, zarr_format)["records"]
            assert awkward.almost_equal(_rebuilt_from_zarr(group), RECORDS)
            assert group.attrs["color"] == "red"


@pytest.fixture(params=["duckdb", "postgresql"])
def ragged_storage(request, tmp_path) -> str:
    """A storage database that can hold ragged arrays (list columns)."""
    if request.param == "duckdb":
        return f"duckdb:///{tmp_path / 'ragged.duckdb'}"
    return request.getfixturevalue("postgres_database")


@pytest.fixture
def ragged_live(tmp_path, storage, ragged_storage):  # noqa: F811
    """Start a server on a catalog (SQLite file) with directory and ragged-capable storage."""

    def start():
        tree = catalog_from_uri(
            f"sqlite:///{tmp_path / 'catalog.db'}",
            writable_storage=[storage, ragged_storage],
            init_if_not_exists=True,
        )
        return serve(build_app(tree, authentication={"single_user_api_key": "secret"}))

    return start


def stored_chunks(storage_uri: str, source: dict) -> list[tuple[int, int]]:
    """``(chunk_index, length of the last buffer)`` of a ragged node's rows, read from the
    storage database itself."""
    from tiled.storage import get_storage

    parameters = source["parameters"]
    columns = list(RaggedStructure.from_json(source["structure"]).buffer_dtypes())
    query = (
        f'SELECT chunk_index, "{columns[-1]}" FROM "{parameters["table_name"]}" '
        f"WHERE _dataset_id = {parameters['dataset_id']} ORDER BY chunk_index"
    )
    database = get_storage(source["assets"][0]["data_uri"])
    with contextlib.closing(database.connect()) as connection, connection.cursor() as cursor:
        cursor.execute(query)
        return [(index, len(values)) for index, values in cursor.fetchall()]


def test_ragged_round_trip_chunks_append_and_zarr(ragged_live, ragged_storage):
    rows = ragged.array([numpy.arange(n, dtype="float32") for n in (3, 0, 7, 1, 5, 2)])
    with ragged_live() as server:
        client = from_uri(server.url, api_key="secret")
        node = client.write_ragged(rows, key="r", max_partition_bytes=100)
        assert len(node.chunks[0]) > 1  # written chunk by chunk
        # Stored as upstream stores it: one SQL row per chunk, buffers as list columns.
        (source,) = node.data_sources()
        source = source.to_json() if hasattr(source, "to_json") else source
        assert source["mimetype"] == "application/x-ragged+sql"
        sizes = [int(n) for n in node.chunks[0]]
        data_lengths = [sum((3, 0, 7, 1, 5, 2)[sum(sizes[:i]) : sum(sizes[: i + 1])])
                        for i in range(len(sizes))]  # fmt: skip
        assert stored_chunks(ragged_storage, source) == list(enumerate(data_lengths))
        fresh = client["r"]
        assert awkward.array_equal(fresh.read()._impl, rows._impl)
        assert awkward.array_equal(fresh[2:5, 1:]._impl, rows[2:5, 1:]._impl)
        assert float(fresh[2, 3]) == 3.0
        node.patch(rows[:2], offset=6, extend=True)
        expected = ragged.concat([rows, rows[:2]], axis=0)
        again = client["r"]
        assert again.shape == (8, None) and again.chunks[0][-1] == 2
        assert awkward.array_equal(again.read()._impl, expected._impl)
        for zarr_format in (2, 3):
            group = _zarr_root(server, zarr_format)["r"]
            assert awkward.array_equal(_rebuilt_from_zarr(group), expected._impl)
            assert group.attrs["ragged"]["shape"] == [8, None]
        # Deleting the node deletes its rows (the shared table stays).
        client.delete_contents("r", external_only=False)
        assert stored_chunks(ragged_storage, source) == []


@pytest.mark.parametrize("sql", [None, "sqlite"])
def test_ragged_without_list_capable_storage_is_a_clear_4xx(tmp_path, storage, sql):  # noqa: F811
    """As upstream, ragged arrays are only stored in SQL; SQLite cannot hold list columns."""
    writable = [storage] + ([f"sqlite:///{tmp_path / 'tables.db'}"] if sql else [])
    tree = catalog_from_uri(
        f"sqlite:///{tmp_path / 'c.db'}", writable_storage=writable, init_if_not_exists=True
    )
    structure = RaggedStructure.from_array(ROWS).to_json()
    with serve(build_app(tree, authentication={"single_user_api_key": "secret"})) as server:
        with httpx.Client(base_url=server.url, headers=HEADERS) as http:
            answer = _post(http, "r", "ragged", structure)
            assert answer.is_client_error, answer.text
            assert "DuckDB or PostgreSQL" in answer.json()["detail"]
            assert http.get("/api/v1/metadata/r").status_code == 404


def test_readers_during_appends_see_whole_appends(ragged_live):
    first = ragged.array([[0.0, 0.5], [1.0]])
    with ragged_live() as server:
        client = from_uri(server.url, api_key="secret")
        node = client.write_ragged(first, key="r")
        done = threading.Event()
        seen, errors = [], []

        def read() -> None:
            reader = from_uri(server.url, api_key="secret")
            while not done.is_set():
                try:
                    seen.append(reader["r"].read().tolist())
                except Exception as err:  # noqa: BLE001 - reported below
                    errors.append(err)

        thread = threading.Thread(target=read)
        thread.start()
        try:
            for i in range(2, 12):
                node.patch(ragged.array([[float(i)] * (i % 3)]), offset=i, extend=True)
        finally:
            done.set()
            thread.join()
        assert not errors
        expected = [[0.0, 0.5], [1.0]] + [[float(i)] * (i % 3) for i in range(2, 12)]
        assert seen and all(got == expected[: len(got)] and len(got) >= 2 for got in seen)
        assert client["r"].read().tolist() == expected


def _post(client: httpx.Client, key: str, family: str, structure) -> httpx.Response:
    body = {
        "id": key, "structure_family": family, "metadata": {}, "specs": [],
        "data_sources": [{"structure_family": family, "structure": structure,
                          "assets": [], "management": "writable"}],
    }  # fmt: skip
    return client.post("/api/v1/metadata/", json=body)


def _zip(members: dict[str, bytes]) -> bytes:
    file = io.BytesIO()
    with zipfile.ZipFile(file, "w") as archive:
        for name, value in members.items():
            archive.writestr(name, value)
    return file.getvalue()


def test_bad_writes_answer_4xx_and_change_nothing(ragged_live):
    form, length, buffers = awkward.to_buffers(RECORDS)
    structure = AwkwardStructure(length=length, form=form.to_dict()).to_json()
    ragged_structure = RaggedStructure.from_array(ROWS).to_json()
    with ragged_live() as server, httpx.Client(base_url=server.url, headers=HEADERS) as http:
        assert _post(http, "a", "awkward", structure).status_code == 200
        assert _post(http, "r", "ragged", ragged_structure).status_code == 200
        assert _post(
            http, "bad", "awkward", {"length": 1, "form": {"class": "Nope"}}
        ).is_client_error
        bad_ragged = {**ragged_structure, "chunks": [[1], None, None]}
        assert _post(http, "bad", "ragged", bad_ragged).is_client_error
        # Unwritten data: a 4xx, not a 500.
        assert http.get("/api/v1/awkward/full/a").is_client_error
        assert http.get("/api/v1/ragged/full/r").is_client_error
        good = {name: numpy.asarray(b).tobytes() for name, b in buffers.items()}
        refused = [
            http.put("/api/v1/awkward/full/a", content=b"not a zip",
                     headers={"Content-Type": "application/zip"}),
            http.put("/api/v1/awkward/full/a", content=_zip({"node0-offsets": b"\0" * 8}),
                     headers={"Content-Type": "application/zip"}),
            http.put("/api/v1/awkward/full/a",
                     content=_zip({**good, "node0-offsets": good["node0-offsets"][:-8]}),
                     headers={"Content-Type": "application/zip"}),
            http.put("/api/v1/awkward/full/a", content=_zip(good),
                     headers={"Content-Type": "text/plain"}),
            http.put("/api/v1/ragged/full/r", content=b"[[1, 2]]",
                     headers={"Content-Type": "application/json"}),
            http.put("/api/v1/ragged/block/r?block=3", content=b"[]",
                     headers={"Content-Type": "application/json"}),
            http.put("/api/v1/ragged/full/r", content=b"garbage",
                     headers={"Content-Type": "application/zip"}),
            http.patch("/api/v1/ragged/full/r?offset=0&extend=true", content=b"[]",
                       headers={"Content-Type": "application/json"}),
        ]  # fmt: skip
        for response in refused:
            assert response.is_client_error, (response.request.url, response.text)
            assert "detail" in response.json()
        assert http.get("/api/v1/awkward/full/a").is_client_error  # still unwritten
        body = json.dumps(ROWS).encode()
        put = http.put(
            "/api/v1/ragged/full/r", content=body, headers={"Content-Type": "application/json"}
        )
        assert put.status_code == 200, put.text
        assert http.get("/api/v1/ragged/full/r").json() == ROWS
        wrong_slice = http.get("/api/v1/ragged/full/r", params={"slice": ":,5"})
        assert wrong_slice.is_client_error and "Cannot apply" in wrong_slice.json()["detail"]


def test_demo_tree_serves_the_awkward_array(demo_server):
    client = from_uri(demo_server.url)
    node = client["nested"]["awkward_array"]
    expected = awkward.Array(
        [[{"x": 1.1, "y": [1]}, {"x": 2.2, "y": [1, 2]}], [], [{"x": 3.3, "y": [1, 2, 3]}]]
    )
    assert awkward.almost_equal(node.read(), expected)
    assert node.structure().length == 3
    group = zarr.open(HTTPFileSystem().get_mapper(f"{demo_server.url}/zarr/v3/"), mode="r")
    assert awkward.almost_equal(_rebuilt_from_zarr(group["nested/awkward_array"]), expected)


UPSTREAM_WRITES = r"""
import json, sys
import awkward, ragged
from tiled.client import from_uri

client = from_uri(sys.argv[1], api_key="secret")
records = awkward.Array([[{"x": 1.1, "y": [1]}, {"x": 2.2, "y": [1, 2]}], [],
                         [{"x": 3.3, "y": [1, 2, 3]}]])
client.write_awkward(records, key="records")
rows = ragged.array([[1.5, 2.5], [], [3.5, 4.5, 5.5]])
r = client.write_ragged(rows, key="rows")
r.patch(ragged.array([[6.5]]), offset=3, extend=True)
fresh = from_uri(sys.argv[1], api_key="secret")
print(json.dumps({
    "records": awkward.to_list(fresh["records"].read()),
    "y0": awkward.to_list(fresh["records"][0, "y"]),
    "rows": fresh["rows"].read().tolist(),
    "sliced": fresh["rows"][2, 1:].tolist(),
    "shape": list(fresh["rows"].shape),
}))
"""


@pytest.mark.slow
def test_upstream_client_writes_awkward_and_ragged(upstream_tiled, ragged_live):
    """Upstream 0.2.20's ``write_awkward`` (was a 500) and ``write_ragged`` (was a 422)."""
    from .isolated_python import run_isolated

    with ragged_live() as server:
        result = run_isolated(upstream_tiled, UPSTREAM_WRITES, server.url)
        assert result.returncode == 0, result.stderr
        got = json.loads(result.stdout)
        ours = from_uri(server.url, api_key="secret")
        assert awkward.almost_equal(ours["records"].read(), RECORDS)
        assert ours["rows"].read().tolist() == [[1.5, 2.5], [], [3.5, 4.5, 5.5], [6.5]]
    assert got["records"] == RECORDS.tolist()
    assert got["y0"] == [[1], [1, 2]]
    assert got["rows"] == [[1.5, 2.5], [], [3.5, 4.5, 5.5], [6.5]]
    assert got["sliced"] == [4.5, 5.5]
    assert got["shape"] == [4, None]


def test_in_memory_adapters_and_structures():
    from tiled.adapters.awkward import AwkwardAdapter
    from tiled.adapters.ragged import RaggedAdapter

    adapter = AwkwardAdapter.from_array(RECORDS)
    assert awkward.almost_equal(adapter.read(), RECORDS)
    assert set(adapter.read_buffers(["node0"])) == {"node0-offsets"}
    structure = adapter.structure()
    assert AwkwardStructure.from_json(structure.to_json()) == structure
    rows = RaggedAdapter.from_array(ROWS)
    assert rows.read().tolist() == ROWS
    assert rows.read((3, 0)).tolist() == [5.5, 6.6, 7.7, 8.8]
    assert RaggedStructure.from_json(rows.structure().to_json()) == rows.structure()
    assert rows.structure().shape == (4, None, None)
    assert make_ragged_array([[1, 2], [3, 4]], regularize=True).shape == (2, 2)


UPSTREAM_RAGGED = r"""
import json, sys
import ragged
from tiled.client import from_uri

client = from_uri(sys.argv[1], api_key="secret")
r = client.write_ragged(ragged.array([[1.5, 2.5], [], [3.5, 4.5, 5.5]]), key="rows")
r.patch(ragged.array([[6.5]]), offset=3, extend=True)
print(json.dumps(client["rows"].read().tolist()))
"""

READ_BACK = r"""
import json, sys
from tiled.client import from_uri

client = from_uri(sys.argv[1], api_key="secret")
print(json.dumps({key: client[key].read().tolist() for key in ("rows", "mine")}))
"""


@pytest.mark.slow
@pytest.mark.parametrize("ragged_storage", ["duckdb", "postgresql"], indirect=True)
def test_a_catalog_with_ragged_written_by_upstream_is_read_here_and_back(
    upstream_tiled,
    tmp_path,
    storage,  # noqa: F811
    ragged_storage,
):
    """Upstream's server stores a ragged array (and an append); this server reads it, appends
    to it and writes one of its own; upstream's server reads both."""

    from .isolated_python import run_isolated
    from .processes import server_process, without_pythonpath

    catalog = tmp_path / "catalog.db"
    upstream = [str(upstream_tiled.parent / "tiled")]
    serve_args = ["serve", "catalog", str(catalog), "--init", "-w", str(storage),
                  "-w", ragged_storage, "--api-key", "secret"]  # fmt: skip
    with server_process([*upstream, *serve_args], tmp_path, env=without_pythonpath()) as url:
        result = run_isolated(upstream_tiled, UPSTREAM_RAGGED, url)
        assert result.returncode == 0, result.stderr
    first = [[1.5, 2.5], [], [3.5, 4.5, 5.5], [6.5]]
    assert json.loads(result.stdout) == first
    tree = catalog_from_uri(f"sqlite:///{catalog}", writable_storage=[storage, ragged_storage])
    with serve(build_app(tree, authentication={"single_user_api_key": "secret"})) as server:
        client = from_uri(server.url, api_key="secret")
        node = client["rows"]
        assert node.read().tolist() == first
        assert node[2, 1:].tolist() == [4.5, 5.5]
        group = _zarr_root(server, 3)["rows"]
        assert awkward.to_list(_rebuilt_from_zarr(group)) == first
        node.patch(ragged.array([[7.5, 8.5]]), offset=4, extend=True)
        client.write_ragged(ragged.array([[9.0], [10.0, 11.0]]), key="mine")
    # The server's shutdown released its storage: DuckDB admits one process per database file,
    # and upstream's server opens it next.
    with server_process([*upstream, *serve_args[:3], *serve_args[4:]], tmp_path,
                        env=without_pythonpath()) as url:  # fmt: skip
        result = run_isolated(upstream_tiled, READ_BACK, url)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {
        "rows": [*first, [7.5, 8.5]],
        "mine": [[9.0], [10.0, 11.0]],
    }
