"""The SQL catalog on SQLite and PostgreSQL: nodes, storage, search, writes, history, failures.

Every test runs on both back ends. PostgreSQL is found as :mod:`tiled._tests.postgres` says: a
database of its own is created for the session and dropped after it; without PostgreSQL its
tests are skipped, or fail where ``TILED_TEST_REQUIRE_POSTGRESQL`` is set (as in CI).
"""

from __future__ import annotations

import asyncio
import errno
from pathlib import Path

import numpy
import pandas
import pytest
import pytest_asyncio
import sparse
from sqlalchemy import event, func, select

from tiled.adapters import files as files_module
from tiled.adapters.files import path_from_uri
from tiled.adapters.protocols import NodeWithHistory, WritableArray, WritableContainer
from tiled.catalog import (
    DatabaseNotInitialized,
    InvalidKey,
    WouldDeleteData,
    from_uri,
    in_memory,
    initialize_database,
    upgrade_database,
)
from tiled.catalog.errors import MigrationRefused
from tiled.catalog.orm import TABLE_NAMES, metadata_obj
from tiled.errors import BadRequest, Conflict, InvalidSlice, NoSuchEntry, NotFound, UnsupportedQuery
from tiled.queries import (
    AccessBlobFilter,
    Comparison,
    Contains,
    Eq,
    FullText,
    In,
    KeyLookup,
    KeyPresent,
    KeysFilter,
    Like,
    NotEq,
    NotIn,
    Regex,
    SpecsQuery,
    StructureFamilyQuery,
)
from tiled.structures.array import ArrayStructure
from tiled.structures.core import Spec
from tiled.structures.data_source import Asset, DataSource, Management
from tiled.structures.sparse import COOStructure
from tiled.structures.table import TableStructure
from tiled.zarr_format.model import ZarrOptions

from .postgres import ADMIN_URI, temporary_database

POSTGRES_ADMIN_URI = ADMIN_URI


# --- back ends ---------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def postgres_database():
    """A database of its own for this test session, dropped at the end."""
    with temporary_database() as uri:
        yield uri


async def _reset_postgres(uri: str) -> None:
    # Each test starts from an empty database: no catalog tables at all.
    import asyncpg

    connection = await asyncpg.connect(uri.replace("+asyncpg", ""))
    try:
        # Tables, enum types, functions and triggers: the whole schema goes.
        await connection.execute("DROP SCHEMA public CASCADE; CREATE SCHEMA public")
    finally:
        await connection.close()


@pytest.fixture(params=["sqlite", "postgresql"])
def database_uri(request, tmp_path):
    if request.param == "sqlite":
        return f"sqlite+aiosqlite:///{tmp_path / 'catalog.db'}"
    uri = request.getfixturevalue("postgres_database")
    asyncio.run(_reset_postgres(uri))
    return uri


@pytest.fixture
def storage(tmp_path) -> Path:
    path = tmp_path / "data"
    path.mkdir()
    return path


@pytest_asyncio.fixture(loop_scope="function")
async def root(database_uri, storage):
    tree = from_uri(
        database_uri,
        writable_storage=storage,
        readable_storage=[storage.parent / "external"],
        init_if_not_exists=True,
        metadata={"title": "root"},
    )
    yield tree
    await tree.shutdown()


# --- helpers -----------------------------------------------------------------------------------


def array_source(data: numpy.ndarray, chunks=None) -> DataSource:
    return DataSource("array", ArrayStructure.from_array(data, chunks=chunks))


def table_source(frame: pandas.DataFrame, npartitions: int = 1) -> DataSource:
    return DataSource("table", TableStructure.from_pandas(frame, npartitions))


def sparse_source(shape, chunks, dtype="float64") -> DataSource:
    from tiled.structures.array import data_type_from_numpy

    structure = COOStructure(
        chunks=chunks, shape=shape, data_type=data_type_from_numpy(numpy.dtype(dtype))
    )
    return DataSource("sparse", structure)


async def make(parent, key, family="container", metadata=None, specs=None, sources=(), **kw):
    return await parent.create_node(
        key=key, structure_family=family, metadata=metadata or {}, specs=specs or [],
        data_sources=list(sources), **kw,
    )  # fmt: skip


async def snapshot(root, storage: Path) -> tuple[list[str], dict[str, int]]:
    """Every file and directory under the storage, and the number of rows of every table."""
    listing = sorted(str(p.relative_to(storage)) for p in storage.rglob("*"))
    async with root.catalog.connect() as connection:
        counts = {
            name: (await connection.execute(select(func.count()).select_from(table))).scalar_one()
            for name, table in metadata_obj.tables.items()
        }
    return listing, counts


class QueryCounter:
    def __init__(self, engine):
        self.statements: list[str] = []
        self.engine = engine.sync_engine

    def __enter__(self):
        event.listen(self.engine, "before_cursor_execute", self._count)
        return self

    def __exit__(self, *exc):
        event.remove(self.engine, "before_cursor_execute", self._count)

    def _count(self, conn, cursor, statement, *args):
        self.statements.append(statement)


# --- nodes and their data ----------------------------------------------------------------------


