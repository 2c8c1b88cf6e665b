"""Data encoders for array nodes: each takes the numpy array read from the node."""

from __future__ import annotations

import io
from typing import Any

import numpy

from ..errors import UnsupportedMediaType
from . import _json


def encode_octet_stream(array: numpy.ndarray, metadata: dict[str, Any]) -> bytes:
    """Raw C-order bytes in the array's own dtype (byte order included)."""
    return numpy.ascontiguousarray(array).tobytes()


def as_buffer(media_type: str, array: Any, metadata: dict[str, Any]) -> memoryview | bytes:
    """The array's raw C-order bytes (upstream Tiled's octet-stream serializer signature).

    A memoryview of the array's own memory where the buffer protocol allows it (no copy for an
    already contiguous array); bytes for dtypes numpy cannot export that way (datetimes).
    """
    contiguous = numpy.ascontiguousarray(array)
    try:
        return memoryview(contiguous).cast("B")
    except (ValueError, TypeError):
        return contiguous.tobytes()


def encode_json(array: numpy.ndarray, metadata: dict[str, Any]) -> bytes:
    """Nested lists, a bare value for 0-d; see :mod:`tiled.serialization._json`."""
    return _json.dumps(_json.to_jsonable(numpy.asarray(array)))


# The most columns a CSV export has (numpy builds a format string per column, even for an
# array with no rows: an empty array of 10**18 columns would exhaust the memory).
MAX_CSV_COLUMNS = 1_000_000


def encode_csv(array: numpy.ndarray, metadata: dict[str, Any]) -> bytes:
    array = numpy.asarray(array)
    if array.ndim > 2:
        raise UnsupportedMediaType(f"CSV holds at most 2 dimensions; this array has {array.ndim}")
    if array.ndim == 2 and array.shape[1] > MAX_CSV_COLUMNS:
        raise UnsupportedMediaType(
            f"CSV holds at most {MAX_CSV_COLUMNS} columns; this array has {array.shape[1]} "
            "(slice it, or ask for another format)"
        )
    buffer = io.StringIO()
    numpy.savetxt(buffer, array.reshape(1) if array.ndim == 0 else array, fmt="%s", delimiter=",")
    return buffer.getvalue().encode("utf-8")


def _image_shape_ok(array: numpy.ndarray) -> bool:
    return array.ndim == 2 or (array.ndim == 3 and array.shape[-1] in (3, 4))


def _require_numeric(array: numpy.ndarray, what: str) -> None:
    if array.dtype.kind not in "biuf" or array.dtype.names:
        raise UnsupportedMediaType(f"{what} cannot hold values of dtype {array.dtype}")
    if array.size == 0:
        raise UnsupportedMediaType(f"{what} cannot hold an empty array of shape {array.shape}")


def scale_to_uint8(array: numpy.ndarray) -> numpy.ndarray:
    """Map the 1st..99th percentile range onto 0..255; NaN and outliers are clipped."""
    values = array.astype("float64")
    finite = values[numpy.isfinite(values)]
    if finite.size == 0:
        return numpy.zeros(array.shape, dtype="uint8")
    low, high = numpy.percentile(finite, [1, 99])
    span = high - low if high > low else 1.0  # a flat image maps to black, not NaN
    scaled = (numpy.nan_to_num(values, nan=low, posinf=high, neginf=low) - low) / span * 255
    return numpy.clip(scaled, 0, 255).astype("uint8")


def encode_png(array: numpy.ndarray, metadata: dict[str, Any]) -> bytes:
    """An 8-bit grayscale (2-D) or RGB/RGBA (3-D, last dimension 3 or 4) image."""
    from PIL import Image

    array = numpy.asarray(array)
    if not _image_shape_ok(array):
        raise UnsupportedMediaType(
            f"PNG needs a 2-D array or a 3-D one whose last dimension is 3 or 4; "
            f"this array has shape {array.shape}"
        )
    _require_numeric(array, "PNG")
    buffer = io.BytesIO()
    Image.fromarray(scale_to_uint8(array)).save(buffer, format="PNG")
    return buffer.getvalue()


def encode_tiff(array: numpy.ndarray, metadata: dict[str, Any]) -> bytes:
    """A TIFF of the raw values (2-D to 4-D), readable back with ``tifffile.imread``."""
    import tifffile

    array = numpy.asarray(array)
    if not 2 <= array.ndim <= 4:
        raise UnsupportedMediaType(f"TIFF holds 2 to 4 dimensions; this array has {array.ndim}")
    if array.dtype.kind not in "biufc" or array.dtype.names or array.size == 0:
        raise UnsupportedMediaType(f"TIFF cannot hold this array ({array.dtype}, {array.shape})")
    # Say how to lay out 3-D and 4-D data, rather than let tifffile guess (and warn).
    rgb = array.ndim == 3 and array.shape[-1] in (3, 4)
    buffer = io.BytesIO()
    tifffile.imwrite(buffer, array, photometric="rgb" if rgb else "minisblack")
    return buffer.getvalue()


def encode_hdf5(array: numpy.ndarray, metadata: dict[str, Any]) -> bytes:
    """An HDF5 file with one dataset, ``data``, carrying the metadata as attributes."""
    import h5py

    from ._hdf5 import write_array, write_attributes

    buffer = io.BytesIO()
    with h5py.File(buffer, "w") as file:
        write_array(file, "data", numpy.asarray(array))
        write_attributes(file["data"], metadata)
    return buffer.getvalue()
