"""Data sources and assets, as upstream Tiled describes stored data."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from .array import LARGEST_SIZE
from .core import StructureFamily

# The structure a data source holds (upstream's annotations write DataSource[TableStructure]).
StructureT = TypeVar("StructureT")


class Management(str, enum.Enum):
    external = "external"
    immutable = "immutable"
    locked = "locked"
    writable = "writable"


@dataclass
class Asset:
    data_uri: str
    is_directory: bool
    parameter: str | None = None
    num: int | None = None
    id: int | None = None
    size: int | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "data_uri": self.data_uri,
            "is_directory": self.is_directory,
            "parameter": self.parameter,
            "num": self.num,
            "id": self.id,
            "size": self.size,
        }

    @classmethod
    def from_json(cls, value: dict[str, Any]) -> Asset:
        """An asset from its JSON form; :class:`BadRequest` naming what is missing or wrong."""
        from ..errors import BadRequest

        if not isinstance(value, dict):
            raise BadRequest(f"An asset must be a JSON object, not {value!r}")
        for name, (kinds, required) in _ASSET_FIELDS.items():
            given = value.get(name)
            if given is None and not required:
                continue
            # A boolean is an int to Python; it is no count or id, and 1 is no is_directory.
            if not isinstance(given, kinds) or (kinds is int and isinstance(given, bool)):
                raise BadRequest(
                    f"An asset's {name} must be {_ASSET_KIND_NAMES[kinds]}, not {given!r}"
                )
            if kinds is int and not 0 <= given <= LARGEST_SIZE:
                raise BadRequest(f"An asset's {name} must be between 0 and {LARGEST_SIZE}")
        return cls(**{name: value.get(name) for name in _ASSET_FIELDS})


# Each field of an asset's JSON: its type and whether it must be given.
_ASSET_FIELDS: dict[str, tuple[type, bool]] = {
    "data_uri": (str, True),
    "is_directory": (bool, True),
    "parameter": (str, False),
    "num": (int, False),
    "id": (int, False),
    "size": (int, False),
}
_ASSET_KIND_NAMES = {str: "a string", bool: "a boolean", int: "an integer"}


@dataclass
class DataSource(Generic[StructureT]):
    structure_family: StructureFamily
    structure: StructureT | Any = None
    id: int | None = None
    mimetype: str | None = None
    parameters: dict[str, Any] = field(default_factory=dict)
    properties: dict[str, Any] = field(default_factory=dict)
    assets: list[Asset] = field(default_factory=list)
    management: Management = Management.writable

    def to_json(self) -> dict[str, Any]:
        structure = (
            self.structure.to_json() if hasattr(self.structure, "to_json") else self.structure
        )
        return {
            "id": self.id,
            "structure_family": StructureFamily(self.structure_family).value,
            "structure": structure,
            "mimetype": self.mimetype,
            "parameters": self.parameters,
            "properties": self.properties,
            "assets": [a.to_json() for a in self.assets],
            "management": Management(self.management).value,
        }

    @classmethod
    def from_json(cls, value: dict[str, Any]) -> DataSource:
        """A data source from its JSON form, its structure parsed by family."""
        from .families import structure_from_json

        family = StructureFamily(value["structure_family"])
        return cls(
            structure_family=family,
            structure=structure_from_json(family.value, value.get("structure")),
            id=value.get("id"),
            mimetype=value.get("mimetype"),
            parameters=dict(value.get("parameters") or {}),
            properties=dict(value.get("properties") or {}),
            assets=[Asset.from_json(a) for a in value.get("assets") or []],
            management=Management(value.get("management") or Management.writable),
        )


def data_source_as_sent(value: dict[str, Any]) -> DataSource:
    """A data source from its JSON form, its ``structure`` kept as the JSON sent (a dict), as
    upstream's client gives data sources (``source.structure["shape"]``)."""
    import copy

    source = DataSource.from_json({**value, "structure": None})
    source.structure = copy.deepcopy(value.get("structure"))
    return source