async def test_create_and_read_every_family(root):
    assert isinstance(root, WritableContainer)
    assert root.metadata() == {"title": "root"}
    group = await make(root, "group", metadata={"color": "red"}, specs=["xdi"])
    assert isinstance(group, NodeWithHistory)
    data = numpy.arange(20, dtype="int32").reshape(4, 5)
    array = await make(group, "array", "array", {"kind": "image"}, sources=[array_source(data)])
    await array.write(data)
    frame = pandas.DataFrame({"x": [1.0, 2.0, 3.0], "label": ["a", "b", "c"]})
    table = await make(group, "table", "table", sources=[table_source(frame)])
    await table.write(frame)
    matrix = sparse.COO(numpy.array([[0, 2], [1, 3]]), numpy.array([1.5, 2.5]), shape=(4, 4))
    coo = await make(group, "coo", "sparse", sources=[sparse_source((4, 4), ((4,), (4,)))])
    await coo.write(matrix.coords, matrix.data)

    found = await root.lookup_adapter(["group"])
    assert found.metadata() == {"color": "red"} and found.specs == [Spec("xdi")]
    assert (await root.lookup_adapter(["group", "array"])).read().tolist() == data.tolist()
    assert (await root.lookup_adapter(["group", "array"])).metadata() == {"kind": "image"}
    pandas.testing.assert_frame_equal((await root.lookup_adapter(["group", "table"])).read(), frame)
    column = await root.lookup_adapter(["group", "table", "label"])
    assert column.read().tolist() == ["a", "b", "c"]
    dense = (await root.lookup_adapter(["group", "coo"])).read().todense()
    assert numpy.array_equal(dense, matrix.todense())
    assert await group.keys_range() == ["array", "table", "coo"]
    assert [k for k, _ in await group.items_range(1, 1)] == ["table"]
    assert await group.count() == 3 and await root.count() == 1
    with pytest.raises(NoSuchEntry):
        await root.lookup_adapter(["group", "missing"])
    with pytest.raises(NoSuchEntry):
        await root.lookup_adapter(["group", "array", "deeper"])


async def test_data_source_descriptions(root, storage):
    data = numpy.zeros((10,), dtype="float32")
    array = await make(root, "a", "array", sources=[array_source(data, chunks=((5, 5),))])
    (source,) = array.data_sources()
    assert source.mimetype == "application/x-zarr" and source.management == Management.writable
    (asset,) = source.assets
    assert asset.is_directory and asset.data_uri.startswith("file://localhost/")
    assert path_from_uri(asset.data_uri).parent == storage
    assert source.id is not None and asset.id is not None
    frame = pandas.DataFrame({"x": [1, 2]})
    table = await make(root, "t", "table", sources=[table_source(frame, 2)])
    (source,) = table.data_sources()
    assert source.mimetype == "application/x-parquet"
    assert [a.num for a in source.assets] == [0, 1]
    assert not any(a.is_directory for a in source.assets)


async def test_irregular_chunks_are_stored_regular(root):
    data = numpy.arange(30.0)
    array = await make(root, "a", "array", sources=[array_source(data, chunks=((5, 20, 5),))])
    assert array.structure().chunks == ((20, 10),)
    assert array.data_sources()[0].structure.chunks == ((20, 10),)
    await array.write_block(numpy.arange(20.0), (0,))
    await array.write_block(numpy.arange(10.0), (1,))
    assert (await root.lookup_adapter(["a"])).read().tolist() == [*range(20), *range(10)]


async def test_nested_lookup_is_one_query(root):
    node = root
    for key in ["a", "b", "c", "d"]:
        node = await make(node, key, metadata={"depth": key})
    data = numpy.ones((3,))
    await make(node, "leaf", "array", sources=[array_source(data)])
    await root.count()  # the schema check happens on first use
    with QueryCounter(root.catalog.current_engine()) as counter:
        leaf = await root.lookup_adapter(["a", "b", "c", "d", "leaf"])
        container = await root.lookup_adapter(["a", "b", "c", "d"])
    assert len(counter.statements) == 2, counter.statements
    assert leaf.structure().shape == (3,)
    assert container.metadata() == {"depth": "d"} and container.structure().count == 1
    assert len(container) == 1


async def test_paging_and_zarr_members(root):
    for i in range(7):
        await make(root, f"n{i}", metadata={"i": i})
    assert await root.zarr_member_keys(2, 3) == ["n2", "n3", "n4"]
    assert await root.keys_range(5) == ["n5", "n6"]
    assert (await root.zarr_member("n3")).metadata() == {"i": 3}
    with pytest.raises(NoSuchEntry):
        await root.zarr_member("nope")
    assert await root.get("nope") is None
    assert [s.to_json() for s in root.sorting] == [{"key": "", "direction": 1}]
    assert await root.sort([("", -1)]).keys_range(0, 2) == ["n6", "n5"]


# --- search --------------------------------------------------------------------------------------

SEARCHABLE = {
    "red": ({"color": "red", "n": 1, "tags": ["a", "b"], "sample": {"name": "Iron oxide"}}, ["s1"]),
    "blue": ({"color": "blue", "n": 2.5, "tags": ["b"], "sample": {"name": "copper"}}, ["s2"]),
    "green": ({"color": "green", "n": 10, "flag": True, "note": None}, ["s1", "s2"]),
    "plain": ({"title": "Nothing special here"}, []),
}

QUERIES = [
    (Eq("color", "red"), ["red"]),
    (Eq("n", 2.5), ["blue"]),
    (Eq("n", 10.0), ["green"]),
    (Eq("flag", True), ["green"]),
    (Eq("note", None), ["green"]),
    (Eq("tags", ["a", "b"]), ["red"]),
    (Eq("sample.name", "copper"), ["blue"]),
    (NotEq("color", "red"), ["blue", "green"]),
    (Comparison("gt", "n", 2), ["blue", "green"]),
    (Comparison("le", "n", 2.5), ["red", "blue"]),
    (Comparison("lt", "color", "c"), ["blue"]),
    (Contains("tags", "b"), ["red", "blue"]),
    (Contains("tags", "a"), ["red"]),
    (In("color", ["red", "green", "purple"]), ["red", "green"]),
    (NotIn("color", ["red"]), ["blue", "green"]),
    (NotIn("color", []), ["red", "blue", "green", "plain"]),
    (KeyPresent("flag"), ["green"]),
    (KeyPresent("sample.name", exists=False), ["green", "plain"]),
    (Regex("sample.name", "^[Ii]ron"), ["red"]),
    (Regex("color", "^R", case_sensitive=False), ["red"]),
    (Regex("color", "^R"), []),
    (Like("color", "%ee%"), ["green"]),
    (Like("color", "B%"), []),
    (Like("sample.name", "_ron%"), ["red"]),
    (FullText("oxide"), ["red"]),
    (FullText("SPECIAL"), ["plain"]),
    (FullText("copper nothing"), ["blue", "plain"]),
    (SpecsQuery(["s1"]), ["red", "green"]),
    (SpecsQuery(["s1"], exclude=["s2"]), ["red"]),
    (StructureFamilyQuery("array"), ["plain"]),
    (KeysFilter(["blue", "plain", "absent"]), ["blue", "plain"]),
    (KeyLookup("green"), ["green"]),
]


