"""In-memory sparse (COO) and table adapters: reads, partitioning and their zarr hooks."""

from __future__ import annotations

import itertools
from collections.abc import Mapping

import dask.dataframe
import numpy
import pandas
import pytest
import sparse

from tiled.adapters.base import SparseAdapterBase, TableAdapterBase
from tiled.adapters.dataframe import DataFrameAdapter
from tiled.adapters.sparse import COOAdapter, SparseAdapter
from tiled.adapters.table import TableAdapter, TableColumnAdapter
from tiled.errors import (
    BadRequest,
    ChunkOutOfRange,
    InvalidSlice,
    InvalidStructure,
    NoSuchEntry,
)
from tiled.ndslice import NDSlice
from tiled.structures.core import Spec
from tiled.structures.table import TableStructure
from tiled.zarr_format.model import ZarrOptions, is_variable_length_string

# ---------------------------------------------------------------------------------- sparse


def _dense(shape=(37, 23), density=0.15, seed=0) -> numpy.ndarray:
    rng = numpy.random.default_rng(seed)
    values = rng.integers(1, 100, size=shape).astype("float64")
    return numpy.where(rng.random(shape) < density, values, 0.0)


def _global_blocks(dense: numpy.ndarray, chunks) -> dict:
    """Blocks of ``dense`` in global coordinates, skipping blocks with no entries."""
    starts = [numpy.cumsum((0,) + c[:-1]) for c in chunks]
    blocks = {}
    for key in itertools.product(*(range(len(c)) for c in chunks)):
        region = tuple(
            slice(s[i], s[i] + c[i]) for s, c, i in zip(starts, chunks, key, strict=True)
        )
        local = sparse.COO.from_numpy(dense[region])
        if local.nnz:
            origin = numpy.array([r.start for r in region])[:, None]
            blocks[key] = (local.coords + origin, local.data)
    return blocks


CHUNKS = ((10, 10, 10, 7), (8, 8, 7))


@pytest.fixture
def dense():
    return _dense()


@pytest.fixture
def blocked(dense):
    return COOAdapter.from_global_ref(_global_blocks(dense, CHUNKS), dense.shape, CHUNKS)


REGIONS = [
    (),
    (slice(3, 29),),
    (slice(12, 15), slice(5, 20)),
    (4,),
    (slice(None), 9),
    (-1, -1),
    (slice(None, None, 3), slice(20, 2, -4)),
    (Ellipsis, slice(7, 8)),
    (slice(30, 50), slice(0, 0)),
]


@pytest.mark.parametrize("region", REGIONS)
def test_sparse_read_equals_dense(dense, blocked, region):
    for adapter in (blocked, COOAdapter.from_coo(sparse.COO.from_numpy(dense))):
        result = adapter.read(NDSlice(*region))
        assert isinstance(result, sparse.COO)
        assert result.shape == dense[region].shape
        numpy.testing.assert_array_equal(result.todense(), dense[region])


class _RecordingBlocks(Mapping):
    """A block mapping that records which blocks' data were fetched."""

    def __init__(self, blocks):
        self._blocks = blocks
        self.fetched = []

    def __getitem__(self, key):
        block = self._blocks[key]
        self.fetched.append(key)
        return block

    def __iter__(self):
        return iter(self._blocks)

    def __len__(self):
        return len(self._blocks)


def test_sparse_read_touches_only_intersecting_blocks(dense, blocked):
    recording = _RecordingBlocks(blocked._blocks)
    adapter = COOAdapter(recording, blocked.structure())
    assert {(0, 1), (0, 2), (1, 1), (1, 2)} <= set(recording)
    result = adapter.read(NDSlice(slice(12, 18), slice(9, 15)))
    numpy.testing.assert_array_equal(result.todense(), dense[12:18, 9:15])
    assert recording.fetched == [(1, 1)]
    recording.fetched.clear()
    result = adapter.read(NDSlice(slice(8, 12), slice(15, 17)))  # straddles four blocks
    numpy.testing.assert_array_equal(result.todense(), dense[8:12, 15:17])
    assert sorted(recording.fetched) == [(0, 1), (0, 2), (1, 1), (1, 2)]
    recording.fetched.clear()
    adapter.read_block((2, 0))
    assert recording.fetched == [(2, 0)]


