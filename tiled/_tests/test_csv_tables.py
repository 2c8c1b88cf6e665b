"""Writable tables stored as CSV (data source mimetype ``text/csv``, upstream 0.2.20's), through
live servers on SQLite and PostgreSQL catalogs with a storage directory.

One file per partition, ``partition-{i}.csv`` with a header row, in the node's directory;
written whole, by partition, or appended to (rows without a header, as upstream's pandas
``to_csv(mode="a", header=False)``); read back with the table's dtypes and row order, natively,
through the zarr view and as exports. Columns CSV cannot hold are refused when the table is
made, data not fitting the table change nothing, deleting the node deletes its files. Files
written as upstream writes them are read here, and (``slow``) upstream's own server and this
one read and extend each other's CSV tables in one catalog and storage directory.
"""

from __future__ import annotations

import io
import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy
import pandas
import pyarrow
import pytest
import zarr
from fsspec.implementations.http import HTTPFileSystem

from tiled.adapters.files import path_from_uri
from tiled.catalog import from_uri
from tiled.client import from_uri as client_from_uri
from tiled.client.utils import ClientError
from tiled.server.app import build_app
from tiled.structures.data_source import DataSource
from tiled.structures.table import TableStructure

from .live_server import serve
from .test_appendable_tables import arrow_body as body
from .test_catalog import database_uri, postgres_database, storage  # noqa: F401 (fixtures)

CSV = "text/csv"
HEADERS = {"Authorization": "Apikey secret"}
ARROW = "application/vnd.apache.arrow.file"
COLUMNS = ["i", "f", "b", "s", "t"]
# Text CSV must quote or could misread: separators, quotes, line breaks, numbers and words
# pandas or Arrow would take for something else, leading zeros, surrounding blanks.
TEXTS = ["plain", "a,b", 'say "hi"', "two\nlines", "007", "1e5", "True", "NaN", " pad ", ""]


def frame(start: int, rows: int) -> pandas.DataFrame:
    """``rows`` rows numbered from ``start``: int64, float64 (with NaN and infinities),
    bool, text and datetime64[ns] columns."""
    n = numpy.arange(start, start + rows)
    floats = n / 3 + 0.1
    floats[n % 7 == 3] = numpy.nan
    floats[n % 11 == 5] = numpy.inf
    floats[n % 13 == 6] = -numpy.inf
    times = pandas.Timestamp("2020-01-01") + pandas.to_timedelta(n * 3_600_000_000_001, "ns")
    return pandas.DataFrame(
        {
            "i": (n * 1_000_003 + 2**40).astype("int64"),
            "f": floats.astype("float64"),
            "b": n % 3 == 0,
            # The texts alone in rows 0-9 (and 20-29...), numbered in the others.
            "s": [TEXTS[k % 10] if k % 20 < 10 else f"{TEXTS[k % 10]} #{k}" for k in n],
            "t": pandas.DatetimeIndex(times).astype("datetime64[ns]"),
        }
    )


def expected_dtypes(df: pandas.DataFrame) -> dict:
    return {"i": "int64", "f": "float64", "b": "bool", "t": "datetime64[ns]"} | {"s": df["s"].dtype}


def csv_source(df: pandas.DataFrame, npartitions: int = 1) -> DataSource:
    structure = TableStructure.from_pandas(df, npartitions=npartitions)
    return DataSource(structure_family="table", structure=structure, mimetype=CSV)


def rows(*frames: pandas.DataFrame) -> pandas.DataFrame:
    return pandas.concat(frames, ignore_index=True)


def stored_files(storage: Path) -> dict[Path, bytes]:  # noqa: F811
    return {p: p.read_bytes() for p in sorted(storage.rglob("*")) if p.is_file()}


def partition_paths(table) -> list[Path]:
    (source,) = table.data_sources()
    assets = sorted(source.assets, key=lambda asset: asset.num)
    return [path_from_uri(asset.data_uri) for asset in assets]


def read_as_upstream(path: Path) -> pandas.DataFrame:
    """A partition file read with pandas and no types given, as upstream's server reads it
    (but keeping texts such as ``NaN`` as text)."""
    return pandas.read_csv(path, keep_default_na=False, na_values=[""])


