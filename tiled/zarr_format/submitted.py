"""Zarr documents a client writes, read with zarr-python's own parser into the neutral model.

A zarr client creates a node by writing its metadata document (v3 ``zarr.json``; v2
``.zarray`` or ``.zgroup``, with the attributes in ``.zattrs``). What zarr-python refuses to
open is refused here too, with zarr-python's reason. An array must also be one whose chunks the
server can pass through as written (see :mod:`.stored`) and use only the allowed compressors,
so that every client, of either format, reads back the bytes that were written.
"""

from __future__ import annotations

import json
import math
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Any

import numpy
import orjson

from ..errors import InvalidZarrDocument
from ..structures.json import dumps, refuse
from .codecs import same_codecs
from .model import ZarrArrayMeta, check_chunk_counts, grid_counts
from .stored import PASSABLE_COMPRESSORS, compressor_names, passable_codecs
from .v2 import served_fill_value
from .zarr_python import default_buffer_prototype

# numpy kinds an array written through /zarr may hold: bool, integers, floats, complex.
WRITABLE_DTYPE_KINDS = "biufc"
# xarray's name for an array's dimensions in zarr v2 attributes.
V2_DIMENSIONS_ATTRIBUTE = "_ARRAY_DIMENSIONS"


def json_object(document: bytes, name: str) -> dict[str, Any]:
    """The JSON object of a document (NaN and Infinity allowed, as zarr-python writes them)."""
    try:
        value = json.loads(document)
    except (ValueError, UnicodeDecodeError, RecursionError) as err:
        raise InvalidZarrDocument(f"{name} is not JSON: {err or 'nested too deeply'}") from None
    if not isinstance(value, dict):
        raise InvalidZarrDocument(f"{name} must be a JSON object")
    return value


def storable_attributes(attributes: Any, name: str) -> dict[str, Any]:
    """``attributes`` if they are a JSON object that can be stored as metadata (the catalog's
    rule, :func:`tiled.structures.json.dumps`: text UTF-8 can encode, nesting within bounds)
    and served back in zarr documents (integers within 64 bits, as orjson writes them); else
    400."""
    if not isinstance(attributes, Mapping):
        raise InvalidZarrDocument(
            f'The "attributes" of {name} must be a JSON object, not {type(attributes).__name__}'
        )
    try:
        dumps(attributes, refuse)
        orjson.dumps(attributes, option=orjson.OPT_SERIALIZE_NUMPY)
    except (TypeError, ValueError, RecursionError) as err:
        raise InvalidZarrDocument(f"The attributes of {name} cannot be stored: {err}") from None
    return dict(attributes)


# What the v2 documents the server derives declare of their format: a client writing one must
# still write that document. (zarr-python opens a .zgroup of any declared format, and nothing
# reads a .zmetadata written; .zarray and .zattrs are zarr-python's to check.)
_V2_DECLARATIONS = {
    ".zgroup": ("zarr_format", 2),
    ".zmetadata": ("zarr_consolidated_format", 1),
}


def check_v2_declaration(document: bytes, name: str) -> None:
    """400 unless a v2 ``.zgroup`` or ``.zmetadata`` is a JSON object that declares its
    format; other documents pass."""
    if name not in _V2_DECLARATIONS:
        return
    member, value = _V2_DECLARATIONS[name]
    declared = json_object(document, name).get(member)
    if type(declared) is not int or declared != value:  # not true, which equals 1
        raise InvalidZarrDocument(f'{name} must declare "{member}": {value}')


def v3_node_type(document: Mapping[str, Any]) -> str:
    """``"array"`` or ``"group"``, as a v3 ``zarr.json`` declares."""
    node_type = document.get("node_type")
    if node_type not in ("array", "group") or document.get("zarr_format") != 3:
        raise InvalidZarrDocument(
            'zarr.json must declare "zarr_format": 3 and "node_type" "array" or "group"'
        )
    return node_type


def dimensions_from_attributes(attributes: Mapping[str, Any]) -> tuple[str, ...] | None:
    """The dimension names v2 attributes give (xarray's convention), None if they give none;
    400 if they are not a list of names (that they are one per dimension is the array
    structure's rule, checked where they are applied)."""
    if V2_DIMENSIONS_ATTRIBUTE not in attributes:
        return None
    names = attributes[V2_DIMENSIONS_ATTRIBUTE]
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise InvalidZarrDocument(
            f"{V2_DIMENSIONS_ATTRIBUTE} must be a list of dimension names (text), one per "
            f"dimension of the array, not {names!r}"
        )
    return tuple(names)


@dataclass(frozen=True)
class SubmittedArray:
    """An array document a client wrote: the array in the model (with its attributes) and the
    document to store beside its chunks (without attributes: the catalog holds those)."""

    meta: ZarrArrayMeta
    zarr_format: int
    stored_documents: Mapping[str, bytes]

    def difference(self, current: ZarrArrayMeta) -> str | None:
        """What differs from ``current`` besides shape, dimension names and attributes (the
        parts a client may change by rewriting the document), or None."""
        new = self.meta
        if new.dtype != current.dtype:
            return f"data type ({current.dtype} stored, {new.dtype} written)"
        if new.chunk_shape != current.chunk_shape:
            return (
                f"chunk shape ({list(current.chunk_shape)} stored, {list(new.chunk_shape)} written)"
            )
        if not same_codecs(new.compressors, current.compressors):
            return "codecs"
        # A v2 client writes back the fill value it read, which may be the _FillValue the
        # .zarray declares for an array without one of its own (see served_fill_value).
        if not _same_fill(new.fill_value, current.fill_value) and not (
            self.zarr_format == 2 and _same_fill(new.fill_value, served_fill_value(current))
        ):
            return f"fill value ({current.fill_value!r} stored, {new.fill_value!r} written)"
        return None


