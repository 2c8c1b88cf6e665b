"""What an encoding of the zarr model offers, and the JSON pieces the v2 and v3 encodings share.

This module imports neither encoding: they import it, and :mod:`.formats` holds the registry of
them, so the imports run one way.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, Protocol

import numpy
import orjson

from .model import ZarrArrayMeta, ZarrGroupMeta


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


def json_document(document: Mapping[str, Any]) -> bytes:
    """JSON bytes of a zarr document whose attributes are JSON values already (the metadata
    rule, ``tiled.structures.json``, made them so)."""
    return orjson.dumps(document)


# xarray's name for the CF missing-value marker among an array's attributes: how each format
# spells it is xarray's convention (see ``served_fill_value`` in v2, ``xarray_fill_value_json``
# in v3).
FILL_VALUE_ATTRIBUTE = "_FillValue"


def single_value(value: Any) -> Any:
    """The element of a one-element array of numbers (HDF5 and netCDF attributes are arrays),
    else ``value`` as it is."""
    if isinstance(value, numpy.ndarray) and value.size == 1 and value.dtype.kind in "biufc":
        return value.reshape(()).item()
    return value


def coords_from_separated(
    key: str, pattern: re.Pattern[str], separator: str
) -> tuple[int, ...] | None:
    """The chunk coordinates of ``key`` if it matches ``pattern`` (indices joined by
    ``separator``), else None."""
    if not pattern.match(key):
        return None
    return tuple(map(int, key.split(separator))) if key else ()


__all__ = [
    "FILL_VALUE_ATTRIBUTE",
    "ZarrEncoding",
    "coords_from_separated",
    "json_document",
    "single_value",
]