def test_sparse_large_grid_with_few_blocks():
    shape, chunks = (1000, 900), ((10,) * 100, (9,) * 100)
    blocks = {
        (0, 0): (numpy.array([[1], [2]]), numpy.array([1.0])),
        (50, 7): (numpy.array([[505], [70]]), numpy.array([2.0])),
        (99, 99): (numpy.array([[999], [899]]), numpy.array([3.0])),
    }
    adapter = COOAdapter.from_global_ref(blocks, shape, chunks)
    recording = _RecordingBlocks(adapter._blocks)
    adapter = COOAdapter(recording, adapter.structure())
    whole = adapter.read()  # ten thousand grid cells, three stored blocks
    assert whole.shape == shape
    assert sorted(zip(*whole.coords.tolist(), strict=True)) == [(1, 2), (505, 70), (999, 899)]
    assert sorted(recording.fetched) == [(0, 0), (50, 7), (99, 99)]
    recording.fetched.clear()
    corner = adapter.read(NDSlice(slice(500, 510), slice(60, 80)))
    assert corner.todense()[5, 10] == 2.0 and corner.nnz == 1
    assert recording.fetched == [(50, 7)]


def test_from_global_ref_stores_block_local_coordinates(dense, blocked):
    assert blocked.structure().chunks == CHUNKS
    assert len(blocked._blocks) > 1
    for key, (coords, data) in blocked._blocks.items():
        sizes = [CHUNKS[d][i] for d, i in enumerate(key)]
        assert coords.min() >= 0
        assert all(coords[d].max() < sizes[d] for d in range(2))
        assert len(data) == coords.shape[1]


def test_read_block_equals_dense_block(dense, blocked):
    starts = [numpy.cumsum((0,) + c[:-1]) for c in CHUNKS]
    for i, j in itertools.product(range(4), range(3)):
        region = (
            slice(starts[0][i], starts[0][i] + CHUNKS[0][i]),
            slice(starts[1][j], starts[1][j] + CHUNKS[1][j]),
        )
        block = blocked.read_block((i, j))
        assert isinstance(block, sparse.COO)
        numpy.testing.assert_array_equal(block.todense(), dense[region])
    sliced = blocked.read_block((3, 2), NDSlice(slice(2, 5), 1))
    numpy.testing.assert_array_equal(sliced.todense(), dense[32:35, 17])


def test_read_block_outside_grid_is_invalid(blocked):
    with pytest.raises(InvalidSlice):
        blocked.read_block((4, 0))
    with pytest.raises(InvalidSlice):
        blocked.read_block((0,))


def test_read_out_of_range_index_is_invalid(blocked):
    with pytest.raises(InvalidSlice):
        blocked.read(NDSlice(37))
    with pytest.raises(InvalidSlice):
        blocked.read(NDSlice(0, 0, 0))


def test_from_arrays_is_one_block_of_matching_rank():
    coords = numpy.array([[0, 1, 2], [3, 0, 1], [1, 1, 4]], dtype="int32")
    data = numpy.array([1, 2, 3], dtype="uint16")
    adapter = COOAdapter.from_arrays(coords, data, (3, 4, 5), dims=("a", "b", "c"))
    assert list(adapter._blocks) == [(0, 0, 0)]
    structure = adapter.structure()
    assert structure.chunks == ((3,), (4,), (5,))
    assert structure.dims == ("a", "b", "c")
    assert structure.data_type.to_numpy_dtype() == numpy.dtype("uint16")
    assert structure.coord_data_type.to_numpy_dtype() == numpy.dtype("int32")
    expected = numpy.zeros((3, 4, 5), dtype="uint16")
    expected[tuple(coords)] = data
    numpy.testing.assert_array_equal(adapter.read().todense(), expected)


