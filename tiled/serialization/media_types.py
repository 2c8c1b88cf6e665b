"""Media type names, per-family defaults, and the aliases accepted by ``?format=``."""

from __future__ import annotations

import mimetypes

OCTET_STREAM = "application/octet-stream"
JSON = "application/json"
CSV = "text/csv"
CSV_ALIASES = ("text/x-comma-separated-values", "text/plain")
PNG = "image/png"
TIFF = "image/tiff"
HDF5 = "application/x-hdf5"
ARROW_FILE = "application/vnd.apache.arrow.file"
PARQUET = "application/x-parquet"
ZARR = "application/x-zarr"
ZIP = "application/zip"  # awkward and ragged buffers, one member per buffer
XLSX = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
XDI = "application/x-xdi"  # XAS Data Interchange, see tiled.serialization.xdi
# RFC 7464 JSON text sequences: one JSON document per record, each after a record separator.
JSON_SEQ = "application/json-seq"


class MediaType(str):
    """A media type (``text/csv``) that remembers the parameters it was asked with
    (``text/csv;header=absent`` has ``{"header": "absent"}``), for encoders that take them."""

    parameters: dict[str, str]

    def __new__(cls, value: str, parameters: dict[str, str] | None = None) -> MediaType:
        media_type = super().__new__(cls, value)
        media_type.parameters = dict(parameters or {})
        return media_type

    @classmethod
    def parse(cls, text: str) -> MediaType:
        """``type/subtype;name=value;...``: names lower-cased, values unquoted; the q-value
        (an Accept header's weight, not a parameter of the type) is left out."""
        value, *params = (part.strip() for part in text.split(";"))
        parameters = {}
        for param in params:
            name, _, argument = param.partition("=")
            name = name.strip().lower()
            if name and name != "q":
                parameters[name] = argument.strip().strip('"')
        return cls(value.lower(), parameters)

    def with_value(self, value: str) -> MediaType:
        """Another media type with the same parameters (an alias resolved, a wildcard met)."""
        return MediaType(value, self.parameters)


DEFAULT_MEDIA_TYPES = {
    "array": OCTET_STREAM,
    "sparse": ARROW_FILE,
    "table": ARROW_FILE,
    "container": HDF5,
    "awkward": ZIP,
    "ragged": JSON,
}

# Tried after Python's mimetypes, whose answers depend on the host's mime.types files; this
# table makes the documented aliases work everywhere.
CUSTOM_ALIASES = {
    "h5": HDF5,
    "hdf5": HDF5,
    "parquet": PARQUET,
    "arrow": ARROW_FILE,
    "feather": ARROW_FILE,
    "nc": "application/x-netcdf",
    "text": "text/plain",
    "txt": "text/plain",
    "csv": CSV,
    "json": JSON,
    "png": PNG,
    "tiff": TIFF,
    "zarr": ZARR,
    "xlsx": XLSX,
    "xdi": XDI,
}


def _unique(items: list[str]) -> list[str]:
    return list(dict.fromkeys(items))


def resolve_alias(token: str) -> list[MediaType]:
    """Media types a ``format=`` token may stand for, most preferred first, each carrying the
    token's parameters (``csv;header=absent``).

    A token with a ``/`` is a media type already. An alias may resolve to two media types (the
    host's mimetypes answer and this module's table); the caller takes the first it supports.
    """
    parsed = MediaType.parse(token)
    if "/" in parsed:
        return [parsed]
    extension = parsed.lstrip(".")
    if not extension:
        return []
    guessed, _ = mimetypes.guess_type(f"file.{extension}", strict=False)
    found = _unique([t for t in (guessed, CUSTOM_ALIASES.get(extension)) if t])
    return [parsed.with_value(t) for t in found]


def extensions_for(media_type: str) -> list[str]:
    """File extensions (without the dot) that name ``media_type`` as a ``format=`` alias."""
    found = [e.lstrip(".") for e in mimetypes.guess_all_extensions(media_type, strict=False)]
    found += [alias for alias, target in CUSTOM_ALIASES.items() if target == media_type]
    return _unique(found)


def parse_accept(header: str) -> list[MediaType]:
    """Media types of an ``Accept`` header, by descending q-value (ties keep their order).

    Each keeps its parameters (``;header=absent``) but not its q-value; entries with ``q=0``
    mean "not acceptable" and are left out.
    """
    weighted = []
    for entry in header.split(","):
        media_type, *params = (part.strip() for part in entry.split(";"))
        if not media_type:
            continue
        quality = _quality(params)
        if quality > 0:
            weighted.append((quality, MediaType.parse(entry)))
    # sorted() is stable, so entries of equal quality stay in the client's order.
    return [media_type for _, media_type in sorted(weighted, key=lambda w: -w[0])]


def _quality(params: list[str]) -> float:
    for param in params:
        name, _, value = param.partition("=")
        if name.strip().lower() == "q":
            try:
                return float(value)
            except ValueError:
                return 1.0
    return 1.0
