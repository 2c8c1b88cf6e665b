"""Writable tables stored as Arrow IPC files (data source mimetype
``application/vnd.apache.arrow.file``, upstream 0.2.20's), and ``.arrow`` files registered.

One file per partition, ``partition-{i}.arrow``, in the node's directory or bucket prefix;
written whole, by partition, or appended to (the file rewritten with the rows added, which
upstream cannot do); read back with the table's types and index, whole or some columns. A
file that is not Arrow, or does not hold the table, answers 415 (DataUnavailable), never 500.
Existing Arrow IPC files (``.arrow``, Feather v2 ``.feather``) register as tables, one
partition per file. (``slow``) A catalog that upstream's own server wrote such a table into
reads here with the same values, and upstream's reader reads the rows appended here.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from pathlib import Path

import numpy
import pandas
import pyarrow
import pyarrow.ipc
import pyarrow.parquet
import pytest

from tiled.catalog import from_uri
from tiled.client import Context, from_context
from tiled.client.register import register
from tiled.client.utils import ClientError
from tiled.errors import DataUnavailable
from tiled.server.app import build_app
from tiled.structures.data_source import DataSource
from tiled.structures.table import TableStructure
from tiled.utils import APACHE_ARROW_FILE_MIME_TYPE as ARROW

from .test_csv_tables import expected_dtypes, frame, partition_paths, rows, stored_files


def arrow_source(df: pandas.DataFrame, npartitions: int = 1) -> DataSource:
    structure = TableStructure.from_pandas(df, npartitions=npartitions)
    return DataSource(structure_family="table", structure=structure, mimetype=ARROW)


def typed_frame(start: int, count: int) -> pandas.DataFrame:
    """Ints, nullable ints, floats with NaN, text with a missing value, bools, naive and
    zoned datetimes, categories (all of them in every batch), and a named index."""
    n = numpy.arange(start, start + count)
    return pandas.DataFrame(
        {
            "i": (n * 1_000_003 + 2**40).astype("int64"),
            "small": pandas.array([k % 4 if k % 5 != 2 else None for k in n], dtype="Int8"),
            "f": numpy.where(n % 3 == 1, numpy.nan, n / 7),
            "s": [f'row {k}, "q"\n' if k % 4 else None for k in n],
            "b": n % 2 == 0,
            "t": pandas.Timestamp("2020-01-01") + pandas.to_timedelta(n * 3_600_000_000_001, "ns"),
            "tz": pandas.date_range("2021-06-01", periods=count, freq="h", tz="Europe/Paris"),
            "c": pandas.Categorical(["x", "y", "z"][k % 3] for k in n).set_categories(
                ["x", "y", "z"]
            ),
        },
        index=pandas.Index(n * 10, name="idx"),
    )


@pytest.fixture
def catalog(tmp_path):
    """``catalog()``: a client of an in-process server on one SQLite catalog and storage
    directory (its ``readable_storage`` is ``tmp_path / "files"``); call it again for a
    new server on the same catalog."""
    data, files = tmp_path / "data", tmp_path / "files"
    data.mkdir()
    files.mkdir()
    contexts = []

    def start():
        tree = from_uri(
            f"sqlite:///{tmp_path / 'catalog.db'}", writable_storage=data,
            readable_storage=[files], init_if_not_exists=True,
        )  # fmt: skip
        context = Context.from_app(build_app(tree))
        contexts.append(context)
        return from_context(context)

    start.data, start.files = data, files
    yield start
    for context in contexts:
        context.close()


def http(client):
    return client.context.http_client


def test_an_arrow_table_is_one_arrow_ipc_file_per_partition(catalog):
    df = frame(0, 10)
    client = catalog()
    table = client.new("table", [arrow_source(df, npartitions=3)], key="t")
    table.write(df)
    (source,) = client["t"].data_sources()
    assert source.mimetype == ARROW
    assert source.management == "writable"
    assert [a.num for a in source.assets] == [0, 1, 2]
    assert {a.parameter for a in source.assets} == {"data_uris"}
    assert not any(a.is_directory for a in source.assets)
    paths = partition_paths(client["t"])
    assert [p.name for p in paths] == [f"partition-{i}.arrow" for i in range(3)]
    (directory,) = {p.parent for p in paths}
    assert directory.parent == catalog.data
    assert sorted(directory.iterdir()) == paths
    # Each file is an Arrow IPC file (Feather v2) any Arrow reader opens; in order, the rows.
    parts = []
    for path in paths:
        with pyarrow.ipc.open_file(str(path)) as reader:
            assert reader.num_record_batches >= 1
            parts.append(reader.read_pandas())
        assert len(parts[-1]) > 0
    pandas.testing.assert_frame_equal(rows(*parts), df, check_exact=True)
    pandas.testing.assert_frame_equal(table.read(), df, check_exact=True)
    # Deleting the node removes its files.
    client.delete_contents("t", external_only=False)
    assert not directory.exists()


def test_types_and_the_index_round_trip(catalog):
    df = typed_frame(0, 12)
    client = catalog()
    table = client.new("table", [arrow_source(df, npartitions=2)], key="t")
    table.write(df)
    for reader in (table, catalog()["t"]):  # and a new server on the same catalog and files
        read = reader.read()
        assert read.dtypes.to_dict() == df.dtypes.to_dict()
        pandas.testing.assert_frame_equal(read, df, check_exact=True)
        # Some columns: their types and the index kept, as a Parquet table's.
        pandas.testing.assert_frame_equal(reader.read(["c", "i"]), df[["c", "i"]])
        pandas.testing.assert_frame_equal(reader.read(["tz"]), df[["tz"]])
        parts = [reader.read_partition(p) for p in range(2)]
        pandas.testing.assert_frame_equal(pandas.concat(parts), df, check_exact=True)
        numpy.testing.assert_array_equal(reader["i"].read(), df["i"].to_numpy())


def test_columns_csv_cannot_hold_are_stored(catalog):
    """Lists and structs: Arrow holds every Arrow type (a CSV table refuses these)."""
    df = pandas.DataFrame(
        {
            "x": [1, 2, 3],
            "list": [[1, 2], [], [3]],
            "struct": [{"a": 1, "b": "one"}, {"a": 2, "b": "two"}, {"a": 3, "b": None}],
        }
    )
    # (The structure of the whole frame: that of no rows knows no types of the lists' items.)
    structure = TableStructure.from_arrow_table(pyarrow.Table.from_pandas(df))
    source = DataSource(structure_family="table", structure=structure, mimetype=ARROW)
    client = catalog()
    table = client.new("table", [source], key="t")
    table.write(df)
    table.append_partition(0, df.iloc[:1])
    read = table.read()
    assert read["x"].tolist() == [1, 2, 3, 1]
    assert [list(v) for v in read["list"]] == [[1, 2], [], [3], [1, 2]]
    assert list(read["struct"]) == [*df["struct"], df["struct"][0]]


def test_write_partition_replaces_and_append_partition_adds_rows(catalog):
    a, b, c, d, e = (typed_frame(100 * k, 4 + k) for k in range(5))
    client = catalog()
    table = client.new("table", [arrow_source(a, npartitions=3)], key="t")
    table.write_partition(0, a)
    table.write_partition(1, b)
    table.append_partition(0, c)
    # Partition 2 was never written: empty, with the table's columns and dtypes.
    empty = table.read_partition(2)
    assert empty.empty and list(empty.columns) == list(a.columns)
    # (The categories of no rows are none: a Parquet table's empty partitions too.)
    assert empty.dtypes.drop("c").to_dict() == a.dtypes.drop("c").to_dict()
    assert isinstance(empty["c"].dtype, pandas.CategoricalDtype)
    pandas.testing.assert_frame_equal(table.read_partition(0), pandas.concat([a, c]))
    pandas.testing.assert_frame_equal(table.read_partition(1), b, check_exact=True)
    # The appended rows are a batch of their own, after the stored ones.
    first = partition_paths(table)[0]
    with pyarrow.ipc.open_file(str(first)) as reader:
        assert [reader.get_batch(i).num_rows for i in range(reader.num_record_batches)] == [4, 6]
    table.write_partition(0, d)  # replaces the appended rows too
    table.append_partition(2, e)  # the first rows of a partition never written
    table.append_partition(2, a)
    expected = pandas.concat([d, b, e, a])
    pandas.testing.assert_frame_equal(table.read(), expected, check_exact=True)
    pandas.testing.assert_frame_equal(catalog()["t"].read(), expected, check_exact=True)
    last = pyarrow.ipc.open_file(str(partition_paths(table)[2])).read_pandas()
    pandas.testing.assert_frame_equal(last, pandas.concat([e, a]), check_exact=True)


def test_whole_writes_spread_rows_over_the_partitions(catalog):
    df = frame(0, 2)
    client = catalog()
    table = client.new("table", [arrow_source(df, npartitions=4)], key="t")
    table.write(df)  # fewer rows than partitions: some stay empty
    assert [len(table.read_partition(p)) for p in range(4)].count(0) == 2
    pandas.testing.assert_frame_equal(table.read(), df, check_exact=True)
    assert table.read().dtypes.to_dict() == expected_dtypes(df)
    bigger = frame(50, 9)
    table.write(bigger)
    pandas.testing.assert_frame_equal(table.read(), bigger, check_exact=True)
    assert all(len(table.read_partition(p)) > 0 for p in range(4))


def test_data_not_fitting_the_table_are_refused_and_change_nothing(catalog):
    df = frame(0, 6)
    client = catalog()
    table = client.new("table", [arrow_source(df, npartitions=2)], key="t")
    table.write(df)
    files = stored_files(catalog.data)
    for wrong in (
        df.drop(columns="f"),
        df.assign(extra=1),
        df.assign(i=[f"x{k}" for k in range(6)]),
    ):
        for write in (table.write, lambda w: table.write_partition(0, w),
                      lambda w: table.append_partition(1, w)):  # fmt: skip
            with pytest.raises(ClientError) as raised:
                write(wrong)
            assert raised.value.status_code == 400
    assert stored_files(catalog.data) == files
    pandas.testing.assert_frame_equal(table.read(), df, check_exact=True)


def arrow_file_bytes(table: pyarrow.Table) -> bytes:
    sink = pyarrow.BufferOutputStream()
    with pyarrow.ipc.new_file(sink, table.schema) as writer:
        writer.write_table(table)
    return sink.getvalue().to_pybytes()


def write_arrow_file(path: Path, df: pandas.DataFrame, batches: int = 1) -> None:
    """``df`` as an Arrow IPC file of ``batches`` record batches, as any program writes one."""
    table = pyarrow.Table.from_pandas(df)
    with pyarrow.ipc.new_file(str(path), table.schema) as writer:
        for batch in table.to_batches(max_chunksize=-(-len(df) // batches)):
            writer.write_batch(batch)


def test_a_file_that_does_not_hold_the_table_answers_415(catalog):
    """A partition file replaced by another program: whatever it now holds, reads of it answer
    415 naming the problem (never 500), the other partitions still read, rows are not added
    to it, and a write replaces it."""
    df = frame(0, 6)
    parquet = pyarrow.BufferOutputStream()
    pyarrow.parquet.write_table(pyarrow.Table.from_pandas(df), parquet)
    junk = {
        "not-arrow": b"certainly not an arrow file, though long enough to be one",
        "empty": b"",
        "cut-short": None,  # the stored file, its second half gone
        "other-columns": arrow_file_bytes(pyarrow.table({"q": [1, 2]})),
        "parquet": parquet.getvalue().to_pybytes(),
    }
    client = catalog()
    for key, content in junk.items():
        table = client.new("table", [arrow_source(df, npartitions=2)], key=key)
        table.write(df)
        path = partition_paths(table)[1]
        if content is None:
            content = path.read_bytes()[: path.stat().st_size // 2]
        path.write_bytes(content)
        for fields, partition in ((None, None), (None, 1), (["i"], None)):
            with pytest.raises(ClientError) as raised:
                table.read(fields) if partition is None else table.read_partition(partition)
            assert raised.value.status_code == 415, (key, raised.value.response.text)
            assert "Arrow" in raised.value.response.json()["detail"], key
        pandas.testing.assert_frame_equal(table.read_partition(0), df.iloc[:3])
        # The zarr view of a column needs the partitions' lengths.
        answer = http(client).get(f"/zarr/v3/{key}/i/zarr.json")
        assert answer.status_code == 415, (key, answer.text)
        with pytest.raises(ClientError) as raised:
            table.append_partition(1, df)
        assert raised.value.status_code == 415, (key, raised.value.response.text)
        assert path.read_bytes() == content
        table.write(df)
        pandas.testing.assert_frame_equal(table.read(), df, check_exact=True)


def test_registered_arrow_and_feather_files(catalog):
    client = catalog()
    files = catalog.files
    a, b = typed_frame(0, 5), typed_frame(5, 4)
    write_arrow_file(files / "one.arrow", a, batches=2)
    write_arrow_file(files / "two.arrow", b)
    b.to_feather(files / "three.feather")  # Feather v2: an Arrow IPC file

    one = client.register(files / "one.arrow", key="one")  # the format from the name
    (source,) = one.data_sources()
    assert source.mimetype == ARROW and source.management == "external"
    assert [(x.parameter, x.num) for x in source.assets] == [("data_uris", 0)]
    pandas.testing.assert_frame_equal(one.read(), a, check_exact=True)
    pandas.testing.assert_frame_equal(one.read(["s", "c"]), a[["s", "c"]])
    numpy.testing.assert_array_equal(one["f"].read(), a["f"].to_numpy())

    both = client.register(files / "one.arrow", files / "two.arrow", key="both")
    assert both.structure().npartitions == 2
    pandas.testing.assert_frame_equal(both.read(), pandas.concat([a, b]), check_exact=True)
    pandas.testing.assert_frame_equal(both.read_partition(1), b, check_exact=True)

    feather = client.register(files / "three.feather", key="three")
    assert feather.data_sources()[0].mimetype == ARROW
    pandas.testing.assert_frame_equal(feather.read(), b, check_exact=True)

    # A walk of a directory registers them by their extensions.
    (files / "sub").mkdir()
    write_arrow_file(files / "sub" / "four.arrow", a)
    container = client.create_container("walked")
    asyncio.run(register(container, files / "sub"))
    pandas.testing.assert_frame_equal(client["walked"]["four"].read(), a, check_exact=True)

    # Registered files that turn out not to be Arrow (any more) answer 415.
    (files / "one.arrow").write_bytes(b"no longer arrow")
    with pytest.raises(ClientError) as raised:
        client["one"].read()
    assert raised.value.status_code == 415, raised.value.response.text
    # Such a file is not registered: the client opens it first, and so does the server.
    (files / "bad.arrow").write_bytes(b"not arrow")
    with pytest.raises(DataUnavailable, match="Arrow"):
        client.register(files / "bad.arrow", key="bad")
    body = {
        "id": "bad", "structure_family": "table",
        "data_sources": [{
            "structure_family": "table", "mimetype": ARROW, "management": "external",
            "assets": [{"data_uri": (files / "bad.arrow").as_uri(), "is_directory": False,
                        "parameter": "data_uris", "num": 0}],
        }],
    }  # fmt: skip
    refused = http(client).post("/api/v1/register/", json=body)
    assert refused.status_code == 400 and "Arrow" in refused.json()["detail"], refused.text
    assert "bad" not in client


# --- a bucket -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def bucket(tmp_path_factory):
    """A catalog whose writable storage is a bucket of moto's S3 server, served in-process."""
    pytest.importorskip("moto.server", reason="pip install 'moto[server]'")
    from .processes import free_port
    from .test_bucket_storage import MotoServer

    moto = MotoServer(free_port()).start()
    try:
        moto.create_bucket()
        directory = tmp_path_factory.mktemp("arrow-bucket")
        tree = from_uri(
            f"sqlite:///{directory / 'catalog.db'}", writable_storage=[moto.storage()],
            init_if_not_exists=True,
        )  # fmt: skip
        with Context.from_app(build_app(tree)) as context:
            yield moto, from_context(context)
    finally:
        moto.stop()


