"""xarray Datasets as containers of arrays that remember their dimensions and roles.

A Dataset becomes a container (spec ``xarray_dataset``) whose children are its data variables
then its coordinates, each an array node with ``dims`` and spec ``xarray_data_var`` or
``xarray_coord``. Attributes are kept under ``metadata["attrs"]`` as they are, including any
``_FillValue``, because zarr readers such as ``xarray.open_zarr`` look for it there.

Variables are served as xarray's own writers (``to_zarr``, ``to_netcdf``) would store them:
object arrays get the type of their elements (missing strings become ``""``, numbers with
missing values become floats with NaN), and what xarray cannot store (a MultiIndex, a name
that cannot be a key) is refused when the adapter is built, never served altered.
"""

from __future__ import annotations

import warnings
from collections.abc import Hashable, Mapping
from typing import Any

import numpy
import xarray

from ..errors import InvalidKey
from ..structures.core import Spec, normalize_specs
from .array import ArrayAdapter
from .mapping import MapAdapter

# Names a zarr client reads as a document of the dataset's group (so that a variable of that
# name is lost or shadows the document), as the catalog refuses them (``check_key``).
_RESERVED_NAMES = frozenset({".", "..", "zarr.json", ".zarray", ".zattrs", ".zgroup", ".zmetadata"})


def _check_name(name: Hashable) -> str:
    key = str(name)
    if not key or "/" in key or key in _RESERVED_NAMES:
        # A '/' makes a path of two keys and a reserved name is a zarr document: either
        # variable would be missing from every zarr reader's dataset (or make the whole
        # consolidated dataset unopenable), so the dataset is refused rather than served so.
        raise InvalidKey(
            f"The variable {name!r} cannot be served: a variable name may not be empty, "
            f"contain '/' or be one of {sorted(_RESERVED_NAMES)}; rename it "
            "(Dataset.rename) first"
        )
    return key


def _storable_data(variable: xarray.Variable, name: Hashable) -> Any:
    """The variable's data in a type zarr can hold, as xarray's writers choose it."""
    if not isinstance(variable.dtype, numpy.dtype) or variable.dtype.kind != "O":
        return variable.data  # (pandas extension types are the array adapter's to convert)
    try:
        from xarray.backends.common import ensure_dtype_not_object
    except ImportError:  # a private helper of xarray: without it, the array adapter's rule
        return variable.data
    try:
        with warnings.catch_warnings():
            # (xarray's note that a dask array of objects is computed to find their type)
            warnings.simplefilter("ignore")
            data = ensure_dtype_not_object(variable, name).data
    except (ValueError, TypeError):
        # Mixed or arbitrary Python objects: the array adapter serves them as text.
        return variable.data
    # xarray marks variable-length text with an object dtype; numpy's own string types
    # are what the array adapter serves as text (an object array of bytes would be
    # served as their reprs).
    element = getattr(data.dtype, "metadata", None) or {}
    if element.get("element_type") is bytes:
        return numpy.asarray(data.tolist(), dtype=bytes).reshape(data.shape)
    if element.get("element_type") is str:
        return numpy.asarray(data.tolist(), dtype=str).reshape(data.shape)
    return data


def _variable_adapter(
    name: Hashable, variable: xarray.Variable | xarray.DataArray, spec: str
) -> ArrayAdapter:
    variable = getattr(variable, "variable", variable)
    return ArrayAdapter.from_array(
        _storable_data(variable, name),
        dims=tuple(str(dim) for dim in variable.dims),
        metadata={"attrs": dict(variable.attrs)},
        specs=[spec],
    )


def _check_no_multiindex(dataset: xarray.Dataset) -> None:
    for name, index in dataset.xindexes.items():
        if isinstance(index, xarray.indexes.PandasMultiIndex):
            # Its values are tuples, which would be served as their text.
            raise ValueError(
                f"The coordinate {name!r} is a MultiIndex, which cannot be served (nor "
                "written by xarray to zarr or netCDF); serve dataset.reset_index("
                f"{name!r}) instead"
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
        """The adapter of ``dataset``; raises ValueError (:class:`~tiled.errors.InvalidKey`
        for names) for a dataset that cannot be served as it is."""
        _check_no_multiindex(dataset)
        mapping: dict[str, ArrayAdapter] = {}
        roles = [(dataset.data_vars, "xarray_data_var"), (dataset.coords, "xarray_coord")]
        for variables, spec in roles:
            for name, variable in variables.items():
                key = _check_name(name)
                if key in mapping:  # e.g. the names 1 and "1"
                    raise InvalidKey(f"Two variables of this dataset are both named {key!r}")
                mapping[key] = _variable_adapter(name, variable, spec)
        all_specs = normalize_specs(specs)
        if Spec("xarray_dataset") not in all_specs:
            all_specs.append(Spec("xarray_dataset"))
        return cls(mapping, metadata={"attrs": dict(dataset.attrs)}, specs=all_specs)

    def inlined_contents_enabled(self, depth: int) -> bool:
        # A dataset's variables are few and always wanted together, so /metadata inlines them.
        return True
