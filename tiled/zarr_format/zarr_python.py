"""The zarr-python names this project uses, taken from zarr-python's public modules.

zarr-python 3.1 made its buffers (``zarr.buffer``, ``zarr.abc.buffer``) and data types
(``zarr.dtype``) public; everything under ``zarr.core`` is private and may change in any
release. The one fallback to ``zarr.core`` (buffers under zarr-python 3.0.x) is here, and so is
the one private name without a public twin (the runner of zarr-python's I/O loop).
"""

from __future__ import annotations

import functools
from collections.abc import Coroutine
from typing import Any, TypeVar

try:
    from zarr.abc.buffer import Buffer, BufferPrototype
    from zarr.buffer import default_buffer_prototype
except ImportError:  # zarr-python 3.0.x, before the buffers became public
    from zarr.core.buffer import Buffer, BufferPrototype, default_buffer_prototype

T = TypeVar("T")


@functools.lru_cache(maxsize=512)
def zarr_data_type(dtype: Any) -> Any:
    """zarr-python's data type (a ``ZDType``) for a numpy dtype; raises TypeError or ValueError
    when zarr has none. Resolving one walks a registry, so the answers are cached."""
    from zarr.dtype import parse_dtype  # zarr-python >= 3.1, as the encodings' JSON needs

    return parse_dtype(dtype, zarr_format=3)  # the format matters only for JSON input


def run_on_zarr_loop(coroutine: Coroutine[Any, Any, T]) -> T:
    """Run ``coroutine`` to completion on zarr-python's I/O event loop, from synchronous code.

    zarr-python offers no public way to reach the loop its stores are read on; sharing it lets
    the client's own requests use the connection pool of the chunk reads.
    """
    from zarr.core.sync import sync

    return sync(coroutine)


__all__ = [
    "Buffer",
    "BufferPrototype",
    "default_buffer_prototype",
    "run_on_zarr_loop",
    "zarr_data_type",
]
