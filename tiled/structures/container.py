"""Container structure: in Python the keys; over HTTP ``{"contents", "count"}``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class ContainerStructure:
    keys: tuple[str, ...]

    @property
    def count(self) -> int:
        return len(self.keys)

    def to_json(self, contents: dict[str, Any] | None = None) -> dict[str, Any]:
        return {"contents": contents, "count": self.count}
