"""A small tree under upstream's import path ``tiled.examples.generated_minimal:tree``.

Upstream's example configurations serve it: two arrays of ones (``A``, 100 x 100, and ``B``,
100 x 100 x 100), a table in three partitions (``C``, columns ``x``, ``y``, ``z``) and an
xarray dataset (``D``), under root metadata ``{"thing": "stuff"}``.
"""

from __future__ import annotations

import numpy
import xarray

from ..adapters.array import ArrayAdapter
from ..adapters.mapping import MapAdapter
from ..adapters.table import TableAdapter
from ..adapters.xarray import DatasetAdapter

_COLUMNS = {name: value * numpy.ones(100) for value, name in enumerate("xyz", start=1)}
_WEATHER = xarray.Dataset({"temperature": ("time", [100, 99, 98])}, coords={"time": [1, 2, 3]})

tree = MapAdapter(
    {
        "A": ArrayAdapter.from_array(numpy.ones((100, 100))),
        "B": ArrayAdapter.from_array(numpy.ones((100, 100, 100))),
        "C": TableAdapter.from_dict(_COLUMNS, npartitions=3),
        "D": DatasetAdapter.from_dataset(_WEATHER),
    },
    metadata={"thing": "stuff"},
)
