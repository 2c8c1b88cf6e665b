"""The zarr hooks of every group adapter (see zarr_group_conformance.py): in-memory containers,
tables, xarray datasets, awkward and ragged buffer groups, HDF5 groups, and the SQL catalog's
containers."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import h5py
import numpy
import pandas

from tiled.adapters.array import ArrayAdapter
from tiled.adapters.mapping import MapAdapter
from tiled.adapters.table import TableAdapter
from tiled.zarr_format.model import ZarrOptions

from .zarr_group_conformance import ZarrGroupCase, ZarrGroupHookConformance

rng = numpy.random.default_rng(11)


def frame(rows: int = 7) -> pandas.DataFrame:
    return pandas.DataFrame(
        {
            "f": rng.random(rows),
            "with space": numpy.arange(rows, dtype="int16"),
            "s": [f"row-{i}" for i in range(rows)],
            "t": pandas.date_range("2020-01-01", periods=rows, freq="h", unit="ns"),
        }
    )


class TestContainers(ZarrGroupHookConformance):
    @classmethod
    def build_cases(cls):
        table = TableAdapter.from_pandas(frame(), npartitions=2)
        nested = MapAdapter(
            {
                "x": ArrayAdapter.from_array(numpy.arange(10)),
                "table": table,
                "deeper": MapAdapter({"y": ArrayAdapter.from_array(numpy.ones((3, 4)))}),
            },
            metadata={"animal": "cat", "nan": float("nan")},
        )
        return {
            "empty": ZarrGroupCase.of(MapAdapter({}), [], attributes={}),
            "nested": ZarrGroupCase.of(
                nested, ["x", "table", "deeper"], attributes={"animal": "cat", "nan": None}
            ),
            "nested-small-chunks": ZarrGroupCase.of(
                nested, ["x", "table", "deeper"], options=ZarrOptions(chunk_budget_bytes=64)
            ),
        }


class TestTables(ZarrGroupHookConformance):
    @classmethod
    def build_cases(cls):
        data = frame(23)
        return {
            "one-partition": ZarrGroupCase.of(
                TableAdapter.from_pandas(data, metadata={"color": "red"}),
                list(data.columns),
                attributes={"color": "red"},
            ),
            "partitioned": ZarrGroupCase.of(
                TableAdapter.from_pandas(data, npartitions=4), list(data.columns)
            ),
            "no-rows": ZarrGroupCase.of(TableAdapter.from_pandas(data.iloc[:0]), list(data)),
        }


class TestXarrayDatasets(ZarrGroupHookConformance):
    @classmethod
    def build_cases(cls):
        import xarray

        from tiled.adapters.xarray import DatasetAdapter

        dataset = xarray.Dataset(
            {
                "temperature": (["x", "time"], rng.random((4, 3)), {"units": "K"}),
                "flag": (["x"], numpy.array([True, False, True, True])),
            },
            coords={"time": pandas.date_range("2014-09-06", periods=3, unit="ns")},
            attrs={"title": "weather"},
        )
        return {
            "dataset": ZarrGroupCase.of(
                DatasetAdapter.from_dataset(dataset),
                ["temperature", "flag", "time"],
                attributes={"title": "weather", "coordinates": "time"},
            ),
            "empty": ZarrGroupCase.of(
                DatasetAdapter.from_dataset(xarray.Dataset(attrs={"title": "t"})),
                [],
                attributes={"title": "t"},
            ),
        }


AWKWARD_VALUES = [[1.0, 2.5], [], [3.0]]
NESTED_RECORDS = [{"x": 1, "y": [1, 2]}, {"x": 2, "y": []}, {"x": 3, "y": [3]}]


def awkward_buffers(values: list) -> tuple[Any, dict[str, numpy.ndarray], list[str]]:
    """The structure, buffers and buffer names of an awkward array of ``values``."""
    import awkward

    from tiled.structures.awkward import AwkwardStructure

    form, length, buffers = awkward.to_buffers(awkward.to_packed(awkward.Array(values)))
    return AwkwardStructure(length=length, form=form.to_dict()), buffers, list(buffers)


class TestAwkwardAndRaggedBuffers(ZarrGroupHookConformance):
    @classmethod
    def build_cases(cls):
        from tiled.adapters.awkward import AwkwardAdapter, AwkwardBuffersAdapter
        from tiled.adapters.files import uri_from_path
        from tiled.adapters.ragged import RaggedAdapter

        cases = {}
        for name, values in [("lists", AWKWARD_VALUES), ("records", NESTED_RECORDS)]:
            structure, buffers, names = awkward_buffers(values)
            cases[f"awkward-{name}"] = ZarrGroupCase.of(AwkwardAdapter.from_array(values), names)

            @asynccontextmanager
            async def stored(tmp_path: Path, structure=structure, buffers=buffers):
                directory = tmp_path / "buffers"
                directory.mkdir()
                adapter = AwkwardBuffersAdapter.from_uri(uri_from_path(directory), structure)
                adapter.write_buffers(buffers)
                yield adapter

            cases[f"awkward-stored-{name}"] = ZarrGroupCase(stored, names)
        ragged = RaggedAdapter.from_array([numpy.arange(3), numpy.arange(5), numpy.arange(0)])
        cases["ragged"] = ZarrGroupCase.of(ragged, ["node0-offsets", "node1-data"])
        return cases


def hdf5_readable_keys(group: h5py.Group) -> list[str]:
    """The keys of ``group`` as h5py reads them, but for links whose target is missing
    (dangling soft or external links): those are no members of the zarr group."""
    keys = []
    for key in group:
        try:
            group[key]
        except (KeyError, OSError):
            continue
        keys.append(key)
    return keys


class TestHDF5Groups(ZarrGroupHookConformance):
    @classmethod
    def build_cases(cls):
        from tiled.adapters.hdf5 import HDF5Adapter

        from .test_hdf5 import sample

        path, _ = sample()
        root = HDF5Adapter.from_uris(str(path))
        with h5py.File(path) as file:
            keys = {"/": hdf5_readable_keys(file), "entry": hdf5_readable_keys(file["entry"])}
        return {
            "file": ZarrGroupCase.of(root, keys["/"]),
            "subgroup": ZarrGroupCase.of(root["entry"], keys["entry"]),
        }


@asynccontextmanager
async def sql_catalog(tmp_path: Path) -> AsyncIterator[Any]:
    """A new SQLite catalog holding an array, a table, a nested container and an xarray
    dataset (their metadata only: no data is written)."""
    from tiled.catalog import from_uri
    from tiled.structures.array import ArrayStructure
    from tiled.structures.data_source import DataSource
    from tiled.structures.table import TableStructure

    storage = tmp_path / "data"
    storage.mkdir()
    root = from_uri(
        f"sqlite+aiosqlite:///{tmp_path / 'catalog.db'}",
        writable_storage=storage,
        init_if_not_exists=True,
        metadata={"title": "root"},
    )

    def array(shape: tuple[int, ...]) -> list[DataSource]:
        return [DataSource("array", ArrayStructure.from_array(numpy.zeros(shape)))]

    async def make(parent: Any, key: str, family: str = "container", **kwargs: Any) -> Any:
        kwargs.setdefault("metadata", {})
        return await parent.create_node(key=key, structure_family=family, **kwargs)

    try:
        await make(root, "a", "array", data_sources=array((5, 3)))
        table = TableStructure.from_pandas(frame(), 2)
        await make(root, "t", "table", data_sources=[DataSource("table", table)])
        nested = await make(root, "nested")
        await make(nested, "b", "array", data_sources=array((2,)))
        dataset = await make(root, "ds", metadata={"attrs": {"title": "T"}},
                             specs=["xarray_dataset"])  # fmt: skip
        await make(dataset, "temp", "array", specs=["xarray_data_var"], data_sources=array((2,)))
        await make(dataset, "lat", "array", specs=["xarray_coord"], data_sources=array((2,)))
        yield root
    finally:
        await root.shutdown()


class TestSQLCatalogContainers(ZarrGroupHookConformance):
    @classmethod
    def build_cases(cls):
        @asynccontextmanager
        async def dataset(tmp_path: Path):
            async with sql_catalog(tmp_path) as root:
                yield await root.lookup_adapter(["ds"])

        @asynccontextmanager
        async def table(tmp_path: Path):
            async with sql_catalog(tmp_path) as root:
                yield await root.lookup_adapter(["t"])

        return {
            "root": ZarrGroupCase(
                sql_catalog, ["a", "t", "nested", "ds"], attributes={"title": "root"}
            ),
            "xarray-dataset": ZarrGroupCase(
                dataset, ["temp", "lat"], attributes={"title": "T", "coordinates": "lat"}
            ),
            "table": ZarrGroupCase(table, list(frame().columns)),
        }
