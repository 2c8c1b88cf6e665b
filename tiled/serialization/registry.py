"""The serialization registry: which encoder answers a (spec or family, media type) request.

Keys are spec names (``xarray_dataset``) and structure family values (``array``). An encoder is
either

- a *data* encoder: a synchronous ``(data, metadata) -> bytes`` function that receives what the
  node's ``read`` callable returns; the read and the encoding run together on a worker thread.
  Registered with ``parameters=True``, it is called as ``(data, metadata, parameters)`` with
  the parameters the client gave the media type (``text/csv;header=absent``);
- a *node* encoder: an async ``(node, options)`` function that walks the adapter itself and
  returns ``bytes`` or an async iterator of ``bytes`` (for bodies too large to hold at once).
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from ..errors import UnsupportedMediaType
from ..utils import run_sync
from .media_types import (
    DEFAULT_MEDIA_TYPES,
    MediaType,
    extensions_for,
    parse_accept,
    resolve_alias,
)

if TYPE_CHECKING:
    from ..zarr_format.model import ZarrOptions

EncoderKind = Literal["data", "node"]
EncodeResult = bytes | AsyncIterator[bytes]


def _default_zarr_options() -> ZarrOptions:
    # Imported on first use so that importing the registry does not import numpy/numcodecs.
    from ..zarr_format.model import ZarrOptions

    return ZarrOptions()


@dataclass(frozen=True)
class EncodeOptions:
    """Server settings an encoder may need (today only the zarr view's)."""

    zarr_options: ZarrOptions = field(default_factory=_default_zarr_options)
    zarr_format: int = 3


@dataclass(frozen=True)
class _Entry:
    encoder: Callable[..., Any]
    kind: EncoderKind
    metadata_only: bool = False
    parameters: bool = False


class SerializationRegistry:
    """Encoders by key and media type, plus content negotiation over them."""

    def __init__(self) -> None:
        self._entries: dict[str, dict[str, _Entry]] = {}
        self._aliases: dict[str, str] = {}

    def register(
        self,
        key: str,
        media_type: str,
        encoder: Callable[..., Any],
        *,
        kind: EncoderKind = "data",
        metadata_only: bool = False,
        parameters: bool = False,
    ) -> Callable[..., Any]:
        """Register ``encoder`` for nodes with spec or family ``key``; returns the encoder.

        ``parameters=True`` (data encoders): the encoder also receives the media type's
        parameters as a dict."""
        if kind not in ("data", "node"):
            raise ValueError(f"kind must be 'data' or 'node', not {kind!r}")
        if parameters and kind != "data":
            raise ValueError("Only data encoders take media type parameters")
        entry = _Entry(encoder, kind, metadata_only, parameters)
        self._entries.setdefault(key, {})[media_type.lower()] = entry
        return encoder

    def register_alias(self, extension: str, media_type: str) -> None:
        """Let ``?format=extension`` stand for ``media_type`` (ahead of the built-in aliases)."""
        self._aliases[extension.lstrip(".").lower()] = media_type.lower()

    def reads_data(self, key: str, media_type: str) -> bool:
        """Whether the encoder reads array or table values (not only metadata)."""
        entry = self._entries.get(key, {}).get(media_type.lower())
        return entry is None or not entry.metadata_only

    def encodes_whole_node(self, key: str, media_type: str) -> bool:
        """Whether the encoder works from the node itself (and so ignores slicing)."""
        entry = self._entries.get(key, {}).get(media_type.lower())
        return entry is not None and entry.kind == "node"

    def dispatch(self, key: str, media_type: str) -> Callable[..., Any]:
        """The data encoder for ``key`` and ``media_type`` in upstream Tiled's serializer
        signature, ``(media_type, data, metadata)``; ValueError when there is none."""
        parsed = MediaType.parse(media_type)
        entry = self._entries.get(key, {}).get(parsed)
        if entry is None or entry.kind != "data":
            raise ValueError(f"No data encoder for {key!r} with media type {media_type!r}")

        def serialize(media_type: str, data: Any, metadata: dict[str, Any]) -> Any:
            if entry.parameters:
                return entry.encoder(data, metadata, MediaType.parse(media_type).parameters)
            return entry.encoder(data, metadata)

        return serialize

    def media_types(self, key: str) -> list[str]:
        return list(self._entries.get(key, {}))

    def formats(self) -> dict[str, list[str]]:
        return {key: list(entries) for key, entries in self._entries.items()}

    def aliases(self) -> dict[str, dict[str, list[str]]]:
        result = {}
        for key, entries in self._entries.items():
            named = {
                mt: extensions_for(mt) + [e for e, target in self._aliases.items() if target == mt]
                for mt in entries
            }
            result[key] = {mt: exts for mt, exts in named.items() if exts}
        return result

    def negotiate(
        self, keys: Sequence[str], format: str | None, accept: str | None
    ) -> tuple[str, MediaType]:
        """The (key, media type) to answer with; see ``docs`` http-api §7.1 for the rules.

        ``keys`` are the node's spec names, most specific first, then its structure family.
        The media type carries the parameters it was requested with. Raises
        :class:`UnsupportedMediaType` when nothing requested can be served.
        """
        requested = _requested(format, accept, self._aliases)
        for candidates in requested.values():
            for candidate in candidates:
                match = self._match(candidate, keys)
                if match is not None:
                    return match
        supported = list(dict.fromkeys(mt for key in keys for mt in self.media_types(key)))
        raise UnsupportedMediaType(
            "None of the media types requested by the client are supported. "
            f"Supported: {supported}. Requested: {list(requested)}."
        )

    def _match(self, candidate: MediaType, keys: Sequence[str]) -> tuple[str, MediaType] | None:
        if candidate == "*/*":
            candidate = candidate.with_value(self._default_for(keys))
        for key in keys:
            entries = self._entries.get(key, {})
            if candidate.endswith("/*"):
                # A type wildcard (image/*) takes the first registered subtype, e.g. PNG.
                prefix = candidate[:-1]
                found = next((mt for mt in entries if mt.startswith(prefix)), None)
                if found is not None:
                    return key, candidate.with_value(found)
            elif candidate in entries:
                return key, candidate
        return None

    def _default_for(self, keys: Sequence[str]) -> str:
        family = keys[-1] if keys else ""
        default = DEFAULT_MEDIA_TYPES.get(family)
        if default is not None:
            return default
        # A family without a documented default answers with its first registered type.
        registered = [mt for key in keys for mt in self.media_types(key)]
        return registered[0] if registered else "*/*"

    async def encode(
        self,
        key: str,
        media_type: str,
        *,
        node: Any,
        read: Callable[[], Any],
        metadata: dict[str, Any],
        options: EncodeOptions | None = None,
    ) -> EncodeResult:
        """Encode the node as ``media_type`` with the encoder registered under ``key``."""
        entry = self._entries.get(key, {}).get(media_type.lower())
        if entry is None:
            raise UnsupportedMediaType(f"No encoder for {media_type!r} on {key!r} nodes")
        if entry.kind == "data":
            encoder = entry.encoder
            if entry.parameters:
                parameters = getattr(media_type, "parameters", {})
                encoder = functools.partial(_with_parameters, entry.encoder, parameters)
            return await run_sync(_read_and_encode, encoder, read, metadata)
        result = entry.encoder(node, options or EncodeOptions())
        return await result if inspect.isawaitable(result) else result


def _with_parameters(
    encoder: Callable[..., bytes], parameters: dict[str, str], data: Any, metadata: Any
) -> bytes:
    return encoder(data, metadata, parameters)


def _read_and_encode(encoder: Callable[..., bytes], read: Callable[[], Any], metadata) -> bytes:
    return encoder(read(), metadata)


def _requested(
    format: str | None, accept: str | None, aliases: dict[str, str]
) -> dict[str, list[MediaType]]:
    """What the client asked for, as spelled, each with the media types it may stand for."""
    if format:
        tokens = [t.strip() for t in format.split(",") if t.strip()]
        return {token: _resolve(token, aliases) for token in tokens}
    if accept and accept.strip():
        return {media_type: [media_type] for media_type in parse_accept(accept)}
    return {"*/*": [MediaType("*/*")]}


def _resolve(token: str, aliases: dict[str, str]) -> list[MediaType]:
    parsed = MediaType.parse(token)
    registered = aliases.get(parsed.lstrip("."))
    return [parsed.with_value(registered)] if registered else resolve_alias(token)