async def _searchable(root):
    for key, (metadata, specs) in SEARCHABLE.items():
        if key == "plain":
            await make(root, key, "array", metadata, specs, [array_source(numpy.zeros(2))])
        else:
            await make(root, key, metadata=metadata, specs=specs)


@pytest.mark.parametrize("query, expected", QUERIES, ids=[repr(q) for q, _ in QUERIES])
async def test_search(root, query, expected):
    await _searchable(root)
    found = root.search(query)
    assert await found.keys_range() == expected
    assert await found.count() == len(expected)
    assert [key for key, _ in await found.items_range()] == expected


async def test_searches_chain_sort_and_page(root):
    await _searchable(root)
    found = root.search(KeyPresent("n")).search(Comparison("ge", "n", 1))
    assert await found.sort([("n", -1)]).keys_range() == ["green", "blue", "red"]
    assert await found.sort([("n", -1)]).keys_range(1, 1) == ["blue"]
    # Missing values sort last in either direction; ties keep insertion order.
    assert await root.sort([("n", 1)]).keys_range() == ["red", "blue", "green", "plain"]
    assert await root.sort([("n", -1)]).keys_range() == ["green", "blue", "red", "plain"]
    assert await root.sort([("color", 1)]).keys_range() == ["blue", "green", "red", "plain"]
    assert root.sort([("n", -1)]).sorting[0].to_json() == {"key": "n", "direction": -1}
    assert await root.search(Eq("color", "red")).get("blue") is None
    assert (await root.search(Eq("color", "red")).get("red")).metadata()["n"] == 1


async def test_unsupported_query(root):
    class Strange:
        pass

    with pytest.raises(UnsupportedQuery):
        root.search(Strange())


async def test_access_blob_filter(root):
    await make(root, "mine", access_blob={"user": "alice"})
    await make(root, "tagged", access_blob={"tags": ["beamline", "public"]})
    await make(root, "other", access_blob={"tags": ["secret"]})
    await make(root, "none")
    found = root.search(AccessBlobFilter("alice", ["public"]))
    assert await found.keys_range() == ["mine", "tagged"]
    assert await root.search(AccessBlobFilter(None, ["secret"])).keys_range() == ["other"]
    assert await root.search(AccessBlobFilter(None, [])).keys_range() == []
    assert (await root.lookup_adapter(["mine"])).access_blob == {"user": "alice"}


async def test_distinct(root):
    await _searchable(root)
    result = await root.get_distinct(
        ["color", "tags"], structure_families=True, specs=True, counts=True
    )
    assert result["metadata"]["color"] == [
        {"value": "red", "count": 1},
        {"value": "blue", "count": 1},
        {"value": "green", "count": 1},
    ]
    assert result["metadata"]["tags"] == [
        {"value": ["a", "b"], "count": 1},
        {"value": ["b"], "count": 1},
    ]
    assert result["structure_families"] == [
        {"value": "container", "count": 3},
        {"value": "array", "count": 1},
    ]
    assert {"value": [{"name": "s1", "version": None}], "count": 1} in result["specs"]
    narrowed = await root.search(Eq("color", "red")).get_distinct(["color"], False, False, False)
    assert narrowed == {
        "metadata": {"color": [{"value": "red"}]},
        "structure_families": None,
        "specs": None,
    }


async def test_filter_applies_predicate_lazily(root):
    for i in range(250):
        await make(root, f"k{i:03}", metadata={"i": i})
    seen = []

    def every_third(key, child):
        seen.append(key)
        return child.metadata()["i"] % 3 == 0

    visible = root.filter(every_third)
    assert await visible.keys_range(0, 2) == ["k000", "k003"]
    assert len(seen) == 7  # evaluated only as far as needed, not over the whole container
    assert await visible.count() == 84
    assert [k for k, _ in await visible.items_range(80, 10)] == ["k240", "k243", "k246", "k249"]
    assert await visible.get("k001") is None
    assert await visible.zarr_member_keys(1, 1) == ["k003"]
    narrowed = visible.search(Comparison("lt", "i", 10))
    assert await narrowed.keys_range() == ["k000", "k003", "k006", "k009"]
    distinct = await narrowed.get_distinct(["i"], False, False, True)
    assert [d["value"] for d in distinct["metadata"]["i"]] == [0, 3, 6, 9]


# --- writes --------------------------------------------------------------------------------------