@pytest.fixture
def live(database_uri, storage):  # noqa: F811
    """``live()``: a live server (API key ``secret``) on the catalog and its storage directory;
    call it again for a new server on the same catalog."""

    def start():
        tree = from_uri(database_uri, writable_storage=storage, init_if_not_exists=True)
        return serve(build_app(tree, authentication={"single_user_api_key": "secret"}))

    return start


def test_a_csv_table_is_one_csv_file_per_partition(live, storage):  # noqa: F811
    df = frame(0, 10)
    with live() as server:
        client = client_from_uri(server.url, api_key="secret")
        table = client.new("table", [csv_source(df, npartitions=3)], key="t")
        table.write(df)
        (source,) = client["t"].data_sources()
        assert source.mimetype == CSV
        assert source.management == "writable"
        assert sorted(a.num for a in source.assets) == [0, 1, 2]
        assert {a.parameter for a in source.assets} == {"data_uris"}
        assert not any(a.is_directory for a in source.assets)
        paths = partition_paths(client["t"])
        assert [p.name for p in paths] == ["partition-0.csv", "partition-1.csv", "partition-2.csv"]
        (directory,) = {p.parent for p in paths}
        assert storage.resolve() in directory.resolve().parents
        assert sorted(directory.iterdir()) == sorted(paths)
    # Each file has a header row, then its rows; together, in order, all the rows written.
    parts = [read_as_upstream(path) for path in paths]
    for part in parts:
        assert list(part.columns) == COLUMNS
        assert len(part) > 0
    together = rows(*parts)
    assert together["i"].tolist() == df["i"].tolist()
    assert together["s"].fillna("").tolist() == df["s"].tolist()
    assert together["b"].tolist() == df["b"].tolist()


def test_reading_keeps_dtypes_values_and_row_order(live):
    df = frame(0, 25)
    with live() as server:
        client = client_from_uri(server.url, api_key="secret")
        client.new("table", [csv_source(df, npartitions=3)], key="t").write(df)
        table = client["t"]
        read = table.read()
        assert read.dtypes.to_dict() == expected_dtypes(df)
        pandas.testing.assert_frame_equal(read, df, check_exact=True)
        parts = [table.read_partition(p) for p in range(3)]
        pandas.testing.assert_frame_equal(rows(*parts), df, check_exact=True)
        pandas.testing.assert_frame_equal(table.read(["s", "i"]), df[["s", "i"]])
        numpy.testing.assert_array_equal(table["t"].read(), df["t"].to_numpy())
    with live() as server:  # a new server on the same catalog and files
        client = client_from_uri(server.url, api_key="secret")
        pandas.testing.assert_frame_equal(client["t"].read(), df, check_exact=True)


def test_categories_are_stored_as_their_values(live):
    """A pandas categorical column is written as its values (as upstream's pandas writes it)
    and reads back as categories."""
    df = pandas.DataFrame({"c": pandas.Categorical(["a", "b", "a"]), "v": [1, 2, 3]})
    with live() as server:
        client = client_from_uri(server.url, api_key="secret")
        table = client.new("table", [csv_source(df)], key="t")
        table.write(df)
        table.append_partition(0, df)
        assert read_as_upstream(partition_paths(table)[0])["c"].tolist() == ["a", "b", "a"] * 2
        read = table.read()
        assert str(read["c"].dtype) == "category"
        assert read["c"].tolist() == ["a", "b", "a"] * 2
        assert str(table.read(["c"])["c"].dtype) == "category"


def test_a_one_column_table_keeps_its_missing_values(live):
    """One column: a missing value is an empty line of the file, and still a row."""
    df = pandas.DataFrame({"x": [numpy.nan, 1.0, numpy.nan]})
    with live() as server:
        client = client_from_uri(server.url, api_key="secret")
        table = client.new("table", [csv_source(df)], key="t")
        table.write(df)
        table.append_partition(0, df)
        assert table.read()["x"].isna().tolist() == [True, False, True] * 2


