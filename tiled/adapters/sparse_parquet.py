"""Sparse (COO) arrays stored as Parquet: one file per block, columns ``dim0..dimN-1, data``.

Coordinates in a block file are local to the block, as in the block payloads of the HTTP API.
Blocks are read only when a request overlaps them; a block without a file holds no entries.
"""

from __future__ import annotations

import io
import re
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy
import pyarrow
import pyarrow.parquet

from ..errors import BadRequest, InvalidSlice
from ..ndslice import NDBlock
from ..structures.sparse import COOStructure
from .files import locked, path_from_uri, staged
from .sparse import COOAdapter

SPARSE_PARQUET_MIMETYPE = "application/x-parquet;structure=sparse"
# Upstream's names: block (1, 2) of an array is ``block-1.2.parquet``.
_BLOCK_NAME = re.compile(r"^block-((?:\d+(?:\.\d+)*)?)\.parquet$")


def block_path(directory: Path, block: Sequence[int]) -> Path:
    return directory / ("block-" + ".".join(str(int(i)) for i in block) + ".parquet")


def blocks_directory(data_uri: str, is_directory: bool) -> Path:
    """The directory of an array's block files, from its directory's asset or a block's."""
    path = path_from_uri(data_uri)
    return path if is_directory else path.parent


class ParquetBlocks(Mapping):
    """The stored blocks of one array, read from their files when looked up."""

    def __init__(self, directory: Path, ndim: int):
        self.directory = Path(directory)
        self.ndim = ndim

    def __getitem__(self, key: tuple[int, ...]) -> tuple[numpy.ndarray, numpy.ndarray]:
        path = block_path(self.directory, key)
        if len(key) != self.ndim or not path.exists():
            raise KeyError(key)
        table = pyarrow.parquet.read_table(path)
        columns = [table[f"dim{i}"].to_numpy() for i in range(self.ndim)]
        coords = numpy.stack(columns) if columns else numpy.empty((0, table.num_rows), "u8")
        return coords, table["data"].to_numpy()

    def _keys(self) -> list[tuple[int, ...]]:
        if not self.directory.is_dir():
            return []
        found = (_BLOCK_NAME.match(p.name) for p in self.directory.iterdir())
        keys = [tuple(int(i) for i in m.group(1).split(".") if i) for m in found if m]
        return [k for k in keys if len(k) == self.ndim]

    def __iter__(self) -> Iterator[tuple[int, ...]]:
        return iter(self._keys())

    def __len__(self) -> int:
        return len(self._keys())


class ParquetSparseAdapter(COOAdapter):
    """A COO array whose blocks are Parquet files in one directory (``data_uri``)."""

    def __init__(self, data_uri: str, structure: COOStructure, *, metadata=None, specs=None):
        self.directory = path_from_uri(data_uri)
        blocks = ParquetBlocks(self.directory, len(structure.shape))
        super().__init__(blocks, structure, metadata=metadata, specs=specs)

    # --- writing (blocking: callers run these on a worker thread) ---

    def write_block_entries(self, coords: Any, data: Any, block: Sequence[int]) -> None:
        """Replace one block with entries in block-local coordinates."""
        key = tuple(int(i) for i in block)
        region = NDBlock(*key).slices(self.structure().chunks)  # raises InvalidSlice
        shape = tuple(r.stop - r.start for r in region)
        payload = _block_bytes(*self._checked(coords, data, shape))
        with locked(self.directory), staged(self.directory) as transaction:
            transaction.write(block_path(self.directory, key), payload)

    def write_entries(self, coords: Any, data: Any) -> None:
        """Replace the whole array with entries in global coordinates."""
        structure = self.structure()
        coords, data = self._checked(coords, data, structure.shape)
        payloads = {
            key: _block_bytes(local, values)
            for key, (local, values) in _split_into_blocks(coords, data, structure.chunks).items()
        }
        with locked(self.directory), staged(self.directory) as transaction:
            for key in self._blocks:
                if key not in payloads:
                    transaction.remove(block_path(self.directory, key))
            for key, payload in payloads.items():
                transaction.write(block_path(self.directory, key), payload)

    def _checked(
        self, coords: Any, data: Any, shape: tuple[int, ...]
    ) -> tuple[numpy.ndarray, numpy.ndarray]:
        coords = numpy.asarray(coords)
        data = numpy.asarray(data)
        if coords.ndim != 2 or coords.shape[0] != len(shape) or data.shape != (coords.shape[1],):
            raise BadRequest(
                f"Expected coordinates of shape ({len(shape)}, n) and n values, "
                f"got {list(coords.shape)} and {list(data.shape)}"
            )
        if coords.size and coords.dtype.kind not in "iu":
            raise BadRequest(f"Coordinates must be integers, not {coords.dtype}")
        limits = numpy.asarray(shape, dtype=numpy.int64)[:, None]
        if coords.size and ((coords < 0).any() or (coords.astype(numpy.int64) >= limits).any()):
            raise InvalidSlice(f"Coordinates outside the region of shape {list(shape)}")
        if coords.size and numpy.unique(coords, axis=1).shape[1] != coords.shape[1]:
            # Readers would sum the values of a repeated entry: it would not read back.
            raise BadRequest("Coordinates repeat: an entry of a sparse array is given once")
        target = self.zarr_dtype()
        if data.dtype != target and not numpy.can_cast(data.dtype, target, "safe"):
            raise BadRequest(f"Cannot safely cast values of {data.dtype} to {target}")
        coord_dtype = self.structure().coord_data_type.to_numpy_dtype()
        return coords.astype(coord_dtype), data.astype(target, copy=False)


def _split_into_blocks(
    coords: numpy.ndarray, data: numpy.ndarray, chunks: tuple[tuple[int, ...], ...]
) -> dict[tuple[int, ...], tuple[numpy.ndarray, numpy.ndarray]]:
    """Entries grouped by the block holding them, with block-local coordinates."""
    starts = [numpy.cumsum((0, *dim[:-1])) for dim in chunks]
    signed = coords.astype(numpy.int64)
    index = [
        numpy.searchsorted(s, row, side="right") - 1 for s, row in zip(starts, signed, strict=True)
    ]
    grid = numpy.stack(index) if index else numpy.zeros((0, coords.shape[1]), int)
    blocks = {}
    for key in {tuple(int(i) for i in column) for column in grid.T}:
        mask = numpy.all(grid == numpy.asarray(key, dtype=int)[:, None], axis=0)
        origin = numpy.asarray([starts[d][i] for d, i in enumerate(key)], dtype=numpy.int64)
        local = (signed[:, mask] - origin[:, None]).astype(coords.dtype)
        blocks[key] = (local, data[mask])
    return blocks


def _block_bytes(coords: numpy.ndarray, data: numpy.ndarray) -> memoryview:
    # Coordinates are stored as int64 whatever their declared type, as upstream stores them
    # (its reader, numpy.ravel_multi_index, refuses unsigned 64-bit indices).
    columns = {f"dim{i}": row.astype(numpy.int64) for i, row in enumerate(coords)}
    columns["data"] = data
    sink = io.BytesIO()
    pyarrow.parquet.write_table(pyarrow.table(columns), sink)
    return sink.getbuffer()


__all__ = ["SPARSE_PARQUET_MIMETYPE", "ParquetBlocks", "ParquetSparseAdapter"]
