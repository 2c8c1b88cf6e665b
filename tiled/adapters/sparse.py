"""In-memory sparse arrays in COO form, stored as blocks of (coords, data)."""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy

from ..errors import InvalidStructure
from ..ndslice import NDBlock, NDSlice
from ..structures.array import BuiltinDtype, data_type_from_numpy
from ..structures.sparse import DEFAULT_COORD_DATA_TYPE, COOStructure
from .base import SparseAdapterBase

if TYPE_CHECKING:
    import sparse  # imported where a COO is built: it pulls in numba (~0.2 s)

Block = tuple[Any, Any]  # (coords of shape (ndim, nnz), data of shape (nnz,))

# One selected dimension: an int drops the dimension, a range keeps it (any step).
Selection = int | range


def _selection(parts: Sequence[Any], shape: tuple[int, ...]) -> tuple[Selection, ...]:
    """Normalize slice components to non-negative ints and ranges, one per dimension."""
    parts = tuple(parts)
    if Ellipsis in parts:
        at = parts.index(Ellipsis)
        filler = (slice(None),) * (len(shape) - len(parts) + 1)
        parts = parts[:at] + filler + parts[at + 1 :]
    expanded = NDSlice(*parts).expand(shape)  # validates rank and int bounds
    return tuple(
        p % n if isinstance(p, int) else _positions(p, n)
        for p, n in zip(expanded, shape, strict=True)
    )


def _positions(part: slice, size: int) -> range:
    found = range(*part.indices(size))
    # A step longer than the dimension selects one position at most: said with step 1, which
    # the int64 arithmetic of _select holds (a step of 2**63 does not fit it).
    return found if len(found) > 1 else range(found.start, found.start + len(found))


def _bounds(selection: Selection) -> tuple[int, int]:
    """The half-open interval of positions a dimension's selection touches."""
    if isinstance(selection, int):
        return selection, selection + 1
    if not selection:
        return 0, 0
    ends = (selection[0], selection[-1])
    return min(ends), max(ends) + 1


def _select(
    coords: numpy.ndarray, data: numpy.ndarray, selection: tuple[Selection, ...]
) -> tuple[numpy.ndarray, numpy.ndarray]:
    """Keep the entries inside ``selection``; re-number kept dimensions from zero."""
    coords = coords.astype(numpy.int64, copy=False)  # unsigned coords would wrap below zero
    mask = numpy.ones(coords.shape[1], dtype=bool)
    kept = []
    for row, sel in zip(coords, selection, strict=True):
        if isinstance(sel, int):
            mask &= row == sel
            continue
        offset = row - sel.start
        position = offset // sel.step
        mask &= (offset % sel.step == 0) & (position >= 0) & (position < len(sel))
        kept.append(position)
    new_coords = numpy.stack(kept) if kept else numpy.empty((0, coords.shape[1]), numpy.int64)
    return new_coords[:, mask], data[mask]


def _starts(chunks: tuple[tuple[int, ...], ...]) -> list[numpy.ndarray]:
    return [numpy.cumsum(dim, dtype=int) - numpy.asarray(dim, dtype=int) for dim in chunks]


def _as_block(block: Block) -> tuple[numpy.ndarray, numpy.ndarray]:
    coords, data = block
    return numpy.asarray(coords), numpy.asarray(data)


