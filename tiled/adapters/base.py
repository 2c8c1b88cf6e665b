"""Per-family adapter bases carrying the default zarr hooks.

Every hook here is written only on the family's primary methods (``structure()``, ``read()``,
``metadata()``, keys and lookup), so any adapter that provides those gets a correct zarr view.
Storage-backed adapters override a hook only to do better (e.g. pass stored chunks through).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from ..errors import NoSuchEntry
from ..ndslice import NDBlock, NDSlice
from ..structures.core import StructureFamily
from ..utils import run_sync
from .core import Adapter
from .protocols import ZarrGroupHooks, supports

if TYPE_CHECKING:
    import numpy

    from ..zarr_format.model import ZarrArrayMeta, ZarrGroupMeta, ZarrOptions


XARRAY_COORDINATE_SPEC = "xarray_coord"


def xarray_node_attributes(adapter: Adapter) -> dict[str, Any]:
    """The attributes of an xarray node (dataset, data variable or coordinate).

    xarray nodes keep the Dataset/variable attributes under "attrs"; zarr readers such as
    xarray.open_zarr expect them (units, calendar, ...) as the attributes themselves.
    """
    attrs = adapter.metadata().get("attrs")
    return dict(attrs) if isinstance(attrs, dict) else {}


def xarray_dataset_attributes(adapter: Adapter, coordinate_keys: Iterable[str]) -> dict[str, Any]:
    """The attributes of an xarray dataset whose coordinate members are ``coordinate_keys``.

    CF's global "coordinates" attribute tells xarray which arrays are coordinates, so that
    non-dimension coordinates (e.g. 2-d lat/lon) open as coordinates, not data variables; a
    dataset whose own attributes name them already keeps its own.
    """
    attrs = xarray_node_attributes(adapter)
    coordinates = list(coordinate_keys)
    if coordinates and "coordinates" not in attrs:
        attrs["coordinates"] = " ".join(coordinates)
    return attrs


def _attributes_of_dataset_in_memory(adapter: Adapter) -> dict[str, Any]:
    coordinates = [
        key
        for key, child in adapter.items()
        if any(spec.name == XARRAY_COORDINATE_SPEC for spec in child.specs)
    ]
    return xarray_dataset_attributes(adapter, coordinates)


# How node metadata becomes zarr attributes, by spec; nodes with none of these specs expose
# their whole metadata. The same attributes are written in both zarr formats.
ATTRIBUTES_BY_SPEC = {
    "xarray_dataset": _attributes_of_dataset_in_memory,
    "xarray_data_var": xarray_node_attributes,
    XARRAY_COORDINATE_SPEC: xarray_node_attributes,
}


def zarr_attributes(adapter: Adapter) -> dict[str, Any]:
    for spec in adapter.specs:
        projection = ATTRIBUTES_BY_SPEC.get(spec.name)
        if projection is not None:
            return projection(adapter)
    return dict(adapter.metadata())


def metadata_from_zarr_attributes(
    adapter: Adapter, written: Mapping[str, Any], served: Mapping[str, Any]
) -> dict[str, Any]:
    """The metadata of ``adapter`` once a zarr client wrote ``written`` as its attributes,
    where it read ``served`` (what :func:`zarr_attributes` gave): the inverse of the
    projections above, so that a client writing back what it read changes nothing."""
    if not any(spec.name in ATTRIBUTES_BY_SPEC for spec in adapter.specs):
        return dict(written)
    metadata = dict(adapter.metadata())
    own = metadata.get("attrs") if isinstance(metadata.get("attrs"), dict) else {}
    attrs = dict(written)
    # The dataset's "coordinates" the server derived is not the node's own attribute.
    derived = "coordinates" not in own and served.get("coordinates") == attrs.get("coordinates")
    if derived:
        attrs.pop("coordinates", None)
    return {**metadata, "attrs": attrs}


def _default_options() -> ZarrOptions:
    from ..zarr_format.model import ZarrOptions

    return ZarrOptions()


# Below this size a chunk held in memory encodes in microseconds: not worth a worker thread.
SMALL_CHUNK_BYTES = 256 * 1024


class _ChunkedZarrHooks:
    """Default zarr hooks for families viewed as one zarr array (array, sparse)."""

    # Capability flag: True when read() only touches memory already held (no I/O, no dask
    # graph), so a chunk is encoded on the event loop instead of paying for a thread hop.
    reads_from_memory: bool = False

    def zarr_layout(self) -> tuple[tuple[int, ...], Sequence[Sequence[int]], numpy.dtype, Any]:
        """Shape, native chunks, numpy dtype and dims, without reading data."""
        structure = self.structure()
        return structure.shape, structure.chunks, self.zarr_dtype(), structure.dims

    def zarr_dtype(self) -> numpy.dtype:
        return self.structure().data_type.to_numpy_dtype()

    def zarr_fill_value(self) -> Any:
        # Floating-point arrays declare NaN, so that an absent chunk reads as "missing" and
        # xarray's masking of the fill value leaves real data untouched.
        dtype = self.zarr_dtype()
        return dtype.type("nan") if dtype.kind in "fc" else None

    def read_zarr_region(self, region: tuple[slice, ...]) -> numpy.ndarray:
        """The dense values of ``region`` (slices clipped to the array)."""
        import numpy

        return numpy.asarray(self.read(slice=NDSlice(*region)))

    # (options, layout, metadata, meta) of the last default_zarr_meta: see there.
    _zarr_meta_memo: tuple | None = None

    async def to_zarr_meta(self, options: ZarrOptions | None = None) -> ZarrArrayMeta:
        return self.default_zarr_meta(options)

    def default_zarr_meta(self, options: ZarrOptions | None = None) -> ZarrArrayMeta:
        """The zarr metadata made from the primary methods alone (synchronous, so that an
        adapter whose primary methods read files can call it on a worker thread).

        Every chunk request asks for it, so the last one is kept and given again while the
        options, the layout's parts and the metadata are the very same objects (identity, not
        equality: a cheap test that fails safe when an adapter builds them anew)."""
        from ..zarr_format.model import ZarrArrayMeta, choose_chunk_shape

        layout, metadata = self.zarr_layout(), self.metadata()
        memo = self._zarr_meta_memo
        if (
            memo is not None
            and memo[0] is options
            and memo[2] is metadata
            and all(a is b for a, b in zip(memo[1], layout, strict=True))
        ):
            return memo[3]
        shape, chunks, dtype, dims = layout
        given, options = options, options or _default_options()
        itemsize = dtype.itemsize or 16  # variable-length strings: a rough per-element guess
        meta = ZarrArrayMeta(
            shape=shape,
            chunk_shape=choose_chunk_shape(chunks, itemsize, options.chunk_budget_bytes),
            dtype=dtype,
            fill_value=self.zarr_fill_value(),
            compressors=options.compressors,
            dimension_names=tuple(dims) if dims is not None else None,
            attributes=zarr_attributes(self),
        )
        self._zarr_meta_memo = (given, layout, metadata, meta)
        return meta

    async def to_zarr_chunk(self, coords: Sequence[int], meta: ZarrArrayMeta) -> bytes:
        """Encoded bytes of chunk ``coords`` in the grid and codecs that ``meta`` describes."""
        region = meta.chunk_region(coords)  # raises ChunkOutOfRange before any read
        if self.reads_from_memory and meta.chunk_bytes <= SMALL_CHUNK_BYTES:
            return self._encode_region(region, meta)
        return await run_sync(self._encode_region, region, meta)

    def _encode_region(self, region: tuple[slice, ...], meta: ZarrArrayMeta) -> bytes:
        return meta.encode_chunk(self.read_zarr_region(region))


class ArrayAdapterBase(_ChunkedZarrHooks, Adapter):
    structure_family = StructureFamily.array

    def read(self, slice: NDSlice = NDSlice()) -> numpy.ndarray:
        raise NotImplementedError

    def read_block(self, block: Sequence[int], slice: NDSlice = NDSlice()) -> numpy.ndarray:
        region = NDBlock(*block).slices(self.structure().chunks)
        data = self.read(slice=NDSlice(*region))
        return data[tuple(slice)] if slice else data

    @property
    def dims(self) -> tuple[str, ...] | None:
        return self.structure().dims


class SparseAdapterBase(_ChunkedZarrHooks, Adapter):
    """Sparse arrays are viewed as dense zarr arrays whose fill value is zero."""

    structure_family = StructureFamily.sparse

    def zarr_dtype(self) -> numpy.dtype:
        import numpy

        data_type = self.structure().data_type
        return data_type.to_numpy_dtype() if data_type is not None else numpy.dtype("float64")

    def zarr_fill_value(self) -> Any:
        return self.zarr_dtype().type(0)

    def read_zarr_region(self, region: tuple[slice, ...]) -> numpy.ndarray:
        # Only the chunk's region is densified, never the whole array.
        return self.read(slice=NDSlice(*region)).todense()


class _GroupHooks:
    """Navigation and zarr hooks shared by the group-like families (container, table)."""

    def child(self, key: str) -> Any:
        """The adapter of the direct member ``key``; raises KeyError when there is none."""
        return self[key]

    async def lookup_adapter(self, segments: Sequence[str]) -> Any:
        """The adapter at ``segments`` below this node; raises :class:`NoSuchEntry`.

        The default walks one member at a time; a node that resolves paths itself (a catalog
        answers a whole path in one query) is handed the rest of the path.
        """
        node: Any = self
        for depth, key in enumerate(segments):
            if depth:
                if not is_group(node):
                    raise NoSuchEntry(list(segments[: depth + 1]))
                if _resolves_paths_itself(node):
                    return await node.lookup_adapter(segments[depth:])
            try:
                # A member of a group written on these hooks is its child(), without a detour
                # through zarr_member; other groups (written for upstream Tiled) give theirs.
                if isinstance(node, _GroupHooks):
                    node = node.child(key)
                else:
                    node = await node.zarr_member(key)
            except (KeyError, NoSuchEntry):
                raise NoSuchEntry(list(segments[: depth + 1])) from None
        return node

    async def to_zarr_meta(self, options: ZarrOptions | None = None) -> ZarrGroupMeta:
        from ..zarr_format.model import ZarrGroupMeta

        return ZarrGroupMeta(attributes=zarr_attributes(self))

    async def zarr_member_keys(self, offset: int = 0, limit: int | None = None) -> list[str]:
        raise NotImplementedError

    async def zarr_member(self, key: str) -> Any:
        """The adapter of member ``key``; raises :class:`tiled.errors.NoSuchEntry`."""
        return await self.lookup_adapter([key])


class ContainerAdapterBase(_GroupHooks, Adapter):
    """A container is a zarr group whose members are its children."""

    structure_family = StructureFamily.container

    # The async surface the server lists children through; an in-memory container answers from
    # its mapping, a catalog overrides these with paged queries.
    async def count(self) -> int:
        return len(self)

    async def items_range(self, offset: int = 0, limit: int | None = None) -> list[tuple[str, Any]]:
        stop = None if limit is None else offset + limit
        return list(self.items()[offset:stop])

    async def zarr_member_keys(self, offset: int = 0, limit: int | None = None) -> list[str]:
        stop = None if limit is None else offset + limit
        return list(self.keys()[offset:stop])


class TableAdapterBase(_GroupHooks, Adapter):
    """A table is a zarr group of one-dimensional column arrays."""

    structure_family = StructureFamily.table

    def child(self, key: str) -> Any:
        if key not in self.structure().columns:
            raise KeyError(key)
        return self[key]

    async def zarr_member_keys(self, offset: int = 0, limit: int | None = None) -> list[str]:
        columns = list(self.structure().columns)
        return columns[offset : None if limit is None else offset + limit]


def is_group(adapter: Any) -> bool:
    """Whether a node has members (and so is a zarr group): it has the group hooks
    (:class:`~tiled.adapters.protocols.ZarrGroupHooks`), by inheritance or structurally (as
    access-filtered views of groups do). The one test of group-ness; structure families are
    not asked (awkward and ragged nodes are groups of their buffers, too)."""
    return supports(adapter, ZarrGroupHooks)


def _resolves_paths_itself(node: Any) -> bool:
    lookup = getattr(type(node), "lookup_adapter", None)
    return lookup is not None and lookup is not _GroupHooks.lookup_adapter