def test_rows_are_added_in_the_order_of_the_file_s_header(live, storage):  # noqa: F811
    """A file that upstream wrote follows the order of its client's frame, and lacks the
    index columns (index=False): rows added here follow it, and the table reads whole."""
    df = pandas.DataFrame({"x": [1, 2], "y": [10, 20]}, index=pandas.Index([5, 6], name="idx"))
    with live() as server:
        client = client_from_uri(server.url, api_key="secret")
        table = client.new("table", [csv_source(df)], key="t")
        (path,) = partition_paths(table)
        path.write_text(df[["y", "x"]].to_csv(index=False))  # as upstream writes it
        table.append_partition(0, df)
        assert read_as_upstream(path).columns.tolist() == ["y", "x"]
        read = client["t"].read()
        assert read["x"].tolist() == [1, 2, 1, 2] and read["y"].tolist() == [10, 20, 10, 20]
        # A file of other columns takes no rows (400), and stays as it was.
        path.write_text("a,b\n1,2\n")
        with pytest.raises(ClientError, match="400"):
            table.append_partition(0, df)
        assert path.read_text() == "a,b\n1,2\n"


def test_a_read_of_some_columns_keeps_the_types_and_index(live):
    df = pandas.DataFrame(
        {"i": [1, 2], "b": [True, False]}, index=pandas.Index([10, 20], name="idx")
    )
    with live() as server:
        client = client_from_uri(server.url, api_key="secret")
        table = client.new("table", [csv_source(df)], key="t")
        table.write(df)
        pandas.testing.assert_frame_equal(table.read(["i"]), df[["i"]])


def test_text_that_looks_like_other_types_stays_text(live):
    """Columns of text whose every value reads as a number, a boolean, a date or nothing are
    read as the table's text, not as what the values look like."""
    df = pandas.DataFrame(
        {
            "digits": ["007", "0.50", "1e5", "-0"],
            "words": ["True", "false", "TRUE", "False"],
            "blank": ["", "", "", ""],
            "when": ["2020-01-01", "2020-01-02 03:04:05", "2020-01-03", "2020-01-04"],
            "whole": [1.0, 2.0, -3.0, 4.0],  # floats CSV may write as integers
        }
    )
    with live() as server:
        client = client_from_uri(server.url, api_key="secret")
        table = client.new("table", [csv_source(df, npartitions=2)], key="t")
        table.write(df)
        pandas.testing.assert_frame_equal(table.read(), df, check_exact=True)
        pandas.testing.assert_frame_equal(table.read(["when", "digits"]), df[["when", "digits"]])
        table.append_partition(1, df)
        pandas.testing.assert_frame_equal(table.read_partition(1), rows(df.iloc[2:], df))


def test_write_partition_replaces_and_append_partition_adds_rows(live):
    a, b, c, d, e = (frame(100 * k, 4 + k) for k in range(5))
    with live() as server:
        client = client_from_uri(server.url, api_key="secret")
        table = client.new("table", [csv_source(a, npartitions=3)], key="t")
        table.write_partition(0, a)
        table.write_partition(1, b)
        table.append_partition(0, c)
        # Partition 2 was never written: empty, with the table's columns and dtypes.
        empty = table.read_partition(2)
        assert empty.empty and list(empty.columns) == COLUMNS
        assert empty.dtypes.to_dict() == expected_dtypes(a)
        pandas.testing.assert_frame_equal(table.read(), rows(a, c, b))
        pandas.testing.assert_frame_equal(table.read_partition(0), rows(a, c))
        table.write_partition(0, d)  # replaces the appended rows too
        table.append_partition(2, e)  # the first rows of a partition never written
        table.append_partition(2, a)
        pandas.testing.assert_frame_equal(table.read(), rows(d, b, e, a), check_exact=True)
        # The files read as upstream reads them: one header row each, the appended rows after.
        first, _, last = partition_paths(table)
        assert read_as_upstream(first)["i"].tolist() == d["i"].tolist()
        appended = read_as_upstream(last)
        assert appended["i"].dtype == "int64"  # no second header among the rows
        assert appended["i"].tolist() == rows(e, a)["i"].tolist()
    with live() as server:
        client = client_from_uri(server.url, api_key="secret")
        pandas.testing.assert_frame_equal(client["t"].read(), rows(d, b, e, a), check_exact=True)


