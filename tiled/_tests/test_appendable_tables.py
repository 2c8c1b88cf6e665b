"""Appendable tables (``create_appendable_table``, rows in SQL storage) through live servers:
appends read back natively and with zarr-python, on SQLite, PostgreSQL and DuckDB storage;
readers see whole appends only; bad input is refused with nothing changed; upstream 0.2.20's
client and server share the tables both ways."""

from __future__ import annotations

import json
import sqlite3
import threading

import httpx
import numpy
import pandas
import pyarrow
import pytest
import zarr
from fsspec.implementations.http import HTTPFileSystem

from tiled.catalog import from_uri
from tiled.client import from_uri as client_from_uri
from tiled.server.app import build_app

from .live_server import serve
from .test_catalog import postgres_database  # noqa: F401 (fixture)

HEADERS = {"Authorization": "Apikey secret"}
SCHEMA = pyarrow.schema(
    [("Count", pyarrow.int32()), ("x", pyarrow.float64()), ("label", pyarrow.string())]
)


def batch(i: int, rows: int = 3) -> pandas.DataFrame:
    start = i * rows
    return pandas.DataFrame(
        {
            "Count": numpy.arange(start, start + rows, dtype="int32"),
            "x": numpy.linspace(0, 1, rows) + i,
            "label": [f"row{n}" for n in range(start, start + rows)],
        }
    )


@pytest.fixture(params=["sqlite", "postgresql", "duckdb"])
def sql_storage(request, tmp_path) -> str:
    """A storage database URI of each dialect (DuckDB only where the duckdb package is)."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'tables.db'}"
    if request.param == "duckdb":
        pytest.importorskip("adbc_driver_duckdb", reason="DuckDB storage needs `duckdb`")
        return f"duckdb:///{tmp_path / 'tables.duckdb'}"
    # The session's PostgreSQL database (skipped, with the reason, where there is none).
    return request.getfixturevalue("postgres_database")


@pytest.fixture
def live(tmp_path, sql_storage):
    """Start a server on a catalog (SQLite file) with directory and SQL storage."""

    def start(catalog_uri=None):
        tree = from_uri(
            catalog_uri or f"sqlite:///{tmp_path / 'catalog.db'}",
            writable_storage=[tmp_path / "data", sql_storage],
            init_if_not_exists=True,
        )
        return serve(build_app(tree, authentication={"single_user_api_key": "secret"}))

    return start


def zarr_columns(url: str, path: str) -> dict[str, numpy.ndarray]:
    fs = HTTPFileSystem(client_kwargs={"headers": HEADERS})
    group = zarr.open_group(fs.get_mapper(f"{url}/zarr/v3/{path}"), mode="r")
    return {key: group[key][...] for key in group.array_keys()}


def test_append_many_batches_and_read_back(live, sql_storage):
    with live() as server:
        client = client_from_uri(server.url, api_key="secret")
        table = client.create_appendable_table(SCHEMA, npartitions=2, key="t", metadata={"a": 1})
        source = client["t"].data_sources()[0]
        assert source.mimetype == "application/x-tiled-sql-table"
        assert source.parameters["table_name"].startswith("table_")
        assert table.read().empty and list(table.read().columns) == ["Count", "x", "label"]
        written: dict[int, list[pandas.DataFrame]] = {0: [], 1: []}
        for i in range(100):
            frame = batch(i)
            table.append_partition(i % 2, frame)
            written[i % 2].append(frame)
        parts = {p: pandas.concat(frames, ignore_index=True) for p, frames in written.items()}
        expected = pandas.concat([parts[0], parts[1]], ignore_index=True)
        pandas.testing.assert_frame_equal(table.read(), expected, check_dtype=True)
        for p in (0, 1):
            pandas.testing.assert_frame_equal(table.read_partition(p), parts[p])
        pandas.testing.assert_frame_equal(table.read(["x"]), expected[["x"]])
        # Columns as arrays, natively and through zarr v3: as long as the table is now.
        numpy.testing.assert_array_equal(client["t"]["Count"].read(), expected["Count"])
        columns = zarr_columns(server.url, "t")
        assert sorted(columns) == ["Count", "label", "x"]
        numpy.testing.assert_array_equal(columns["x"], expected["x"])
        assert list(columns["label"]) == list(expected["label"])
        # A second table of the same schema shares the SQL table, not the rows.
        other = client.create_appendable_table(SCHEMA, key="u")
        assert (
            client["u"].data_sources()[0].parameters["table_name"]
            == source.parameters["table_name"]
        )
        other.append_partition(0, batch(1000))
        pandas.testing.assert_frame_equal(other.read(), batch(1000))
        assert len(table.read()) == 300
    with live() as server:  # a new server on the same catalog and storage
        client = client_from_uri(server.url, api_key="secret")
        pandas.testing.assert_frame_equal(client["t"].read(), expected)
        assert client["t"].metadata["a"] == 1
        # Deleting the node deletes its rows, and only its rows.
        client.delete_contents("t", external_only=False)
        assert "t" not in client
        pandas.testing.assert_frame_equal(client["u"].read(), batch(1000))


def test_catalog_and_storage_both_on_postgresql(tmp_path, postgres_database):  # noqa: F811
    tree = from_uri(
        postgres_database, writable_storage=[tmp_path / "data", postgres_database],
        init_if_not_exists=True,
    )  # fmt: skip
    with serve(build_app(tree, authentication={"single_user_api_key": "secret"})) as server:
        client = client_from_uri(server.url, api_key="secret")
        key = f"pg{tmp_path.name[-8:]}"
        table = client.create_appendable_table(SCHEMA, key=key)
        for i in range(5):
            table.append_partition(0, batch(i))
        expected = pandas.concat([batch(i) for i in range(5)], ignore_index=True)
        pandas.testing.assert_frame_equal(client[key].read(), expected)
        numpy.testing.assert_array_equal(zarr_columns(server.url, key)["Count"], expected["Count"])


def test_readers_see_only_whole_appends(live):
    """A reader polling /table/full while rows are appended sees a prefix of the final rows,
    ending at an append's boundary, every time."""
    rows = 7
    with live() as server:
        client = client_from_uri(server.url, api_key="secret")
        table = client.create_appendable_table(SCHEMA, key="live")
        seen: list[pandas.DataFrame] = []
        done = threading.Event()

        def poll():
            with httpx.Client(base_url=server.url, headers=HEADERS) as http:
                while not done.is_set():
                    response = http.get(
                        "/api/v1/table/full/live",
                        headers={"Accept": "application/vnd.apache.arrow.file"},
                    )
                    assert response.status_code == 200, response.text
                    reader = pyarrow.ipc.open_file(pyarrow.py_buffer(response.content))
                    seen.append(reader.read_pandas())

        reader = threading.Thread(target=poll)
        reader.start()
        try:
            for i in range(100):
                table.append_partition(0, batch(i, rows))
        finally:
            done.set()
            reader.join()
        final = table.read()
        assert len(final) == 100 * rows
        assert len(seen) > 1
        for snapshot in seen:
            assert len(snapshot) % rows == 0, len(snapshot)
            pandas.testing.assert_frame_equal(
                snapshot.reset_index(drop=True), final.iloc[: len(snapshot)].reset_index(drop=True)
            )


