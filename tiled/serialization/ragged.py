"""Encodings of ragged arrays: the canonical layout's buffers in a zip file, nested JSON
lists, and (through awkward) Arrow and Parquet.

The zip file holds each buffer (named as awkward names it), plus ``form`` (the awkward form
as JSON) and ``length`` (8 bytes, unsigned big-endian), so that it is read back without the
node's structure: upstream's layout.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy

from ..errors import BadRequest
from ..utils import SerializationError, safe_json_dump
from . import awkward as awkward_encoding
from .media_types import ARROW_FILE, JSON, PARQUET, ZIP


def _json_values(values: list, dtype: numpy.dtype) -> numpy.ndarray:
    """JSON scalars as ``dtype``; ValueError unless they are all of one type (no ``true``
    beside ``3``), of a kind that casts to ``dtype`` (numpy's "same_kind": no floats into
    integers), and each fits it (Arrow's safe cast, as table writes are checked: no
    overflow)."""
    import pyarrow

    if not values:
        return numpy.empty(0, dtype=dtype)
    if dtype.kind == "c":  # Arrow has no complex type; JSON numbers are real parts
        if not all(type(v) in (int, float) for v in values):
            raise ValueError(f"values of a {dtype} ragged array are numbers")
        return numpy.asarray(values, dtype=dtype)
    try:
        found = pyarrow.array(values)  # one type for all, or refused
        if found.null_count:
            raise ValueError("null is not a value of a ragged array")
        own = numpy.dtype(found.type.to_pandas_dtype())
        # JSON integers have no sign or width: their range decides (the cast below).
        integers = own.kind in "iu" and dtype.kind in "iu"
        if not (integers or numpy.can_cast(own, dtype, "same_kind")):
            raise ValueError(f"values of type {found.type} cannot be cast safely to {dtype}")
        cast = found.cast(pyarrow.from_numpy_dtype(dtype), safe=True)
    except (pyarrow.ArrowException, OverflowError) as err:
        raise ValueError(f"The values do not fit {dtype}: {err}") from None
    result = numpy.asarray(cast.to_numpy(zero_copy_only=False), dtype=dtype)
    if dtype.kind == "f" and numpy.isinf(result).any():
        # Arrow's float narrowing rounds a number past the type's range to infinity.
        given = numpy.asarray(found.to_numpy(zero_copy_only=False), dtype="float64")
        if (numpy.isinf(result) & ~numpy.isinf(given)).any():
            raise ValueError(f"The values do not fit {dtype}: a number is out of its range")
    return result


def _buffers_from_data(form: Any, data: Any) -> tuple[int, dict[str, numpy.ndarray]]:
    """Length and buffers of nested lists ``data`` laid out as the canonical ``form``
    (ValueError for rows that do not fit it)."""
    import awkward

    buffers: dict[str, numpy.ndarray] = {}

    def leaf(form: Any, rows: list) -> int:
        dtype = numpy.dtype(form.primitive)
        grid = numpy.asarray(rows, dtype=object)  # the values as JSON gave them, uncast
        if rows and grid.shape[1:] != tuple(form.inner_shape):
            raise ValueError(
                f"Rows of shape {grid.shape[1:]} where {tuple(form.inner_shape)} was expected"
            )
        buffers[f"{form.form_key}-data"] = _json_values(grid.reshape(-1).tolist(), dtype)
        return len(rows)

    def regular(form: Any, rows: list) -> int:
        flat = []
        for row in rows:
            if len(row) != form.size:
                raise ValueError(
                    f"Row width mismatch for fixed-size dimension (form key "
                    f"{form.form_key!r}): expected {form.size}, got {len(row)}"
                )
            flat.extend(row)
        walk(form.content, flat)
        return len(rows)

    def offsets(form: Any, rows: list) -> int:
        flat: list = []
        positions = [0]
        for row in rows:
            flat.extend(row)
            positions.append(len(flat))
        buffers[f"{form.form_key}-offsets"] = numpy.asarray(positions, dtype=numpy.int64)
        walk(form.content, flat)
        return len(rows)

    builders: dict[type, Callable[[Any, list], int]] = {
        awkward.forms.NumpyForm: leaf,
        awkward.forms.RegularForm: regular,
        awkward.forms.ListOffsetForm: offsets,
    }

    def walk(form: Any, rows: list) -> int:
        builder = builders.get(type(form))
        if builder is None:
            raise TypeError(f"Unsupported form type: {type(form).__name__}")
        return builder(form, list(rows))

    return walk(form, data), buffers


def to_json(mimetype: str, array: Any, metadata: dict) -> bytes:
    return safe_json_dump(array.tolist())


def from_json(contents: str | bytes, structure: Any) -> Any:
    import awkward
    import orjson

    from ..structures.ragged import make_ragged_array

    form = structure.awkward_form
    length, buffers = _buffers_from_data(form, orjson.loads(contents))
    return make_ragged_array(awkward.from_buffers(form, length, buffers))


def to_zipped_buffers(mimetype: str, array: Any, metadata: dict) -> bytes:
    import awkward

    if array.ndim == 0:
        raise SerializationError("Cannot serialize a scalar to zipped buffers; ask for JSON")
    form, length, buffers = awkward.to_buffers(array._impl)
    # The form member is a JSON string holding the form's JSON (upstream's encoding).
    extra = {"length": int(length).to_bytes(8, "big"), "form": safe_json_dump(form.to_json())}
    return awkward_encoding.zip_buffers(buffers, extra)


def from_zipped_buffers(buffer: bytes, structure: Any = None) -> Any:
    """The ragged array of a zip file of buffers (``structure`` is not needed: the file says
    its form and length). BadRequest for a body that is not such a file."""
    import awkward
    import orjson

    from ..structures.ragged import make_ragged_array

    members = awkward_encoding.unzip_buffers(buffer)
    try:
        form = orjson.loads(members["form"])
        form = (
            awkward.forms.from_json(form)
            if isinstance(form, str)
            else awkward.forms.from_dict(form)
        )
        length = int.from_bytes(members["length"], "big")
        buffers = {
            name: numpy.frombuffer(members[name], dtype=dtype)
            for name, dtype in form.expected_from_buffers().items()
        }
        array = awkward.from_buffers(form, length, buffers)
    except Exception as err:  # a missing member, a bad form, inconsistent buffers
        raise BadRequest(f"The zip file does not hold a ragged array: {err!r}") from None
    return make_ragged_array(array)


def _via_awkward(encoder: Callable[..., bytes]) -> Callable[..., bytes]:
    def encode(mimetype: str, array: Any, metadata: dict) -> bytes:
        import awkward

        if array.ndim == 0:
            raise SerializationError(f"Cannot serialize a scalar as {mimetype}; ask for JSON")
        return encoder(mimetype, awkward.to_buffers(array._impl), metadata)

    return encode


to_arrow = _via_awkward(awkward_encoding.to_arrow)
to_parquet = _via_awkward(awkward_encoding.to_parquet)

RAGGED_ENCODERS = {JSON: to_json, ZIP: to_zipped_buffers, ARROW_FILE: to_arrow, PARQUET: to_parquet}


def register_ragged(registry: Any) -> None:
    for media_type, encoder in RAGGED_ENCODERS.items():
        registry.register("ragged", media_type, awkward_encoding._data_encoder(media_type, encoder))


__all__ = [
    "from_json",
    "from_zipped_buffers",
    "to_arrow",
    "to_json",
    "to_parquet",
    "to_zipped_buffers",
]