def test_whole_table_writes_spread_rows_over_the_partitions(live):
    df = frame(0, 2)
    with live() as server:
        client = client_from_uri(server.url, api_key="secret")
        table = client.new("table", [csv_source(df, npartitions=4)], key="t")
        table.write(df)  # fewer rows than partitions: some stay empty
        pandas.testing.assert_frame_equal(table.read(), df, check_exact=True)
        lengths = [len(table.read_partition(p)) for p in range(4)]
        assert sum(lengths) == 2
        # Rows appended to a partition written empty (a header, no rows) follow the others.
        empty = lengths.index(0)
        table.append_partition(empty, frame(30, 2))
        assert table.read_partition(empty)["i"].tolist() == frame(30, 2)["i"].tolist()
        assert read_as_upstream(partition_paths(table)[empty])["i"].dtype == "int64"
        bigger = frame(50, 9)
        table.write(bigger)  # a whole write replaces every partition
        pandas.testing.assert_frame_equal(table.read(), bigger, check_exact=True)
        lengths = [len(table.read_partition(p)) for p in range(4)]
        assert sum(lengths) == 9 and all(n > 0 for n in lengths)


def test_concurrent_appends_keep_every_row_once(live):
    """Appends from many requests at once to two partitions: each batch is read back once,
    whole, in the partition it was sent to, and each file keeps its single header."""
    batches = {k: frame(10 * k, 3) for k in range(24)}
    with live() as server:
        client = client_from_uri(server.url, api_key="secret")
        table = client.new("table", [csv_source(batches[0], npartitions=2)], key="t")
        with ThreadPoolExecutor(8) as pool:
            list(pool.map(lambda k: table.append_partition(k % 2, batches[k]), batches))
        for partition in (0, 1):
            read = table.read_partition(partition)
            starts = sorted(read["i"].iloc[::3].tolist())
            assert starts == [batches[k]["i"].iloc[0] for k in batches if k % 2 == partition]
            by_start = {batch["i"].iloc[0]: batch for batch in batches.values()}
            for offset in range(0, len(read), 3):
                chunk = read.iloc[offset : offset + 3].reset_index(drop=True)
                expected = by_start[chunk["i"].iloc[0]]
                pandas.testing.assert_frame_equal(chunk, expected, check_exact=True)
        for path in partition_paths(table):
            assert read_as_upstream(path)["i"].dtype == "int64"


def test_an_unwritten_table_reads_empty_with_its_columns(live):
    df = frame(0, 3)
    with live() as server, httpx.Client(base_url=server.url, headers=HEADERS) as http:
        client = client_from_uri(server.url, api_key="secret")
        client.new("table", [csv_source(df, npartitions=2)], key="t")
        read = client["t"].read()
        assert read.empty and list(read.columns) == COLUMNS
        assert read.dtypes.to_dict() == expected_dtypes(df)
        assert client["t"].read_partition(1).empty
        exported = http.get("/api/v1/table/full/t", params={"format": "csv"})
        assert exported.status_code == 200, exported.text
        assert list(pandas.read_csv(io.StringIO(exported.text)).columns) == COLUMNS
        fs = HTTPFileSystem(client_kwargs={"headers": HEADERS})
        group = zarr.open_group(fs.get_mapper(f"{server.url}/zarr/v3/t"), mode="r")
        assert group["i"].shape == (0,)


def test_the_zarr_view_reads_each_column(live, zarr_format):
    a, b = frame(0, 6), frame(6, 5)
    with live() as server:
        client = client_from_uri(server.url, api_key="secret")
        table = client.new("table", [csv_source(a, npartitions=3)], key="t")
        table.write_partition(0, a)
        table.write_partition(2, b)  # partition 1 is never written
        table.append_partition(0, a)
        expected = rows(a, a, b)
        fs = HTTPFileSystem(client_kwargs={"headers": HEADERS})
        store = fs.get_mapper(f"{server.url}/zarr/v{zarr_format}/t")
        group = zarr.open_group(store, mode="r", zarr_format=zarr_format)
        assert sorted(group.array_keys()) == sorted(COLUMNS)
        for column in ("i", "f", "b", "t"):
            numpy.testing.assert_array_equal(group[column][...], expected[column].to_numpy())
        assert group["f"].dtype == numpy.float64 and group["i"].dtype == numpy.int64
        assert [str(v) for v in group["s"][...]] == expected["s"].tolist()


