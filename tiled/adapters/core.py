"""The common base of every adapter: structure, metadata and specs."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

from ..structures.core import Spec, StructureFamily, normalize_specs


class Adapter:
    """Holds what every node has: a structure, a metadata dict and a list of specs."""

    structure_family: ClassVar[StructureFamily]
    # Access-control data ({"tags": [...]}, ...) read by access policies; None inherits.
    access_blob: dict[str, Any] | None = None

    def __init__(self, structure: Any = None, *, metadata: Mapping | None = None, specs=None):
        self._structure = structure
        self._metadata = dict(metadata or {})
        self._specs = normalize_specs(specs)

    def structure(self) -> Any:
        return self._structure

    def metadata(self) -> dict[str, Any]:
        return self._metadata

    @property
    def specs(self) -> list[Spec]:
        return self._specs

    @specs.setter
    def specs(self, value) -> None:
        self._specs = normalize_specs(value)

    @classmethod
    def supported_storage(cls) -> set:
        return set()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.structure_family.value}>"
