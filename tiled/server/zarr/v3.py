"""Zarr format 3: one ``zarr.json`` per node and ``c/i/j/k`` chunk keys."""

from __future__ import annotations

import re

from zarr.codecs import BytesCodec, VLenUTF8Codec
from zarr.core.dtype import get_data_type_from_native_dtype
from zarr.metadata.migrate_v3 import _convert_compressor

from ...structures.zarr_meta import ZarrArrayMeta, ZarrGroupMeta, is_variable_length_string
from .formats import json_document

_CHUNK_KEY = re.compile(r"^c(/\d+)*$")


def _serializer(meta: ZarrArrayMeta) -> dict:
    if is_variable_length_string(meta.dtype):
        return VLenUTF8Codec().to_dict()
    # Declare the byte order the chunk bytes really have (upstream always said "little").
    endian = "big" if meta.dtype.byteorder == ">" else "little"
    return BytesCodec(endian=endian).to_dict()


def _inline(metadata: dict) -> dict:
    return {"kind": "inline", "must_understand": False, "metadata": metadata}


class ZarrV3Encoding:
    zarr_format = 3
    document_names = frozenset({"zarr.json"})

    def array_metadata(self, meta: ZarrArrayMeta) -> dict:
        zdtype = get_data_type_from_native_dtype(meta.dtype)
        fill = zdtype.default_scalar() if meta.fill_value is None else meta.fill_value
        codecs = [_serializer(meta)]
        codecs += [_convert_compressor(c, zdtype).to_dict() for c in meta.compressors]
        document = {
            "zarr_format": 3,
            "node_type": "array",
            "shape": list(meta.shape),
            "data_type": zdtype.to_json(zarr_format=3),
            "chunk_grid": {
                "name": "regular",
                "configuration": {"chunk_shape": list(meta.chunk_shape)},
            },
            "chunk_key_encoding": {"name": "default", "configuration": {"separator": "/"}},
            "fill_value": zdtype.to_json_scalar(fill, zarr_format=3),
            "codecs": codecs,
            "attributes": dict(meta.attributes),
            "storage_transformers": [],
        }
        if meta.dimension_names is not None:
            document["dimension_names"] = list(meta.dimension_names)
        return document

    def group_metadata(self, meta: ZarrGroupMeta) -> dict:
        return {"zarr_format": 3, "node_type": "group", "attributes": dict(meta.attributes)}

    def array_json(self, meta: ZarrArrayMeta) -> dict[str, dict]:
        return {"zarr.json": self.array_metadata(meta)}

    def group_json(self, meta: ZarrGroupMeta) -> dict[str, dict]:
        return {"zarr.json": self.group_metadata(meta)}

    def consolidated(
        self, group: dict[str, dict], members: list[tuple[str, dict[str, dict]]]
    ) -> dict[str, dict]:
        """The group's ``zarr.json`` with every document below it inline, as zarr-python writes."""
        flat = {}
        for path, documents in members:
            document = dict(documents["zarr.json"])
            if document["node_type"] == "group":
                document["consolidated_metadata"] = _inline({})
            flat[path] = document
        return {"zarr.json": {**group["zarr.json"], "consolidated_metadata": _inline(flat)}}

    def array_documents(self, meta: ZarrArrayMeta) -> dict[str, bytes]:
        return {"zarr.json": json_document(self.array_metadata(meta))}

    def group_documents(self, meta: ZarrGroupMeta) -> dict[str, bytes]:
        return {"zarr.json": json_document(self.group_metadata(meta))}

    def chunk_key(self, coords: tuple[int, ...]) -> str:
        return "/".join(["c", *(str(i) for i in coords)])

    def parse_chunk_key(self, key: str, ndim: int | None = None) -> tuple[int, ...] | None:
        if not _CHUNK_KEY.match(key):
            return None
        return tuple(int(part) for part in key.split("/")[1:])
