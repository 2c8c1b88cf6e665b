"""``tiled.client.sync.copy`` (upstream's): nodes copied from one live server to another over
HTTP, each family's data written block by block, partition by partition or whole; registered
files registered again; conflicts raised, skipped or warned about; selections copied."""

from __future__ import annotations

import contextlib
import warnings

import awkward
import dask.array
import h5py
import numpy
import pandas
import pyarrow
import pytest
import ragged
import sparse

from tiled.catalog import from_uri as catalog_from_uri
from tiled.client import from_uri
from tiled.client.sync import copy
from tiled.client.utils import ClientError
from tiled.queries import Key
from tiled.server.app import build_app
from tiled.structures.data_source import DataSource
from tiled.structures.table import TableStructure

from .live_server import serve

KEY = "secret"
FRAME = pandas.DataFrame({"x": [1, 2, 3, 4], "label": ["a", "b", "c", "d"]})


@contextlib.contextmanager
def server(folder, readable=()):
    folder.mkdir()
    tree = catalog_from_uri(
        f"sqlite+aiosqlite:///{folder / 'catalog.db'}",
        writable_storage=[folder / "data", f"duckdb:///{folder / 'tables.duckdb'}"],
        readable_storage=list(readable),
        init_if_not_exists=True,
    )
    with serve(build_app(tree, authentication={"single_user_api_key": KEY})) as live:
        client = from_uri(live.url, api_key=KEY)
        try:
            yield client
        finally:
            client.context.close()


def populate(client):
    client.write_array(
        numpy.arange(24.0).reshape(4, 6), key="a", metadata={"color": "red"}, specs=["alpha"],
        dims=("y", "x"),
    )  # fmt: skip
    blocks = dask.array.arange(20.0, chunks=3).reshape(5, 4).rechunk((2, 3))
    chunked = client.write_array(blocks, key="chunked")  # 3 x 2 blocks, copied one by one
    assert chunked.chunks == ((2, 2, 1), (3, 1))
    client.write_dataframe(FRAME, key="t", metadata={"color": "green"})
    csv = DataSource("table", TableStructure.from_pandas(FRAME), mimetype="text/csv")
    client.new("table", [csv], key="csv").write(FRAME)
    appendable = client.create_appendable_table(pyarrow.Table.from_pandas(FRAME).schema, key="ap")
    appendable.append_partition(0, FRAME)
    client.write_awkward(awkward.Array([[1, 2], [], [3]]), key="aw", metadata={"color": "red"})
    coo = sparse.COO(coords=numpy.array([[1, 7]]), data=numpy.array([1.5, 2.5]), shape=(10,))
    client.write_sparse(key="sp", coords=coo.coords, data=coo.data, shape=coo.shape)
    client.write_ragged(ragged.array([[1.0, 2.0], [3.0]]), key="rg")
    inner = client.create_container("c", metadata={"color": "red"}, specs=["box"])
    inner.write_array([1, 2, 3], key="A", metadata={"color": "blue"})
    inner.create_container("empty")


def assert_same(source, dest):
    assert list(dest) == list(source)
    for key in source:
        a, b = source[key], dest[key]
        assert b.structure_family == a.structure_family, key
        assert dict(b.metadata) == dict(a.metadata), key
        assert list(b.specs) == list(a.specs), key
        if a.structure_family == "container":
            assert_same(a, b)
            continue
        assert b.data_sources()[0].mimetype == a.data_sources()[0].mimetype, key
        if a.structure_family == "array":
            numpy.testing.assert_array_equal(b.read(), a.read())
            assert b.structure() == a.structure(), key
        elif a.structure_family == "table":
            pandas.testing.assert_frame_equal(b.read(), a.read())
        elif a.structure_family == "sparse":
            numpy.testing.assert_array_equal(b.read().todense(), a.read().todense())
        elif a.structure_family == "awkward":
            assert b.read().tolist() == a.read().tolist()
        elif a.structure_family == "ragged":
            assert b.read().tolist() == a.read().tolist()


