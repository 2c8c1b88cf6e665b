"""Helpers to write arrays, tables and metadata into an open h5py file or group.

What HDF5 cannot hold as it is: unicode text becomes variable-length UTF-8, datetimes and
timedeltas become opaque types tagged with their numpy dtype (h5py reads them back as the same
dtype), other objects become text. Metadata with values that have no HDF5 attribute form
(nested mappings, mixed lists) is refused, as upstream refuses it: an export that silently
drops metadata would be mistaken for a faithful one. ``None`` values are left out.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy


def h5_compatible(array: numpy.ndarray) -> numpy.ndarray:
    """``array`` converted to a dtype h5py can write."""
    import h5py

    array = numpy.asarray(array)
    dtype = array.dtype
    if dtype.names:
        return _structured(array)
    if dtype.kind in "UTO":
        flat = ["" if v is None else str(v) for v in array.ravel().tolist()]
        out = numpy.empty(len(flat), dtype=h5py.string_dtype())
        out[:] = flat
        return out.reshape(array.shape)
    if dtype.kind in "mM":
        return array.astype(h5py.opaque_dtype(dtype))
    return array


def _field_dtype(dtype: numpy.dtype) -> numpy.dtype:
    import h5py

    if dtype.kind in "UTO":
        return h5py.string_dtype()
    if dtype.kind in "mM":
        return h5py.opaque_dtype(dtype)
    return dtype


def _structured(array: numpy.ndarray) -> numpy.ndarray:
    fields = array.dtype.fields
    target = numpy.dtype([(name, _field_dtype(fields[name][0])) for name in array.dtype.names])
    out = numpy.empty(array.shape, dtype=target)
    for name in array.dtype.names:
        values = array[name]
        out[name] = values.astype(object) if values.dtype.kind in "UT" else values
    return out


def write_array(group: Any, name: str, array: numpy.ndarray) -> None:
    group.create_dataset(name, data=h5_compatible(array))


METADATA_UNFIT = "Metadata contains types or structure that does not fit into HDF5."


def write_attributes(obj: Any, metadata: Mapping[str, Any]) -> None:
    """Store the metadata as attributes of ``obj``; :class:`UnsupportedMediaType` (406) when
    an entry has no HDF5 attribute form."""
    from ..errors import UnsupportedMediaType
    from ..zarr_format.model import ZARR_VIEW_KEY

    for key, value in metadata.items():
        if value is None or key == ZARR_VIEW_KEY:
            continue  # (the server's note on how its zarr view serves chunks: not the data's)
        converted = _attribute_value(value)
        try:
            if converted is None:
                raise TypeError(f"no HDF5 form for {type(value).__name__}")
            obj.attrs[str(key)] = converted
        except (TypeError, ValueError) as err:
            raise UnsupportedMediaType(f"{METADATA_UNFIT} ({key!r}: {err})") from None


def _attribute_value(value: Any) -> Any:
    if isinstance(value, str | bytes | bool | int | float | numpy.generic):
        return value
    if isinstance(value, list | tuple | numpy.ndarray):
        array = numpy.asarray(value)
        if array.dtype.kind in "biufc" or (array.dtype.kind == "U" and array.ndim):
            return h5_compatible(array)
    return None


def _column_array(series: Any) -> numpy.ndarray:
    """A pandas column as numpy; missing text is written as ""."""
    if isinstance(series.dtype, numpy.dtype) and series.dtype.kind != "O":
        return series.to_numpy()
    numeric = getattr(series.dtype, "numpy_dtype", None)
    if numeric is not None and numeric.kind in "biufc":
        # Nullable ints/bools cannot hold NA in numpy: NaN marks missing values instead.
        if series.isna().any():
            return series.to_numpy(dtype="float64", na_value=numpy.nan)
        return series.to_numpy(dtype=numeric)
    missing = series.isna().to_numpy()
    values = series.to_numpy(dtype=object)
    text = ["" if m else str(v) for v, m in zip(values, missing, strict=True)]
    return numpy.asarray(text, dtype=object)


def write_table(group: Any, frame: Any) -> None:
    """One dataset per column of a pandas DataFrame (the index is not written)."""
    for column in frame.columns:
        write_array(group, str(column), _column_array(frame[column]))
