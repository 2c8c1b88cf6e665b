"""Helpers shared by adapters: serving stored data at the shape its structure advertises.

The exceptions live in :mod:`tiled.errors` (so the server maps them to status codes in its one
table); they are re-exported here under the names upstream Tiled gives them.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TypeVar

from ..errors import DataNotReadyError, IncompatibleShapeError, ShapeMismatchError

ArrayLike = TypeVar("ArrayLike")


def force_reshape(array: ArrayLike, desired_shape: Sequence[int]) -> ArrayLike:
    """``array`` (numpy or dask) at ``desired_shape``, without copying where numpy can avoid it.

    - Same shape: the array itself.
    - More along the leading axis than advertised, the rest equal (a file appended to after
      its structure was recorded): the advertised leading part.
    - Same number of elements: reshaped.
    - Less along the leading axis, the rest equal (the structure is ahead of the file):
      :class:`DataNotReadyError`, which a reader may retry; nothing is made up.
    - Anything else: :class:`IncompatibleShapeError`.
    """
    desired = tuple(int(n) for n in desired_shape)
    shape = tuple(array.shape)  # type: ignore[attr-defined]
    if shape == desired:
        return array
    # Compared before the reshape test: a longer file whose frames match must be trimmed,
    # even when its element count happens to equal the advertised one's.
    only_leading_differs = len(shape) == len(desired) > 0 and shape[1:] == desired[1:]
    if only_leading_differs and shape[0] > desired[0]:
        return array[: desired[0]]  # type: ignore[index]
    if math.prod(shape) == math.prod(desired):
        return array.reshape(desired)  # type: ignore[attr-defined]
    if only_leading_differs:
        raise DataNotReadyError(
            f"The structure advertises shape {desired} but the storage holds {shape} so far; "
            "the data may still be arriving: retry later."
        )
    raise IncompatibleShapeError(f"Data of shape {shape} cannot be served as shape {desired}")


def split_chunks(total: int, chunk: int) -> tuple[int, ...]:
    """``total`` cut into pieces of ``chunk``, the remainder (if any) last."""
    if chunk <= 0:
        raise ValueError(f"chunk must be positive, not {chunk}")
    whole, rest = divmod(total, chunk)
    return (chunk,) * whole + ((rest,) if rest else ())


__all__ = [
    "DataNotReadyError",
    "IncompatibleShapeError",
    "ShapeMismatchError",
    "force_reshape",
    "split_chunks",
]