def _same_fill(a: Any, b: Any) -> bool:
    if a is None or b is None:
        return a is None and b is None
    return bool(numpy.array_equal(numpy.asarray(a), numpy.asarray(b), equal_nan=True))


async def _open_document(zarr_format: int, name: str, document: bytes, node_type: str) -> Any:
    """zarr-python's array or group opened from ``document`` alone (its parser decides)."""
    import zarr
    from zarr.storage import MemoryStore

    prototype = default_buffer_prototype()
    store = MemoryStore({name: prototype.buffer.from_bytes(document)})
    opener = (
        zarr.api.asynchronous.open_array
        if node_type == "array"
        else zarr.api.asynchronous.open_group
    )
    try:
        return await opener(store=store, mode="r", zarr_format=zarr_format)
    except Exception as err:  # noqa: BLE001 - zarr-python raises many kinds on bad input
        reason = str(err) or type(err).__name__
        if isinstance(err, KeyError):
            reason = f"missing field {reason}"
        raise InvalidZarrDocument(f"zarr-python cannot read this {name}: {reason}") from None


def _check_chunk_keys(metadata: Any) -> None:
    """Chunk keys must be the format's own (v3 ``c/0/1``, v2 ``0.1``): the keys the server
    serves, so that every chunk a client writes is one it can read back."""
    if metadata.zarr_format == 2:
        ok = (metadata.dimension_separator or ".") == "."
    else:
        encoding = metadata.chunk_key_encoding.to_dict()
        separator = encoding.get("configuration", {}).get("separator", "/")
        ok = encoding["name"] == "default" and separator == "/"
    if not ok:
        expected = (
            '"dimension_separator": "."'
            if metadata.zarr_format == 2
            else ('the "default" chunk key encoding with the separator "/"')
        )
        raise InvalidZarrDocument(f"Arrays written through /zarr use {expected}")


def _check_grid(shape: tuple[int, ...], chunk_shape: tuple[int, ...], chunk_bytes: int,
                max_chunk_bytes: int) -> None:  # fmt: skip
    if chunk_bytes > max_chunk_bytes:
        raise InvalidZarrDocument(
            f"A chunk of {list(chunk_shape)} is {chunk_bytes} bytes, over the limit of "
            f"{max_chunk_bytes} bytes of a write"
        )
    check_chunk_counts(grid_counts(shape, chunk_shape))


async def parse_array_document(
    zarr_format: int,
    name: str,
    document: bytes,
    allowed_compressors: Collection[str],
    max_chunk_bytes: int = 2**31 - 1,
) -> SubmittedArray:
    """An array document (v3 ``zarr.json``, v2 ``.zarray``), checked; see the module.
    ``max_chunk_bytes``: the largest uncompressed chunk (a chunk is decoded to be checked)."""
    array = await _open_document(zarr_format, name, document, "array")
    metadata = array.metadata
    _check_chunk_keys(metadata)
    passable = passable_codecs(metadata)
    allowed = sorted(set(allowed_compressors) & PASSABLE_COMPRESSORS)
    names = compressor_names(metadata)
    if passable is None or not set(names) <= set(allowed):
        raise InvalidZarrDocument(
            "Arrays written through /zarr use the 'bytes' serializer (v2: no filters, C "
            f"order) and at most one compressor out of {allowed} (or none); this array "
            f"uses {[c.to_dict()['name'] for c in metadata.codecs] if zarr_format == 3 else names}"
            + (", filters" if zarr_format == 2 and metadata.filters else "")
        )
    dtype, compressors = passable
    if dtype.kind not in WRITABLE_DTYPE_KINDS or dtype.fields is not None:
        raise InvalidZarrDocument(
            f"Arrays written through /zarr hold numbers or booleans, not {dtype}"
        )
    attributes = storable_attributes(metadata.attributes, name)
    if zarr_format == 3:
        names_ = metadata.dimension_names
        dims = tuple(names_) if names_ and all(isinstance(n, str) for n in names_) else None
    else:
        dims = dimensions_from_attributes(attributes)
        attributes.pop(V2_DIMENSIONS_ATTRIBUTE, None)
    meta = ZarrArrayMeta(
        shape=tuple(array.shape),
        chunk_shape=tuple(array.chunks),
        dtype=dtype,
        fill_value=metadata.fill_value,
        compressors=compressors,
        dimension_names=dims,
        attributes=attributes,
    )
    _check_grid(meta.shape, meta.chunk_shape, math.prod(meta.chunk_shape) * dtype.itemsize,
                max_chunk_bytes)  # fmt: skip
    stored = metadata.update_attributes({}).to_buffer_dict(default_buffer_prototype())
    documents = {key: buffer.to_bytes() for key, buffer in stored.items() if key != ".zattrs"}
    return SubmittedArray(meta, zarr_format, documents)


async def parse_group_document(zarr_format: int, name: str, document: bytes) -> dict[str, Any]:
    """A group document's attributes (a v3 ``zarr.json`` of a group, a v2 ``.zgroup``: none)."""
    group = await _open_document(zarr_format, name, document, "group")
    return storable_attributes(group.attrs, name)


def parse_attributes(document: bytes) -> dict[str, Any]:
    """The attributes of a v2 ``.zattrs``."""
    return storable_attributes(json_object(document, ".zattrs"), ".zattrs")


__all__ = [
    "SubmittedArray",
    "check_v2_declaration",
    "dimensions_from_attributes",
    "json_object",
    "parse_array_document",
    "parse_attributes",
    "parse_group_document",
    "v3_node_type",
]
