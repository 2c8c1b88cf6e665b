"""The adapter protocol, per structure family.

Structural types: an adapter need not inherit from anything here. The zarr hooks are part of
each protocol; ``tiled.adapters.base`` provides default implementations written on the other
members, so most adapters get them by inheriting the family base.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, ClassVar, Protocol, Union, runtime_checkable

from ..ndslice import NDSlice
from ..structures.core import Spec, StructureFamily

if TYPE_CHECKING:
    import numpy
    import pandas
    import sparse

    from ..structures.array import ArrayStructure
    from ..structures.sparse import COOStructure
    from ..structures.table import TableStructure
    from ..zarr_format.model import ZarrArrayMeta, ZarrGroupMeta, ZarrOptions


@runtime_checkable
class BaseAdapter(Protocol):
    structure_family: ClassVar[StructureFamily]

    def metadata(self) -> dict[str, Any]: ...

    @property
    def specs(self) -> list[Spec]: ...

    @classmethod
    def supported_storage(cls) -> set: ...


@runtime_checkable
class ZarrArrayHooks(Protocol):
    """A node seen by zarr clients as one array."""

    async def to_zarr_meta(self, options: ZarrOptions | None = None) -> ZarrArrayMeta:
        """Shape, regular chunk grid, dtype, fill value, codecs, dims, attributes. Reads no data."""
        ...

    async def to_zarr_chunk(self, coords: Sequence[int], meta: ZarrArrayMeta) -> bytes:
        """Encoded bytes of one chunk, padded to the full chunk shape.

        ``meta`` is what ``to_zarr_meta`` returned. Raises ``ChunkOutOfRange`` for coordinates
        of the wrong rank, negative, or outside the grid, and may raise ``ZarrKeyNotFound`` for
        a chunk that holds only the fill value (storage that never wrote it).
        """
        ...


@runtime_checkable
class ZarrGroupHooks(Protocol):
    """A node seen by zarr clients as a group."""

    async def to_zarr_meta(self, options: ZarrOptions | None = None) -> ZarrGroupMeta: ...

    async def zarr_member_keys(self, offset: int = 0, limit: int | None = None) -> list[str]: ...

    async def zarr_member(self, key: str) -> Any: ...


class ArrayAdapter(BaseAdapter, ZarrArrayHooks, Protocol):
    def structure(self) -> ArrayStructure: ...

    def read(self, slice: NDSlice = ...) -> numpy.ndarray: ...

    def read_block(self, block: Sequence[int], slice: NDSlice = ...) -> numpy.ndarray: ...


class SparseAdapter(BaseAdapter, ZarrArrayHooks, Protocol):
    def structure(self) -> COOStructure: ...

    def read(self, slice: NDSlice = ...) -> sparse.COO: ...

    def read_block(self, block: Sequence[int], slice: NDSlice = ...) -> sparse.COO: ...


class TableAdapter(BaseAdapter, ZarrGroupHooks, Protocol):
    def structure(self) -> TableStructure: ...

    def read(self, fields: list[str] | None = None) -> pandas.DataFrame: ...

    def read_partition(
        self, partition: int, fields: list[str] | None = None
    ) -> pandas.DataFrame: ...

    def __getitem__(self, key: str) -> ArrayAdapter: ...


class ContainerAdapter(BaseAdapter, ZarrGroupHooks, Protocol):
    def structure(self) -> Any: ...

    def __getitem__(self, key: str) -> AnyAdapter: ...

    def __len__(self) -> int: ...

    def keys(self) -> Any: ...


AnyAdapter = Union[ArrayAdapter, SparseAdapter, TableAdapter, ContainerAdapter]


# --- Writing (the SQL catalog's nodes implement these; in-memory adapters do not) -----------
@runtime_checkable
class WritableContainer(Protocol):
    async def create_node(
        self,
        *,
        key: str | None,
        structure_family: StructureFamily,
        metadata: dict[str, Any],
        specs: list[Spec],
        data_sources: list[Any],
        access_blob: dict[str, Any] | None = None,
        register: bool = False,
    ) -> Any:
        """Create a child (with its storage, for data-source-backed families); return its adapter,
        which carries its ``key`` and its ``data_sources()``.

        Data sources with assets (external files) are refused unless ``register``. All or
        nothing: on any failure no row and no file remains."""
        ...


@runtime_checkable
class NodeWithHistory(Protocol):
    async def replace_metadata(
        self, metadata: dict | None = None, specs: list[Spec] | None = None,
        access_blob: dict | None = None, drop_revision: bool = False,
    ) -> None: ...  # fmt: skip

    async def revisions(
        self, offset: int = 0, limit: int = 100
    ) -> tuple[list[dict[str, Any]], int]: ...

    async def delete_revision(self, number: int) -> None: ...

    async def delete(self, recursive: bool = False, external_only: bool = True) -> None: ...


@runtime_checkable
class WritableArray(Protocol):
    async def write(self, data: numpy.ndarray) -> None: ...

    async def write_block(self, data: numpy.ndarray, block: Sequence[int]) -> None: ...


@runtime_checkable
class PatchableArray(Protocol):
    async def patch(
        self, data: numpy.ndarray, offset: Sequence[int], extend: bool
    ) -> ArrayStructure:
        """Write ``data`` at ``offset``; with ``extend``, grow the array to hold it (never
        shrink). Returns the structure after the write."""
        ...


@runtime_checkable
class WritableTable(Protocol):
    async def write(self, data: pandas.DataFrame) -> None: ...

    async def write_partition(self, data: pandas.DataFrame, partition: int) -> None: ...

    async def append_partition(self, data: pandas.DataFrame, partition: int) -> None: ...


@runtime_checkable
class WritableSparse(Protocol):
    async def write(self, coords: numpy.ndarray, data: numpy.ndarray) -> None: ...

    async def write_block(
        self, coords: numpy.ndarray, data: numpy.ndarray, block: Sequence[int]
    ) -> None: ...


@runtime_checkable
class WritableAwkward(Protocol):
    async def write(self, buffers: dict[str, bytes]) -> None:
        """Replace all buffers (named as ``awkward.to_buffers`` names them) at once."""
        ...


@runtime_checkable
class WritableRagged(Protocol):
    async def write(self, array: Any) -> None: ...

    async def write_block(self, array: Any, block: Sequence[int]) -> None: ...


@runtime_checkable
class PatchableRagged(Protocol):
    async def patch(self, array: Any, offset: Sequence[int], extend: bool) -> Any:
        """Append ``array``'s rows at ``offset`` (the current length) with ``extend``; returns
        the structure after the append."""
        ...
