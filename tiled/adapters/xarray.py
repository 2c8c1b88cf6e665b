"""xarray Datasets as containers of arrays that remember their dimensions and roles.

A Dataset becomes a container (spec ``xarray_dataset``) whose children are its data variables
then its coordinates, each an array node with ``dims`` and spec ``xarray_data_var`` or
``xarray_coord``. Attributes are kept under ``metadata["attrs"]`` as they are, including any
``_FillValue``, because zarr readers such as ``xarray.open_zarr`` look for it there.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import xarray

from ..structures.core import Spec, normalize_specs
from .array import ArrayAdapter
from .mapping import MapAdapter


def _variable_adapter(variable: xarray.Variable | xarray.DataArray, spec: str) -> ArrayAdapter:
    return ArrayAdapter.from_array(
        variable.data,
        dims=tuple(variable.dims),
        metadata={"attrs": dict(variable.attrs)},
        specs=[spec],
    )


class DatasetAdapter(MapAdapter):
    """Serve an ``xarray.Dataset``; build it with :meth:`from_dataset`."""

    def __init__(self, mapping: Mapping[str, Any], *args: Any, **kwargs: Any):
        if isinstance(mapping, xarray.Dataset):
            # A Dataset is itself a Mapping, of DataArrays rather than adapters; accepting it
            # here would serve children that are not adapters.
            raise TypeError("Use DatasetAdapter.from_dataset(dataset) to serve an xarray.Dataset")
        super().__init__(mapping, *args, **kwargs)

    @classmethod
    def from_dataset(cls, dataset: xarray.Dataset, *, specs: Any = None) -> DatasetAdapter:
        mapping: dict[str, ArrayAdapter] = {}
        for name, variable in dataset.data_vars.items():
            mapping[str(name)] = _variable_adapter(variable, "xarray_data_var")
        for name, variable in dataset.coords.items():
            mapping[str(name)] = _variable_adapter(variable, "xarray_coord")
        all_specs = normalize_specs(specs)
        if Spec("xarray_dataset") not in all_specs:
            all_specs.append(Spec("xarray_dataset"))
        return cls(mapping, metadata={"attrs": dict(dataset.attrs)}, specs=all_specs)

    def inlined_contents_enabled(self, depth: int) -> bool:
        # A dataset's variables are few and always wanted together, so /metadata inlines them.
        return True