class COOAdapter(SparseAdapterBase):
    """Serve a sparse array held as COO blocks, each in block-local coordinates."""

    def __init__(
        self,
        blocks: Mapping[tuple[int, ...], Block],
        structure: COOStructure,
        *,
        metadata=None,
        specs=None,
    ):
        super().__init__(structure, metadata=metadata, specs=specs)
        self._blocks = blocks

    @classmethod
    def from_coo(cls, coo: sparse.COO, *, dims=None, metadata=None, specs=None) -> COOAdapter:
        return cls.from_arrays(
            coo.coords, coo.data, coo.shape, dims, metadata=metadata, specs=specs
        )

    @classmethod
    def from_arrays(
        cls, coords: Any, data: Any, shape: Sequence[int], dims=None, *, metadata=None, specs=None
    ) -> COOAdapter:
        """One block covering the whole array."""
        coords, data = numpy.asarray(coords), numpy.asarray(data)
        shape = tuple(int(s) for s in shape)
        structure = _structure(shape, tuple((s,) for s in shape), coords, data, dims)
        blocks = {(0,) * len(shape): (coords, data)}
        return cls(blocks, structure, metadata=metadata, specs=specs)

    @classmethod
    def from_global_ref(
        cls,
        blocks: Mapping[tuple[int, ...], Block],
        shape: Sequence[int],
        chunks: Any,
        *,
        dims=None,
        metadata=None,
        specs=None,
    ) -> COOAdapter:
        """Blocks whose coordinates are global; they are shifted to block-local ones."""
        from dask.array.core import normalize_chunks

        shape = tuple(int(s) for s in shape)
        chunks = normalize_chunks(chunks, shape=shape)
        starts = _starts(chunks)
        local = {}
        for key, block in blocks.items():
            coords, data = _as_block(block)
            origin = numpy.asarray([starts[d][i] for d, i in enumerate(key)], dtype=coords.dtype)
            local[tuple(key)] = (coords - origin[:, None], data)
            _check_inside(key, coords, origin, chunks)
        first = next(iter(local.values()), (None, None))
        structure = _structure(shape, chunks, first[0], first[1], dims)
        return cls(local, structure, metadata=metadata, specs=specs)

    def read(self, slice: NDSlice = NDSlice()) -> sparse.COO:
        structure = self.structure()
        selection = _selection(slice, structure.shape)
        starts = _starts(structure.chunks)
        pieces = []
        for key, block in self._intersecting_blocks(selection):
            coords, data = _as_block(block)
            origin = numpy.asarray([starts[d][i] for d, i in enumerate(key)], dtype=numpy.int64)
            pieces.append(_select(coords.astype(numpy.int64) + origin[:, None], data, selection))
        return self._assemble(pieces, selection)

    def read_block(self, block: Sequence[int], slice: NDSlice = NDSlice()) -> sparse.COO:
        key = tuple(int(i) for i in block)
        region = NDBlock(*key).slices(self.structure().chunks)  # raises InvalidSlice
        selection = _selection(slice, tuple(r.stop - r.start for r in region))
        block = self._blocks.get(key)  # one lookup: a lazy mapping may load on access
        pieces = [] if block is None else [_select(*_as_block(block), selection)]
        return self._assemble(pieces, selection)

    def _intersecting_blocks(self, selection: tuple[Selection, ...]) -> list[tuple[tuple, Block]]:
        """Stored blocks overlapping the selection's bounding box; no other block is fetched."""
        structure = self.structure()
        hits = []
        for sel, dim_chunks, dim_starts in zip(
            selection, structure.chunks, _starts(structure.chunks), strict=True
        ):
            lo, hi = _bounds(sel)
            ends = dim_starts + numpy.asarray(dim_chunks, dtype=int)
            hits.append(numpy.flatnonzero((dim_starts < hi) & (ends > lo)).tolist())
        # Walk whichever is smaller: the candidate grid cells or the stored keys.
        if math.prod(len(h) for h in hits) <= len(self._blocks):
            found = ((k, self._blocks.get(k)) for k in itertools.product(*hits))
            return [(k, block) for k, block in found if block is not None]
        wanted = [set(h) for h in hits]
        keys = self._blocks.keys()
        hit_keys = [k for k in keys if all(i in w for i, w in zip(k, wanted, strict=True))]
        return [(k, self._blocks[k]) for k in hit_keys]

    def _assemble(self, pieces: list, selection: tuple[Selection, ...]) -> sparse.COO:
        import sparse

        shape = tuple(len(s) for s in selection if not isinstance(s, int))
        if not pieces:
            pieces = [(numpy.empty((len(shape), 0), dtype=numpy.int64), self._empty_data())]
        coords = numpy.concatenate([c for c, _ in pieces], axis=1)
        data = numpy.concatenate([d for _, d in pieces])
        return sparse.COO(coords, data, shape=shape)

    def _empty_data(self) -> numpy.ndarray:
        return numpy.empty(0, dtype=self.zarr_dtype())

    def __repr__(self) -> str:
        s = self.structure()
        return f"<COOAdapter shape={list(s.shape)} blocks={len(self._blocks)}>"


def _check_inside(key: Any, coords: numpy.ndarray, origin: numpy.ndarray, chunks: Any) -> None:
    # An entry outside its block would be silently misplaced (or lost) by every later read.
    sizes = numpy.asarray([chunks[d][i] for d, i in enumerate(key)])
    inside = (coords >= origin[:, None]) & (coords < (origin + sizes)[:, None])
    if not inside.all():
        raise InvalidStructure(f"Block {list(key)} has entries outside its region")


def _structure(
    shape: tuple[int, ...],
    chunks: Any,
    coords: numpy.ndarray | None,
    data: numpy.ndarray | None,
    dims: Any,
) -> COOStructure:
    data_type = data_type_from_numpy(data.dtype) if data is not None else None
    coord_type = (
        BuiltinDtype.from_numpy_dtype(coords.dtype)
        if coords is not None
        else DEFAULT_COORD_DATA_TYPE
    )
    return COOStructure(
        chunks=chunks,
        shape=shape,
        data_type=data_type,
        coord_data_type=coord_type,
        dims=tuple(dims) if dims is not None else None,
    )


SparseAdapter = COOAdapter

__all__ = ["COOAdapter", "SparseAdapter"]