def test_zarr_readers_holding_old_metadata_still_read(live):
    """A zarr reader that opened a column before rows were appended reads the rows it knew
    of (chunks do not change shape as the table grows); a new open sees all rows."""
    with live() as server:
        client = client_from_uri(server.url, api_key="secret")
        table = client.create_appendable_table(SCHEMA, key="grow")
        table.append_partition(0, batch(0))
        fs = HTTPFileSystem(client_kwargs={"headers": HEADERS})
        for zarr_format in (2, 3):
            group = zarr.open_group(fs.get_mapper(f"{server.url}/zarr/v{zarr_format}/grow"))
            columns = {key: group[key] for key in group.array_keys()}
            known = {key: column.shape[0] for key, column in columns.items()}
            table.append_partition(0, batch(1 + zarr_format))
            final = table.read()
            for key, column in columns.items():
                expected = final[key].to_numpy()[: known[key]]
                numpy.testing.assert_array_equal(column[...], expected)
        assert {k: len(v) for k, v in zarr_columns(server.url, "grow").items()} == {
            k: len(final) for k in known
        }


def arrow_body(frame: pandas.DataFrame) -> bytes:
    table = pyarrow.Table.from_pandas(frame, preserve_index=False)
    sink = pyarrow.BufferOutputStream()
    with pyarrow.ipc.new_file(sink, table.schema) as writer:
        writer.write_table(table)
    return sink.getvalue().to_pybytes()


