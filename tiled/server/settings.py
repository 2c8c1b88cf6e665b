"""Server settings: immutable, built once per app."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ..structures.zarr_meta import ZarrOptions


@dataclass(frozen=True)
class ServerSettings:
    root_path: str = ""
    allow_origins: tuple[str, ...] = ()
    response_bytesize_limit: int = 300_000_000
    exact_count_limit: int = 100
    # Responses smaller than this are not worth compressing.
    compression_min_bytes: int = 1000
    zarr: ZarrOptions = field(default_factory=ZarrOptions)
    # Above this many nodes a consolidated zarr document is not offered (listing still works).
    zarr_consolidated_max_nodes: int = 1000
    zarr_cache_control: str | None = None
    zarr_listing_max: int = 10_000

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any] | None) -> ServerSettings:
        """Build from upstream-style ``server_settings`` (unknown keys are ignored)."""
        values = dict(values or {})
        known = {f.name for f in dataclasses.fields(cls)}
        kwargs = {k: v for k, v in values.items() if k in known}
        if "allow_origins" in kwargs:
            kwargs["allow_origins"] = tuple(kwargs["allow_origins"] or ())
        zarr = values.get("zarr")
        if isinstance(zarr, Mapping):
            kwargs["zarr"] = ZarrOptions(**zarr)
        return cls(**kwargs)
