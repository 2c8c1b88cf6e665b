"""The zarr hooks of every in-memory adapter, in both zarr formats (see zarr_conformance.py)."""

from __future__ import annotations

import dask.array
import numpy
import pytest

from tiled.adapters.array import ArrayAdapter
from tiled.errors import UnsupportedZarrFormat
from tiled.ndslice import NDSlice
from tiled.structures.array import ArrayStructure
from tiled.zarr_format.formats import encoding_for
from tiled.zarr_format.model import ZarrArrayMeta, ZarrOptions

from .zarr_conformance import ZarrArrayHookConformance, ZarrCase, open_with_zarr

SMALL = ZarrOptions(chunk_budget_bytes=256)  # forces several chunks with ragged edges
rng = numpy.random.default_rng(7)


def _array_cases() -> dict[str, numpy.ndarray]:
    structured = numpy.array(
        [("Rex", 9, 81.0), ("Fido", 3, 27.0), ("Bo", 1, 2.5)],
        dtype=[("name", "<U10"), ("age", "<i4"), ("weight", "<f4")],
    )
    with_specials = numpy.array([0.0, 1.0, numpy.nan, -numpy.inf, numpy.inf] * 7)
    return {
        "float64-2d": rng.random((23, 17)),
        "float32": rng.random(50).astype("float32"),
        "float16": rng.random(30).astype("float16"),
        "int8": rng.integers(-100, 100, 40, dtype="int8"),
        "uint16": rng.integers(0, 60000, 40, dtype="uint16"),
        "int64-big-endian": numpy.arange(40, dtype=">i8"),
        "uint64": numpy.arange(40, dtype="uint64") * 2**40,
        "bool": rng.random(45) > 0.5,
        "complex64": (rng.random(20) + 1j * rng.random(20)).astype("complex64"),
        "complex128": rng.random((6, 7)) + 1j * rng.random((6, 7)),
        "bytes": numpy.array([b"aaa", b"BB", b"c", b""] * 10),
        "unicode": numpy.array(["alpha", "β", "", "delta-long-text"] * 10),
        "datetime64[ns]": numpy.arange("2014-09-06", "2014-10-30", dtype="datetime64[D]").astype(
            "datetime64[ns]"
        ),
        "datetime64[s]-with-NaT": numpy.array(["2020-01-01T00:00:01", "NaT"] * 9, dtype="M8[s]"),
        "timedelta64[D]": numpy.arange(40).astype("m8[D]"),
        "structured": structured,
        "nan-and-inf": with_specials,
        "scalar-float": numpy.array(3.14159),
        "scalar-int": numpy.array(42),
        "scalar-unicode": numpy.array("1/137"),
        "5d": rng.random((3, 4, 2, 5, 3)),
        "zero-length": numpy.zeros((0, 10, 1, 3)),
        "zero-length-1d": numpy.zeros((0,), dtype="int32"),
    }


class TestNumpyArrayAdapter(ZarrArrayHookConformance):
    @classmethod
    def build_cases(cls):
        cases = {}
        for name, data in _array_cases().items():
            cases[name] = ZarrCase(ArrayAdapter.from_array(data), data)
            if data.ndim and data.size:
                cases[name + "-small-chunks"] = ZarrCase(ArrayAdapter.from_array(data), data, SMALL)
        # Held arrays that differ from what the structure advertises are served as advertised:
        # one grown past it (a file appended to), one of another element type.
        grown = rng.random((30, 7))
        cases["grown-past-its-structure"] = ZarrCase(
            ArrayAdapter(grown, ArrayStructure.from_array(grown[:20])), grown[:20], SMALL
        )
        counts = numpy.arange(60, dtype="int64").reshape(12, 5)
        as_float = ArrayStructure.from_array(counts.astype("float32"))
        cases["held-as-another-type"] = ZarrCase(
            ArrayAdapter(counts, as_float), counts.astype("float32"), SMALL
        )
        cases["subclass-reading-its-own-way"] = ZarrCase(
            _Doubled.from_array(counts), counts * 2, SMALL
        )
        return cases


class _Doubled(ArrayAdapter):
    """An adapter that reads otherwise than the array it holds: its chunks come from read()."""

    def read(self, slice=NDSlice()):
        return super().read(slice) * 2


class TestDaskArrayAdapter(ZarrArrayHookConformance):
    @classmethod
    def build_cases(cls):
        data = rng.random((30, 20))
        return {
            "regular": ZarrCase(
                ArrayAdapter.from_array(dask.array.from_array(data, (8, 20))), data
            ),
            "irregular": ZarrCase(
                ArrayAdapter.from_array(dask.array.from_array(data, ((5, 20, 5), (7, 13)))), data
            ),
            "irregular-small": ZarrCase(
                ArrayAdapter.from_array(dask.array.from_array(data, ((5, 20, 5), (7, 13)))),
                data,
                SMALL,
            ),
        }


async def test_native_chunks_become_the_zarr_grid_when_regular():
    adapter = ArrayAdapter.from_array(numpy.zeros((1000, 1000)), chunks=((250,) * 4, (100,) * 10))
    meta = await adapter.to_zarr_meta()
    assert meta.chunk_shape == (250, 100)


async def test_chunks_respect_the_byte_budget_and_stay_aligned():
    data = dask.array.zeros((10000, 10000), chunks=4096)
    meta = await ArrayAdapter.from_array(data).to_zarr_meta(ZarrOptions(chunk_budget_bytes=2**22))
    assert numpy.prod(meta.chunk_shape) * 8 <= 2**22
    assert all(4096 % c == 0 for c in meta.chunk_shape)


