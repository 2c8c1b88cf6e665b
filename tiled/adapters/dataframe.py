"""Upstream's module name for in-memory tables; everything lives in :mod:`tiled.adapters.table`."""

from .table import DataFrameAdapter, TableAdapter, TableColumnAdapter, zarr_dtype_of

__all__ = ["DataFrameAdapter", "TableAdapter", "TableColumnAdapter", "zarr_dtype_of"]