def test_from_coo_structure_uses_int64_coordinates(dense):
    adapter = COOAdapter.from_coo(sparse.COO.from_numpy(dense), dims=("y", "x"))
    structure = adapter.structure()
    assert structure.shape == dense.shape
    assert structure.chunks == ((37,), (23,))
    assert structure.coord_data_type.to_numpy_dtype() == numpy.dtype("int64")
    assert structure.data_type.to_numpy_dtype() == numpy.dtype("float64")
    assert SparseAdapter is COOAdapter
    assert isinstance(adapter, SparseAdapterBase)


def test_blocks_without_entries_read_as_zeros():
    blocks = {(1, 0): (numpy.array([[2, 3], [1, 0]]), numpy.array([5.0, 6.0]))}
    adapter = COOAdapter.from_global_ref(blocks, (4, 3), ((2, 2), (3,)))
    expected = numpy.zeros((4, 3))
    expected[2, 1], expected[3, 0] = 5.0, 6.0
    numpy.testing.assert_array_equal(adapter.read().todense(), expected)
    assert adapter.read_block((0, 0)).nnz == 0
    numpy.testing.assert_array_equal(adapter.read_block((1, 0)).todense(), expected[2:])


def test_from_global_ref_refuses_entries_outside_their_block():
    blocks = {(1, 0): (numpy.array([[0], [1]]), numpy.array([5.0]))}  # row 0 is in block 0
    with pytest.raises(InvalidStructure):
        COOAdapter.from_global_ref(blocks, (4, 3), ((2, 2), (3,)))


async def _all_chunks(adapter, options):
    meta = await adapter.to_zarr_meta(options)
    chunks = {}
    for coords in itertools.product(*(range(n) for n in meta.grid_shape)):
        chunks[coords] = meta.decode_chunk(await adapter.to_zarr_chunk(coords, meta))
    return meta, chunks


def _assert_chunks_match(meta, chunks, expected):
    for coords, chunk in chunks.items():
        region = meta.chunk_region(coords)
        extent = tuple(slice(0, r.stop - r.start) for r in region)
        numpy.testing.assert_array_equal(chunk[extent], expected[region])


async def test_sparse_zarr_chunks_equal_dense_data(dense, blocked):
    meta, chunks = await _all_chunks(blocked, ZarrOptions(chunk_budget_bytes=800))
    assert meta.shape == dense.shape
    assert meta.dtype == numpy.dtype("float64")
    assert meta.fill_value == 0
    # The budget forces chunks smaller than the array, with partial chunks at both edges.
    assert all(s % c for s, c in zip(meta.shape, meta.chunk_shape, strict=True))
    assert len(chunks) == numpy.prod(meta.grid_shape) > 1
    _assert_chunks_match(meta, chunks, dense)
    edge = chunks[tuple(n - 1 for n in meta.grid_shape)]
    assert edge.shape == meta.chunk_shape


async def test_sparse_zarr_chunk_outside_grid(blocked):
    meta = await blocked.to_zarr_meta(ZarrOptions(chunk_budget_bytes=800))
    with pytest.raises(ChunkOutOfRange):
        await blocked.to_zarr_chunk(meta.grid_shape, meta)


# ---------------------------------------------------------------------------------- tables


def _frame(nrows: int = 10) -> pandas.DataFrame:
    return pandas.DataFrame(
        {
            "x": numpy.arange(nrows, dtype="float64") / 2,
            "i": numpy.arange(nrows, dtype="uint8"),
            "s": [f"w{i}" * (i % 3 + 1) for i in range(nrows)],
            "t": pandas.date_range("2021-01-01", periods=nrows, freq="h"),
            "b": numpy.arange(nrows) % 2 == 0,
        }
    )


def _dask_lengths(df, **kwargs) -> list[int]:
    ddf = dask.dataframe.from_pandas(df, **kwargs)
    return [int(n) for n in ddf.map_partitions(len).compute()]


def _lengths(adapter) -> list[int]:
    return [len(adapter.read_partition(i)) for i in range(adapter.structure().npartitions)]


