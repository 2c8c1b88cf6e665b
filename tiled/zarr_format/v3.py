"""Zarr format 3: one ``zarr.json`` per node and ``c/i/j/k`` chunk keys."""

from __future__ import annotations

import base64
import dataclasses
import functools
import math
import numbers
import re
import struct
import warnings
from collections.abc import Callable, Mapping
from typing import Any

import numpy
from zarr.codecs import BytesCodec, VLenUTF8Codec

from ..errors import DataUnavailable
from ..structures.json import to_json_value
from .encoding import FILL_VALUE_ATTRIBUTE, json_document, single_value
from .model import ZarrArrayMeta, ZarrGroupMeta, is_variable_length_string
from .zarr_python import zarr_data_type

# Indices in their canonical spelling (ASCII digits, no leading zeros, at most 18 digits), so
# that one chunk has one key.
_CHUNK_KEY = re.compile(r"c(?:/(?:0|[1-9][0-9]{0,17}))*\Z")

# numcodecs' Blosc shuffle modes by number, with the names the v3 blosc codec uses.
_BLOSC_SHUFFLE_NAMES = {0: "noshuffle", 1: "shuffle", 2: "bitshuffle"}
_BLOSC_AUTOSHUFFLE = -1  # numcodecs picks by item size when compressing


def _blosc_shuffle(mode: int, typesize: int) -> str:
    if mode == _BLOSC_AUTOSHUFFLE:
        return "bitshuffle" if typesize == 1 else "shuffle"  # numcodecs' own choice
    return _BLOSC_SHUFFLE_NAMES[mode]


def _blosc_json(options: Mapping[str, Any], typesize: int) -> dict:
    configuration = {
        "typesize": typesize,
        "cname": options["cname"],
        "clevel": options["clevel"],
        "shuffle": _blosc_shuffle(options["shuffle"], typesize),
        "blocksize": options.get("blocksize", 0),
    }
    return {"name": "blosc", "configuration": configuration}


def _zstd_json(options: Mapping[str, Any], typesize: int) -> dict:
    configuration = {"level": options["level"], "checksum": options.get("checksum", False)}
    return {"name": "zstd", "configuration": configuration}


def _gzip_json(options: Mapping[str, Any], typesize: int) -> dict:
    return {"name": "gzip", "configuration": {"level": options["level"]}}


# The bytes-to-bytes codecs the v3 specification defines, written from their numcodecs
# configuration. Every other numcodecs codec (zlib and shuffle, which HDF5 files store) goes
# under its numcodecs name, ``numcodecs.<id>``, as zarr-python reads it.
_SPECIFIED_CODECS: dict[str, Callable[[Mapping[str, Any], int], dict]] = {
    "blosc": _blosc_json,
    "zstd": _zstd_json,
    "gzip": _gzip_json,
}


def compressor_json(numcodecs_config: Mapping[str, Any], typesize: int) -> dict:
    """The v3 codec JSON of a numcodecs codec (its ``get_config()``); ``typesize`` is the
    element size in bytes (blosc declares it)."""
    codec_id = numcodecs_config["id"]
    options = {name: value for name, value in numcodecs_config.items() if name != "id"}
    spell = _SPECIFIED_CODECS.get(codec_id)
    if spell is None:
        return {"name": f"numcodecs.{codec_id}", "configuration": options}
    return spell(options, typesize)


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
    # The same (dtype, codecs) pair recurs across a tree: its JSON is built once per pair.
    return [_serializer(dtype)] + [
        compressor_json(dict(config), dtype.itemsize) for config in compressor_configs
    ]


