"""Array structures and their data types.

A data type is a :class:`BuiltinDtype` (one numpy scalar type) or a :class:`StructDtype`
(a record of named fields). Both convert to and from numpy dtypes and upstream Tiled's JSON.
numpy is imported lazily so that this module stays cheap to import.
"""

from __future__ import annotations

import enum
import functools
import math
import numbers
import os
import re
import sys
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Union

from ..errors import InvalidDtype, InvalidStructure

if TYPE_CHECKING:
    import numpy


class Endianness(str, enum.Enum):
    big = "big"
    little = "little"
    not_applicable = "not_applicable"


class Kind(str, enum.Enum):
    bit_field = "t"
    boolean = "b"
    integer = "i"
    unsigned_integer = "u"
    floating_point = "f"
    complex_floating_point = "c"
    timedelta = "m"
    datetime = "M"
    string = "S"
    unicode = "U"
    other = "V"
    object = "O"


_ENDIANNESS_TO_CHAR = {Endianness.big: ">", Endianness.little: "<", Endianness.not_applicable: "|"}
_CHAR_TO_ENDIANNESS = {v: k for k, v in _ENDIANNESS_TO_CHAR.items()}
_HOST = Endianness.little if sys.byteorder == "little" else Endianness.big
_DT_UNITS = re.compile(r"^\[(\d*)(Y|M|W|D|h|m|s|ms|us|μs|ns|ps|fs|as|generic)\]$")
_ALLOWED_ITEMSIZES = {
    Kind.boolean: {1},
    Kind.integer: {1, 2, 4, 8},
    Kind.unsigned_integer: {1, 2, 4, 8},
    Kind.floating_point: {2, 4, 8, 16},
    Kind.complex_floating_point: {8, 16, 32},
    Kind.timedelta: {8},
    Kind.datetime: {8},
}
# Kinds whose itemsize the type itself sets (a string's length): numpy keeps it in a C int, and
# an empty one is numpy's "size not given yet", which no array can have.
_FLEXIBLE_KINDS = frozenset({Kind.string, Kind.unicode, Kind.other})
_LARGEST_ITEMSIZE = 2**31 - 1
# numpy counts an array's elements and bytes in signed 64-bit integers: a larger one cannot be
# read, sliced or even described to a client.
LARGEST_SIZE = 2**63 - 1


# numpy type characters that have a Tiled data type; "c" (numpy's one-byte character) is the
# bytes string "S1".
_NUMPY_CHARS = "?bBhHiIlLqQefdgFDGSUVOmMc"


def _check_itemsize(itemsize: Any) -> None:
    # A boolean is an int to Python, but not a size a client meant.
    if not isinstance(itemsize, int) or isinstance(itemsize, bool) or itemsize < 0:
        raise InvalidDtype(itemsize, "itemsize must be a non-negative integer")


def _objects_allowed() -> bool:
    return os.environ.get("TILED_ALLOW_OBJECT_ARRAYS", "0") != "0"