async def test_write_array_and_blocks_pass_chunks_through(root):
    data = numpy.random.default_rng(3).random((7, 9))
    array = await make(root, "a", "array", sources=[array_source(data, chunks=((4, 3), (5, 4)))])
    assert isinstance(array, WritableArray)
    await array.write(data)
    block = numpy.full((3, 4), -1.0)
    await array.write_block(block, (1, 1))
    expected = data.copy()
    expected[4:, 5:] = -1.0
    reread = await root.lookup_adapter(["a"])
    assert numpy.array_equal(reread.read(), expected)
    assert numpy.array_equal(reread.read_block((1, 1)), block)
    assert reread.passes_chunks_through
    meta = await reread.to_zarr_meta(ZarrOptions())
    assert meta.chunk_shape == (4, 5)
    directory = path_from_uri(reread.data_sources()[0].assets[0].data_uri)
    for i in range(2):
        for j in range(2):
            stored = (directory / "c" / str(i) / str(j)).read_bytes()
            assert await reread.to_zarr_chunk((i, j), meta) == stored
    assert numpy.array_equal(meta.decode_chunk(stored)[:3, :4], block)


async def test_write_casts_only_safely(root):
    array = await make(root, "a", "array", sources=[array_source(numpy.zeros(4, "float64"))])
    await array.write(numpy.arange(4, dtype="int16"))  # int16 -> float64 is safe
    assert array.read().tolist() == [0.0, 1.0, 2.0, 3.0]
    assert array.time_updated >= array.time_created


async def test_table_partitions(root):
    frame = pandas.DataFrame({"a": [1, 2, 3, 4], "b": ["w", "x", "y", "z"]})
    table = await make(root, "t", "table", sources=[table_source(frame, 2)])
    await table.write_partition(frame.iloc[:2], 0)
    await table.write_partition(frame.iloc[2:], 1)
    await table.append_partition(pandas.DataFrame({"a": [5], "b": ["v"]}), 1)
    reread = await root.lookup_adapter(["t"])
    assert reread.read_partition(1)["a"].tolist() == [3, 4, 5]
    assert reread.read()["b"].tolist() == ["w", "x", "y", "z", "v"]
    assert reread.read(fields=["a"]).columns.tolist() == ["a"]
    column = await root.lookup_adapter(["t", "a"])
    meta = await column.to_zarr_meta(ZarrOptions())
    assert meta.shape == (5,)
    await table.write(pandas.DataFrame({"a": [9, 8, 7], "b": ["p", "q", "r"]}))
    assert (await root.lookup_adapter(["t"])).read()["a"].tolist() == [9, 8, 7]
    with pytest.raises(BadRequest):
        await table.write_partition(frame, 2)
    with pytest.raises(BadRequest):
        await table.write_partition(pandas.DataFrame({"a": [1]}), 0)
    with pytest.raises(BadRequest):
        await table.append_partition(pandas.DataFrame({"a": ["text"], "b": ["x"]}), 0)


async def test_empty_table_partition_reads_empty(root):
    frame = pandas.DataFrame({"a": [1.5]})
    table = await make(root, "t", "table", sources=[table_source(frame, 2)])
    assert len(table.read_partition(0)) == 0
    await table.write_partition(frame, 1)
    assert table.read()["a"].tolist() == [1.5]


async def test_sparse_writes(root):
    coo = await make(root, "s", "sparse", sources=[sparse_source((6, 4), ((3, 3), (2, 2)))])
    coords = numpy.array([[0, 4, 5], [1, 0, 3]])
    await coo.write(coords, numpy.array([1.0, 2.0, 3.0]))
    dense = numpy.zeros((6, 4))
    dense[0, 1], dense[4, 0], dense[5, 3] = 1.0, 2.0, 3.0
    assert numpy.array_equal((await root.lookup_adapter(["s"])).read().todense(), dense)
    await coo.write_block(numpy.array([[0], [0]]), numpy.array([9.0]), (1, 1))  # block-local
    dense[3, 2] = 9.0
    dense[5, 3] = 0.0  # the block was replaced whole
    assert numpy.array_equal(coo.read().todense(), dense)
    assert numpy.array_equal(coo.read_block((1, 1)).todense(), dense[3:, 2:])
    with pytest.raises(InvalidSlice):
        await coo.write_block(numpy.array([[3], [0]]), numpy.array([1.0]), (0, 0))
    with pytest.raises(InvalidSlice):
        await coo.write_block(numpy.array([[0], [0]]), numpy.array([1.0]), (2, 0))


async def test_concurrent_block_writes(root):
    shape, chunks = (40, 30), ((4,) * 10, (10,) * 3)
    array = await make(
        root, "a", "array", sources=[array_source(numpy.zeros(shape, "int64"), chunks)]
    )
    expected = numpy.arange(1200, dtype="int64").reshape(shape)

    async def write(i, j):
        region = expected[i * 4 : (i + 1) * 4, j * 10 : (j + 1) * 10]
        await array.write_block(region, (i, j))

    await asyncio.gather(*(write(i, j) for i in range(10) for j in range(3)))
    assert numpy.array_equal((await root.lookup_adapter(["a"])).read(), expected)


async def test_concurrent_overlapping_writes(root):
    # Irregular client chunks stored regular: two blocks share a stored chunk, so each write
    # reads, modifies and writes it; the lock keeps every update.
    array = await make(root, "a", "array", sources=[array_source(numpy.zeros(12), ((3, 6, 3),))])
    assert array.structure().chunks == ((6, 6),)
    await asyncio.gather(*(array.write_block(numpy.full(6, i + 1.0), (i,)) for i in range(2)))
    assert array.read().tolist() == [1.0] * 6 + [2.0] * 6


# --- history and deletion --------------------------------------------------------------------------


