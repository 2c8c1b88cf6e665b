"""Structure families and specs."""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


class StructureFamily(str, enum.Enum):
    container = "container"
    array = "array"
    sparse = "sparse"
    table = "table"
    # Upstream's other families, so that its catalogs and responses parse; nodes of these
    # families are listed, and their data answers a 4xx naming what is not supported.
    awkward = "awkward"
    ragged = "ragged"
    bytes = "bytes"

    def __str__(self) -> str:
        return self.value


MAX_SPEC_NAME_LENGTH = 255
MAX_ALLOWED_SPECS = 20


@dataclass(frozen=True)
class Spec:
    """A named (optionally versioned) convention a node follows, e.g. ``xarray_dataset``."""

    name: str
    version: str | None = None

    def __post_init__(self) -> None:
        # Lengths are the server's limit (normalize_specs), not the data's: a client sends a
        # long name and the server refuses it (422), as upstream's do.
        if not isinstance(self.name, str) or not self.name:
            raise ValueError(f"Spec name must be a non-empty string, not {self.name!r}")

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "version": self.version}

    @classmethod
    def from_json(cls, value: dict[str, Any] | str | Spec) -> Spec:
        if isinstance(value, Spec):
            return value
        if isinstance(value, str):
            return cls(value)
        return cls(value["name"], value.get("version"))


def normalize_specs(specs: Any) -> list[Spec]:
    """Accept specs as Spec objects, bare names or JSON dicts; keep order, refuse duplicates."""
    from ..errors import InvalidSpecs

    if isinstance(specs, str | bytes | Mapping):
        # Iterated, they would make a spec of each letter or key (a merge patch can leave these).
        raise InvalidSpecs(f"Specs are a list of spec names or objects, not {specs!r}")
    try:
        result = [Spec.from_json(s) for s in (specs or [])]
    except (ValueError, KeyError, TypeError) as err:
        raise InvalidSpecs(f"Invalid specs {specs!r}: {err}") from None
    for spec in result:
        if len(spec.name) > MAX_SPEC_NAME_LENGTH:
            raise InvalidSpecs(f"Spec name longer than {MAX_SPEC_NAME_LENGTH} characters")
        if spec.version is not None and len(spec.version) > MAX_SPEC_NAME_LENGTH:
            raise InvalidSpecs(f"Spec version longer than {MAX_SPEC_NAME_LENGTH} characters")
    if len(result) > MAX_ALLOWED_SPECS:
        raise InvalidSpecs(f"A node may carry at most {MAX_ALLOWED_SPECS} specs")
    if len(set(result)) != len(result):
        raise InvalidSpecs(f"Duplicate specs in {[s.name for s in result]}")
    return result