def test_from_pandas_splits_like_dask():
    big = pandas.DataFrame({"a": numpy.zeros(100_000)})
    adapter = TableAdapter.from_pandas(big, npartitions=5)
    assert adapter.structure().npartitions == 5
    assert _lengths(adapter) == [20_000] * 5
    for nrows, npartitions in [(10, 3), (11, 4), (7, 7), (3, 5), (1, 1)]:
        df = pandas.DataFrame({"a": numpy.arange(nrows)})
        split = _lengths(TableAdapter.from_pandas(df, npartitions=npartitions))
        assert split == _dask_lengths(df, npartitions=npartitions), (nrows, npartitions)


def test_from_pandas_duplicate_index_and_chunksize_like_dask():
    df = pandas.DataFrame({"a": numpy.arange(12)}, index=[0, 0, 0, 1, 1, 2, 3, 3, 3, 3, 4, 5])
    assert _lengths(TableAdapter.from_pandas(df, npartitions=3)) == _dask_lengths(df, npartitions=3)
    plain = pandas.DataFrame({"a": numpy.arange(10)})
    assert _lengths(TableAdapter.from_pandas(plain, chunksize=4)) == [4, 4, 2]
    assert _lengths(TableAdapter.from_pandas(plain, 2)) == [5, 5]  # dask's positional order
    with pytest.raises(ValueError):
        TableAdapter.from_pandas(plain, npartitions=0)


def test_from_pandas_sorts_an_unsorted_index():
    df = pandas.DataFrame({"a": [3, 1, 2]}, index=[3, 1, 2])
    adapter = TableAdapter.from_pandas(df, npartitions=2)
    assert adapter.read()["a"].tolist() == [1, 2, 3]


def test_table_structure_and_specs():
    df = _frame()
    adapter = TableAdapter.from_pandas(df, npartitions=3, metadata={"k": 1})
    structure = adapter.structure()
    assert structure.columns == ["x", "i", "s", "t", "b"]
    assert structure.npartitions == 3
    assert structure.arrow_schema_decoded.pandas_metadata is not None
    assert adapter.specs == [Spec("dataframe")]
    assert adapter.metadata() == {"k": 1}
    assert TableAdapter.from_pandas(df, specs=[]).specs == []
    assert DataFrameAdapter is TableAdapter
    assert isinstance(adapter, TableAdapterBase)


def test_table_read_fields_and_partitions():
    df = _frame()
    adapter = TableAdapter.from_pandas(df, npartitions=3)
    pandas.testing.assert_frame_equal(adapter.read(), df)
    pandas.testing.assert_frame_equal(adapter.read(["s", "x"]), df[["s", "x"]])
    pandas.testing.assert_frame_equal(adapter.read_partition(1), df.iloc[4:7])
    pandas.testing.assert_frame_equal(adapter.read_partition(2, ["t"]), df[["t"]].iloc[7:])


def test_table_read_errors():
    adapter = TableAdapter.from_pandas(_frame(), npartitions=2)
    with pytest.raises(BadRequest, match="No such field"):
        adapter.read(["x", "nope"])
    with pytest.raises(BadRequest, match="No such field"):
        adapter.read_partition(0, ["nope"])
    for partition in (2, -1):
        with pytest.raises(BadRequest, match="Partition out of range"):
            adapter.read_partition(partition)


def test_from_dict_and_from_dask_dataframe():
    df = _frame(9)
    from_dict = TableAdapter.from_dict({c: df[c].to_numpy() for c in df}, npartitions=2)
    assert from_dict.structure().npartitions == 2
    pandas.testing.assert_frame_equal(from_dict.read(["x", "i"]), df[["x", "i"]])
    ddf = dask.dataframe.from_pandas(df, npartitions=3)
    adapter = TableAdapter.from_dask_dataframe(ddf, metadata={"m": 2})
    assert adapter.structure().npartitions == 3
    assert adapter.structure().columns == list(df.columns)
    assert adapter.metadata() == {"m": 2}
    pandas.testing.assert_frame_equal(adapter.read(["x", "t"]), df[["x", "t"]])
    pandas.testing.assert_frame_equal(adapter.read_partition(2, ["i"]), df[["i"]].iloc[6:])


