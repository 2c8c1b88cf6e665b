"""HTTP content coding of response bodies: which encodings (``zstd``, ``gzip``) are offered for
which media types, in what order of preference, and how each compresses.

A compressor here is a function ``bytes -> bytes``. (Upstream Tiled's registry takes factories
of file objects instead; a registry built for upstream cannot be passed here unchanged.)
Pass a :class:`CompressionRegistry` to ``build_app(compression_registry=...)`` to offer other
encodings, change their levels, or compress nothing (an empty registry).
"""

from __future__ import annotations

import gzip
from collections.abc import Callable

Compressor = Callable[[bytes], bytes]

COMPRESSIBLE = (
    "application/octet-stream",
    "application/vnd.apache.arrow.file",
    "application/json",
    "application/x-msgpack",
    "text/csv",
    "text/plain",
    "text/html",
    "application/x-hdf5",
)


class CompressionRegistry:
    """Compressors by media type and encoding, in the order the server prefers them."""

    def __init__(self) -> None:
        self._compressors: dict[str, dict[str, Compressor]] = {}

    def register(self, media_type: str, encoding: str, compressor: Compressor) -> Compressor:
        """Offer ``encoding`` for bodies of ``media_type``, after the encodings registered
        for it before; returns the compressor."""
        self._compressors.setdefault(media_type.lower(), {})[encoding.lower()] = compressor
        return compressor

    def encodings(self, media_type: str) -> list[str]:
        """The encodings offered for ``media_type``, most preferred first."""
        return list(self._compressors.get(media_type, ()))

    def dispatch(self, media_type: str, encoding: str) -> Compressor:
        """The compressor of ``encoding`` for ``media_type``; ValueError when there is none."""
        try:
            return self._compressors[media_type][encoding]
        except KeyError:
            raise ValueError(f"No {encoding!r} compressor for {media_type!r}") from None

    def choose(self, media_type: str, accepted: set[str]) -> tuple[str, Compressor] | None:
        """The first encoding for ``media_type`` in ``accepted`` (an Accept-Encoding's
        tokens), with its compressor; None when none is both offered and accepted."""
        for encoding, compressor in self._compressors.get(media_type, {}).items():
            if encoding in accepted:
                return encoding, compressor
        return None


def zstd_compress(data: bytes) -> bytes:
    import zstandard

    return zstandard.ZstdCompressor(level=3).compress(data)


def gzip_fast(data: bytes) -> bytes:
    return gzip.compress(data, compresslevel=1)


def gzip_small(data: bytes) -> bytes:
    # JSON documents are small and repetitive: a higher level pays for itself.
    return gzip.compress(data, compresslevel=6)


def register_default_compressors(registry: CompressionRegistry) -> CompressionRegistry:
    """zstd, then gzip, for every :data:`COMPRESSIBLE` media type; returns ``registry``."""
    for media_type in COMPRESSIBLE:
        registry.register(media_type, "zstd", zstd_compress)
        gzip_level = gzip_small if media_type == "application/json" else gzip_fast
        registry.register(media_type, "gzip", gzip_level)
    return registry


default_compression_registry = register_default_compressors(CompressionRegistry())

__all__ = [
    "COMPRESSIBLE",
    "CompressionRegistry",
    "default_compression_registry",
    "register_default_compressors",
]
