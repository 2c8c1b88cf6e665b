"""Decoding request bodies: which decoder reads a write of a (structure family, media type).

A decoder turns the body of a write into the data the node's adapter stores. Its arguments
depend on the family, as in upstream Tiled:

=========  ==================================  ============================================
family     called as                           returns
=========  ==================================  ============================================
array      ``decoder(body, dtype, shape)``     a numpy array of that dtype and shape
sparse     ``decoder(body)``                   a DataFrame: columns ``dim0``... and ``data``
table      ``decoder(body)``                   a pandas DataFrame
awkward    ``decoder(body, form, length)``     the buffers by form key
ragged     ``decoder(body, structure)``        a ragged array
=========  ==================================  ============================================

``default_deserialization_registry`` reads what upstream's clients send; pass another
:class:`DeserializationRegistry` to ``build_app(deserialization_registry=...)`` to accept more
media types or read them differently.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from typing import Any

from ..errors import BadRequest, UnsupportedUploadType
from . import awkward as awkward_encoding
from . import ragged as ragged_encoding
from .media_types import ARROW_FILE, JSON, OCTET_STREAM, PARQUET, ZIP

Decoder = Callable[..., Any]


def _family_name(family: Any) -> str:
    return str(getattr(family, "value", family))


class DeserializationRegistry:
    """Decoders by structure family and media type."""

    def __init__(self) -> None:
        self._decoders: dict[str, dict[str, Decoder]] = {}

    def register(self, family: Any, media_type: str, decoder: Decoder | None = None) -> Any:
        """Read bodies of ``media_type`` written to ``family`` nodes with ``decoder``; returns
        the decoder. Without ``decoder``, a decorator (as upstream's registry is used)."""
        if decoder is None:
            return lambda function: self.register(family, media_type, function)
        self._decoders.setdefault(_family_name(family), {})[media_type.lower()] = decoder
        return decoder

    def media_types(self, family: Any) -> list[str]:
        return list(self._decoders.get(_family_name(family), {}))

    def dispatch(self, family: Any, media_type: str) -> Decoder:
        """The decoder for ``family`` and ``media_type``; ValueError when there is none."""
        decoder = self._decoders.get(_family_name(family), {}).get(media_type.lower())
        if decoder is None:
            raise ValueError(f"No decoder for {_family_name(family)} bodies of {media_type!r}")
        return decoder

    def decode(self, family: Any, media_type: str, body: bytes, *args: Any) -> Any:
        """The data of ``body``: :class:`UnsupportedUploadType` (415) for a media type no
        decoder reads, :class:`BadRequest` for a body its decoder cannot read."""
        try:
            decoder = self.dispatch(family, media_type)
        except ValueError:
            supported = self.media_types(family)
            raise UnsupportedUploadType(
                f"A {_family_name(family)} body may be sent as {supported}, not {media_type!r}"
            ) from None
        try:
            return decoder(body, *args)
        except BadRequest:
            raise
        except (ValueError, TypeError, OverflowError, OSError, EOFError) as err:
            # Malformed input as the parsing libraries report it (pyarrow's ArrowInvalid is
            # a ValueError; a number too large for the node's type is an OverflowError).
            raise BadRequest(f"Could not read the {media_type} body: {err}") from None


def array_from_octets(body: bytes, dtype: Any, shape: tuple[int, ...]) -> Any:
    """Raw bytes in the node's dtype, C order."""
    import numpy

    dtype = numpy.dtype(dtype)
    expected = int(numpy.prod(shape, dtype=numpy.int64)) * dtype.itemsize
    if len(body) != expected:
        raise BadRequest(
            f"Expected {expected} bytes for shape {list(shape)} of {dtype.str}, got {len(body)}"
        )
    return numpy.frombuffer(body, dtype=dtype).reshape(shape)


def frame_from_arrow(body: bytes) -> Any:
    import pyarrow

    return pyarrow.ipc.open_file(pyarrow.py_buffer(body)).read_pandas()


def frame_from_parquet(body: bytes) -> Any:
    import pyarrow.parquet

    return pyarrow.parquet.read_table(io.BytesIO(body)).to_pandas()


# (family, media type, decoder) of the built-in decoders.
DEFAULT_DECODERS = [
    ("array", OCTET_STREAM, array_from_octets),
    ("table", ARROW_FILE, frame_from_arrow),
    ("table", PARQUET, frame_from_parquet),
    ("sparse", ARROW_FILE, frame_from_arrow),
    ("sparse", PARQUET, frame_from_parquet),
    ("awkward", ZIP, awkward_encoding.from_zipped_buffers),
    ("ragged", ZIP, ragged_encoding.from_zipped_buffers),
    ("ragged", JSON, ragged_encoding.from_json),
]


def register_default_decoders(registry: DeserializationRegistry) -> DeserializationRegistry:
    """Add the built-in decoders to ``registry``; returns it."""
    for family, media_type, decoder in DEFAULT_DECODERS:
        registry.register(family, media_type, decoder)
    return registry


__all__ = [
    "DEFAULT_DECODERS",
    "DeserializationRegistry",
    "array_from_octets",
    "frame_from_arrow",
    "frame_from_parquet",
    "register_default_decoders",
]