def test_exports_of_a_csv_table(live):
    a, b = frame(0, 6), frame(6, 5)
    expected = rows(a, b)
    with live() as server, httpx.Client(base_url=server.url, headers=HEADERS) as http:
        client = client_from_uri(server.url, api_key="secret")
        table = client.new("table", [csv_source(a, npartitions=2)], key="t")
        table.write_partition(0, a)
        table.write_partition(1, b)
        full = http.get("/api/v1/table/full/t", params={"format": "csv"})
        assert full.status_code == 200, full.text
        assert full.headers["content-type"].startswith(CSV)
        exported = pandas.read_csv(io.StringIO(full.text), keep_default_na=False, na_values=[""])
        assert exported["i"].tolist() == expected["i"].tolist()
        assert exported["s"].fillna("").tolist() == expected["s"].tolist()
        one = http.get("/api/v1/table/partition/t", params={"partition": 1, "format": "csv"})
        assert one.status_code == 200, one.text
        assert pandas.read_csv(io.StringIO(one.text))["i"].tolist() == b["i"].tolist()
        arrow = http.get("/api/v1/table/full/t", headers={"Accept": ARROW})
        assert arrow.status_code == 200, arrow.text
        decoded = pyarrow.ipc.open_file(pyarrow.py_buffer(arrow.content)).read_pandas()
        pandas.testing.assert_frame_equal(decoded.reset_index(drop=True), expected)
        parquet = http.get("/api/v1/table/full/t", params={"format": "parquet", "column": "f"})
        assert parquet.status_code == 200, parquet.text
        numpy.testing.assert_array_equal(
            pandas.read_parquet(io.BytesIO(parquet.content))["f"].to_numpy(), expected["f"]
        )


def test_values_spanning_lines_read_back_from_a_large_partition(live):
    """Over a megabyte of rows whose text holds line breaks (quoted, as CSV allows): the
    partition reads back whole (a CSV reader splitting the file in blocks at line breaks
    cuts such rows apart)."""
    count = 40_000
    df = pandas.DataFrame(
        {
            "i": numpy.arange(count, dtype="int64"),
            "s": [f'line {k}\nnext, "q"' for k in range(count)],
        }
    )
    with live() as server:
        client = client_from_uri(server.url, api_key="secret")
        table = client.new("table", [csv_source(df)], key="t")
        table.write(df)
        assert partition_paths(table)[0].stat().st_size > 1 << 20
        pandas.testing.assert_frame_equal(table.read(), df)


def _refusals_leave_nothing(http, storage, request) -> None:  # noqa: F811
    before = stored_files(storage)
    refused = http.post("/api/v1/metadata/", json=request)
    assert 400 <= refused.status_code < 500, refused.text
    assert isinstance(refused.json()["detail"], str) and refused.json()["detail"]
    assert http.get(f"/api/v1/metadata/{request['id']}").status_code == 404
    assert stored_files(storage) == before
    assert not [p for p in storage.rglob("*") if p.is_dir() and not any(p.iterdir())]


UNSTORABLE = {
    "list": pyarrow.list_(pyarrow.int64()),
    "struct": pyarrow.struct([("x", pyarrow.int64()), ("y", pyarrow.string())]),
    "map": pyarrow.map_(pyarrow.string(), pyarrow.int64()),
}