async def test_infinite_fill_value_round_trips(zarr_format):
    meta = ZarrArrayMeta(
        shape=(5,), chunk_shape=(4,), dtype=numpy.dtype("f8"), fill_value=-numpy.inf
    )
    array = open_with_zarr(encoding_for(zarr_format).array_documents(meta), zarr_format)
    assert array.fill_value == -numpy.inf
    assert list(array[:]) == [-numpy.inf] * 5  # no chunks stored: everything is the fill value
    edge = meta.decode_chunk(meta.encode_chunk(numpy.array([1.0])))
    assert list(edge) == [1.0, -numpy.inf, -numpy.inf, -numpy.inf]


async def test_dimension_names_in_both_formats(zarr_format):
    adapter = ArrayAdapter.from_array(numpy.zeros((2, 3)), dims=["x", "y"], metadata={"units": "m"})
    meta = await adapter.to_zarr_meta()
    array = open_with_zarr(encoding_for(zarr_format).array_documents(meta), zarr_format)
    assert array.attrs["units"] == "m"
    if zarr_format == 3:
        assert array.metadata.dimension_names == ("x", "y")
    else:
        assert array.attrs["_ARRAY_DIMENSIONS"] == ["x", "y"]


@pytest.mark.parametrize("bad", [1, 4, "three", None])
def test_unsupported_zarr_format_names_the_value(bad):
    with pytest.raises(UnsupportedZarrFormat, match=repr(bad)):
        encoding_for(bad)


@pytest.mark.parametrize("codec", ["blosc-lz4", "zstd", "gzip", "none"])
async def test_every_configured_codec_decodes_with_zarr(codec, zarr_format):
    data = rng.random((20, 20))
    adapter = ArrayAdapter.from_array(data)
    meta = await adapter.to_zarr_meta(ZarrOptions(codec=codec))
    encoding = encoding_for(zarr_format)
    store = {
        **encoding.array_documents(meta),
        encoding.chunk_key((0, 0)): await adapter.to_zarr_chunk((0, 0), meta),
    }
    numpy.testing.assert_array_equal(open_with_zarr(store, zarr_format)[...], data)


class TestCOOAdapter(ZarrArrayHookConformance):
    @classmethod
    def build_cases(cls):
        import sparse

        from tiled.adapters.sparse import COOAdapter

        dense = rng.random((30, 25))
        dense[dense < 0.8] = 0
        dense3 = rng.random((6, 5, 4))
        dense3[dense3 < 0.5] = 0
        return {
            "2d": ZarrCase(COOAdapter.from_coo(sparse.COO(dense)), dense),
            "2d-small-chunks": ZarrCase(COOAdapter.from_coo(sparse.COO(dense)), dense, SMALL),
            "3d-small-chunks": ZarrCase(COOAdapter.from_coo(sparse.COO(dense3)), dense3, SMALL),
        }


class TestTableColumns(ZarrArrayHookConformance):
    @classmethod
    def build_cases(cls):
        import pandas

        from tiled.adapters.table import TableAdapter

        n = 103
        frame = pandas.DataFrame(
            {
                "f": rng.random(n),
                "u8": numpy.arange(n, dtype="uint8"),
                "s": [f"row-{i}" * (i % 4) for i in range(n)],
                "t": pandas.date_range("2020-01-01", periods=n, freq="h", unit="ns"),
                "b": numpy.arange(n) % 3 == 0,
            }
        )
        table = TableAdapter.from_pandas(frame, npartitions=4)
        cases = {}
        for column in frame.columns:
            expected = frame[column].to_numpy()
            cases[column] = ZarrCase(table[column], expected)
            cases[column + "-small-chunks"] = ZarrCase(
                table[column], expected, ZarrOptions(chunk_budget_bytes=64)
            )
        return cases


class TestDatasetVariables(ZarrArrayHookConformance):
    @classmethod
    def build_cases(cls):
        import pandas
        import xarray

        from tiled.adapters.xarray import DatasetAdapter

        dataset = xarray.Dataset(
            {"temperature": (["x", "time"], rng.random((4, 3)), {"units": "K"})},
            coords={"time": pandas.date_range("2014-09-06", periods=3, unit="ns")},
        )
        adapter = DatasetAdapter.from_dataset(dataset)
        return {
            key: ZarrCase(adapter[key], dataset[key].to_numpy()) for key in ("temperature", "time")
        }


async def test_group_documents_parse_with_zarr(zarr_format):
    import pandas
    import xarray
    import zarr
    from zarr.core.buffer import cpu
    from zarr.storage import MemoryStore

    from tiled.adapters.mapping import MapAdapter
    from tiled.adapters.table import TableAdapter
    from tiled.adapters.xarray import DatasetAdapter

    groups = {
        "map": MapAdapter({}, metadata={"animal": "cat", "nan": float("nan")}),
        "table": TableAdapter.from_pandas(
            pandas.DataFrame({"A": [1, 2]}), metadata={"color": "red"}
        ),
        "dataset": DatasetAdapter.from_dataset(xarray.Dataset(attrs={"title": "t"})),
    }
    expected = {
        "map": {"animal": "cat", "nan": None},  # as every route writes NaN (structures.json)
        "table": {"color": "red"},
        "dataset": {"title": "t"},
    }
    for name, adapter in groups.items():
        documents = encoding_for(zarr_format).group_documents(await adapter.to_zarr_meta())
        store = MemoryStore({k: cpu.Buffer.from_bytes(v) for k, v in documents.items()})
        group = zarr.open_group(store, mode="r", zarr_format=zarr_format)
        assert dict(group.attrs) == expected[name]
    assert await groups["table"].zarr_member_keys() == ["A"]
