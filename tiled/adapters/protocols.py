"""The adapter protocol, per structure family, and the capabilities the server asks for.

Structural types: an adapter need not inherit from anything here. The zarr hooks are part of
each family's protocol; ``tiled.adapters.base`` provides default implementations written on the
other members, so most adapters get them by inheriting the family base.

Beyond its family's protocol a node may offer capabilities (listing, search, sorting, writing,
...), each a runtime-checkable protocol below. The server asks for one with :func:`supports`
(or ``tiled.server.dependencies.capable``, which answers 405 for a node without it). As Python's
own protocol check does, a capability member set to ``None`` refuses it: a class that inherits
a method it cannot honour says so with ``search = None``.

The family protocols are named ``Readable*``; upstream Tiled's names for them
(``ArrayAdapter``, ``SparseAdapter``, ``TableAdapter``, ``ContainerAdapter``), which are also
the names of concrete adapters, still import from here.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from contextlib import AbstractAsyncContextManager
from typing import TYPE_CHECKING, Any, ClassVar, Protocol, TypeVar, Union, runtime_checkable

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
    from ..zarr_format.submitted import SubmittedArray
    from .conditions import WriteCondition


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


class ReadableArray(BaseAdapter, ZarrArrayHooks, Protocol):
    def structure(self) -> ArrayStructure: ...

    def read(self, slice: NDSlice = ...) -> numpy.ndarray: ...

    def read_block(self, block: Sequence[int], slice: NDSlice = ...) -> numpy.ndarray: ...


class ReadableSparse(BaseAdapter, ZarrArrayHooks, Protocol):
    def structure(self) -> COOStructure: ...

    def read(self, slice: NDSlice = ...) -> sparse.COO: ...

    def read_block(self, block: Sequence[int], slice: NDSlice = ...) -> sparse.COO: ...


class ReadableTable(BaseAdapter, ZarrGroupHooks, Protocol):
    def structure(self) -> TableStructure: ...

    def read(self, fields: list[str] | None = None) -> pandas.DataFrame: ...

    def read_partition(
        self, partition: int, fields: list[str] | None = None
    ) -> pandas.DataFrame: ...

    def __getitem__(self, key: str) -> ReadableArray: ...


class ReadableContainer(BaseAdapter, ZarrGroupHooks, Protocol):
    def structure(self) -> Any: ...

    def __getitem__(self, key: str) -> AnyAdapter: ...

    def __len__(self) -> int: ...

    def keys(self) -> Any: ...


AnyAdapter = Union[ReadableArray, ReadableSparse, ReadableTable, ReadableContainer]

# Upstream Tiled's names of the family protocols. Served on demand only, so that nothing in
# this package confuses them with the concrete adapters of the same names.
_UPSTREAM_NAMES = {
    "ArrayAdapter": "ReadableArray",
    "SparseAdapter": "ReadableSparse",
    "TableAdapter": "ReadableTable",
    "ContainerAdapter": "ReadableContainer",
}


def __getattr__(name: str) -> Any:
    if name in _UPSTREAM_NAMES:
        return globals()[_UPSTREAM_NAMES[name]]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


# --- Reading: what the server asks of a node besides its family's primary methods -----------
@runtime_checkable
class PathLookup(Protocol):
    async def lookup_adapter(self, segments: Sequence[str]) -> Any:
        """The adapter at ``segments`` below this node; raises ``NoSuchEntry``."""
        ...


@runtime_checkable
class Listing(Protocol):
    """Members counted and read a page at a time (what /search and inlined contents read)."""

    async def count(self) -> int: ...

    async def items_range(
        self, offset: int = 0, limit: int | None = None
    ) -> list[tuple[str, Any]]: ...


@runtime_checkable
class KeysetPages(Protocol):
    """Pages read after a cursor, which stays right while members are added (a catalog)."""

    async def items_page(
        self, cursor: Any = None, limit: int | None = None
    ) -> tuple[list[tuple[str, Any]], Any]:
        """``(items, next cursor)``; the next cursor is None on the last page."""
        ...

    async def cursor_for_offset(self, offset: int) -> Any:
        """The cursor of the entry before ``offset``; None when there is none to give."""
        ...


@runtime_checkable
class Searchable(Protocol):
    def search(self, query: Any) -> Any:
        """A variation listing only the members matching ``query``; raises
        ``UnsupportedQuery`` for a query it cannot evaluate."""
        ...


@runtime_checkable
class SearchesDeep(Protocol):
    def search_deep(self, max_depth: int | None = None) -> Any:
        """A variation spanning every descendant (at most ``max_depth`` levels down), which
        is searched, counted and read a page at a time (``items_range``), each member under
        its path below this node (``"a/b/c"``)."""
        ...


@runtime_checkable
class HasWebhooks(Protocol):
    def webhooks(self) -> Any:
        """This node's webhooks (``tiled.catalog.webhooks.NodeWebhooks``: a catalog's nodes
        have them), or None where the server delivers none."""
        ...


@runtime_checkable
class HasLiveStream(Protocol):
    def live_stream(self) -> Any:
        """This node's live stream (``tiled.catalog.streams.NodeStream``: a catalog's nodes
        have one), or None where the server has no streaming cache."""
        ...

    async def close_stream(self) -> None:
        """End the live stream: its subscribers are told, and disconnected."""
        ...


@runtime_checkable
class Sortable(Protocol):
    def sort(self, sorting: Sequence[tuple[str, int]]) -> Any:
        """A variation listing its members by ``(key, direction)`` pairs."""
        ...


@runtime_checkable
class Filterable(Protocol):
    def filter(self, predicate: Callable[[str, Any], bool]) -> Any:
        """A variation keeping the members for which ``predicate(key, child)`` is true."""
        ...


@runtime_checkable
class DistinctValues(Protocol):
    def get_distinct(
        self, metadata: Sequence[str], structure_families: bool, specs: bool, counts: bool
    ) -> Any:
        """Distinct metadata values, families and specs among the members (a dict, or an
        awaitable of one)."""
        ...


@runtime_checkable
class InlinesContents(Protocol):
    def inlined_contents_enabled(self, depth: int) -> bool:
        """Whether a description at ``depth`` lists the members too (e.g. an HDF5 file's)."""
        ...


@runtime_checkable
class HasDataSources(Protocol):
    def data_sources(self) -> list[Any]:
        """Where the node's data are stored (storage-backed nodes only)."""
        ...


_Capability = TypeVar("_Capability")


def supports(adapter: object, capability: type[_Capability]) -> bool:
    """Whether ``adapter`` offers every member of ``capability`` (a runtime-checkable protocol
    of methods): what ``isinstance(adapter, capability)`` answers.

    Decided once per class where the class decides, since Python 3.11's protocol check costs
    microseconds and this runs on every request; members that the class leaves to its
    instances (``__getattr__``, instance attributes) are looked up on the instance.
    """
    left_to_instance = _members_left_to_instance(type(adapter), capability)
    if not left_to_instance:
        return left_to_instance is not None
    return all(getattr(adapter, name, None) is not None for name in left_to_instance)


_ABSENT = object()


@functools.cache
def _members_left_to_instance(cls: type, capability: type) -> tuple[str, ...] | None:
    # None when the class refuses the capability (a member set to None).
    left = []
    for name in protocol_members(capability):
        found = getattr(cls, name, _ABSENT)
        if found is None:
            return None
        if found is _ABSENT:
            left.append(name)
    return tuple(left)


@functools.cache
def protocol_members(protocol: type) -> frozenset[str]:
    """The public names a protocol declares (methods and annotated attributes), its bases'
    included."""
    declared: set[str] = set()
    for base in protocol.__mro__:
        if base in (object, Protocol) or not getattr(base, "_is_protocol", False):
            continue
        names = [*vars(base), *getattr(base, "__annotations__", {})]
        declared.update(name for name in names if not name.startswith("_"))
    return frozenset(declared)


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
class UpdatesInTurn(Protocol):
    """Nodes that several writers (and server processes) may update at once: a PATCH of the
    metadata holds this around reading what it patches and storing the result, so that no
    concurrent update is lost and a JSON Patch ``test`` checks the stored document."""

    def updating(self) -> AbstractAsyncContextManager[None]:
        """Held by one updater of this node at a time; inside it, the node shows its stored
        metadata, specs and access tags."""
        ...


@runtime_checkable
class ServesAssets(Protocol):
    async def asset_by_id(self, asset_id: int) -> Any:
        """The asset (a file of the node's data) ``asset_id``, or None."""
        ...


@runtime_checkable
class DeletesAssets(Protocol):
    async def delete_asset(self, asset_id: int, external_only: bool = True) -> Any:
        """Dissociate the asset from the node (and delete it when unused); None if absent."""
        ...


@runtime_checkable
class ReplaceableDataSources(Protocol):
    async def put_data_source(self, data_source: Any, patch: Any = None) -> Any:
        """Replace one of the node's data sources; returns the data source as stored."""
        ...


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


# --- Writing through /zarr (the catalog's writable arrays and containers) ---------------------
@runtime_checkable
class WritableZarrArray(Protocol):
    """An array whose stored zarr chunks and metadata zarr clients write as they are."""

    async def write_zarr_chunk(
        self, coords: Sequence[int], payload: bytes, condition: WriteCondition
    ) -> tuple[str, bool]:
        """Store the encoded chunk ``coords`` whole, if ``condition`` holds for the stored one;
        returns the new chunk's ETag and whether it is new. Raises InvalidZarrDocument for a
        payload that does not decode to a chunk, ChunkOutOfRange off the grid."""
        ...

    async def delete_zarr_chunk(self, coords: Sequence[int], condition: WriteCondition) -> bool:
        """Remove the stored chunk ``coords``; whether there was one."""
        ...

    def stored_zarr_chunks(self) -> list[tuple[tuple[int, ...], int, float, str]]:
        """``(coords, size in bytes, modification time, ETag)`` of the stored chunks
        (blocking)."""
        ...

    async def update_zarr_array(
        self, *, shape: tuple[int, ...] | None = None, dims: Any = ..., attributes: Any = None
    ) -> None:
        """Resize, rename dimensions, replace attributes: all or none."""
        ...


@runtime_checkable
class DirectChunkReads(Protocol):
    """Arrays whose stored chunks a client may read from their storage itself (a presigned
    URL of a bucket object), once the server has authorized the read."""

    def zarr_chunk_url(self, coords: Sequence[int], seconds: float) -> str | None:
        """A URL valid for ``seconds`` from which stored chunk ``coords`` may be read as it
        is served, or None where the server serves it (blocking)."""
        ...


@runtime_checkable
class ExcludesWriters(Protocol):
    """Nodes whose writers may run in several processes (a catalog served by several
    workers): a writer that checks a condition (``If-Match``) and then changes the node holds
    this, so that no writer of another process changes it in between."""

    def exclusive(self, *below: str) -> AbstractAsyncContextManager[None]:
        """Held by one writer of this node (or of its descendant ``below``) at a time."""
        ...


@runtime_checkable
class WritableZarrContainer(Protocol):
    async def create_zarr_array(
        self, key: str, array: SubmittedArray, *, access_blob: dict[str, Any] | None = None
    ) -> Any:
        """Create a child array stored as the zarr array a client wrote (``array``)."""
        ...

    async def create_zarr_group(
        self, key: str, attributes: dict[str, Any], *, access_blob: dict[str, Any] | None = None
    ) -> Any:
        """Create a child group (an empty container) with ``attributes`` as its metadata."""
        ...