@pytest.mark.parametrize("kind", sorted(UNSTORABLE))
def test_columns_csv_cannot_hold_are_refused_when_the_table_is_made(live, storage, kind):  # noqa: F811
    schema = pyarrow.schema([("ok", pyarrow.int64()), ("bad", UNSTORABLE[kind])])
    structure = TableStructure.from_schema(schema, npartitions=2)
    request = {
        "id": "bad", "structure_family": "table", "metadata": {}, "specs": [],
        "data_sources": [{
            "structure_family": "table", "structure": structure.to_json(), "mimetype": CSV,
            "parameters": {}, "assets": [], "management": "writable",
        }],
    }  # fmt: skip
    with live() as server, httpx.Client(base_url=server.url, headers=HEADERS) as http:
        client = client_from_uri(server.url, api_key="secret")
        client.new("table", [csv_source(frame(0, 2))], key="good").write(frame(0, 2))
        files = stored_files(storage)
        _refusals_leave_nothing(http, storage, request)
        source = DataSource(structure_family="table", structure=structure, mimetype=CSV)
        with pytest.raises(httpx.HTTPStatusError) as raised:
            client.new("table", [source], key="bad")
        assert 400 <= raised.value.response.status_code < 500
        assert "bad" not in client
        assert stored_files(storage) == files
        # The same columns are stored (as Parquet) when CSV is not asked for.
        stored = client.new("table", [DataSource(structure_family="table", structure=structure)])
        assert stored.data_sources()[0].mimetype != CSV


def test_data_not_fitting_the_table_are_refused_and_change_nothing(live, storage):  # noqa: F811
    df = frame(0, 6)
    with live() as server, httpx.Client(base_url=server.url, headers=HEADERS) as http:
        client = client_from_uri(server.url, api_key="secret")
        table = client.new("table", [csv_source(df, npartitions=2)], key="t")
        table.write(df)
        before, files = table.read(), stored_files(storage)

        wrong = {
            "missing": frame(0, 2).drop(columns="f"),
            "extra": frame(0, 2).assign(extra=1),
            "renamed": frame(0, 2).rename(columns={"i": "j"}),
            "text for integers": frame(0, 2).assign(i=["x", "y"]),
        }
        requests = [
            (method, route, partition, name)
            for name in wrong
            for method, route, partition in (
                ("PUT", "full", None), ("PUT", "partition", 0), ("PATCH", "partition", 1),
            )
        ]  # fmt: skip
        for method, route, partition, name in requests:
            params = {} if partition is None else {"partition": partition}
            answer = http.request(
                method, f"/api/v1/table/{route}/t", params=params, content=body(wrong[name]),
                headers={"Content-Type": ARROW},
            )  # fmt: skip
            status = answer.status_code
            assert status == 400, (method, route, name, answer.text)
            assert answer.json()["detail"], answer.text
        for partition in (2, -1):  # no such partition
            for method in ("PUT", "PATCH"):
                answer = http.request(
                    method, "/api/v1/table/partition/t", params={"partition": partition},
                    content=body(frame(0, 2)), headers={"Content-Type": ARROW},
                )  # fmt: skip
                assert 400 <= answer.status_code < 500, (method, partition, answer.text)
        assert stored_files(storage) == files
        pandas.testing.assert_frame_equal(table.read(), before, check_exact=True)
        # Columns in another order are the table's columns: placed by name.
        reordered = frame(40, 3)[["t", "s", "b", "f", "i"]]
        table.append_partition(1, reordered)
        pandas.testing.assert_frame_equal(
            table.read(), rows(before, frame(40, 3)), check_exact=True
        )


def test_deleting_the_node_removes_its_directory(live, storage):  # noqa: F811
    df = frame(0, 4)
    with live() as server:
        client = client_from_uri(server.url, api_key="secret")
        for key in ("gone", "kept"):
            client.new("table", [csv_source(df, npartitions=2)], key=key).write(df)
        (gone,) = {p.parent for p in partition_paths(client["gone"])}
        (kept,) = {p.parent for p in partition_paths(client["kept"])}
        assert gone != kept and gone.is_dir()
        client.delete_contents("gone", external_only=False)
        assert "gone" not in client
        assert not gone.exists()
        pandas.testing.assert_frame_equal(client["kept"].read(), df)
        assert kept.is_dir()
        # The key may be used again, for a table of its own.
        client.new("table", [csv_source(df)], key="gone").write(frame(10, 2))
        pandas.testing.assert_frame_equal(client["gone"].read(), frame(10, 2))


