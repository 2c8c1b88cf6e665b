"""Metadata as JSON: the one rule for the values JSON has no spelling for.

Metadata holds what code and files put there: numpy scalars and arrays, datetimes, bytes,
non-finite floats. Every route that emits metadata (``/api/v1`` in JSON and in msgpack, the
zarr attributes, the exports), the catalog that stores it and the client that sends it write
such a value the same way, so that it reads the same wherever it is read:

- NaN, +inf and -inf: ``null`` (strict JSON has no spelling for them; upstream Tiled's JSON
  responses and its catalog write null too);
- numpy scalars: the Python value, by these rules; numpy arrays: nested lists of them;
- datetimes, dates and times (Python's or pandas'): ISO 8601 text (``isoformat``); numpy
  datetime64: ISO 8601 text at its own unit; NaT: ``null``;
- timedeltas (Python's, numpy's): seconds, as a number;
- bytes: a data URI, ``data:application/octet-stream;base64,...`` (as upstream's client sends
  them);
- tuples, sets and frozensets: lists; enumerations: their value; UUIDs and paths: their text;
  complex numbers: ``[real, imag]``; dataclasses: their fields;
- mapping keys: text (numbers, true, false and null as JSON writes them);
- any other value: ``fallback(value)``: its text (``str``) where metadata is served, so that a
  value without a JSON form never fails a response; where it is stored (the catalog) or sent
  (the client) it is refused instead (TypeError), as upstream's client refuses it.

Values that are JSON already come back as they are, so metadata that went through the rule
(the catalog's) goes through it again unchanged. Data values (arrays and tables served as
JSON) follow their own rule: ``tiled.serialization._json``.
"""

from __future__ import annotations

import base64
import dataclasses
import datetime
import enum
import functools
import json
import math
import sys
import uuid
from collections.abc import Callable, Mapping
from pathlib import PurePath
from typing import Any

DATA_URI_PREFIX = "data:application/octet-stream;base64,"

Fallback = Callable[[Any], Any]


def to_json_value(value: Any, fallback: Fallback = str) -> Any:
    """``value`` with every part a JSON value (a dict with text keys, a list, text, an integer,
    a finite float, a boolean or None), by the rule of this module."""
    orjson = _orjson()
    if orjson is not None:
        # Written by the rule and read back: in C, several times faster than walking in Python
        # (this runs on every metadata response).
        try:
            return orjson.loads(orjson.dumps(value, default=_hook(fallback), option=_options()))
        except TypeError:
            pass  # what orjson cannot write (numpy keys, integers past 64 bits): walk it
    return _walked(value, fallback)


def json_default(value: Any) -> Any:
    """The ``default=`` hook of orjson and ``json`` that applies the rule (text fallback)."""
    return _walked(value, str)


def dumps(value: Any, fallback: Fallback = str) -> bytes:
    """UTF-8 JSON of ``value`` by the rule (orjson where installed, else the standard library)."""
    orjson = _orjson()
    if orjson is None:  # a client installed without the server's dependencies
        return _standard_dumps(value, fallback).encode()
    try:
        return orjson.dumps(value, default=_hook(fallback), option=_options())
    except TypeError:
        # Keys orjson cannot write (numpy numbers), integers past 64 bits: the slower road,
        # which also raises the fallback's TypeError again where there is one.
        return _standard_dumps(value, fallback).encode()


def dumps_text(value: Any, fallback: Fallback = str) -> str:
    """:func:`dumps` as text (what SQLAlchemy's JSON columns and ``httpx`` bodies take)."""
    return dumps(value, fallback).decode()


def refuse(value: Any) -> Any:
    """A fallback that refuses a value without a JSON form (where a person can fix it)."""
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")


@functools.cache
def _orjson() -> Any:
    try:
        import orjson
    except ImportError:
        return None
    return orjson


@functools.cache
def _options() -> int:
    # orjson writes every native type as the rule does (NaN as null, tuples as lists,
    # enumerations, UUIDs, dataclasses); datetimes are handed to the rule (``isoformat``).
    orjson = _orjson()
    return orjson.OPT_NON_STR_KEYS | orjson.OPT_PASSTHROUGH_DATETIME


