"""Which adapter reads which file format: by media type, and media types by file extension.

Upstream Tiled's public names. Adapters are imported on first use, so that listing the table
costs nothing and a missing optional dependency (h5py, tifffile, ...) only matters to the files
that need it. Every adapter class here offers ``from_uris(*data_uris, **parameters)`` (open
files by URI) and ``from_catalog(data_source, node, **parameters)`` (open what a catalog
registered).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from .utils import APACHE_ARROW_FILE_MIME_TYPE

PARQUET_MIMETYPE = "application/x-parquet"
SPARSE_BLOCKS_PARQUET_MIMETYPE = "application/x-parquet;structure=sparse"
ZARR_MIMETYPE = "application/x-zarr"
HDF5_MIMETYPE = "application/x-hdf5"
NETCDF_MIMETYPE = "application/x-netcdf"
NPY_MIMETYPE = "application/x-npy"
TIFF_MIMETYPE = "image/tiff"
JPEG_MIMETYPE = "image/jpeg"
PNG_MIMETYPE = "image/png"
CSV_MIMETYPE = "text/csv"
# Appendable tables, kept in the catalog's SQL storage.
SQL_TABLE_MIMETYPE = "application/x-tiled-sql-table"
XLSX_MIMETYPE = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"


def sequence_of(mimetype: str) -> str:
    """The media type of an ordered sequence of files of ``mimetype`` (one node for them all)."""
    return f"multipart/related;type={mimetype}"


class LazyMap(Mapping[str, Any]):
    """A mapping whose values are made by a function on first access, then kept."""

    def __init__(self, factories: Mapping[str, Callable[[], Any]]):
        self._factories = dict(factories)
        self._made: dict[str, Any] = {}

    def __getitem__(self, key: str) -> Any:
        if key not in self._made:
            self._made[key] = self._factories[key]()
        return self._made[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._factories)

    def __len__(self) -> int:
        return len(self._factories)

    def set(self, key: str, factory: Callable[[], Any]) -> None:
        self._factories[key] = factory
        self._made.pop(key, None)

    def copy(self) -> LazyMap:
        return LazyMap(self._factories)


def _class(path: str) -> Callable[[], Any]:
    module, _, name = path.partition(":")
    return lambda: getattr(importlib.import_module(module), name)


DEFAULT_ADAPTERS_BY_MIMETYPE = LazyMap(
    {
        HDF5_MIMETYPE: _class("tiled.adapters.hdf5:HDF5Adapter"),
        NETCDF_MIMETYPE: _class("tiled.adapters.netcdf:NetCDFAdapter"),
        TIFF_MIMETYPE: _class("tiled.adapters.tiff:TiffAdapter"),
        sequence_of(TIFF_MIMETYPE): _class("tiled.adapters.tiff:TiffSequenceAdapter"),
        JPEG_MIMETYPE: _class("tiled.adapters.jpeg:JPEGAdapter"),
        sequence_of(JPEG_MIMETYPE): _class("tiled.adapters.jpeg:JPEGSequenceAdapter"),
        PNG_MIMETYPE: _class("tiled.adapters.jpeg:PNGAdapter"),
        sequence_of(PNG_MIMETYPE): _class("tiled.adapters.jpeg:PNGSequenceAdapter"),
        CSV_MIMETYPE: _class("tiled.adapters.csv:CSVAdapter"),
        "text/csv;header=present": _class("tiled.adapters.csv:CSVAdapter"),
        "text/csv;header=absent": _class("tiled.adapters.csv:CSVArrayAdapter"),
        sequence_of(CSV_MIMETYPE): _class("tiled.adapters.csv:CSVAdapter"),
        XLSX_MIMETYPE: _class("tiled.adapters.excel:ExcelAdapter"),
        NPY_MIMETYPE: _class("tiled.adapters.npy:NPYAdapter"),
        sequence_of(NPY_MIMETYPE): _class("tiled.adapters.npy:NPYSequenceAdapter"),
        ZARR_MIMETYPE: _class("tiled.adapters.zarr:ZarrAdapter"),
        PARQUET_MIMETYPE: _class("tiled.adapters.parquet:ParquetDatasetAdapter"),
        APACHE_ARROW_FILE_MIME_TYPE: _class("tiled.adapters.arrow:ArrowAdapter"),
    }
)
# Registration may read files differently from serving them (upstream keeps a second table).
DEFAULT_REGISTRATION_ADAPTERS_BY_MIMETYPE = DEFAULT_ADAPTERS_BY_MIMETYPE.copy()

# Extensions the platform's ``mimetypes`` module may not know, or knows differently.
DEFAULT_MIMETYPES_BY_FILE_EXT = {
    ".h5": HDF5_MIMETYPE,
    ".hdf": HDF5_MIMETYPE,
    ".hdf5": HDF5_MIMETYPE,
    ".nxs": HDF5_MIMETYPE,  # NeXus
    ".nc": NETCDF_MIMETYPE,
    ".npy": NPY_MIMETYPE,
    ".tif": TIFF_MIMETYPE,
    ".tiff": TIFF_MIMETYPE,
    ".jpg": JPEG_MIMETYPE,
    ".jpeg": JPEG_MIMETYPE,
    ".png": PNG_MIMETYPE,
    ".csv": CSV_MIMETYPE,
    ".xlsx": XLSX_MIMETYPE,
    ".parquet": PARQUET_MIMETYPE,
    ".arrow": APACHE_ARROW_FILE_MIME_TYPE,
    # Feather version 2 is the Arrow IPC file format (version 1, deprecated, is not).
    ".feather": APACHE_ARROW_FILE_MIME_TYPE,
    ".zarr": ZARR_MIMETYPE,
}

__all__ = [
    "DEFAULT_ADAPTERS_BY_MIMETYPE",
    "DEFAULT_MIMETYPES_BY_FILE_EXT",
    "DEFAULT_REGISTRATION_ADAPTERS_BY_MIMETYPE",
    "LazyMap",
    "sequence_of",
]
