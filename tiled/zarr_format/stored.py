"""What zarr-python's parsed metadata of a stored array means in the neutral model.

A stored array whose chunks a zarr client of either format reads as they are (one serializer
writing raw bytes, at most one blosc/zstd/gzip compressor, no filters, no sharding, C order)
can be served by passing the stored chunk bytes through; :func:`passable_codecs` decides and
gives the model's dtype and codec chain. Arrays written through ``/zarr`` must be of this kind,
so that what a client wrote is what every client reads back.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import numcodecs
import numpy

_BLOSC_SHUFFLE = {"noshuffle": 0, "shuffle": 1, "bitshuffle": 2}

# zarr v3 bytes-to-bytes codecs with a numcodecs twin that zarr v2 readers understand.
_V3_TO_NUMCODECS: dict[str, Callable[[Mapping[str, Any]], Any]] = {
    "blosc": lambda c: numcodecs.Blosc(
        cname=c["cname"],
        clevel=c["clevel"],
        shuffle=_BLOSC_SHUFFLE[c["shuffle"]],
        blocksize=c.get("blocksize", 0),
    ),
    "zstd": lambda c: numcodecs.Zstd(level=c["level"], checksum=c.get("checksum", False)),
    "gzip": lambda c: numcodecs.GZip(level=c["level"]),
}
# The compressors that pass through: the same name in both formats (numcodecs ids in v2).
PASSABLE_COMPRESSORS = frozenset(_V3_TO_NUMCODECS)


def is_sharded(metadata: Any) -> bool:
    return metadata.zarr_format == 3 and any(
        c.to_dict()["name"] == "sharding_indexed" for c in metadata.codecs
    )


def compressor_names(metadata: Any) -> list[str]:
    """The names of an array's compressors (v3 codecs after the serializer, v2 compressor id)."""
    if metadata.zarr_format == 3:
        return [c.to_dict()["name"] for c in metadata.codecs[1:]]
    return [metadata.compressor.codec_id] if metadata.compressor is not None else []


def _passable_v3(metadata: Any) -> tuple[numpy.dtype, tuple] | None:
    codecs = [c.to_dict() for c in metadata.codecs]
    if not codecs or codecs[0]["name"] != "bytes" or len(codecs) > 2:
        return None
    endian = codecs[0].get("configuration", {}).get("endian", "little")
    compressors = []
    for codec in codecs[1:]:
        factory = _V3_TO_NUMCODECS.get(codec["name"])
        if factory is None:
            return None
        compressors.append(factory(codec["configuration"]))
    dtype = metadata.data_type.to_native_dtype()
    if dtype.itemsize > 1 and dtype.fields is None:
        dtype = dtype.newbyteorder("<" if endian == "little" else ">")
    return dtype, tuple(compressors)


def _passable_v2(metadata: Any) -> tuple[numpy.dtype, tuple] | None:
    if metadata.filters or metadata.order != "C":
        return None
    compressor = metadata.compressor
    if compressor is not None and compressor.codec_id not in PASSABLE_COMPRESSORS:
        return None
    dtype = metadata.dtype.to_native_dtype()
    return dtype, (compressor,) if compressor is not None else ()


def passable_codecs(metadata: Any) -> tuple[numpy.dtype, tuple] | None:
    """``(dtype, compressors)`` of an array whose stored chunks can be served as they are, or
    None. ``metadata`` is zarr-python's parsed metadata of either format."""
    if is_sharded(metadata):
        return None
    return (_passable_v3 if metadata.zarr_format == 3 else _passable_v2)(metadata)


__all__ = ["PASSABLE_COMPRESSORS", "compressor_names", "is_sharded", "passable_codecs"]