def _hook(fallback: Fallback) -> Callable[[Any], Any]:
    return json_default if fallback is str else functools.partial(_walked, fallback=fallback)


def _standard_dumps(value: Any, fallback: Fallback) -> str:
    return json.dumps(
        _walked(value, fallback), ensure_ascii=False, allow_nan=False, separators=(",", ":")
    )


def _walked(value: Any, fallback: Fallback) -> Any:
    """The rule, applied in Python (where orjson is absent or cannot write ``value``)."""
    kind = type(value)
    if kind is str or kind is int or kind is bool or value is None:
        return value
    if kind is float:
        return value if math.isfinite(value) else None
    if kind is dict:
        return {_key(k, fallback): _walked(v, fallback) for k, v in value.items()}
    if kind is list:
        return [_walked(item, fallback) for item in value]
    return _converted(value, fallback)


def _key(key: Any, fallback: Fallback) -> str:
    if isinstance(key, str):
        return str(key)
    converted = _walked(key, fallback)
    return converted if isinstance(converted, str) else json.dumps(converted)


def _data_uri(value: bytes | bytearray | memoryview) -> str:
    return DATA_URI_PREFIX + base64.b64encode(bytes(value)).decode()


def _converted(value: Any, fallback: Fallback) -> Any:
    """The rule for anything but the plain JSON types."""
    # Subclasses first (numpy.float64 is a float, numpy.str_ a str, IntEnum an int), then
    # missing values (pandas.NaT is a datetime), then the types JSON lacks.
    if isinstance(value, enum.Enum):
        return _walked(value.value, fallback)
    if isinstance(value, str):
        return str(value)
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return _walked(float(value), fallback)
    if type(value).__name__ in ("NaTType", "NAType"):  # pandas' missing values, unimported
        return None
    if isinstance(value, Mapping):
        return {_key(k, fallback): _walked(v, fallback) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [_walked(item, fallback) for item in value]
    if isinstance(value, bytes | bytearray | memoryview):
        return _data_uri(value)
    if isinstance(value, datetime.timedelta):
        return value.total_seconds()
    if isinstance(value, datetime.date | datetime.time):  # datetimes are dates
        return value.isoformat()
    if isinstance(value, uuid.UUID | PurePath):
        return str(value)
    if isinstance(value, complex):
        return [_walked(value.real, fallback), _walked(value.imag, fallback)]
    numpy = sys.modules.get("numpy")  # no numpy value exists unless numpy was imported
    if numpy is not None and isinstance(value, numpy.ndarray | numpy.generic):
        return _numpy_value(numpy, numpy.asarray(value), fallback)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        fields = {f.name: getattr(value, f.name) for f in dataclasses.fields(value)}
        return _walked(fields, fallback)
    return _walked(fallback(value), fallback)


def _numpy_value(numpy: Any, array: Any, fallback: Fallback) -> Any:
    """An array (a 0-d one for a scalar) as nested lists (a bare value) by the rule."""
    kind = array.dtype.kind
    if kind in "biuU":
        return array.tolist()
    if kind == "f":
        if array.dtype.itemsize > 8:  # long doubles: tolist keeps them numpy scalars
            array = array.astype(numpy.float64)
        finite = numpy.isfinite(array)
        if finite.all():
            return array.tolist()
        return numpy.where(finite, array, None).tolist()
    if kind == "c":
        return _numpy_value(numpy, numpy.stack([array.real, array.imag], axis=-1), fallback)
    if kind in "mM":
        missing = numpy.isnat(array)
        if kind == "M":
            values = numpy.datetime_as_string(array)
        else:
            values = array / numpy.timedelta64(1, "s")
        return numpy.where(missing, None, numpy.asarray(values).astype(object)).tolist()
    # Bytes, objects and structured values: their Python values, by the rule.
    return _walked(array.tolist(), fallback)


__all__ = [
    "DATA_URI_PREFIX",
    "dumps",
    "dumps_text",
    "json_default",
    "refuse",
    "to_json_value",
]
