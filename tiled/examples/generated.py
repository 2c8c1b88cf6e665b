"""The demo tree served by ``tiled serve demo``.

Deterministic (``default_rng(seed=42)``) and drawn in the same order as upstream's demo, so the
values match upstream's. The two big random arrays (``big_image``, 0.8 GB, and
``tiny_hypercube``, 2.5 GB) are never materialized: their random streams are skipped over with
``PCG64.advance`` and regenerated on demand for just the rows a read touches.
"""

from __future__ import annotations

import asyncio
import collections
import math
import string
import threading
from datetime import timedelta

import awkward
import dask.array
import numpy
import pandas
import sparse
import xarray

from ..adapters.array import ArrayAdapter
from ..adapters.awkward import AwkwardAdapter
from ..adapters.mapping import MapAdapter
from ..adapters.sparse import COOAdapter
from ..adapters.table import DataFrameAdapter
from ..adapters.xarray import DatasetAdapter


class _RandomStream:
    """An array-like whose C-order elements are ``Generator.random()`` draws from a saved state.

    ``Generator.random`` spends exactly one 64-bit output per float64, so element ``k`` is the
    ``k``-th draw after the saved state; a read regenerates only the dim-0 rows it touches.
    """

    # Readers walk chunks row by row, so the rows of one request usually serve the next few.
    _CACHE_BYTES = 192 * 2**20

    def __init__(self, state: dict, shape: tuple[int, ...]):
        self._state = state
        self.shape = shape
        self.dtype = numpy.dtype("float64")
        self.ndim = len(shape)
        self._lock = threading.Lock()
        self._cache: collections.OrderedDict[tuple[int, int], numpy.ndarray] = (
            collections.OrderedDict()
        )

    def _rows(self, start: int, stop: int) -> numpy.ndarray:
        with self._lock:
            if (start, stop) in self._cache:
                self._cache.move_to_end((start, stop))
                return self._cache[(start, stop)]
        row = math.prod(self.shape[1:])
        bit_generator = numpy.random.PCG64()
        bit_generator.state = self._state
        bit_generator.advance(start * row)
        rows = numpy.random.Generator(bit_generator).random((stop - start) * row)
        rows = rows.reshape((stop - start,) + self.shape[1:])
        rows.flags.writeable = False
        if rows.nbytes <= self._CACHE_BYTES // 2:
            with self._lock:
                self._cache[(start, stop)] = rows
                while sum(block.nbytes for block in self._cache.values()) > self._CACHE_BYTES:
                    self._cache.popitem(last=False)
        return rows

    def __getitem__(self, key) -> numpy.ndarray:
        key = key if isinstance(key, tuple) else (key,)
        key = key + (slice(None),) * (self.ndim - len(key))
        first = key[0] if isinstance(key[0], slice) else slice(key[0], key[0] + 1)
        start, stop, _ = first.indices(self.shape[0])
        rows = self._rows(start, max(start, stop))
        rest = (slice(None, None, first.step),) if isinstance(key[0], slice) else (0,)
        return rows[rest + key[1:]]


def _lazy_random(rng: numpy.random.Generator, shape: tuple[int, ...]) -> dask.array.Array:
    """Draw ``rng.random(shape)`` lazily, leaving ``rng`` where the eager draw would have."""
    state = rng.bit_generator.state
    rng.bit_generator.advance(math.prod(shape))
    return dask.array.from_array(_RandomStream(state, shape), chunks="auto", asarray=True)


def _frame(columns: dict[str, numpy.ndarray]) -> pandas.DataFrame:
    length = len(next(iter(columns.values())))
    return pandas.DataFrame(columns, index=pandas.Index(numpy.arange(length), name="index"))


