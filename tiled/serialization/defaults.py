"""The encoders every server offers (http-api §7.2, plus zipped zarr for every family)."""

from __future__ import annotations

from . import array, container, table
from .awkward import register_awkward
from .media_types import (
    ARROW_FILE,
    CSV,
    CSV_ALIASES,
    HDF5,
    JSON,
    JSON_SEQ,
    OCTET_STREAM,
    PARQUET,
    PNG,
    TIFF,
    XLSX,
    ZARR,
)
from .ragged import register_ragged
from .registry import SerializationRegistry
from .xarray import dataset_encoder
from .xdi import XDI, encode_xdi
from .zarr_zip import encode_zarr_zip

_CSV_TYPES = (CSV, *CSV_ALIASES)  # all of them answer with CSV


def _register_array(registry: SerializationRegistry) -> None:
    registry.register("array", OCTET_STREAM, array.encode_octet_stream)
    registry.register("array", JSON, array.encode_json)
    for media_type in _CSV_TYPES:
        registry.register("array", media_type, array.encode_csv)
    # PNG before TIFF: the first image type is the answer to "image/*".
    registry.register("array", PNG, array.encode_png)
    registry.register("array", TIFF, array.encode_tiff)
    registry.register("array", HDF5, array.encode_hdf5)


def _table_encoders() -> dict[str, object]:
    encoders = {ARROW_FILE: table.encode_arrow, PARQUET: table.encode_parquet}
    encoders.update({media_type: table.encode_csv for media_type in _CSV_TYPES})
    encoders.update({JSON: table.encode_json, HDF5: table.encode_hdf5})
    encoders.update({JSON_SEQ: table.encode_json_seq, XLSX: table.encode_excel})
    return encoders


# Table encoders that take the media type's parameters (text/csv;header=absent).
_TAKES_PARAMETERS = {table.encode_csv}


def _register_tables(registry: SerializationRegistry) -> None:
    for media_type, encoder in _table_encoders().items():
        parameters = encoder in _TAKES_PARAMETERS
        registry.register("table", media_type, encoder, parameters=parameters)
        sparse_encoder = table.via_sparse_frame(encoder)
        registry.register("sparse", media_type, sparse_encoder, parameters=parameters)
    # XDI only for tables that say they hold XDI (spec "xdi"), as upstream.
    registry.register("xdi", XDI, encode_xdi)


def _register_containers(registry: SerializationRegistry) -> None:
    registry.register("container", HDF5, container.encode_hdf5, kind="node")
    registry.register("container", JSON, container.encode_json, kind="node", metadata_only=True)
    for media_type, encoder in _table_encoders().items():
        if media_type == HDF5:
            continue  # a dataset's HDF5 form is the container one
        text = media_type not in (ARROW_FILE, PARQUET)
        dataset = dataset_encoder(encoder, reset_index=text)
        registry.register("xarray_dataset", media_type, dataset, kind="node")


def register_defaults(registry: SerializationRegistry) -> SerializationRegistry:
    _register_array(registry)
    _register_tables(registry)
    _register_containers(registry)
    register_awkward(registry)
    register_ragged(registry)
    for family in ("array", "sparse", "table", "container"):
        registry.register(family, ZARR, encode_zarr_zip, kind="node")
    return registry
