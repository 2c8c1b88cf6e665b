"""Zarr format 3: one ``zarr.json`` per node and ``c/i/j/k`` chunk keys."""

from __future__ import annotations

import functools
import re
import warnings
from typing import Any

import numcodecs
import numpy
from zarr.codecs import BytesCodec, VLenUTF8Codec
from zarr.metadata.migrate_v3 import _convert_compressor

from ...structures.zarr_meta import ZarrArrayMeta, ZarrGroupMeta, is_variable_length_string
from .formats import json_document, json_safe, zarr_data_type

_CHUNK_KEY = re.compile(r"^c(/\d+)*$")


def _serializer(dtype: numpy.dtype) -> dict:
    if is_variable_length_string(dtype):
        return VLenUTF8Codec().to_dict()
    # Declare the byte order the chunk bytes really have (upstream always said "little").
    endian = "big" if dtype.byteorder == ">" else "little"
    return BytesCodec(endian=endian).to_dict()


def _frozen(config: dict) -> tuple:
    return tuple(sorted(config.items()))


@functools.lru_cache(maxsize=512)
def _data_type_json(dtype: numpy.dtype) -> Any:
    # zarr-python warns that some numpy types (fixed-length strings, bytes, records) have no
    # v3 specification yet; that is documented for users, not worth a warning per request.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return zarr_data_type(dtype).to_json(zarr_format=3)


@functools.lru_cache(maxsize=512)
def _codecs_json(dtype: numpy.dtype, compressor_configs: tuple[tuple, ...]) -> list[dict]:
    # The same (dtype, codecs) pair recurs across a tree; zarr-python builds its codec
    # objects slowly, so their JSON is built once per pair.
    zdtype = zarr_data_type(dtype)
    codecs = [_serializer(dtype)]
    with warnings.catch_warnings():
        # Codecs outside the v3 specification (numcodecs.shuffle, numcodecs.zlib: what HDF5
        # files store) make zarr-python warn; declaring them is deliberate.
        warnings.simplefilter("ignore")
        for config in compressor_configs:
            codec = numcodecs.get_codec(dict(config))
            codecs.append(_convert_compressor(codec, zdtype).to_dict())
    return codecs


def _inline(metadata: dict) -> dict:
    return {"kind": "inline", "must_understand": False, "metadata": metadata}


class ZarrV3Encoding:
    zarr_format = 3
    consolidated_document = "zarr.json"
    array_document = "zarr.json"
    document_names = frozenset({"zarr.json"})

    def array_metadata(self, meta: ZarrArrayMeta) -> dict:
        zdtype = zarr_data_type(meta.dtype)
        fill = zdtype.default_scalar() if meta.fill_value is None else meta.fill_value
        codecs = _codecs_json(meta.dtype, tuple(_frozen(c.get_config()) for c in meta.compressors))
        document = {
            "zarr_format": 3,
            "node_type": "array",
            "shape": list(meta.shape),
            "data_type": _data_type_json(meta.dtype),
            "chunk_grid": {
                "name": "regular",
                "configuration": {"chunk_shape": list(meta.chunk_shape)},
            },
            "chunk_key_encoding": {"name": "default", "configuration": {"separator": "/"}},
            "fill_value": zdtype.to_json_scalar(fill, zarr_format=3),
            "codecs": codecs,
            "attributes": json_safe(meta.attributes),
            "storage_transformers": [],
        }
        if meta.dimension_names is not None:
            document["dimension_names"] = list(meta.dimension_names)
        return document

    def group_metadata(self, meta: ZarrGroupMeta) -> dict:
        return {"zarr_format": 3, "node_type": "group", "attributes": json_safe(meta.attributes)}

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