def test_columns_are_column_adapters():
    adapter = TableAdapter.from_pandas(_frame(), npartitions=2)
    column = adapter["x"]
    assert isinstance(column, TableColumnAdapter)
    assert column.metadata() == {}
    assert column.specs == []
    assert adapter.get("x") is column
    assert adapter.get("missing") is None
    assert [name for name, _ in adapter.items()] == list(adapter.keys()) == list("xistb")
    with pytest.raises(KeyError):
        adapter["missing"]


async def test_zarr_group_members_are_columns():
    adapter = TableAdapter.from_pandas(_frame(), npartitions=2, metadata={"a": 1})
    group = await adapter.to_zarr_meta()
    assert dict(group.attributes) == {"a": 1}
    assert await adapter.zarr_member_keys() == list("xistb")
    assert await adapter.zarr_member_keys(offset=1, limit=2) == ["i", "s"]
    assert isinstance(await adapter.zarr_member("s"), TableColumnAdapter)
    with pytest.raises(NoSuchEntry):
        await adapter.zarr_member("nope")


async def test_column_zarr_meta_follows_partitions():
    df = pandas.DataFrame({"x": numpy.arange(100_000.0), "s": ["abc"] * 100_000})
    adapter = TableAdapter.from_pandas(df, npartitions=5)
    x_meta = await adapter["x"].to_zarr_meta()
    assert x_meta.shape == (100_000,)
    assert x_meta.chunk_shape == (20_000,)
    assert x_meta.dtype == numpy.dtype("float64")
    assert x_meta.dimension_names is None
    assert dict(x_meta.attributes) == {}
    s_meta = await adapter["s"].to_zarr_meta()
    assert is_variable_length_string(s_meta.dtype)
    assert s_meta.chunk_shape == (20_000,)


class _UnreadableFrame(pandas.DataFrame):
    """A partition whose column values cannot be reached; dtypes and length still work."""

    def __getitem__(self, key):
        raise AssertionError(f"column values were read: {key!r}")


async def test_column_zarr_meta_reads_no_values():
    df = _frame(12)
    partitions = [_UnreadableFrame(df.iloc[a : a + 4]) for a in (0, 4, 8)]
    adapter = TableAdapter(partitions, TableStructure.from_pandas(df, 3))
    for name, dtype in [("x", "float64"), ("i", "uint8"), ("t", "datetime64[us]"), ("b", "?")]:
        meta = await adapter[name].to_zarr_meta()
        assert (meta.shape, meta.chunk_shape, meta.dtype) == ((12,), (4,), numpy.dtype(dtype))
    assert is_variable_length_string((await adapter["s"].to_zarr_meta()).dtype)
    with pytest.raises(AssertionError, match="column values were read"):
        adapter["x"].read()


class _TrackedFrame(pandas.DataFrame):
    """A partition that logs its label each time column values are taken from it."""

    _metadata = ["label", "log"]

    def __getitem__(self, key):
        self.log.append(self.label)
        return super().__getitem__(key)


def _tracked_table(df, bounds):
    log = []
    partitions = []
    for label, (a, b) in enumerate(itertools.pairwise(bounds)):
        frame = _TrackedFrame(df.iloc[a:b])
        frame.label, frame.log = label, log
        partitions.append(frame)
    return TableAdapter(partitions, TableStructure.from_pandas(df, len(partitions))), log


async def test_column_reads_touch_only_overlapping_partitions():
    df = _frame(12)
    adapter, log = _tracked_table(df, [0, 4, 8, 12])
    numpy.testing.assert_array_equal(adapter["x"].read(NDSlice(slice(5, 7))), df["x"][5:7])
    assert log == [1]
    log.clear()
    numpy.testing.assert_array_equal(adapter["i"].read(NDSlice(slice(3, 9))), df["i"][3:9])
    assert log == [0, 1, 2]
    log.clear()
    meta = await adapter["s"].to_zarr_meta(ZarrOptions(chunk_budget_bytes=32))
    assert meta.chunk_shape == (2,)
    assert log == []
    chunk = meta.decode_chunk(await adapter["s"].to_zarr_chunk((3,), meta))
    assert chunk.tolist() == df["s"][6:8].tolist()
    assert log == [1]


