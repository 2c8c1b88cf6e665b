"""Zarr format 2: ``.zarray``/``.zattrs``/``.zgroup`` documents and ``i.j.k`` chunk keys."""

from __future__ import annotations

import re

from ..structures.json import to_json_value
from .encoding import coords_from_separated, json_document
from .model import ZarrArrayMeta, ZarrGroupMeta
from .zarr_python import zarr_data_type

# Indices in their canonical spelling (ASCII digits, no leading zeros, at most 18 digits), so
# that one chunk has one key.
_INDEX = r"(?:0|[1-9][0-9]{0,17})"
_CHUNK_KEY = re.compile(rf"{_INDEX}(?:\.{_INDEX})*\Z")


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