async def test_replace_metadata_and_revisions(root):
    node = await make(root, "n", metadata={"v": 1}, specs=["a"])
    await node.replace_metadata(metadata={"v": 2})
    await node.replace_metadata(specs=["b"], access_blob={"tags": ["t"]})
    await node.replace_metadata(metadata={"v": 3}, drop_revision=True)
    reread = await root.lookup_adapter(["n"])
    assert reread.metadata() == {"v": 3} and reread.specs == [Spec("b")]
    assert reread.access_blob == {"tags": ["t"]}
    revisions, count = await reread.revisions()
    assert count == 2
    assert [r["revision_number"] for r in revisions] == [1, 2]
    assert revisions[0]["attributes"]["metadata"] == {"v": 1}
    assert revisions[1]["attributes"]["specs"] == [{"name": "a", "version": None}]
    assert (await reread.revisions(1, 5))[0][0]["revision_number"] == 2
    await reread.delete_revision(1)
    assert (await reread.revisions())[1] == 1
    with pytest.raises(NotFound):
        await reread.delete_revision(1)
    with pytest.raises(BadRequest):
        await reread.replace_metadata(specs=["x", "x"])


async def test_delete(root, storage):
    group = await make(root, "g")
    inner = await make(group, "inner")
    array = await make(inner, "a", "array", sources=[array_source(numpy.ones(3))])
    await array.write(numpy.ones(3))
    await make(root, "g2")  # a sibling whose name starts like the deleted one
    await make(await root.lookup_adapter(["g2"]), "x")
    with pytest.raises(Conflict):
        await group.delete()
    with pytest.raises(WouldDeleteData):
        await group.delete(recursive=True)
    assert len(list(storage.iterdir())) == 1
    await group.delete(recursive=True, external_only=False)
    assert list(storage.iterdir()) == []
    assert await root.keys_range() == ["g2"]
    assert await (await root.lookup_adapter(["g2"])).keys_range() == ["x"]
    _, counts = await snapshot(root, storage)
    assert {name: counts[name] for name in TABLE_NAMES if name != "structures"} == {
        "nodes": 3,  # the root's row and g2, x
        "nodes_closure": 6,  # each node with itself and with each ancestor
        "data_sources": 0,
        "assets": 0,
        "data_source_asset_association": 0,
        "revisions": 0,
    }
    empty = await make(root, "empty")
    await empty.delete()  # nothing managed: allowed with the defaults
    with pytest.raises(NoSuchEntry):
        await root.lookup_adapter(["g", "inner"])


# --- adapters looked up before another writer changed the node -----------------------------------


async def _stale(root, *path):
    """The node at ``path`` as a request that looked it up earlier holds it."""
    root.catalog.forget_lookups()
    return await root.lookup_adapter(list(path))


async def test_stale_writers_of_a_deleted_node_get_404_and_leave_no_storage(root, storage):
    group = await make(root, "g")
    await make(group, "a", "array", sources=[array_source(numpy.ones(3))])
    stale_group, stale_array = await _stale(root, "g"), await _stale(root, "g", "a")
    deleter = await _stale(root, "g")
    await deleter.delete(recursive=True, external_only=False)
    assert list(storage.iterdir()) == []
    with pytest.raises(NoSuchEntry):
        await stale_array.write(numpy.zeros(3))  # not into the deleted node's place
    with pytest.raises(NoSuchEntry):
        await stale_array.patch(numpy.zeros(1), offset=(3,), extend=True)
    with pytest.raises(NoSuchEntry):
        await make(stale_group, "b", "array", sources=[array_source(numpy.ones(2))])
    with pytest.raises(NoSuchEntry):
        await stale_group.delete(recursive=True, external_only=False)  # deleted once only
    assert list(storage.iterdir()) == []
    _, counts = await snapshot(root, storage)
    assert counts["nodes"] == 1 and counts["data_sources"] == 0


async def test_a_stale_node_is_not_another_node_of_its_name(root, storage):
    """SQLite reuses the id of a deleted row: a node made again under the same name may get
    it, with other storage; a writer that looked up the first one must not write there."""
    await make(root, "a", "array", sources=[array_source(numpy.ones(3))])
    stale = await _stale(root, "a")
    await (await _stale(root, "a")).delete(external_only=False)
    again = await make(root, "a", "array", sources=[array_source(numpy.ones(3))])
    await again.write(numpy.full(3, 2.0))
    with pytest.raises(NoSuchEntry):
        await stale.write(numpy.zeros(3))
    assert (await _stale(root, "a")).read().tolist() == [2.0, 2.0, 2.0]


async def test_an_update_in_turn_sees_what_another_writer_stored(root):
    await make(root, "m", metadata={"n": 0})
    first, second = await _stale(root, "m"), await _stale(root, "m")
    await first.replace_metadata({"n": 1, "by": "first"})
    assert second.metadata() == {"n": 0}  # as it was looked up
    async with second.updating():
        assert second.metadata() == {"n": 1, "by": "first"}
        await second.replace_metadata({**second.metadata(), "n": 2})
    assert (await _stale(root, "m")).metadata() == {"n": 2, "by": "first"}
    await (await _stale(root, "m")).delete()
    with pytest.raises(NoSuchEntry):
        async with second.updating():
            pass


# --- failures leave nothing behind ----------------------------------------------------------------


async def _array_node(root):
    data = numpy.arange(24.0).reshape(4, 6)
    array = await make(root, "a", "array", sources=[array_source(data, chunks=((2, 2), (3, 3)))])
    await array.write(data)
    return array


def _disk_full_on_second_file(monkeypatch):
    calls = []
    original = files_module.write_temp_file

    def failing(path, data):
        calls.append(path)
        if len(calls) >= 2:
            raise OSError(errno.ENOSPC, "No space left on device")
        original(path, data)

    monkeypatch.setattr(files_module, "write_temp_file", failing)


FAILURES = {
    "bad shape": (lambda a, m: a.write(numpy.zeros((4, 5))), BadRequest),
    "bad dtype": (lambda a, m: a.write(numpy.zeros((4, 6), "complex128")), BadRequest),
    "bad block shape": (lambda a, m: a.write_block(numpy.zeros((2, 2)), (0, 0)), BadRequest),
    "wrong block index": (lambda a, m: a.write_block(numpy.zeros((2, 3)), (2, 0)), InvalidSlice),
    "wrong block rank": (lambda a, m: a.write_block(numpy.zeros((2, 3)), (0,)), InvalidSlice),
    "disk full": (
        lambda a, m: (_disk_full_on_second_file(m), a.write(numpy.ones((4, 6))))[1],
        OSError,
    ),
}