def test_column_read_and_structure():
    df = _frame(10)
    adapter = TableAdapter.from_pandas(df, npartitions=3)
    s = adapter["s"]
    structure = s.structure()
    assert structure.shape == (10,)
    assert structure.chunks == ((4, 3, 3),)
    assert structure.data_type.to_numpy_dtype() == numpy.dtype("<U6")
    assert s.read().dtype.kind == "U"
    assert s.read().tolist() == df["s"].tolist()
    assert s.read(NDSlice(slice(None, None, -3))).tolist() == df["s"][::-3].tolist()
    assert s.read(NDSlice(-2)).item() == df["s"].iloc[-2]
    assert s.read_block((1,)).tolist() == df["s"][4:7].tolist()
    t = adapter["t"]
    assert t.structure().data_type.to_numpy_dtype() == numpy.dtype("datetime64[us]")
    numpy.testing.assert_array_equal(t.read(NDSlice(slice(2, 9, 2))), df["t"].to_numpy()[2:9:2])
    with pytest.raises(InvalidSlice):
        t.read(NDSlice(10))


async def test_column_chunks_equal_pandas_values():
    df = _frame(23)
    adapter = TableAdapter.from_pandas(df, npartitions=3)
    for name in df.columns:
        meta, chunks = await _all_chunks(adapter[name], ZarrOptions(chunk_budget_bytes=32))
        assert meta.grid_shape[0] >= 3
        assert meta.shape[0] % meta.chunk_shape[0]  # a partial last chunk
        expected = df[name].to_numpy()
        if is_variable_length_string(meta.dtype):
            expected = numpy.asarray(df[name].tolist(), dtype=object)
        _assert_chunks_match(meta, chunks, expected)


async def test_column_of_extension_and_text_dtypes():
    df = pandas.DataFrame(
        {
            "n": pandas.array([1, None, 3], dtype="Int64"),
            "o": numpy.array(["a", None, "ccc"], dtype=object),
            "z": pandas.date_range("2020-01-01", periods=3, tz="US/Eastern"),
        }
    )
    adapter = TableAdapter.from_pandas(df)
    n_meta = await adapter["n"].to_zarr_meta()
    assert n_meta.dtype == numpy.dtype("int64")
    assert adapter["n"].read().tolist() == [1, 0, 3]  # NA has no int64 spelling; zero stands in
    o_meta = await adapter["o"].to_zarr_meta()
    assert is_variable_length_string(o_meta.dtype)
    decoded = o_meta.decode_chunk(await adapter["o"].to_zarr_chunk((0,), o_meta))
    assert decoded.tolist() == ["a", "", "ccc"]
    z_meta = await adapter["z"].to_zarr_meta()
    assert z_meta.dtype.kind == "M"
    expected = df["z"].dt.tz_convert("UTC").dt.tz_localize(None).to_numpy()
    numpy.testing.assert_array_equal(adapter["z"].read(), expected)


async def test_dask_partition_lengths_are_computed_once():
    calls = []

    def counted(frame):
        calls.append(len(frame))
        return frame

    df = _frame(10)
    ddf = dask.dataframe.from_pandas(df, npartitions=2).map_partitions(counted, meta=df.iloc[:0])
    adapter = TableAdapter.from_dask_dataframe(ddf)
    assert calls == []  # building the adapter computes nothing
    meta = await adapter["x"].to_zarr_meta()
    assert meta.shape == (10,)
    assert meta.chunk_shape == (5,)
    computed = len(calls)
    await adapter["i"].to_zarr_meta()
    await adapter["x"].to_zarr_meta()
    assert len(calls) == computed
    chunk = meta.decode_chunk(await adapter["x"].to_zarr_chunk((1,), meta))
    numpy.testing.assert_array_equal(chunk, df["x"].to_numpy()[5:])
