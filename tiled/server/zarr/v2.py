"""Zarr format 2: ``.zarray``/``.zattrs``/``.zgroup`` documents and ``i.j.k`` chunk keys."""

from __future__ import annotations

import re

from zarr.core.dtype import get_data_type_from_native_dtype

from ...errors import Unsupported
from ...structures.zarr_meta import ZarrArrayMeta, ZarrGroupMeta
from .formats import coords_from_separated, json_document

_CHUNK_KEY = re.compile(r"^\d+(\.\d+)*$")


class ZarrV2Encoding:
    zarr_format = 2
    document_names = frozenset({".zarray", ".zattrs", ".zgroup", ".zmetadata"})

    def array_metadata(self, meta: ZarrArrayMeta) -> dict:
        zdtype = get_data_type_from_native_dtype(meta.dtype)
        dtype_json = zdtype.to_json(zarr_format=2)
        filters = [{"id": dtype_json["object_codec_id"]}] if dtype_json["object_codec_id"] else None
        if len(meta.compressors) > 1:
            raise Unsupported("zarr v2 can describe at most one compressor")
        compressor = meta.compressors[0].get_config() if meta.compressors else None
        fill_value = (
            None
            if meta.fill_value is None
            else zdtype.to_json_scalar(meta.fill_value, zarr_format=2)
        )
        return {
            "zarr_format": 2,
            "shape": list(meta.shape),
            "chunks": list(meta.chunk_shape),
            "dtype": dtype_json["name"],
            "compressor": compressor,
            "fill_value": fill_value,
            "filters": filters,
            "order": "C",
            "dimension_separator": ".",
        }

    def array_attributes(self, meta: ZarrArrayMeta) -> dict:
        attributes = dict(meta.attributes)
        if meta.dimension_names is not None:
            # xarray's convention for dimension names in zarr v2.
            attributes["_ARRAY_DIMENSIONS"] = list(meta.dimension_names)
        return attributes

    def array_documents(self, meta: ZarrArrayMeta) -> dict[str, bytes]:
        return {
            ".zarray": json_document(self.array_metadata(meta)),
            ".zattrs": json_document(self.array_attributes(meta)),
        }

    def group_documents(self, meta: ZarrGroupMeta) -> dict[str, bytes]:
        return {
            ".zgroup": json_document({"zarr_format": 2}),
            ".zattrs": json_document(dict(meta.attributes)),
        }

    def chunk_key(self, coords: tuple[int, ...]) -> str:
        return ".".join(str(i) for i in coords) if coords else "0"

    def parse_chunk_key(self, key: str) -> tuple[int, ...] | None:
        return coords_from_separated(key, _CHUNK_KEY, ".")