@pytest.mark.parametrize("case", list(FAILURES))
async def test_failed_writes_change_nothing(root, storage, monkeypatch, case):
    array = await _array_node(root)
    before = await snapshot(root, storage)
    values = array.read()
    action, error = FAILURES[case]
    with pytest.raises(error):
        await action(array, monkeypatch)
    assert await snapshot(root, storage) == before
    assert numpy.array_equal(array.read(), values)


CREATE_FAILURES = {
    "duplicate key": ("a", Conflict),
    "slash": ("a/b", InvalidKey),
    "dot dot": ("..", InvalidKey),
    "control character": ("\x00x", InvalidKey),
    "empty": ("", InvalidKey),
    "zarr document name": ("zarr.json", InvalidKey),
}


@pytest.mark.parametrize("case", list(CREATE_FAILURES))
async def test_failed_creates_change_nothing(root, storage, case):
    await _array_node(root)
    before = await snapshot(root, storage)
    key, error = CREATE_FAILURES[case]
    with pytest.raises(error):
        await make(root, key, "array", sources=[array_source(numpy.zeros(3))])
    assert await snapshot(root, storage) == before


async def test_storage_failure_during_create_rolls_back(root, storage, monkeypatch):
    await make(root, "existing")
    before = await snapshot(root, storage)

    def broken(node_storage, structure):
        node_storage.create()
        node_storage.put("zarr.json", b"{}")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr("tiled.catalog.storage.create_zarr_array", broken)
    with pytest.raises(OSError):
        await make(root, "new", "array", sources=[array_source(numpy.zeros(3))])
    assert await snapshot(root, storage) == before


async def test_invalid_node_requests(root):
    with pytest.raises(BadRequest):
        await make(root, "c", sources=[array_source(numpy.zeros(3))])  # containers have none
    with pytest.raises(BadRequest):
        await make(root, "a", "array")  # arrays need one
    external = DataSource("array", None, mimetype="application/x-zarr",
                          assets=[Asset("file://localhost/tmp/x", True)])  # fmt: skip
    with pytest.raises(BadRequest):
        await make(root, "r", "array", sources=[external])  # assets need register=True
    with pytest.raises(BadRequest):
        await make(root, "x", "array", sources=[table_source(pandas.DataFrame({"a": [1]}))])
    generated = await make(root, None)
    assert len(generated.key) == 32 and await root.keys_range() == [generated.key]


# --- registration of external files -------------------------------------------------------------


async def test_register_external_zarr_and_parquet(root, storage):
    import zarr

    external = storage.parent / "external"
    external.mkdir()
    stored = zarr.create_array(str(external / "arr.zarr"), shape=(5,), chunks=(2,), dtype="i4")
    stored[:] = numpy.arange(5)
    frame = pandas.DataFrame({"x": [1, 2], "y": [0.5, 1.5]})
    frame.to_parquet(external / "t.parquet")
    zarr_source = DataSource(
        "array", None, mimetype="application/x-zarr",
        assets=[Asset(f"file://localhost{external / 'arr.zarr'}", True, "data_uri")],
    )  # fmt: skip
    node = await make(root, "arr", "array", sources=[zarr_source], register=True)
    assert node.read().tolist() == [0, 1, 2, 3, 4]
    assert node.data_sources()[0].management == Management.external
    assert not isinstance(node, WritableArray)
    parquet_source = DataSource(
        "table", None, mimetype="application/x-parquet",
        assets=[Asset(f"file://localhost{external / 't.parquet'}", False, "data_uris", num=0)],
    )  # fmt: skip
    table = await make(root, "t", "table", sources=[parquet_source], register=True)
    pandas.testing.assert_frame_equal((await root.lookup_adapter(["t"])).read(), frame)
    assert table.structure().columns == ["x", "y"]
    await (await root.lookup_adapter(["arr"])).delete()  # external: deleting only unregisters
    assert (external / "arr.zarr" / "zarr.json").exists()
    outside = DataSource(
        "array", None, mimetype="application/x-zarr",
        assets=[Asset(f"file://localhost{storage.parent}", True, "data_uri")],
    )  # fmt: skip
    with pytest.raises(Exception, match="outside the readable storage"):
        await make(root, "bad", "array", sources=[outside], register=True)


# --- database lifecycle ---------------------------------------------------------------------------


async def test_persistence(database_uri, storage):
    tree = from_uri(database_uri, writable_storage=storage, init_if_not_exists=True)
    array = await make(tree, "a", "array", {"m": 1}, sources=[array_source(numpy.zeros(4))])
    await array.write(numpy.arange(4.0))
    await tree.shutdown()
    reopened = from_uri(database_uri, writable_storage=f"file://localhost{storage}")
    try:
        found = await reopened.lookup_adapter(["a"])
        assert found.read().tolist() == [0.0, 1.0, 2.0, 3.0] and found.metadata() == {"m": 1}
    finally:
        await reopened.shutdown()


async def test_missing_schema_is_refused(database_uri):
    tree = from_uri(database_uri)
    try:
        with pytest.raises(DatabaseNotInitialized, match="tiled catalog init"):
            await tree.count()
    finally:
        await tree.shutdown()


async def test_initialize_then_upgrade_is_idempotent(database_uri, storage):
    await initialize_database(database_uri)
    await initialize_database(database_uri)
    await upgrade_database(database_uri)
    tree = from_uri(database_uri, writable_storage=storage)
    try:
        await make(tree, "x")
        assert await tree.keys_range() == ["x"]
    finally:
        await tree.shutdown()


