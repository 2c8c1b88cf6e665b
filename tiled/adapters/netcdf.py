"""netCDF files as xarray datasets: a container of variables with their dimensions.

The file is opened lazily with xarray (the h5netcdf engine for netCDF-4/HDF5 files, or any
engine named by the ``engine`` parameter) in chunks matching the file's own, so a request
reads only the chunks it overlaps. Times are not decoded (as upstream does), so their units
and calendars stay in the variables' attributes, where ``xarray.open_zarr`` decodes them.

The zarr view decodes and re-encodes the variables (the node's metadata says so); errors
from a file that is corrupt, changed or unreadable become 4xx answers on the node.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy
import xarray

from ..ndslice import NDSlice
from ..structures.core import Spec, normalize_specs
from ..zarr_format.model import re_encoded_view, with_zarr_view
from .array import ArrayAdapter
from .files import asset_uris, path_from_uri
from .sequence import opened
from .xarray import DatasetAdapter

if TYPE_CHECKING:
    from ..structures.data_source import DataSource

ZARR_VIEW = re_encoded_view("netCDF variables are decoded by xarray, then encoded")


class _VariableAdapter(ArrayAdapter):
    """A variable of the file, read lazily; failures name the file."""

    path: Path

    def read(self, slice: NDSlice = NDSlice()) -> numpy.ndarray:
        with opened(self.path):  # reports a missing, unreadable, corrupt or changed file
            return super().read(slice)

    def metadata(self) -> dict[str, Any]:
        return with_zarr_view(self._metadata, ZARR_VIEW)


def _variable(variable: xarray.Variable, spec: str, path: Path) -> _VariableAdapter:
    adapter = _VariableAdapter.from_array(
        variable.data,
        dims=tuple(variable.dims),
        metadata={"attrs": dict(variable.attrs)},
        specs=[spec],
    )
    adapter.path = path
    return adapter


class NetCDFAdapter(DatasetAdapter):
    """Read a netCDF file: ``NetCDFAdapter.from_uris("file://localhost/a.nc")``."""

    @classmethod
    def from_uris(cls, data_uri: str, **kwargs: Any) -> NetCDFAdapter:
        """``kwargs``: ``metadata``, ``specs``, and ``xarray.open_dataset`` parameters
        (``engine``, ``group``, ``decode_times``, ...)."""
        metadata = kwargs.pop("metadata", None) or {}
        specs = kwargs.pop("specs", None)
        kwargs.pop("structure", None)  # a container has no structure to use
        path = path_from_uri(data_uri)
        options = {"decode_times": False, "chunks": {}, **kwargs}
        with opened(path):
            dataset = xarray.open_dataset(path, **options)
        return cls.from_file_dataset(dataset, path, metadata=metadata, specs=specs)

    @classmethod
    def from_catalog(cls, data_source: DataSource, node: Any, /, **kwargs: Any) -> NetCDFAdapter:
        uri = kwargs.pop("data_uri", None) or asset_uris(data_source)[0]
        return cls.from_uris(uri, metadata=node.metadata_, specs=node.specs, **kwargs)

    @classmethod
    def from_file_dataset(
        cls, dataset: xarray.Dataset, path: Path, *, metadata: dict | None = None, specs: Any = None
    ) -> NetCDFAdapter:
        mapping: dict[str, _VariableAdapter] = {}
        for name, variable in dataset.data_vars.items():
            mapping[str(name)] = _variable(variable.variable, "xarray_data_var", path)
        for name, variable in dataset.coords.items():
            mapping[str(name)] = _variable(variable.variable, "xarray_coord", path)
        all_specs = normalize_specs(specs)
        if Spec("xarray_dataset") not in all_specs:
            all_specs.append(Spec("xarray_dataset"))
        own = with_zarr_view({"attrs": dict(dataset.attrs), **(metadata or {})}, ZARR_VIEW)
        adapter = cls(mapping, metadata=own, specs=all_specs)
        adapter._dataset = dataset  # keeps the file open while the node lives
        return adapter


def read_netcdf(filepath: str | Path) -> NetCDFAdapter:
    """Upstream's helper: the dataset in a netCDF file."""
    return NetCDFAdapter.from_uris(str(filepath))


__all__ = ["NetCDFAdapter", "read_netcdf"]