@dataclass(frozen=True)
class BuiltinDtype:
    endianness: Endianness
    kind: Kind
    itemsize: int
    dt_units: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "endianness", Endianness(self.endianness))
        try:
            object.__setattr__(self, "kind", Kind(self.kind))
        except ValueError:
            raise InvalidDtype(self.kind, "unknown kind") from None
        if self.kind is Kind.object and not _objects_allowed():
            raise InvalidDtype("O", "object arrays are not allowed")
        _check_itemsize(self.itemsize)
        allowed = _ALLOWED_ITEMSIZES.get(self.kind)
        if allowed is not None and self.itemsize not in allowed:
            raise InvalidDtype(self.to_string_unchecked(), f"itemsize {self.itemsize} invalid")
        if self.kind in _FLEXIBLE_KINDS and not 0 < self.itemsize <= _LARGEST_ITEMSIZE:
            raise InvalidDtype(
                self.to_string_unchecked(),
                f"itemsize must be between 1 and {_LARGEST_ITEMSIZE} for kind {self.kind.value}",
            )
        if self.kind is Kind.unicode and self.itemsize % 4:
            raise InvalidDtype(self.itemsize, "unicode itemsize must be a multiple of 4")
        if self.kind in (Kind.datetime, Kind.timedelta):
            if self.dt_units is not None and not _DT_UNITS.match(self.dt_units):
                raise InvalidDtype(self.dt_units, "bad datetime units")
        elif self.dt_units is not None:
            raise InvalidDtype(
                self.dt_units, f"units given for non-datetime kind {self.kind.value}"
            )

    # numpy interop -------------------------------------------------------------------------
    @classmethod
    def from_numpy_dtype(cls, dtype: numpy.dtype) -> BuiltinDtype:
        import numpy

        if dtype.fields is not None:
            raise InvalidDtype(str(dtype), "structured dtypes are StructDtype")
        if dtype.subdtype is not None:
            raise InvalidDtype(str(dtype), "sub-array dtypes are only allowed as record fields")
        if not isinstance(dtype, numpy.dtype) or dtype.char not in _NUMPY_CHARS:
            raise InvalidDtype(str(dtype), "no Tiled data type corresponds")
        byteorder = dtype.byteorder
        endianness = _HOST if byteorder == "=" else _CHAR_TO_ENDIANNESS[byteorder]
        dt_units = None
        if dtype.kind in "mM":
            unit, count = numpy.datetime_data(dtype)
            dt_units = f"[{'' if count == 1 else count}{unit}]"
        return cls(endianness, Kind(dtype.kind), dtype.itemsize, dt_units)

    def to_string_unchecked(self) -> str:
        size = self.itemsize // 4 if self.kind is Kind.unicode else self.itemsize
        units = self.dt_units or ""
        return f"{_ENDIANNESS_TO_CHAR[self.endianness]}{self.kind.value}{size}{units}"

    def to_numpy_str(self) -> str:
        """The numpy type string, e.g. ``<f8``, ``<U7``, ``<M8[ns]``."""
        return self.to_string_unchecked()

    def to_numpy_dtype(self) -> numpy.dtype:
        return self._numpy_dtype

    @functools.cached_property
    def _numpy_dtype(self) -> numpy.dtype:
        # Asked on every chunk and read: made once per (immutable) value.
        import numpy

        return numpy.dtype(self.to_numpy_str())

    @classmethod
    def from_string(cls, value: str) -> BuiltinDtype:
        """Parse a numpy type string such as ``<f8``; raise :class:`InvalidDtype` if it is not one."""
        import numpy

        if not isinstance(value, str):
            raise InvalidDtype(value, "expected a numpy type string")
        try:
            dtype = numpy.dtype(value)
        except (TypeError, ValueError) as err:
            raise InvalidDtype(value, str(err)) from None
        return cls.from_numpy_dtype(dtype)

    # JSON ----------------------------------------------------------------------------------
    def to_json(self) -> dict[str, Any]:
        return {
            "endianness": self.endianness.value,
            "kind": self.kind.value,
            "itemsize": self.itemsize,
            "dt_units": self.dt_units,
        }

    @classmethod
    def from_json(cls, value: dict[str, Any]) -> BuiltinDtype:
        try:
            return cls(
                Endianness(value["endianness"]),
                Kind(value["kind"]),
                value["itemsize"],
                value.get("dt_units"),
            )
        except (KeyError, TypeError, ValueError) as err:
            if isinstance(err, InvalidDtype):
                raise
            raise InvalidDtype(value, str(err)) from None


@dataclass(frozen=True)
class Field:
    name: str
    dtype: BuiltinDtype | StructDtype
    shape: tuple[int, ...] | None = None

    @classmethod
    def from_numpy_descr(cls, name: str, dtype: numpy.dtype) -> Field:
        shape = None
        if dtype.subdtype is not None:
            dtype, shape = dtype.subdtype
        return cls(name, data_type_from_numpy(dtype), tuple(shape) if shape else None)

    def to_numpy_descr(self) -> tuple:
        base = self.dtype.to_numpy_descr_type()
        return (self.name, base) if self.shape is None else (self.name, base, self.shape)

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "dtype": self.dtype.to_json(),
            "shape": list(self.shape) if self.shape is not None else None,
        }

    @classmethod
    def from_json(cls, value: dict[str, Any]) -> Field:
        shape = value.get("shape")
        return cls(
            value["name"], data_type_from_json(value["dtype"]), tuple(shape) if shape else None
        )


