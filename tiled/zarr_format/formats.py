"""The zarr formats served, each with its encoding: the one registry of them."""

from __future__ import annotations

from ..errors import UnsupportedZarrFormat
from .encoding import ZarrEncoding
from .v2 import ZarrV2Encoding
from .v3 import ZarrV3Encoding

ENCODINGS_BY_FORMAT: dict[int, ZarrEncoding] = {2: ZarrV2Encoding(), 3: ZarrV3Encoding()}


def encoding_for(zarr_format: int | str) -> ZarrEncoding:
    """The encoding of zarr format 2 or 3; anything else raises UnsupportedZarrFormat."""
    try:
        return ENCODINGS_BY_FORMAT[int(zarr_format)]
    except (KeyError, TypeError, ValueError):
        raise UnsupportedZarrFormat(zarr_format) from None


__all__ = ["ENCODINGS_BY_FORMAT", "encoding_for"]