def test_an_arrow_table_in_a_bucket(bucket):
    moto, client = bucket
    df = typed_frame(0, 6)
    table = client.new("table", [arrow_source(df, npartitions=2)], key="t")
    table.write(df)
    table.append_partition(1, df.iloc[:2])
    prefix = table.data_sources()[0].assets[0].data_uri.rsplit("/", 2)[1]
    objects = moto.objects(f"{prefix}/")
    assert sorted(objects) == [f"{prefix}/partition-0.arrow", f"{prefix}/partition-1.arrow"]
    stored = pyarrow.ipc.open_file(pyarrow.py_buffer(objects[f"{prefix}/partition-1.arrow"]))
    pandas.testing.assert_frame_equal(
        stored.read_pandas(), pandas.concat([df.iloc[3:], df.iloc[:2]])
    )
    expected = pandas.concat([df, df.iloc[:2]])
    pandas.testing.assert_frame_equal(client["t"].read(), expected, check_exact=True)
    pandas.testing.assert_frame_equal(client["t"].read(["c"]), expected[["c"]])
    client.delete_contents("t", external_only=False)
    assert moto.objects(f"{prefix}/") == {}


# --- upstream 0.2.20's server, then this one, on one catalog and storage directory -------------

UPSTREAM_WRITES = r"""
import dataclasses, sys
import pandas
from tiled.client import from_uri
from tiled.structures.data_source import DataSource
from tiled.structures.table import TableStructure

def frame(start, count):
    n = list(range(start, start + count))
    return pandas.DataFrame(
        {
            "i": [k * 7 for k in n],
            "f": [k / 4 if k % 5 else float("nan") for k in n],
            "b": [k % 2 == 0 for k in n],
            "s": [f"row {k}, \"quoted\"\nnext" for k in n],
            "t": pandas.to_datetime([f"2022-02-{k % 28 + 1:02d} 0{k % 10}:00:00" for k in n]),
            "c": pandas.Categorical([["x", "y"][k % 2] for k in n], categories=["x", "y"]),
        },
        index=pandas.Index([k * 10 for k in n], name="idx"),
    )

client = from_uri(sys.argv[1], api_key="secret")
structure = dataclasses.replace(TableStructure.from_pandas(frame(0, 1)), npartitions=2)
source = DataSource(structure_family="table", structure=structure,
                    mimetype="application/vnd.apache.arrow.file")
table = client.new("table", [source], key="up")
# Upstream's server writes these tables partition by partition only (its whole-table write
# and its appends fail).
table.write_partition(0, frame(0, 4))
table.write_partition(1, frame(4, 3))
"""

