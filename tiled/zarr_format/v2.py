"""Zarr format 2: ``.zarray``/``.zattrs``/``.zgroup`` documents and ``i.j.k`` chunk keys."""

from __future__ import annotations

import math
import numbers
import re
import warnings
from typing import Any

import numpy

from ..structures.json import to_json_value
from .encoding import FILL_VALUE_ATTRIBUTE, coords_from_separated, json_document, single_value
from .model import ZarrArrayMeta, ZarrGroupMeta
from .zarr_python import zarr_data_type

# Indices in their canonical spelling (ASCII digits, no leading zeros, at most 18 digits), so
# that one chunk has one key.
_INDEX = r"(?:0|[1-9][0-9]{0,17})"
_CHUNK_KEY = re.compile(rf"{_INDEX}(?:\.{_INDEX})*\Z")


def _no_fill_of_its_own(fill_value: Any) -> bool:
    # None, or the NaN the server declares for every floating-point array.
    if fill_value is None:
        return True
    try:
        return bool(numpy.isnan(fill_value))
    except TypeError:
        return False


def served_fill_value(meta: ZarrArrayMeta) -> Any:
    """The fill value the ``.zarray`` declares: the array's own, or the number its
    ``_FillValue`` attribute holds where the array has none of its own (None, or NaN).

    xarray reads a v2 fill value as the missing-value marker in place of the ``_FillValue``
    attribute (as it writes them: the attribute becomes the fill value), so a float array
    declaring NaN would have its -9999 markers read as data."""
    own = meta.fill_value
    marker = single_value(meta.attributes.get(FILL_VALUE_ATTRIBUTE))
    if (
        not _no_fill_of_its_own(own)
        or meta.dtype.kind not in "iufc"
        or isinstance(marker, bool | numpy.bool_)
        or not isinstance(marker, numbers.Number)
    ):
        return own
    with warnings.catch_warnings(), numpy.errstate(all="ignore"):
        warnings.simplefilter("ignore")
        try:
            cast = numpy.asarray(marker).astype(meta.dtype)[()]
        except (TypeError, ValueError, OverflowError):
            return own
    # Only a marker the array's type holds exactly (not 1.5 in integers, nor 300 in int8).
    same = cast == marker or (
        isinstance(marker, numbers.Real) and math.isnan(marker) and numpy.isnan(cast)
    )
    return cast if same else own


class ZarrV2Encoding:
    zarr_format = 2
    consolidated_document = ".zmetadata"
    array_document = ".zarray"
    document_names = frozenset({".zarray", ".zattrs", ".zgroup", ".zmetadata"})

    def array_metadata(self, meta: ZarrArrayMeta) -> dict:
        zdtype = zarr_data_type(meta.dtype)
        dtype_json = zdtype.to_json(zarr_format=2)
        filters = [{"id": dtype_json["object_codec_id"]}] if dtype_json["object_codec_id"] else []
        # v2 has one compressor, applied after the filters: a chain of bytes-to-bytes codecs
        # (e.g. HDF5's shuffle then deflate) puts all but its last codec among the filters.
        filters += [codec.get_config() for codec in meta.compressors[:-1]]
        compressor = meta.compressors[-1].get_config() if meta.compressors else None
        fill = served_fill_value(meta)
        fill_value = None if fill is None else zdtype.to_json_scalar(fill, zarr_format=2)
        return {
            "zarr_format": 2,
            "shape": list(meta.shape),
            "chunks": list(meta.chunk_shape),
            "dtype": dtype_json["name"],
            "compressor": compressor,
            "fill_value": fill_value,
            "filters": filters or None,
            "order": "C",
            "dimension_separator": ".",
        }

    def array_attributes(self, meta: ZarrArrayMeta) -> dict:
        attributes = to_json_value(meta.attributes)
        if meta.dimension_names is not None:
            # xarray's convention for dimension names in zarr v2.
            attributes["_ARRAY_DIMENSIONS"] = list(meta.dimension_names)
        return attributes

    def array_json(self, meta: ZarrArrayMeta) -> dict[str, dict]:
        return {".zarray": self.array_metadata(meta), ".zattrs": self.array_attributes(meta)}

    def group_json(self, meta: ZarrGroupMeta) -> dict[str, dict]:
        return {".zgroup": {"zarr_format": 2}, ".zattrs": to_json_value(meta.attributes)}

    def consolidated(
        self, group: dict[str, dict], members: list[tuple[str, dict[str, dict]]]
    ) -> dict[str, dict]:
        """The group's documents plus ``.zmetadata`` holding every document below it."""
        flat = dict(group)
        for path, documents in members:
            flat.update({f"{path}/{name}": doc for name, doc in documents.items()})
        return {**group, ".zmetadata": {"zarr_consolidated_format": 1, "metadata": flat}}

    def array_documents(self, meta: ZarrArrayMeta) -> dict[str, bytes]:
        return {name: json_document(doc) for name, doc in self.array_json(meta).items()}

    def group_documents(self, meta: ZarrGroupMeta) -> dict[str, bytes]:
        return {name: json_document(doc) for name, doc in self.group_json(meta).items()}

    def chunk_key(self, coords: tuple[int, ...]) -> str:
        return ".".join(str(i) for i in coords) if coords else "0"

    def parse_chunk_key(self, key: str, ndim: int | None = None) -> tuple[int, ...] | None:
        """Chunk coordinates of ``key``, or None if it is not a chunk key.

        A 0-d array has one chunk, keyed ``0``.
        """
        if ndim == 0 and key == "0":
            return ()
        return coords_from_separated(key, _CHUNK_KEY, ".")