@dataclass(frozen=True)
class StructDtype:
    itemsize: int
    fields: tuple[Field, ...]

    def __post_init__(self) -> None:
        object.__setattr__(self, "fields", tuple(self.fields))
        _check_itemsize(self.itemsize)
        if not self.fields:
            raise InvalidDtype(self.itemsize, "a record type needs at least one field")
        # numpy is the judge of a record type (field names, duplicates, sub-array shapes): what
        # it refuses here could be neither stored nor read.
        import numpy

        try:
            packed = numpy.dtype(self.to_numpy_descr())
        except (TypeError, ValueError) as err:
            raise InvalidDtype(self.to_numpy_descr(), f"not a valid record type: {err}") from None
        if self.itemsize < packed.itemsize:
            raise InvalidDtype(
                self.itemsize,
                f"itemsize {self.itemsize} is smaller than the {packed.itemsize} bytes its "
                "fields take",
            )

    @classmethod
    def from_numpy_dtype(cls, dtype: numpy.dtype) -> StructDtype:
        if dtype.fields is None:
            raise InvalidDtype(str(dtype), "not a structured dtype")
        fields = tuple(Field.from_numpy_descr(name, dtype.fields[name][0]) for name in dtype.names)
        return cls(dtype.itemsize, fields)

    def to_numpy_descr(self) -> list[tuple]:
        return [f.to_numpy_descr() for f in self.fields]

    def max_depth(self) -> int:
        """How deeply records nest: 1 when every field is a builtin type."""
        return max(
            (1 + f.dtype.max_depth() if isinstance(f.dtype, StructDtype) else 1)
            for f in self.fields
        )

    def to_numpy_descr_type(self) -> list[tuple]:
        return self.to_numpy_descr()

    def to_numpy_dtype(self) -> numpy.dtype:
        import numpy

        return numpy.dtype(self.to_numpy_descr())

    def to_json(self) -> dict[str, Any]:
        return {"itemsize": self.itemsize, "fields": [f.to_json() for f in self.fields]}

    @classmethod
    def from_json(cls, value: dict[str, Any]) -> StructDtype:
        try:
            return cls(value["itemsize"], tuple(Field.from_json(f) for f in value["fields"]))
        except (KeyError, TypeError) as err:
            raise InvalidDtype(value, str(err)) from None


# A builtin dtype used inside a record field is written as its numpy type string.
BuiltinDtype.to_numpy_descr_type = BuiltinDtype.to_numpy_str  # type: ignore[attr-defined]

DataType = Union[BuiltinDtype, StructDtype]


def data_type_from_numpy(dtype: Any) -> DataType:
    """The Tiled data type of a numpy dtype (or anything ``numpy.dtype()`` accepts)."""
    import numpy

    try:
        dtype = numpy.dtype(dtype)
    except (TypeError, ValueError) as err:
        raise InvalidDtype(dtype, str(err)) from None
    if dtype.fields is not None:
        return StructDtype.from_numpy_dtype(dtype)
    return BuiltinDtype.from_numpy_dtype(dtype)


def data_type_from_json(value: dict[str, Any]) -> DataType:
    if not isinstance(value, dict):
        raise InvalidDtype(value, "expected a JSON object")
    if "fields" in value:
        return StructDtype.from_json(value)
    return BuiltinDtype.from_json(value)


def checked_sizes(values: Any, what: str) -> tuple[int, ...]:
    """``values`` (a shape, one dimension's chunks) as sizes: integers (numpy's too, but not
    booleans), none negative or beyond :data:`LARGEST_SIZE`; else :class:`InvalidStructure`."""
    if isinstance(values, str | bytes | dict) or not hasattr(values, "__iter__"):
        raise InvalidStructure(f"{what} must be a list of integers, not {values!r}")
    sizes = tuple(values)
    if all(type(size) is int for size in sizes):  # the usual case, quickly (chunk lists)
        if not sizes or (0 <= min(sizes) and max(sizes) <= LARGEST_SIZE):
            return sizes
    for size in sizes:
        # A float, a string or a boolean would be silently truncated by int().
        if isinstance(size, bool) or not isinstance(size, numbers.Integral):
            raise InvalidStructure(f"{what} must be integers, not {size!r}")
        if not 0 <= size <= LARGEST_SIZE:
            raise InvalidStructure(f"{what} must be between 0 and {LARGEST_SIZE}, not {size}")
    return tuple(int(size) for size in sizes)


