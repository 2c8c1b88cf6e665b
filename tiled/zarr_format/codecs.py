"""The numcodecs work of the zarr view: the codecs a server may be configured with, compressing
and decompressing chunk bytes with a codec chain, and variable-length string serialization.

The zarr model (:mod:`.model`) holds codecs as numcodecs objects; this is the one module that
constructs or runs them for it. Their JSON spellings are the encodings' business (v2 writes
the numcodecs configuration as it is; v3 renames it, see :mod:`.v3`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numcodecs
import numpy

from ..errors import TiledError

# The codecs a server may be configured with (the ``zarr.codec`` setting), by name.
_CODEC_FACTORIES: dict[str, Callable[[], numcodecs.abc.Codec] | None] = {
    "blosc-lz4": lambda: numcodecs.Blosc(cname="lz4", clevel=5, shuffle=numcodecs.Blosc.SHUFFLE),
    "zstd": lambda: numcodecs.Zstd(level=3),
    "gzip": lambda: numcodecs.GZip(level=5),
    "none": None,
}
CODEC_NAMES = tuple(_CODEC_FACTORIES)


class UnknownCodec(TiledError, ValueError):
    def __init__(self, name: str):
        super().__init__(f"Unknown zarr codec {name!r}; choose one of {list(CODEC_NAMES)}")


def compressors_for(name: str) -> tuple[numcodecs.abc.Codec, ...]:
    """The bytes-to-bytes codec chain for a configured codec name."""
    try:
        factory = _CODEC_FACTORIES[name]
    except KeyError:
        raise UnknownCodec(name) from None
    return () if factory is None else (factory(),)


def same_codecs(a: Sequence[Any], b: Sequence[Any]) -> bool:
    """Whether two codec chains encode alike (same codecs, same configurations, same order)."""
    return [c.get_config() for c in a] == [c.get_config() for c in b]


def compress(payload: Any, compressors: Sequence[Any]) -> bytes:
    """``payload`` (bytes or a contiguous array) through the codec chain, in order."""
    for codec in compressors:
        payload = codec.encode(payload)
    return payload if isinstance(payload, bytes) else bytes(payload)


def decompress(payload: Any, compressors: Sequence[Any]) -> Any:
    """Inverse of :func:`compress`: the chain undone, last codec first (a bytes-like result)."""
    for codec in reversed(compressors):
        payload = codec.decode(payload)
    return payload


def serialize_strings(values: numpy.ndarray) -> bytes:
    """Strings in zarr's ``vlen-utf8`` layout (the same bytes in format 2 and 3)."""
    return numcodecs.VLenUTF8().encode(values.astype(object).ravel())


def deserialize_strings(payload: Any) -> numpy.ndarray:
    """The flat object array of strings a ``vlen-utf8`` payload holds."""
    return numcodecs.VLenUTF8().decode(payload)


__all__ = [
    "CODEC_NAMES",
    "UnknownCodec",
    "compress",
    "compressors_for",
    "decompress",
    "deserialize_strings",
    "same_codecs",
    "serialize_strings",
]