def test_copy_between_two_servers(tmp_path):
    with server(tmp_path / "a") as source, server(tmp_path / "b") as dest:
        populate(source)
        copy(source, dest)
        assert_same(source, dest)
        # The copies are the destination's own: written there, in its storage.
        assert dest["a"].data_sources()[0].management == "writable"
        assert dest["csv"].data_sources()[0].mimetype == "text/csv"
        dest["ap"].append_partition(0, FRAME)
        assert len(dest["ap"].read()) == 8 and len(source["ap"].read()) == 4


def test_conflicts_raise_skip_or_warn(tmp_path):
    with server(tmp_path / "a") as source, server(tmp_path / "b") as dest:
        source.write_array([1, 2], key="x")
        source.write_array([3, 4], key="y")
        dest.write_array([9, 9, 9], key="x")
        with pytest.raises(ClientError) as info:
            copy(source, dest)
        assert info.value.response.status_code == 409
        copy(source, dest, on_conflict="skip")
        assert dest["x"].read().tolist() == [9, 9, 9]  # left as it was
        assert dest["y"].read().tolist() == [3, 4]
        with pytest.warns(UserWarning) as record:
            copy(source, dest, on_conflict="warn")
        assert sorted(str(w.message) for w in record) == [
            "Not copied: 'x' is in the destination already",
            "Not copied: 'y' is in the destination already",
        ]
        assert record[0].filename == __file__  # said where copy was called
        with pytest.raises(ValueError, match="on_conflict"):
            copy(source, dest, on_conflict="replace")


def test_selections_are_copied(tmp_path):
    with server(tmp_path / "a") as source, server(tmp_path / "b") as dest:
        populate(source)
        red = source.search(Key("color") == "red")
        copy(red, dest.create_container("red"))
        assert list(dest["red"]) == ["a", "aw", "c"]
        assert list(dest["red"]["c"]) == ["A", "empty"]  # a member's members all come
        copy(source.items()[:2], dest.create_container("first"))
        assert list(dest["first"]) == ["a", "chunked"]
        copy({"renamed": source["t"]}, dest)
        pandas.testing.assert_frame_equal(dest["renamed"].read(), FRAME)


def test_data_into_a_node_of_the_same_structure(tmp_path):
    with server(tmp_path / "a") as source, server(tmp_path / "b") as dest:
        made = source.write_array(numpy.arange(6).reshape(2, 3), key="x")
        target = dest.write_array(numpy.zeros((2, 3), dtype=int), key="x")
        copy(made, target)
        assert target.read().tolist() == [[0, 1, 2], [3, 4, 5]]


def test_registered_files_are_registered_again(tmp_path):
    files = tmp_path / "files"
    files.mkdir()
    with h5py.File(files / "group.h5", "w") as file:
        file["g/data"] = numpy.arange(3)
    with (
        server(tmp_path / "a", readable=[files]) as source,
        server(tmp_path / "b", readable=[files]) as dest,
        warnings.catch_warnings(),
    ):
        warnings.simplefilter("ignore")  # the registration's notes on the file's contents
        source.register(files / "group.h5", key="h5")
        copy(source, dest)
        (stored,) = dest["h5"].data_sources()
        assert stored.management == "external"
        assert stored.assets[0].data_uri == source["h5"].data_sources()[0].assets[0].data_uri
        assert dest["h5"]["g"]["data"].read().tolist() == [0, 1, 2]


def test_registered_files_the_destination_may_not_read_are_refused(tmp_path):
    files = tmp_path / "files"
    files.mkdir()
    with h5py.File(files / "one.h5", "w") as file:
        file["d"] = numpy.arange(2)
    with server(tmp_path / "a", readable=[files]) as source, server(tmp_path / "b") as dest:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            source.register(files / "one.h5", key="h5")
        with pytest.raises(ClientError) as info:
            copy(source, dest)
        assert info.value.response.status_code in (400, 403)
        assert list(dest) == []
