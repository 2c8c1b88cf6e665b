"""The structure class of each structure family that has one, and JSON parsing by family."""

from __future__ import annotations

from typing import Any

from .array import ArrayStructure
from .awkward import AwkwardStructure
from .ragged import RaggedStructure
from .sparse import COOStructure
from .table import TableStructure

STRUCTURE_TYPES: dict[str, type] = {
    "array": ArrayStructure,
    "awkward": AwkwardStructure,
    "ragged": RaggedStructure,
    "sparse": COOStructure,
    "table": TableStructure,
}


def structure_from_json(family: str, value: Any) -> Any:
    """The structure object of ``family`` from its JSON form (None and families without a
    structure class, such as containers, pass through as they are)."""
    if value is None or family not in STRUCTURE_TYPES:
        return value
    return STRUCTURE_TYPES[family].from_json(value)


__all__ = ["STRUCTURE_TYPES", "structure_from_json"]
