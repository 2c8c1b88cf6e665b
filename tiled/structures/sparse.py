"""Sparse (COO) array structures."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any

from ..errors import InvalidStructure
from .array import (
    BuiltinDtype,
    DataType,
    Endianness,
    Kind,
    _normalize_chunks,
    checked_dims,
    checked_resizable,
    checked_sizes,
    data_type_from_json,
)


class SparseLayout(str, enum.Enum):
    COO = "COO"


DEFAULT_COORD_DATA_TYPE = BuiltinDtype(Endianness.little, Kind.unsigned_integer, 8)


@dataclass(frozen=True)
class COOStructure:
    chunks: tuple[tuple[int, ...], ...]
    shape: tuple[int, ...]
    data_type: DataType | None = None
    coord_data_type: BuiltinDtype = DEFAULT_COORD_DATA_TYPE
    dims: tuple[str, ...] | None = None
    resizable: bool | tuple[bool, ...] = False
    layout: SparseLayout = SparseLayout.COO

    def __post_init__(self) -> None:
        shape = checked_sizes(self.shape, "shape")
        object.__setattr__(self, "shape", shape)
        object.__setattr__(self, "chunks", _normalize_chunks(self.chunks, shape))
        object.__setattr__(self, "layout", SparseLayout(self.layout))
        if self.dims is not None:
            object.__setattr__(self, "dims", checked_dims(self.dims, len(shape)))
        object.__setattr__(self, "resizable", checked_resizable(self.resizable, len(shape)))

    @property
    def ndim(self) -> int:
        return len(self.shape)

    def to_json(self) -> dict[str, Any]:
        return {
            "chunks": [list(c) for c in self.chunks],
            "shape": list(self.shape),
            "data_type": self.data_type.to_json() if self.data_type is not None else None,
            "coord_data_type": self.coord_data_type.to_json(),
            "dims": list(self.dims) if self.dims is not None else None,
            "resizable": self.resizable,
            "layout": self.layout.value,
        }

    @classmethod
    def from_json(cls, value: dict[str, Any]) -> COOStructure:
        try:
            data_type = value.get("data_type")
            coord = value.get("coord_data_type")
            return cls(
                chunks=value["chunks"],
                shape=value["shape"],
                data_type=data_type_from_json(data_type) if data_type else None,
                coord_data_type=BuiltinDtype.from_json(coord) if coord else DEFAULT_COORD_DATA_TYPE,
                dims=value.get("dims"),
                resizable=value.get("resizable", False),
                layout=value.get("layout", "COO"),
            )
        except (KeyError, TypeError, ValueError) as err:
            if isinstance(err, InvalidStructure):
                raise
            raise InvalidStructure(f"Invalid sparse structure: {err}") from None


SparseStructure = COOStructure
