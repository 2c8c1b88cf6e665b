"""Pieces the v2 and v3 encodings share, and the lookup of an encoding by zarr format."""

from __future__ import annotations

import functools
import math
import re
from collections.abc import Mapping
from typing import Any, Protocol

import orjson

from ...errors import UnsupportedZarrFormat
from ...structures.zarr_meta import ZarrArrayMeta, ZarrGroupMeta


class ZarrEncoding(Protocol):
    """How one zarr format spells the neutral model: document names, JSON and chunk keys."""

    zarr_format: int
    document_names: frozenset[str]
    consolidated_document: str  # the document that carries consolidated metadata
    array_document: str  # an array's metadata document, also served at the array's own path

    def array_json(self, meta: ZarrArrayMeta) -> dict[str, dict]: ...

    def group_json(self, meta: ZarrGroupMeta) -> dict[str, dict]: ...

    def consolidated(
        self, group: dict[str, dict], members: list[tuple[str, dict[str, dict]]]
    ) -> dict[str, dict]: ...

    def array_documents(self, meta: ZarrArrayMeta) -> dict[str, bytes]: ...

    def group_documents(self, meta: ZarrGroupMeta) -> dict[str, bytes]: ...

    def chunk_key(self, coords: tuple[int, ...]) -> str: ...

    def parse_chunk_key(self, key: str, ndim: int | None = None) -> tuple[int, ...] | None: ...


def encoding_for(zarr_format: int | str) -> ZarrEncoding:
    """The encoding of zarr format 2 or 3; anything else raises UnsupportedZarrFormat."""
    from .v2 import ZarrV2Encoding
    from .v3 import ZarrV3Encoding

    encodings = {2: ZarrV2Encoding(), 3: ZarrV3Encoding()}
    try:
        return encodings[int(zarr_format)]
    except (KeyError, TypeError, ValueError):
        raise UnsupportedZarrFormat(zarr_format) from None


@functools.lru_cache(maxsize=512)
def zarr_data_type(dtype: Any) -> Any:
    """zarr-python's data type for a numpy dtype (resolving it walks a registry: cache it)."""
    from zarr.core.dtype import get_data_type_from_native_dtype

    return get_data_type_from_native_dtype(dtype)


def json_safe(value: Any) -> Any:
    # Strict JSON has no NaN/Infinity; use the strings zarr itself uses for such fill values.
    if isinstance(value, float) and not math.isfinite(value):
        return "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")
    if isinstance(value, Mapping):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    if hasattr(value, "item") and hasattr(value, "dtype"):  # numpy scalar or 0-d array
        return json_safe(value.item() if getattr(value, "ndim", 0) == 0 else value.tolist())
    if hasattr(value, "tolist"):
        return json_safe(value.tolist())
    if hasattr(value, "isoformat"):
        return value.isoformat()
    return value


def json_document(document: Mapping[str, Any]) -> bytes:
    """JSON bytes of a zarr document whose attributes already went through ``json_safe``."""
    return orjson.dumps(document)


def coords_from_separated(
    key: str, pattern: re.Pattern[str], separator: str
) -> tuple[int, ...] | None:
    if not pattern.match(key):
        return None
    return tuple(int(part) for part in key.split(separator)) if key else ()