def checked_resizable(resizable: Any, rank: int) -> bool | tuple[bool, ...]:
    """``resizable`` as a boolean, or one per dimension of an array of ``rank``; else
    :class:`InvalidStructure`."""
    if isinstance(resizable, bool):
        return resizable
    if (
        isinstance(resizable, list | tuple)
        and len(resizable) == rank
        and all(isinstance(r, bool) for r in resizable)
    ):
        return tuple(resizable)
    raise InvalidStructure(f"resizable must be a boolean or one per dimension, not {resizable!r}")


def checked_dims(dims: Any, rank: int) -> tuple[str, ...]:
    """``dims`` as one name per dimension of an array of ``rank``; else
    :class:`InvalidStructure`."""
    if not isinstance(dims, list | tuple) or not all(isinstance(d, str) for d in dims):
        raise InvalidStructure(f"dims must be a list of names, not {dims!r}")
    if len(dims) != rank:
        raise InvalidStructure(f"dims {list(dims)} do not match rank {rank}")
    return tuple(dims)


def _normalize_chunks(chunks: Any, shape: tuple[int, ...]) -> tuple[tuple[int, ...], ...]:
    if isinstance(chunks, str | bytes | dict) or not hasattr(chunks, "__iter__"):
        raise InvalidStructure(f"chunks must be a list of lists of integers, not {chunks!r}")
    result = tuple(checked_sizes(dim, "chunk sizes") for dim in chunks)
    if len(result) != len(shape):
        raise InvalidStructure(
            f"chunks {result} have rank {len(result)}, shape {shape} has {len(shape)}"
        )
    for dim_chunks, size in zip(result, shape, strict=True):
        if sum(dim_chunks) != size or any(c < 0 for c in dim_chunks):
            raise InvalidStructure(
                f"chunks {list(dim_chunks)} do not add up to dimension size {size}"
            )
    return result


@dataclass(frozen=True)
class ArrayStructure:
    data_type: DataType
    chunks: tuple[tuple[int, ...], ...]
    shape: tuple[int, ...]
    dims: tuple[str, ...] | None = None
    resizable: bool | tuple[bool, ...] = False

    def __post_init__(self) -> None:
        shape = checked_sizes(self.shape, "shape")
        nbytes = math.prod(shape) * self.data_type.itemsize
        if nbytes > LARGEST_SIZE:
            raise InvalidStructure(
                f"An array of shape {list(shape)} would hold {nbytes} bytes, more than "
                f"{LARGEST_SIZE}"
            )
        object.__setattr__(self, "shape", shape)
        object.__setattr__(self, "chunks", _normalize_chunks(self.chunks, shape))
        if self.dims is not None:
            object.__setattr__(self, "dims", checked_dims(self.dims, len(shape)))
        object.__setattr__(self, "resizable", checked_resizable(self.resizable, len(shape)))

    @property
    def ndim(self) -> int:
        return len(self.shape)

    @classmethod
    def from_array(cls, array: Any, shape=None, chunks=None, dims=None) -> ArrayStructure:
        """Describe a numpy-like (or dask) array; chunks default to the array's own or one chunk."""
        shape = tuple(array.shape if shape is None else shape)
        if chunks is None:
            chunks = getattr(array, "chunks", None) or tuple((s,) for s in shape)
        return cls(data_type_from_numpy(array.dtype), chunks, shape, dims)

    def to_json(self) -> dict[str, Any]:
        return {
            "data_type": self.data_type.to_json(),
            "chunks": [list(c) for c in self.chunks],
            "shape": list(self.shape),
            "dims": list(self.dims) if self.dims is not None else None,
            "resizable": list(self.resizable)
            if isinstance(self.resizable, tuple)
            else self.resizable,
        }

    @classmethod
    def from_json(cls, value: dict[str, Any]) -> ArrayStructure:
        try:
            resizable = value.get("resizable", False)
            return cls(
                data_type=data_type_from_json(value["data_type"]),
                chunks=value["chunks"],
                shape=value["shape"],
                dims=value.get("dims"),
                resizable=tuple(resizable) if isinstance(resizable, list) else resizable,
            )
        except (KeyError, TypeError) as err:
            raise InvalidStructure(f"Invalid array structure: {err}") from None


__all__ = [
    "ArrayStructure",
    "BuiltinDtype",
    "DataType",
    "Endianness",
    "Field",
    "Kind",
    "LARGEST_SIZE",
    "StructDtype",
    "checked_dims",
    "checked_resizable",
    "checked_sizes",
    "data_type_from_json",
    "data_type_from_numpy",
]
