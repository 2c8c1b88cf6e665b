"""What node encoders ask of the nodes they walk (the walk itself: ``tiled.adapters.walk``)."""

from __future__ import annotations

from typing import Any

from ..adapters.walk import members

__all__ = ["family_of", "members", "spec_names"]


def family_of(node: Any) -> str:
    return str(node.structure_family)


def spec_names(node: Any) -> set[str]:
    return {spec.name for spec in node.specs}