def test_bad_input_is_refused_and_changes_nothing(live):
    with live() as server, httpx.Client(base_url=server.url, headers=HEADERS) as http:
        client = client_from_uri(server.url, api_key="secret")
        table = client.create_appendable_table(SCHEMA, npartitions=2, key="t")
        table.append_partition(0, batch(0))
        before = table.read()

        def append(frame, partition=0):
            return http.patch(
                "/api/v1/table/partition/t", params={"partition": partition},
                content=arrow_body(frame), headers={"Content-Type": "application/vnd.apache.arrow.file"},
            )  # fmt: skip

        wrong_dtype = batch(1).assign(Count=["a", "b", "c"])
        fractional = batch(1).assign(Count=[0.5, 1.5, 2.5])
        refused = [
            append(batch(1).drop(columns="x")),  # a missing column
            append(batch(1).assign(extra=1)),  # a column too many
            append(wrong_dtype),  # text for integers
            append(fractional),  # floats that would be truncated
            append(batch(1), partition=2),  # no such partition
            append(batch(1), partition=-1),
        ]
        for response in refused:
            assert 400 <= response.status_code < 500, response.text
            assert response.json()["detail"], response.text
        pandas.testing.assert_frame_equal(table.read(), before)
        assert table.read_partition(1).empty
        # Bad table names (SQL injection, reserved words, malformed) create nothing.
        count = len(list(client))
        for name in ['x"; DROP TABLE t; --', "select", "Upper", "1abc", "a" * 64]:
            request = {
                "id": f"bad{abs(hash(name))}", "structure_family": "table", "metadata": {},
                "specs": [], "data_sources": [{
                    "structure_family": "table", "mimetype": "application/x-tiled-sql-table",
                    "structure": client["t"].structure().to_json(),
                    "parameters": {"table_name": name}, "assets": [], "management": "writable",
                }],
            }  # fmt: skip
            response = http.post("/api/v1/metadata/", json=request)
            assert 400 <= response.status_code < 500, (name, response.text)
            assert response.json()["detail"]
        assert len(list(client)) == count
        # A node that cannot be created (its key is taken) leaves no new table behind.
        taken = client.create_appendable_table
        with pytest.raises(Exception, match="already"):
            taken(pyarrow.schema([("other", pyarrow.int8())]), key="t", table_name="fresh_table")
        assert "fresh_table" not in _sql_tables(client, table)
        # A named table is used as named.
        named = client.create_appendable_table(SCHEMA, key="named", table_name="my_rows")
        named.append_partition(0, batch(3))
        assert named.data_sources()[0].parameters["table_name"] == "my_rows"
        assert "my_rows" in _sql_tables(client, table)


def _sql_tables(client, table) -> set[str]:
    """The tables of the storage database (SQLite and DuckDB files, PostgreSQL)."""
    uri = table.data_sources()[0].assets[0].data_uri
    from tiled.adapters.sql import get_storage

    storage = get_storage(uri)
    query = {
        "sqlite": "SELECT name FROM sqlite_master WHERE type = 'table'",
        "duckdb": "SELECT table_name FROM information_schema.tables",
        "postgresql": "SELECT tablename FROM pg_tables WHERE schemaname = 'public'",
    }[storage.dialect]
    with storage.transaction() as connection, connection.cursor() as cursor:
        cursor.execute(query)
        return {row[0] for row in cursor.fetchall()}


def test_no_sql_storage_is_a_clear_refusal(tmp_path):
    tree = from_uri(
        f"sqlite:///{tmp_path / 'c.db'}",
        writable_storage=tmp_path / "data",
        init_if_not_exists=True,
    )
    with serve(build_app(tree, authentication={"single_user_api_key": "secret"})) as server:
        client = client_from_uri(server.url, api_key="secret")
        with pytest.raises(Exception, match="SQL storage"):
            client.create_appendable_table(SCHEMA, key="t")
        assert "t" not in client


UPSTREAM_APPENDS = r"""
import json, sys
import pandas, pyarrow
from tiled.client import from_uri

client = from_uri(sys.argv[1], api_key="secret")
schema = pyarrow.schema([("Count", pyarrow.int32()), ("x", pyarrow.float64()),
                         ("label", pyarrow.string())])
table = client.create_appendable_table(schema, npartitions=2, key="from_upstream")
for i in range(10):
    frame = pandas.DataFrame({"Count": pandas.Series(range(3 * i, 3 * i + 3), dtype="int32"),
                              "x": [i + 0.0, i + 0.5, i + 1.0],
                              "label": [f"row{n}" for n in range(3 * i, 3 * i + 3)]})
    if sys.argv[2] == "arrow":  # (upstream's server refuses pandas' index in appends)
        frame = pyarrow.Table.from_pandas(frame, preserve_index=False)
    table.append_partition(i % 2, frame)
fresh = from_uri(sys.argv[1], api_key="secret")["from_upstream"]
print(json.dumps({"read": fresh.read().to_dict(orient="list"),
                  "partition1": fresh.read_partition(1)["Count"].tolist()}))
"""