def test_files_written_as_upstream_writes_them_are_read_here(live, storage):  # noqa: F811
    """Partitions written with pandas ``to_csv(index=False)`` and appended to with
    ``mode="a", header=False``, as upstream's adapter does, read here with the table's dtypes;
    rows this server appends to such a file read back with pandas."""
    a, b, c = frame(0, 5), frame(5, 4), frame(9, 3)
    # pandas writes midnight-only datetimes as dates; and whole seconds as seconds.
    b["t"] = pandas.date_range("2021-03-01", periods=len(b), freq="D").astype("datetime64[ns]")
    c["t"] = pandas.date_range("2021-03-01 01:02:03", periods=3, freq="s").astype("datetime64[ns]")
    with live() as server:
        client = client_from_uri(server.url, api_key="secret")
        table = client.new("table", [csv_source(a, npartitions=3)], key="t")
        paths = partition_paths(table)
    paths[0].parent.mkdir(parents=True, exist_ok=True)
    a.to_csv(paths[0], index=False)
    b.to_csv(paths[1], index=False)
    c.to_csv(paths[1], index=False, mode="a", header=False)
    written = paths[1].read_text()
    assert ",2021-03-02\n" in written and ",2021-03-01 01:02:03\n" in written
    with live() as server:
        client = client_from_uri(server.url, api_key="secret")
        table = client["t"]
        read = table.read()
        assert read.dtypes.to_dict() == expected_dtypes(a)
        pandas.testing.assert_frame_equal(read, rows(a, b, c), check_exact=True)
        assert table.read_partition(2).empty
        d = frame(20, 3)
        table.append_partition(1, d)
        pandas.testing.assert_frame_equal(table.read_partition(1), rows(b, c, d), check_exact=True)
    mixed = read_as_upstream(paths[1])
    assert list(mixed.columns) == COLUMNS
    assert mixed["i"].tolist() == rows(b, c, d)["i"].tolist()
    assert mixed["b"].tolist() == rows(b, c, d)["b"].tolist()
    numpy.testing.assert_array_equal(mixed["f"].to_numpy(), rows(b, c, d)["f"].to_numpy())
    assert mixed["s"].fillna("").tolist() == rows(b, c, d)["s"].tolist()
    parsed = pandas.to_datetime(mixed["t"], format="ISO8601")
    assert parsed.tolist() == rows(b, c, d)["t"].tolist()


# --- upstream 0.2.20's server and this one, on one catalog and storage directory ---

UPSTREAM_FRAME = r"""
import dataclasses, json, sys
import pandas
from tiled.client import from_uri
from tiled.structures.data_source import DataSource
from tiled.structures.table import TableStructure

def frame(start, rows):
    n = list(range(start, start + rows))
    return pandas.DataFrame({
        "i": pandas.Series([k * 7 for k in n], dtype="int64"),
        "f": [k / 4 if k % 5 else float("nan") for k in n],
        "b": [k % 2 == 0 for k in n],
        "s": [f"row {k}, \"quoted\"\nnext" for k in n],
        "t": pandas.to_datetime([f"2022-02-{k % 28 + 1:02d} 0{k % 10}:00:00" for k in n]),
    })
"""

UPSTREAM_WRITES = (
    UPSTREAM_FRAME
    + r"""
client = from_uri(sys.argv[1], api_key="secret")
structure = dataclasses.replace(TableStructure.from_pandas(frame(0, 1)), npartitions=2)
source = DataSource(structure_family="table", structure=structure, mimetype="text/csv")
table = client.new("table", [source], key="up")
table.write_partition(0, frame(0, 4))
table.write_partition(1, frame(4, 3))
table.append_partition(0, frame(7, 2))
source = DataSource(structure_family="table", structure=TableStructure.from_pandas(frame(0, 1)),
                    mimetype="text/csv")
client.new("table", [source], key="one").write(frame(20, 5))
"""
)

# Reads both tables, then appends to the one this server made.
UPSTREAM_READS = (
    UPSTREAM_FRAME
    + r"""
client = from_uri(sys.argv[1], api_key="secret")
print(json.dumps({
    key: client[key].read(["i", "f", "b", "s"]).to_dict(orient="list")
    for key in ("up", "mine")
}))
client["mine"].append_partition(0, frame(60, 2))
"""
)


