"""Encodings of awkward arrays: buffers in a zip file (the native one), JSON, Arrow, Parquet.

An awkward node's data, as the data routes hand them to these encoders, are *components*:
``(form, length, buffers)``, the buffers by name as bytes. In a zip file each buffer is one
uncompressed member named as the buffer, so a reader gets any buffer without unpacking the
others (the response as a whole may still be compressed by HTTP content coding).
"""

from __future__ import annotations

import io
import zipfile
from collections.abc import Mapping
from typing import Any

from ..errors import BadRequest
from .media_types import ARROW_FILE, JSON, PARQUET, ZIP

Components = tuple[Any, int, Mapping[str, Any]]


def zip_buffers(buffers: Mapping[str, Any], extra: Mapping[str, bytes] | None = None) -> bytes:
    """A zip file holding each buffer (and each ``extra`` member) uncompressed."""
    file = io.BytesIO()
    with zipfile.ZipFile(file, "w", compression=zipfile.ZIP_STORED) as archive:
        for name, buffer in buffers.items():
            archive.writestr(
                name, bytes(buffer) if not hasattr(buffer, "tobytes") else buffer.tobytes()
            )
        for name, value in (extra or {}).items():
            archive.writestr(name, value)
    return file.getvalue()


def unzip_buffers(body: bytes) -> dict[str, bytes]:
    """The members of a zip file by name; BadRequest for a body that is not one."""
    try:
        with zipfile.ZipFile(io.BytesIO(body), "r") as archive:
            return {name: archive.read(name) for name in archive.namelist()}
    except (zipfile.BadZipFile, EOFError, ValueError) as err:
        raise BadRequest(f"The body is not a zip file of buffers: {err}") from None


def _array(components: Components) -> Any:
    import awkward

    form, length, buffers = components
    if isinstance(form, dict):
        form = awkward.forms.from_dict(form)
    missing = sorted(set(form.expected_from_buffers()) - set(buffers))
    if missing:
        # The buffers of some form keys only (a sliced read): only the zip file of buffers
        # holds those; an array encoding needs them all.
        raise BadRequest(
            f"This encoding holds the whole array; the buffers {missing} were not asked for. "
            f"Ask for all form keys, or for {ZIP} to get some buffers."
        )
    return awkward.from_buffers(form, length, buffers)


def _arrow_table(components: Components) -> Any:
    import awkward

    return awkward.to_arrow_table(_array(components))


# --- upstream's names and signatures ------------------------------------------------------------


def to_zipped_buffers(mimetype: str, components: Components, metadata: dict) -> bytes:
    return zip_buffers(components[2])


def from_zipped_buffers(buffer: bytes, form: Any = None, length: int | None = None) -> dict:
    return unzip_buffers(buffer)


def to_json(mimetype: str, components: Components, metadata: dict) -> str:
    import awkward

    return awkward.to_json(_array(components))


def to_arrow(mimetype: str, components: Components, metadata: dict) -> bytes:
    import pyarrow

    table = _arrow_table(components)
    sink = pyarrow.BufferOutputStream()
    with pyarrow.ipc.new_file(sink, table.schema) as writer:
        writer.write_table(table)
    return sink.getvalue().to_pybytes()


def to_parquet(mimetype: str, components: Components, metadata: dict) -> bytes:
    import pyarrow
    import pyarrow.parquet

    table = _arrow_table(components)
    sink = pyarrow.BufferOutputStream()
    with pyarrow.parquet.ParquetWriter(sink, table.schema) as writer:
        writer.write_table(table)
    return sink.getvalue().to_pybytes()


# Media type -> encoder in upstream's (media type, data, metadata) signature; registered
# for the "awkward" family as (data, metadata) encoders by register_awkward.
AWKWARD_ENCODERS = {
    ZIP: to_zipped_buffers,
    JSON: to_json,
    ARROW_FILE: to_arrow,
    PARQUET: to_parquet,
}


def _data_encoder(media_type: str, encoder: Any) -> Any:
    def encode(data: Any, metadata: dict) -> bytes:
        result = encoder(media_type, data, metadata)
        return result.encode() if isinstance(result, str) else result

    return encode


def register_awkward(registry: Any) -> None:
    for media_type, encoder in AWKWARD_ENCODERS.items():
        registry.register("awkward", media_type, _data_encoder(media_type, encoder))


__all__ = ["from_zipped_buffers", "to_arrow", "to_json", "to_parquet", "to_zipped_buffers"]