POSTGRESQL_ONLY_INDEXES = {"ix_nodes_metadata", "metadata_tsvector_search"}


def _schema_differences(connection) -> list:
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    def not_full_text_index(obj, name, type_, reflected, compare_to) -> bool:
        # SQLite's FTS5 table and its shadow tables are made by ddl.py, not by the models; the
        # GIN indexes exist on PostgreSQL only.
        if type_ == "table" and name.startswith("metadata_fts5"):
            return False
        return not (type_ == "index" and sqlite and name in POSTGRESQL_ONLY_INDEXES)

    sqlite = connection.dialect.name == "sqlite"

    context = MigrationContext.configure(connection, opts={"include_object": not_full_text_index})
    return compare_metadata(context, metadata_obj)


async def test_initialized_schema_matches_the_models(database_uri, storage):
    await initialize_database(database_uri)
    tree = from_uri(database_uri, writable_storage=storage)
    try:
        async with tree.catalog.connect() as connection:
            assert await connection.run_sync(_schema_differences) == []
        array = await make(tree, "a", "array", sources=[array_source(numpy.ones(2))])
        await array.write(numpy.ones(2))
        await array.replace_metadata({"x": 1})
        assert (await tree.lookup_adapter(["a"])).metadata() == {"x": 1}
    finally:
        await tree.shutdown()
    await upgrade_database(database_uri)  # at the head already: nothing to do


async def test_upgrading_an_empty_database_is_refused_clearly(database_uri):
    # Migrations start at upstream's first revision, which predates every 0.2.x release.
    with pytest.raises(MigrationRefused, match="upgrade-database"):
        await upgrade_database(database_uri)


async def test_in_memory(tmp_path):
    tree = in_memory(writable_storage=tmp_path)
    array = await make(tree, "a", "array", sources=[array_source(numpy.arange(3))])
    await array.write(numpy.arange(3))
    assert (await tree.lookup_adapter(["a"])).read().tolist() == [0, 1, 2]
    await tree.shutdown()


async def test_table_index(root):
    named = pandas.DataFrame({"a": [1, 2, 3]}, index=pandas.Index([10, 20, 30], name="t"))
    table = await make(root, "named", "table", sources=[table_source(named, 2)])
    await table.write(named)
    pandas.testing.assert_frame_equal((await root.lookup_adapter(["named"])).read(), named)
    plain = pandas.DataFrame({"a": [1, 2, 3]})
    table = await make(root, "plain", "table", sources=[table_source(plain, 2)])
    await table.write(plain)
    assert (await root.lookup_adapter(["plain"])).read().index.tolist() == [0, 1, 2]


async def test_xarray_dataset_zarr_attributes(root):
    dataset = await make(root, "ds", metadata={"attrs": {"title": "T"}}, specs=["xarray_dataset"])
    for key, spec in [("lat", "xarray_coord"), ("temp", "xarray_data_var")]:
        await make(dataset, key, "array", specs=[spec], sources=[array_source(numpy.zeros(2))])
    meta = await (await root.lookup_adapter(["ds"])).to_zarr_meta(ZarrOptions())
    assert meta.attributes == {"title": "T", "coordinates": "lat"}


async def test_failed_table_and_sparse_writes_change_nothing(root, storage, monkeypatch):
    frame = pandas.DataFrame({"a": [1, 2, 3, 4]})
    table = await make(root, "t", "table", sources=[table_source(frame, 2)])
    await table.write(frame)
    coo = await make(root, "s", "sparse", sources=[sparse_source((4, 4), ((2, 2), (4,)))])
    await coo.write(numpy.array([[0, 3], [0, 3]]), numpy.array([1.0, 2.0]))
    before = await snapshot(root, storage)
    _disk_full_on_second_file(monkeypatch)
    with pytest.raises(OSError):
        await table.write(pandas.DataFrame({"a": [5, 6, 7, 8]}))  # two partition files
    with pytest.raises(OSError):
        await coo.write(numpy.array([[0, 1, 3], [0, 1, 3]]), numpy.array([1.0, 2.0, 3.0]))
    with pytest.raises(BadRequest):
        await coo.write(numpy.array([[0], [0]]), numpy.array([1 + 2j]))  # unsafe cast
    assert await snapshot(root, storage) == before
    assert table.read()["a"].tolist() == [1, 2, 3, 4]


def test_uri_forms(tmp_path):
    from tiled.catalog import async_url

    assert async_url(tmp_path / "x.db").drivername == "sqlite+aiosqlite"
    assert async_url("sqlite:///x.db").drivername == "sqlite+aiosqlite"
    assert async_url("sqlite+aiosqlite:///x.db").database == "x.db"
    assert async_url("postgresql://u@h/db").drivername == "postgresql+asyncpg"
    assert async_url("postgresql+asyncpg://u@h/db").drivername == "postgresql+asyncpg"
    with pytest.raises(ValueError):
        async_url("mysql://u@h/db")


async def test_deep_paths_resolve_and_miss_cleanly(root):
    # More segments than one SQL statement may join (SQLite: 64 tables) are resolved in stretches.
    node = root
    for _ in range(70):
        node = await make(node, "d")
    found = await root.lookup_adapter(["d"] * 70)
    assert found.segments == tuple(["d"] * 70)
    with pytest.raises(NoSuchEntry):
        await root.lookup_adapter(["d"] * 69 + ["missing"])
    with pytest.raises(NoSuchEntry):
        await root.lookup_adapter(["d"] * 100)