# Upstream's own reader of these tables, on the files of the table's partitions.
UPSTREAM_READS = r"""
import json, sys
import pyarrow.ipc
from tiled.adapters.arrow import ArrowAdapter
from tiled.structures.table import TableStructure
from tiled.utils import path_from_uri

schema = pyarrow.ipc.open_file(path_from_uri(sys.argv[1])).schema
frame = ArrowAdapter(sys.argv[1:], TableStructure.from_schema(schema)).read()
print(json.dumps(frame[["i", "s", "b"]].reset_index().to_dict(orient="list")))
"""


def upstream_frame(start: int, count: int) -> pandas.DataFrame:
    """What UPSTREAM_WRITES's ``frame`` makes, with this pandas."""
    n = list(range(start, start + count))
    return pandas.DataFrame(
        {
            "i": [k * 7 for k in n],
            "f": [k / 4 if k % 5 else numpy.nan for k in n],
            "b": [k % 2 == 0 for k in n],
            "s": [f'row {k}, "quoted"\nnext' for k in n],
            "t": pandas.to_datetime(
                [f"2022-02-{k % 28 + 1:02d} 0{k % 10}:00:00" for k in n]
            ).astype("datetime64[ns]"),
            "c": pandas.Categorical([["x", "y"][k % 2] for k in n], categories=["x", "y"]),
        },
        index=pandas.Index([k * 10 for k in n], name="idx"),
    )