def upstream_frame(start: int, rows: int) -> pandas.DataFrame:
    """What UPSTREAM_WRITES's ``frame`` makes, with this pandas."""
    n = list(range(start, start + rows))
    return pandas.DataFrame(
        {
            "i": pandas.Series([k * 7 for k in n], dtype="int64"),
            "f": [k / 4 if k % 5 else numpy.nan for k in n],
            "b": [k % 2 == 0 for k in n],
            "s": [f'row {k}, "quoted"\nnext' for k in n],
            "t": pandas.to_datetime(
                [f"2022-02-{k % 28 + 1:02d} 0{k % 10}:00:00" for k in n]
            ).astype("datetime64[ns]"),
        }
    )


@pytest.mark.slow
def test_upstream_and_this_server_share_csv_tables(upstream_tiled, tmp_path):
    """Upstream's server makes and writes CSV tables (SQLite catalog, a storage directory);
    this server reads them, appends to one and makes another; upstream's reads the result."""
    from .isolated_python import run_isolated
    from .processes import server_process, without_pythonpath

    catalog, data = tmp_path / "catalog.db", tmp_path / "data"
    data.mkdir()
    upstream = [str(upstream_tiled.parent / "tiled"), "serve", "catalog", str(catalog)]
    options = ["-w", str(data), "--api-key", "secret"]
    env = without_pythonpath()
    with server_process([*upstream, "--init", *options], tmp_path, env=env) as url:
        done = run_isolated(upstream_tiled, UPSTREAM_WRITES, url)
        assert done.returncode == 0, done.stderr
    up = rows(upstream_frame(0, 4), upstream_frame(7, 2), upstream_frame(4, 3))
    tree = from_uri(f"sqlite:///{catalog}", writable_storage=[data])
    with serve(build_app(tree, authentication={"single_user_api_key": "secret"})) as server:
        client = client_from_uri(server.url, api_key="secret")
        table = client["up"]
        assert table.data_sources()[0].mimetype == CSV
        read = table.read()
        assert read.dtypes.to_dict() == expected_dtypes(up)
        pandas.testing.assert_frame_equal(read, up, check_exact=True)
        pandas.testing.assert_frame_equal(client["one"].read(), upstream_frame(20, 5))
        fs = HTTPFileSystem(client_kwargs={"headers": HEADERS})
        group = zarr.open_group(fs.get_mapper(f"{server.url}/zarr/v3/up"), mode="r")
        numpy.testing.assert_array_equal(group["i"][...], up["i"].to_numpy())
        table.append_partition(1, upstream_frame(30, 2))
        up = rows(upstream_frame(0, 4), upstream_frame(7, 2), upstream_frame(4, 3),
                  upstream_frame(30, 2))  # fmt: skip
        pandas.testing.assert_frame_equal(table.read(), up, check_exact=True)
        mine = upstream_frame(40, 5)
        client.new("table", [csv_source(mine, npartitions=2)], key="mine").write(mine)
        mine_parts = [client["mine"].read_partition(p) for p in (0, 1)]
    with server_process([*upstream, *options], tmp_path, env=env) as url:
        done = run_isolated(upstream_tiled, UPSTREAM_READS, url)
    assert done.returncode == 0, done.stderr
    got = json.loads(done.stdout)
    for key, expected in (("up", up), ("mine", mine)):
        assert got[key]["i"] == expected["i"].tolist(), key
        assert got[key]["b"] == expected["b"].tolist(), key
        assert got[key]["s"] == expected["s"].tolist(), key
        numpy.testing.assert_array_equal(numpy.array(got[key]["f"], float), expected["f"])
    # Rows upstream's server appended to a file this server wrote read back here.
    with serve(build_app(tree, authentication={"single_user_api_key": "secret"})) as server:
        client = client_from_uri(server.url, api_key="secret")
        extended = rows(mine_parts[0], upstream_frame(60, 2), mine_parts[1])
        pandas.testing.assert_frame_equal(client["mine"].read(), extended, check_exact=True)
