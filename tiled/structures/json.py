"""Metadata as JSON: the one rule for the values JSON has no spelling for.

Metadata holds what code and files put there: numpy scalars and arrays, datetimes, bytes,
non-finite floats. Every route that emits metadata (``/api/v1`` in JSON and in msgpack, the
zarr attributes, the exports), the catalog that stores it and the client that sends it write
such a value the same way, so that it reads the same wherever it is read:

- NaN, +inf and -inf: ``null`` in JSON (which has no spelling for them; upstream Tiled's JSON
  responses and its catalog write null too). msgpack, which has one, keeps them, as
  upstream's msgpack responses do (its Python client reads NaN metadata back as NaN);
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
  (the client) it is refused instead (TypeError), as upstream's client refuses it;
- text that UTF-8 cannot encode (a lone surrogate, which a JSON string may spell ``"\\ud800"``):
  where served, each lone surrogate is written ``?``; where stored or sent, refused
  (:class:`UnstorableValue`, a 400), so that the catalog never holds metadata that no route
  could serve as it is. Nesting deeper than the encoders go is refused so on every road, and
  so are integers past 64 bits, which msgpack cannot carry (served, such a value stored by
  other means goes as its text in msgpack).

So a value read through msgpack, written as JSON by this rule, is what the JSON routes give.
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
from collections.abc import Callable, Iterator, Mapping
from pathlib import PurePath
from typing import Any

from ..errors import BadRequest

DATA_URI_PREFIX = "data:application/octet-stream;base64,"

Fallback = Callable[[Any], Any]


class UnstorableValue(BadRequest):
    """A value stored or sent that JSON written as UTF-8 cannot hold (see the module)."""


class WideInteger(UnstorableValue, TypeError):
    """An integer stored or sent that 64 bits cannot hold (a TypeError too, as the client's
    other refusals of values without a form are, and as upstream's client raises it)."""


def to_json_value(value: Any, fallback: Fallback = str) -> Any:
    """``value`` with every part a JSON value (a dict with text keys, a list, text, an integer,
    a finite float, a boolean or None), by the rule of this module."""
    orjson = _orjson()
    if orjson is not None:
        # Written by the rule and read back: in C, several times faster than walking in Python.
        try:
            return orjson.loads(orjson.dumps(value, default=_hook(fallback), option=_options()))
        except TypeError:
            pass  # what orjson cannot write (numpy keys, integers past 64 bits): walk it
    return _Walk(fallback, keep_non_finite=False).value(value)


def to_document_value(value: Any, fallback: Fallback = str) -> Any:
    """:func:`to_json_value`, except that non-finite floats stay floats: for documents that
    are sent either as JSON (which writes them null) or as msgpack (which keeps them)."""
    orjson = _orjson()
    if orjson is not None:
        # Metadata read from a catalog is plain JSON already: orjson tells so in C, and it is
        # given back as it is (enumerations and UUIDs are written by the rule by both encoders).
        try:
            orjson.dumps(value, option=_plain_only())
        except TypeError:
            pass
        else:
            return value
    return _Walk(fallback, keep_non_finite=True).value(value)


def json_default(value: Any) -> Any:
    """The ``default=`` hook of orjson and ``json`` that applies the rule (text fallback)."""
    return _TEXT_FALLBACK.value(value)


def dumps(value: Any, fallback: Fallback = str) -> bytes:
    """UTF-8 JSON of ``value`` by the rule (orjson where installed, else the standard library)."""
    orjson = _orjson()
    if orjson is not None:  # else a client installed without the server's dependencies
        try:
            return orjson.dumps(value, default=_hook(fallback), option=_options())
        except TypeError:
            # Keys orjson cannot write (numpy numbers), integers past 64 bits, lone
            # surrogates, deep nesting: the slower road, which also raises the fallback's
            # TypeError again where there is one, and tells the rest apart.
            pass
    return _standard_dumps(value, fallback)


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


@functools.cache
def _plain_only() -> int:
    # Without a default hook and with these, orjson refuses everything but plain values.
    orjson = _orjson()
    return (
        orjson.OPT_PASSTHROUGH_DATETIME
        | orjson.OPT_PASSTHROUGH_SUBCLASS
        | orjson.OPT_PASSTHROUGH_DATACLASS
    )


def _hook(fallback: Fallback) -> Callable[[Any], Any]:
    return json_default if fallback is str else _Walk(fallback, keep_non_finite=False).value


def _standard_dumps(value: Any, fallback: Fallback) -> bytes:
    try:
        plain = _Walk(fallback, keep_non_finite=False).value(value)
        text = json.dumps(plain, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
    except RecursionError:
        raise UnstorableValue("The value is nested too deeply to be written as JSON") from None
    if fallback is not str:  # stored or sent: what msgpack documents cannot carry is refused
        wide = next(wide_integers(plain), None)
        if wide is not None:
            raise WideInteger(
                f"Integer exceeds 64-bit range: {wide} (metadata are also sent as msgpack, "
                "which cannot hold it: store it as text)"
            )
    try:
        return text.encode()
    except UnicodeEncodeError as err:
        if fallback is str:  # served: a response never fails (see the module)
            return text.encode(errors="replace")
        raise UnstorableValue(
            f"Text holding a lone surrogate ({err.object[err.start : err.end]!r}) has no UTF-8 "
            "form: it cannot be written as JSON"
        ) from None


# The integers 64 bits hold, signed or unsigned: what msgpack and the databases' JSON hold.
STORABLE_INTEGERS = range(-(2**63), 2**64)


def wide_integers(value: Any) -> Iterator[int]:
    """The integers of a JSON value that 64 bits (signed or unsigned) cannot hold."""
    pending = [value]
    while pending:
        item = pending.pop()
        if type(item) is int:
            if item not in STORABLE_INTEGERS:
                yield item
        elif type(item) is dict:
            pending.extend(item.values())
        elif type(item) is list:
            pending.extend(item)


def _data_uri(value: bytes | bytearray | memoryview) -> str:
    return DATA_URI_PREFIX + base64.b64encode(bytes(value)).decode()


class _Walk:
    """The rule, applied in Python."""

    def __init__(self, fallback: Fallback, keep_non_finite: bool):
        self.fallback = fallback
        self.keep_non_finite = keep_non_finite

    def value(self, value: Any) -> Any:
        kind = type(value)
        if kind is str or kind is int or kind is bool or value is None:
            return value
        if kind is float:
            return value if self.keep_non_finite or math.isfinite(value) else None
        if kind is dict:
            return {self.key(k): self.value(v) for k, v in value.items()}
        if kind is list:
            return [self.value(item) for item in value]
        return self.converted(value)

    def key(self, key: Any) -> str:
        if isinstance(key, str):
            return str(key)
        converted = _Walk(self.fallback, keep_non_finite=False).value(key)
        return converted if isinstance(converted, str) else json.dumps(converted)

    def converted(self, value: Any) -> Any:
        """The rule for anything but the plain JSON types."""
        # Subclasses first (numpy.float64 is a float, numpy.str_ a str, IntEnum an int), then
        # missing values (pandas.NaT is a datetime), then the types JSON lacks.
        if isinstance(value, enum.Enum):
            return self.value(value.value)
        if isinstance(value, str):
            return str(value)
        if isinstance(value, int):
            return int(value)
        if isinstance(value, float):
            return self.value(float(value))
        if type(value).__name__ in ("NaTType", "NAType"):  # pandas' missing values, unimported
            return None
        if isinstance(value, Mapping):
            return {self.key(k): self.value(v) for k, v in value.items()}
        if isinstance(value, list | tuple | set | frozenset):
            return [self.value(item) for item in value]
        if isinstance(value, bytes | bytearray | memoryview):
            return _data_uri(value)
        if isinstance(value, datetime.timedelta):
            return value.total_seconds()
        if isinstance(value, datetime.date | datetime.time):  # datetimes are dates
            return value.isoformat()
        if isinstance(value, uuid.UUID | PurePath):
            return str(value)
        if isinstance(value, complex):
            return [self.value(value.real), self.value(value.imag)]
        numpy = sys.modules.get("numpy")  # no numpy value exists unless numpy was imported
        if numpy is not None and isinstance(value, numpy.ndarray | numpy.generic):
            return self.numpy_value(numpy, numpy.asarray(value))
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            return self.value({f.name: getattr(value, f.name) for f in dataclasses.fields(value)})
        return self.value(self.fallback(value))

    def numpy_value(self, numpy: Any, array: Any) -> Any:
        """An array (a 0-d one for a scalar) as nested lists (a bare value) by the rule."""
        kind = array.dtype.kind
        if kind in "biuU":
            return array.tolist()
        if kind == "f":
            if array.dtype.itemsize > 8:  # long doubles: tolist keeps them numpy scalars
                array = array.astype(numpy.float64)
            finite = numpy.isfinite(array)
            if self.keep_non_finite or finite.all():
                return array.tolist()
            return numpy.where(finite, array, None).tolist()
        if kind == "c":
            return self.numpy_value(numpy, numpy.stack([array.real, array.imag], axis=-1))
        if kind in "mM":
            missing = numpy.isnat(array)
            if kind == "M":
                values = numpy.datetime_as_string(array)
            else:
                values = array / numpy.timedelta64(1, "s")
            return numpy.where(missing, None, numpy.asarray(values).astype(object)).tolist()
        # Bytes, objects and structured values: their Python values, by the rule.
        return self.value(array.tolist())


_TEXT_FALLBACK = _Walk(str, keep_non_finite=False)


__all__ = [
    "DATA_URI_PREFIX",
    "UnstorableValue",
    "WideInteger",
    "dumps",
    "dumps_text",
    "json_default",
    "refuse",
    "to_document_value",
    "to_json_value",
    "wide_integers",
]