@functools.lru_cache(maxsize=512)
def read_back_dtype(dtype: numpy.dtype) -> numpy.dtype | None:
    """The numpy dtype zarr-python reads from the ``zarr.json`` this encoding writes for
    ``dtype`` (its ``data_type`` parsed back, in the byte order of the ``bytes`` codec), or
    None when zarr has no data type for it.

    It differs from ``dtype`` where zarr v3 cannot say what the bytes are: zarr-python stores
    a record's sub-array field as raw bytes, and a record's fields carry no byte order in v3
    (they are read little-endian)."""
    if is_variable_length_string(dtype):
        return dtype
    from zarr.dtype import parse_dtype

    try:
        document = _data_type_json(dtype)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # as in _data_type_json
            zdtype = parse_dtype(document, zarr_format=3)
    except (TypeError, ValueError):
        return None
    endian = _serializer(dtype)["configuration"]["endian"]
    if getattr(zdtype, "endianness", None) is not None:
        zdtype = dataclasses.replace(zdtype, endianness=endian)
    return zdtype.to_native_dtype()


def check_describable(dtype: numpy.dtype) -> None:
    """Raise :class:`DataUnavailable` (415) unless a zarr v3 reader of this encoding's
    documents reads values of ``dtype`` back as they are."""
    if read_back_dtype(dtype) != dtype:
        raise DataUnavailable(
            f"zarr v3 cannot describe the data type {dtype} (zarr-python would read these "
            "values as another type); read the node through /api/v1"
        )


def _fill_scalar(zdtype: Any, dtype: numpy.dtype) -> Any:
    try:
        return zdtype.default_scalar()
    except (TypeError, ValueError):  # e.g. records: zarr-python's default may not fit them
        return numpy.zeros((), dtype=dtype)[()]


def _float_base64(value: float) -> str:
    return base64.standard_b64encode(struct.pack("<d", value)).decode()


def xarray_fill_value_json(value: Any, dtype: numpy.dtype) -> Any:
    """The ``_FillValue`` attribute of a floating-point or complex array as xarray writes it
    in zarr v3 (and refuses to read otherwise): the little-endian float64 bytes in base64,
    one such string per part of a complex number. None for a value or dtype it leaves as a
    JSON value (integers, booleans, text, and a value spelled so already).

    None stands for NaN there: it is how JSON metadata keeps a NaN (and xarray can read no
    null ``_FillValue``)."""
    if value is None and dtype.kind in "fc":
        value = math.nan
    value = single_value(value)
    if isinstance(value, bool | numpy.bool_) or not isinstance(value, numbers.Number):
        return None
    if dtype.kind == "f" and isinstance(value, numbers.Real):
        return _float_base64(float(value))
    if dtype.kind == "c":
        value = complex(value)
        return [_float_base64(value.real), _float_base64(value.imag)]
    return None


def _attributes_json(meta: ZarrArrayMeta) -> dict:
    attributes = to_json_value(meta.attributes)
    if FILL_VALUE_ATTRIBUTE in meta.attributes:
        # The number as it is (not its JSON form, where NaN is null).
        spelled = xarray_fill_value_json(meta.attributes[FILL_VALUE_ATTRIBUTE], meta.dtype)
        if spelled is not None:
            attributes[FILL_VALUE_ATTRIBUTE] = spelled
    return attributes


def _inline(metadata: dict) -> dict:
    return {"kind": "inline", "must_understand": False, "metadata": metadata}


class ZarrV3Encoding:
    zarr_format = 3
    consolidated_document = "zarr.json"
    array_document = "zarr.json"
    document_names = frozenset({"zarr.json"})

    def array_metadata(self, meta: ZarrArrayMeta) -> dict:
        check_describable(meta.dtype)
        zdtype = zarr_data_type(meta.dtype)
        fill = _fill_scalar(zdtype, meta.dtype) if meta.fill_value is None else meta.fill_value
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
            "attributes": _attributes_json(meta),
            "storage_transformers": [],
        }
        if meta.dimension_names is not None:
            document["dimension_names"] = list(meta.dimension_names)
        return document

    def group_metadata(self, meta: ZarrGroupMeta) -> dict:
        attributes = to_json_value(meta.attributes)
        return {"zarr_format": 3, "node_type": "group", "attributes": attributes}

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
        return tuple(map(int, key.split("/")[1:]))
