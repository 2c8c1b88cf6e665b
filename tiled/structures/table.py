"""Table structures: an Arrow schema plus the number of row partitions."""

from __future__ import annotations

import base64
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..errors import InvalidStructure

if TYPE_CHECKING:
    import pandas
    import pyarrow

B64_PREFIX = "data:application/vnd.apache.arrow.file;base64,"


@dataclass(frozen=True)
class TableStructure:
    arrow_schema: str
    npartitions: int
    # A list, as upstream's (``structure.columns == ["a", "b"]`` holds in both).
    columns: list[str]
    resizable: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "columns", [str(c) for c in self.columns])
        if not self.arrow_schema.startswith(B64_PREFIX):
            raise InvalidStructure("arrow_schema must be a base64 data URI of an Arrow schema")
        if self.npartitions < 0:
            raise InvalidStructure(f"npartitions must be >= 0, not {self.npartitions}")
        for name in self.columns:
            if name.startswith("_"):
                raise InvalidStructure(f"Column names may not start with '_': {name!r}")

    def __hash__(self) -> int:  # hashable as a frozen dataclass is, though columns is a list
        return hash((self.arrow_schema, self.npartitions, tuple(self.columns), self.resizable))

    @classmethod
    def from_arrow_schema(cls, schema: pyarrow.Schema, npartitions: int = 1) -> TableStructure:
        encoded = base64.b64encode(schema.serialize()).decode()
        index = set(index_columns(schema))  # once: it decodes the schema's pandas metadata
        columns = [n for n in schema.names if n not in index]
        return cls(B64_PREFIX + encoded, npartitions, columns)

    @classmethod
    def from_schema(cls, schema: pyarrow.Schema, npartitions: int = 1) -> TableStructure:
        """Upstream's name for :meth:`from_arrow_schema`."""
        return cls.from_arrow_schema(schema, npartitions)

    @classmethod
    def from_arrow_table(cls, table: pyarrow.Table, npartitions: int = 1) -> TableStructure:
        return cls.from_arrow_schema(table.schema, npartitions)

    @classmethod
    def from_dict(cls, columns: Mapping[str, Any]) -> TableStructure:
        """The structure of a table of one partition holding ``columns`` (name -> values)."""
        import pyarrow

        return cls.from_arrow_schema(pyarrow.Table.from_pydict(dict(columns)).schema)

    @classmethod
    def from_arrays(cls, arrays: Sequence[Any], names: Sequence[str]) -> TableStructure:
        """The structure of a table of one partition whose columns ``names`` hold ``arrays``."""
        import pyarrow

        return cls.from_arrow_schema(pyarrow.Table.from_arrays(list(arrays), list(names)).schema)

    @classmethod
    def from_pandas(cls, df: pandas.DataFrame, npartitions: int = 1) -> TableStructure:
        import pyarrow

        schema = pyarrow.Table.from_pandas(df.iloc[:0]).schema
        return cls.from_arrow_schema(schema, npartitions)

    @classmethod
    def from_dask_dataframe(cls, ddf: Any) -> TableStructure:
        # The empty frame dask keeps as the schema: no partition is computed.
        return cls.from_pandas(ddf._meta, ddf.npartitions)

    def is_compatible(self, other: Any) -> bool:
        """Whether data of structure ``other`` can be served as this structure: as many
        columns, of the same types in order (names and partitions may differ)."""
        if not isinstance(other, TableStructure):
            return False
        ours, theirs = self.arrow_schema_decoded, other.arrow_schema_decoded
        return ours.types == theirs.types

    @property
    def arrow_schema_decoded(self) -> pyarrow.Schema:
        import pyarrow

        payload = base64.b64decode(self.arrow_schema[len(B64_PREFIX) :])
        return pyarrow.ipc.read_schema(pyarrow.py_buffer(payload))

    @property
    def meta(self) -> pandas.DataFrame:
        """An empty pandas frame with the table's columns and dtypes."""
        return self.arrow_schema_decoded.empty_table().to_pandas()

    def to_json(self) -> dict[str, Any]:
        return {
            "arrow_schema": self.arrow_schema,
            "npartitions": self.npartitions,
            "columns": list(self.columns),
            "resizable": self.resizable,
        }

    @classmethod
    def from_json(cls, value: dict[str, Any]) -> TableStructure:
        try:
            return cls(
                value["arrow_schema"],
                value["npartitions"],
                list(value["columns"]),
                value.get("resizable", False),
            )
        except (KeyError, TypeError) as err:
            raise InvalidStructure(f"Invalid table structure: {err}") from None


def index_columns(schema: pyarrow.Schema) -> list[str]:
    """The schema's columns that pandas keeps as the index (named index levels), in order."""
    metadata = schema.pandas_metadata or {}
    return [name for name in metadata.get("index_columns", ()) if isinstance(name, str)]