@pytest.mark.slow
def test_upstream_servers_arrow_tables_read_here(upstream_tiled, tmp_path):
    """Upstream's server makes an Arrow table and writes its partitions (SQLite catalog, a
    storage directory); this server reads it with the same values and appends to it; upstream's
    adapter (what its server reads these tables with) reads the files so extended."""
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
    up = pandas.concat([upstream_frame(0, 4), upstream_frame(4, 3)])
    tree = from_uri(f"sqlite:///{catalog}", writable_storage=[data])
    with contextlib.closing(Context.from_app(build_app(tree))) as context:
        client = from_context(context)
        table = client["up"]
        assert table.data_sources()[0].mimetype == ARROW
        names = [p.name for p in partition_paths(table)]
        assert names == ["partition-0.arrow", "partition-1.arrow"]
        read = table.read()
        assert read.dtypes.to_dict() == up.dtypes.to_dict()
        pandas.testing.assert_frame_equal(read, up, check_exact=True)
        pandas.testing.assert_frame_equal(table.read(["c", "i"]), up[["c", "i"]])
        pandas.testing.assert_frame_equal(table.read_partition(1), upstream_frame(4, 3))
        table.append_partition(1, upstream_frame(30, 2))
        up = pandas.concat([up, upstream_frame(30, 2)])
        pandas.testing.assert_frame_equal(table.read(), up, check_exact=True)
        uris = [asset.data_uri for asset in table.data_sources()[0].assets]
    done = run_isolated(upstream_tiled, UPSTREAM_READS, *uris)
    assert done.returncode == 0, done.stderr
    got = json.loads(done.stdout)
    assert got["idx"] == up.index.tolist()
    assert got["i"] == up["i"].tolist() and got["b"] == up["b"].tolist()
    assert got["s"] == up["s"].tolist()