def build_tree() -> MapAdapter:
    rng = numpy.random.default_rng(seed=42)
    big_image = _lazy_random(rng, (10000, 10000))
    small_image = rng.random((300, 300))
    medium_image = rng.random((1000, 1000))
    tiny_image = rng.random((50, 50))
    tiny_cube = rng.random((50, 50, 50))
    tiny_hypercube = _lazy_random(rng, (50, 50, 50, 50, 50))
    high_entropy = rng.integers(-10, 10, size=(100, 100))
    short_column = rng.integers(10, size=100, dtype=numpy.dtype("uint8"))
    tiny_column = rng.random(10)
    long_column = rng.random(100_000)
    temperature = 15 + 8 * rng.normal(size=(2, 2, 3))
    precipitation = 10 * rng.uniform(size=(2, 2, 3))
    sparse_array = rng.random((100, 100))
    sparse_array[sparse_array < 0.9] = 0
    dynamic = numpy.zeros((3, 3))

    dataset = xarray.Dataset(
        {
            "temperature": (["x", "y", "time"], temperature),
            "precipitation": (["x", "y", "time"], precipitation),
        },
        coords={
            "lon": (["x", "y"], [[-99.83, -99.32], [-99.79, -99.23]]),
            "lat": (["x", "y"], [[42.25, 42.21], [42.63, 42.59]]),
            "time": pandas.date_range("2014-09-06", periods=3, unit="ns"),
        },
    )
    pets = numpy.array(
        [("Rex", 9, 81.0), ("Fido", 3, 27.0)],
        dtype=[("name", "U10"), ("age", "i4"), ("weight", "f4")],
    )
    cat_green = {"animal": "cat", "color": "green"}
    mapping = {
        "scalars": MapAdapter(
            {
                "pi": ArrayAdapter.from_array(3.14159),
                "e_arr": ArrayAdapter.from_array(["2.71828"]),
                "fsc": ArrayAdapter.from_array("1/137"),
                "fortytwo": ArrayAdapter.from_array(42),
            },
            metadata={"numbers": "constants", "precision": 5},
        ),
        "nested": MapAdapter(
            {
                "images": MapAdapter(
                    {
                        "tiny_image": ArrayAdapter.from_array(tiny_image),
                        "small_image": ArrayAdapter.from_array(small_image),
                        "medium_image": ArrayAdapter.from_array(medium_image, chunks=(250, 100)),
                        "big_image": ArrayAdapter.from_array(big_image),
                    },
                    metadata=cat_green,
                ),
                "cubes": MapAdapter(
                    {
                        "tiny_cube": ArrayAdapter.from_array(tiny_cube),
                        "tiny_hypercube": ArrayAdapter.from_array(tiny_hypercube),
                    },
                    metadata={"animal": "dog", "color": "red"},
                ),
                "sparse_image": COOAdapter.from_coo(sparse.COO(sparse_array)),
                "awkward_array": AwkwardAdapter.from_array(
                    awkward.Array(
                        [
                            [{"x": 1.1, "y": [1]}, {"x": 2.2, "y": [1, 2]}],
                            [],
                            [{"x": 3.3, "y": [1, 2, 3]}],
                        ]
                    )
                ),
            },
            metadata=cat_green,
        ),
        "tables": MapAdapter(
            {
                "short_table": DataFrameAdapter.from_pandas(
                    _frame({"A": short_column, "B": 2 * short_column, "C": 3 * short_column}),
                    npartitions=1,
                    metadata={"animal": "dog", "color": "red"},
                ),
                "long_table": DataFrameAdapter.from_pandas(
                    _frame({"A": long_column, "B": 2 * long_column, "C": 3 * long_column}),
                    npartitions=5,
                    metadata={"animal": "dog", "color": "green"},
                ),
                "wide_table": DataFrameAdapter.from_pandas(
                    _frame(
                        {
                            letter: (1 + i) * tiny_column
                            for i, letter in enumerate(string.ascii_uppercase)
                        }
                    ),
                    npartitions=1,
                    metadata={"animal": "dog", "color": "red"},
                ),
            }
        ),
        "structured_data": MapAdapter(
            {
                "pets": ArrayAdapter.from_array(pets),
                "xarray_dataset": DatasetAdapter.from_dataset(dataset),
            },
            metadata=cat_green,
        ),
        "flat_array": ArrayAdapter.from_array(rng.random(100)),
        "low_entropy": ArrayAdapter.from_array(numpy.ones((100, 100), dtype=numpy.int32)),
        "high_entropy": ArrayAdapter.from_array(high_entropy),
        "dynamic": ArrayAdapter.from_array(dynamic),
    }
    root = MapAdapter(mapping, entries_stale_after=timedelta(seconds=10))

    async def increment_dynamic() -> None:
        """Make ``dynamic`` change while the server runs: n * ones, n += 1 every 3 seconds."""
        n = 1
        while True:
            dynamic[...] = n
            await asyncio.sleep(3)
            n += 1

    root.background_tasks.append(increment_dynamic)
    return root


tree = build_tree()