def _upstream_frames() -> tuple[pandas.DataFrame, list[int]]:
    frames = {0: [], 1: []}
    for i in range(10):
        frames[i % 2].append(
            pandas.DataFrame({
                "Count": numpy.arange(3 * i, 3 * i + 3, dtype="int32"),
                "x": [i + 0.0, i + 0.5, i + 1.0],
                "label": [f"row{n}" for n in range(3 * i, 3 * i + 3)],
            })
        )  # fmt: skip
    expected = pandas.concat(frames[0] + frames[1], ignore_index=True)
    return expected, pandas.concat(frames[1])["Count"].tolist()


@pytest.mark.slow
def test_upstream_client_appends_here(upstream_tiled, live):
    from .isolated_python import run_isolated

    with live() as server:
        result = run_isolated(upstream_tiled, UPSTREAM_APPENDS, server.url, "pandas")
        assert result.returncode == 0, result.stderr
        got = json.loads(result.stdout)
        expected, partition1 = _upstream_frames()
        assert got["read"] == expected.to_dict(orient="list")
        assert got["partition1"] == partition1
        here = client_from_uri(server.url, api_key="secret")["from_upstream"]
        pandas.testing.assert_frame_equal(here.read(), expected)


@pytest.mark.slow
def test_a_catalog_written_by_upstream_is_read_here_and_back(upstream_tiled, tmp_path):
    """Upstream's server writes an appendable table (SQLite catalog, SQLite storage); this
    server reads it and appends to it; upstream's reads the result."""
    from .isolated_python import run_isolated
    from .processes import server_process, without_pythonpath

    catalog = tmp_path / "catalog.db"
    data, tables = tmp_path / "data", tmp_path / "tables.db"
    data.mkdir()
    storage_uri = f"sqlite:///{tables}"
    upstream = [str(upstream_tiled.parent / "tiled")]
    serve_args = ["serve", "catalog", str(catalog), "--init", "-w", str(data), "-w", storage_uri,
                  "--api-key", "secret"]  # fmt: skip
    with server_process([*upstream, *serve_args], tmp_path, env=without_pythonpath()) as url:
        result = run_isolated(upstream_tiled, UPSTREAM_APPENDS, url, "arrow")
        assert result.returncode == 0, result.stderr
    expected, _ = _upstream_frames()
    # Upstream's layout: one table per schema, rows numbered by dataset and partition.
    with sqlite3.connect(tables) as db:
        names = {row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        assert "_dataset_id_counter" in names
        (table_name,) = names - {"_dataset_id_counter"}
        columns = [row[1] for row in db.execute(f'PRAGMA table_info("{table_name}")')]
        assert columns == ["_dataset_id", "_partition_id", "count", "x", "label"]
    tree = from_uri(f"sqlite:///{catalog}", writable_storage=[data, storage_uri])
    with serve(build_app(tree, authentication={"single_user_api_key": "secret"})) as server:
        client = client_from_uri(server.url, api_key="secret")
        table = client["from_upstream"]
        pandas.testing.assert_frame_equal(table.read(), expected)
        numpy.testing.assert_array_equal(
            zarr_columns(server.url, "from_upstream")["Count"], expected["Count"]
        )
        table.append_partition(0, batch(50))
        mine = client.create_appendable_table(SCHEMA, key="from_here")
        mine.append_partition(0, batch(60))
    read_back = r"""
import json, sys
from tiled.client import from_uri
client = from_uri(sys.argv[1], api_key="secret")
print(json.dumps({key: client[key].read()["Count"].tolist() for key in ("from_upstream", "from_here")}))
"""
    with server_process([*upstream, *serve_args[:3], *serve_args[4:]], tmp_path,
                        env=without_pythonpath()) as url:  # fmt: skip
        result = run_isolated(upstream_tiled, read_back, url)
    assert result.returncode == 0, result.stderr
    got = json.loads(result.stdout)
    assert sorted(got["from_upstream"]) == sorted(
        expected["Count"].tolist() + batch(50)["Count"].tolist()
    )
    assert got["from_here"] == batch(60)["Count"].tolist()
