"""Arrays to strict JSON values.

Conventions (documented for clients in ``docs``):

- NaN, +inf and -inf become ``null`` (strict JSON has no spelling for them), as does NaT;
- datetimes are ISO 8601 strings at the coarsest of s/ms/us/ns/... that keeps every value exact;
- timedeltas are seconds as floats;
- complex numbers are ``[real, imag]`` pairs;
- byte strings are decoded as UTF-8, or as Latin-1 when they are not UTF-8 (as upstream does);
- missing values of pandas (``NA``, ``NaT``) in object columns become ``null``;
- structured values are lists of their fields' values.
"""

from __future__ import annotations

import math
from typing import Any

import numpy
import orjson

_DATETIME_UNITS = ("s", "ms", "us", "ns", "ps", "fs", "as")


def dumps(value: Any) -> bytes:
    return orjson.dumps(value, default=_default, option=orjson.OPT_NON_STR_KEYS)


def _default(obj: Any) -> Any:
    # Reached for values inside object arrays and pandas objects that orjson does not know.
    if isinstance(obj, numpy.generic | numpy.ndarray):
        return to_jsonable(numpy.asarray(obj))
    if isinstance(obj, bytes):
        return text_of_bytes(obj)
    if _is_missing(obj):
        return None
    if isinstance(obj, complex):
        return [_finite_or_none(obj.real), _finite_or_none(obj.imag)]
    if hasattr(obj, "total_seconds"):
        return obj.total_seconds()
    if hasattr(obj, "isoformat"):
        return obj.isoformat()
    return str(obj)


def text_of_bytes(value: bytes) -> str:
    """UTF-8 text, or Latin-1 (which decodes any bytes) when the bytes are not UTF-8."""
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError:
        return value.decode("latin-1")


def _is_missing(obj: Any) -> bool:
    # pandas.NA and pandas.NaT, recognised without importing pandas.
    return type(obj).__name__ in ("NAType", "NaTType")


def _finite_or_none(x: float) -> float | None:
    return x if math.isfinite(x) else None


def to_jsonable(array: numpy.ndarray) -> Any:
    """Nested lists (or a bare value for 0-d) that :func:`dumps` writes as strict JSON."""
    if array.dtype.names:
        fields = [to_jsonable(array[name]) for name in array.dtype.names]
        return _zip_fields(fields, array.ndim)
    converter = _CONVERTERS.get(array.dtype.kind)
    return converter(array) if converter else array.tolist()


def _zip_fields(fields: list[Any], ndim: int) -> Any:
    if ndim == 0:
        return list(fields)
    return [_zip_fields([f[i] for f in fields], ndim - 1) for i in range(len(fields[0]))]


def _with_nulls(values: numpy.ndarray, missing: numpy.ndarray) -> Any:
    # asarray: numpy hands back scalars, not 0-d arrays, for 0-d inputs.
    return numpy.where(missing, None, numpy.asarray(values).astype(object)).tolist()


def _datetimes(array: numpy.ndarray) -> Any:
    missing = numpy.isnat(array)
    text = numpy.datetime_as_string(array.astype(f"M8[{_exact_unit(array, missing)}]"))
    return _with_nulls(text, missing)


def _exact_unit(array: numpy.ndarray, missing: numpy.ndarray) -> str:
    own_unit, _ = numpy.datetime_data(array.dtype)
    for unit in _DATETIME_UNITS:
        if unit == own_unit:
            return unit
        with numpy.errstate(all="ignore"):
            converted = array.astype(f"M8[{unit}]")
        if numpy.all((converted == array) | missing):
            return unit
    return own_unit


def _timedeltas(array: numpy.ndarray) -> Any:
    missing = numpy.isnat(array)
    seconds = array / numpy.timedelta64(1, "s")
    return _with_nulls(seconds, missing)


def _floats(array: numpy.ndarray) -> Any:
    # numpy's tolist keeps long doubles as numpy scalars, which JSON cannot hold: as doubles.
    return (array.astype(numpy.float64) if array.dtype.itemsize > 8 else array).tolist()


def _complexes(array: numpy.ndarray) -> Any:
    # orjson writes the non-finite parts as null.
    return _floats(numpy.stack([array.real, array.imag], axis=-1))


def _byte_strings(array: numpy.ndarray) -> Any:
    flat = [text_of_bytes(b) for b in array.ravel().tolist()]
    return numpy.asarray(flat, dtype=object).reshape(array.shape).tolist()


_CONVERTERS = {
    "M": _datetimes,
    "m": _timedeltas,
    "f": _floats,
    "c": _complexes,
    "S": _byte_strings,
}
