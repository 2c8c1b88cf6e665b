"""Adapters for registered (external, read-only) data, by the data source's mimetype.

Each entry is ``factory(data_source, *, metadata, specs) -> adapter``; a data source
registered without a structure gets the one the adapter reads from the files. Callers may
extend the table with ``from_uri(..., adapters_by_mimetype={...})``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ..adapters.files import path_from_uri, uri_from_path
from ..adapters.parquet import PARQUET_MIMETYPE, ParquetTableAdapter
from ..adapters.sparse_parquet import (
    SPARSE_PARQUET_MIMETYPE,
    ParquetSparseAdapter,
    blocks_directory,
)
from ..adapters.zarr import ZarrArrayAdapter
from ..adapters.zarr_writable import ZARR_MIMETYPE, open_readonly
from ..errors import BadRequest
from ..structures.data_source import DataSource


def _single_uri(source: DataSource) -> str:
    if len(source.assets) != 1:
        raise BadRequest(f"{source.mimetype} data need exactly one asset")
    return source.assets[0].data_uri


def zarr_array(source: DataSource, *, metadata=None, specs=None) -> ZarrArrayAdapter:
    try:
        array = open_readonly(path_from_uri(_single_uri(source)))
    except (FileNotFoundError, ValueError, TypeError) as err:
        raise BadRequest(
            f"Cannot open a zarr array at {source.assets[0].data_uri}: {err}"
        ) from None
    if source.structure is None:
        return ZarrArrayAdapter.from_array(array, metadata=metadata or {}, specs=specs)
    return ZarrArrayAdapter(array, source.structure, metadata=metadata, specs=specs)


def parquet_table(source: DataSource, *, metadata=None, specs=None) -> ParquetTableAdapter:
    uris = [a.data_uri for a in sorted(source.assets, key=lambda a: a.num or 0)]
    if not uris:
        raise BadRequest("Parquet tables need at least one asset")
    try:
        return ParquetTableAdapter.from_uris(
            *uris, structure=source.structure, metadata=metadata, specs=specs
        )
    except OSError as err:
        raise BadRequest(f"Cannot read Parquet files {uris}: {err}") from None


def parquet_sparse(source: DataSource, *, metadata=None, specs=None) -> ParquetSparseAdapter:
    if source.structure is None:
        raise BadRequest("Sparse Parquet data must be registered with their structure")
    if not source.assets:
        raise BadRequest("Sparse Parquet data need their block files (or directory) as assets")
    asset = source.assets[0]
    directory = blocks_directory(asset.data_uri, asset.is_directory)
    return ParquetSparseAdapter(
        uri_from_path(directory), source.structure, metadata=metadata, specs=specs
    )


DEFAULT_ADAPTERS_BY_MIMETYPE: dict[str, Callable[..., Any]] = {
    ZARR_MIMETYPE: zarr_array,
    PARQUET_MIMETYPE: parquet_table,
    SPARSE_PARQUET_MIMETYPE: parquet_sparse,
}