@pytest.mark.parametrize(
    "blob",
    [
        {"tags": 5},
        {"tags": "abc"},
        {"tags": ["user:bob"]},
        {"owner": "bob"},
        ["tags"],
        {"tags": ["x" * 256]},
        {"user": 7},
    ],
)
async def test_access_blobs_tags_cannot_store_are_refused(root, storage, blob):
    node = await make(root, "m", access_blob={"tags": ["a"], "user": "alice"})
    before = await snapshot(root, storage)
    with pytest.raises(BadRequest):
        await make(root, "n", access_blob=blob)
    with pytest.raises(BadRequest):
        await node.replace_metadata(access_blob=blob)
    assert (await root.lookup_adapter(["m"])).access_blob == {"tags": ["a"], "user": "alice"}
    assert await snapshot(root, storage) == before  # nothing changed


async def test_assets_given_twice_are_refused(root, tmp_path):
    directory = tmp_path / "external"
    directory.mkdir(exist_ok=True)
    uri = f"file://localhost{directory / 'a.parquet'}"
    twice = DataSource(
        structure_family="table", structure=None, mimetype="application/x-parquet",
        assets=[Asset(uri, False, "data_uris", num=0), Asset(uri, False, "data_uris", num=0)],
        management=Management.external,
    )  # fmt: skip
    with pytest.raises(BadRequest, match="asset parameter"):
        await make(root, "t", "table", sources=[twice], register=True)


async def test_bulk_registration_refuses_each_bad_node_alone(root, storage):
    """``register_children`` stores a batch in one transaction; every refusal (a key taken,
    a key twice, files outside the readable storage, a declared structure the files do not
    have) is that node's alone, and nodes sharing a file share its asset row."""
    external = storage.parent / "external"
    external.mkdir()
    for name, values in (("a", numpy.arange(4)), ("b", numpy.ones((2, 3)))):
        numpy.save(external / f"{name}.npy", values)
    numpy.save(storage.parent / "secret.npy", numpy.zeros(2))

    def npy(name, shape=None, directory=external):
        structure = None
        if shape is not None:
            structure = ArrayStructure.from_array(numpy.zeros(shape, dtype="int64")).to_json()
        source = {
            "structure_family": "array", "structure": structure,
            "mimetype": "application/x-npy", "management": "external",
            "assets": [{"data_uri": f"file://localhost{directory / name}.npy",
                        "is_directory": False, "parameter": "data_uri", "num": None}],
        }  # fmt: skip
        return {"structure_family": "array", "metadata": {"file": name}, "data_sources": [source]}

    await make(root, "taken")
    children = [
        {"key": "a", **npy("a", (4,))},
        {"key": "also_a", **npy("a")},  # the same file as "a": one asset
        {"key": "a", **npy("b")},  # the key twice in one batch
        {"key": "taken", **npy("b")},  # a key the catalog has
        {"key": "wrong", **npy("b", (7,))},  # declared shape not the file's
        {"key": "secret", **npy("secret", directory=storage.parent)},  # outside readable
        {"key": "bad/key", **npy("b")},
        {"key": "b", **npy("b")},
    ]
    outcomes = await root.register_children(children)
    assert [type(o).__name__ for o in outcomes] == [
        "NoneType", "NoneType", "Conflict", "Conflict", "BadRequest", "Forbidden",
        "InvalidKey", "NoneType",
    ]  # fmt: skip
    assert sorted(key for key, _ in await root.items_range()) == ["a", "also_a", "b", "taken"]
    a, also_a = await root.lookup_adapter(["a"]), await root.lookup_adapter(["also_a"])
    assert a.read().tolist() == also_a.read().tolist() == [0, 1, 2, 3]
    assert a.data_sources()[0].assets[0].id == also_a.data_sources()[0].assets[0].id
    assert (await root.lookup_adapter(["b"])).structure().shape == (2, 3)
    assert (await root.lookup_adapter(["b"])).metadata() == {"file": "b"}
    assert await root.count() == 4
    # files_read trusts a structure the caller has just read, never the readable storage.
    trusted = await root.register_children(
        [{"key": "c", **npy("b", (2, 3))},
         {"key": "secret", **npy("secret", (2,), directory=storage.parent)}],
        files_read=True,
    )  # fmt: skip
    assert [type(o).__name__ for o in trusted] == ["NoneType", "Forbidden"]


async def test_a_node_the_database_cannot_hold_refuses_only_itself(root, storage):
    from tiled.catalog.directory import CatalogTarget
    from tiled.client.register import RegistrationRefused

    external = storage.parent / "external"
    external.mkdir()
    numpy.save(external / "a.npy", numpy.arange(3))
    source = {
        "structure_family": "array", "mimetype": "application/x-npy", "management": "external",
        "assets": [{"data_uri": f"file://localhost{external / 'a.npy'}", "is_directory": False,
                    "parameter": "data_uri", "num": None}],
    }  # fmt: skip

    def node(metadata):
        return {"structure_family": "array", "metadata": metadata, "data_sources": [source]}

    # A value no JSON column takes (an attribute read from a file, say), beside a good node.
    outcomes = await CatalogTarget(root).register_many(
        [], [("good", node({"n": 1})), ("bad", node({"v": object()}))]
    )
    assert outcomes[0] is None
    assert isinstance(outcomes[1], RegistrationRefused)
    assert sorted(key for key, _ in await root.items_range()) == ["good"]


async def test_a_search_by_regex_has_its_time_each_time_it_runs(root, monkeypatch):
    """A search is built once and then counted and paged by separate statements: each
    statement gets the whole allowance (it was spent from when the search was built, so a
    search that waited for its connection failed on a trivial pattern)."""
    import tiled.queries

    monkeypatch.setattr(tiled.queries, "REGEX_QUERY_SECONDS", 0.3)
    await _searchable(root)
    found = root.search(Regex("color", "^gr"))
    for _ in range(3):
        await asyncio.sleep(0.4)
        assert await found.keys_range() == ["green"]
        assert await found.count() == 1
