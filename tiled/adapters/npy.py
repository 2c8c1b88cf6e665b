"""NPY files (numpy's own format), and sequences of them stacked as one node, as array nodes.

An NPY file is a short header and then the array's raw bytes. In C order any run of whole
rows (along the first dimension) is one byte range, so the zarr view **passes the stored
bytes through**: chunks of whole rows, as many as the chunk budget allows, no codec, each
chunk one pread of the file (the short last chunk padded). Fortran-ordered files, empty
arrays and types other than numbers, booleans and dates fall back to decode and re-encode.

Reads take only the rows a request overlaps, in bounded batches, with ``os.pread`` rather
than a memory map (see :mod:`tiled.adapters.sequence` for why).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy
import numpy.lib.format

from ..zarr_format.model import ZarrArrayMeta
from .sequence import (
    FileSequenceAdapter,
    FileUnreadable,
    FrameLayout,
    FrameReader,
    OpenedFile,
    SingleFileAdapter,
    StoredChunks,
    box_shape,
    whole_chunks,
)

# Bytes read by one pread when a request spans many rows: bounds the memory of a read that
# keeps only a few values of each row.
_BATCH_BYTES = 64 * 1024 * 1024
_PASSABLE_KINDS = "biufcmM"


@dataclass(frozen=True)
class _NPYLayout(FrameLayout):
    offset: int = 0  # where the data start
    fortran: bool = False
    file_dtype: Any = None  # as stored, byte order included (the values' dtype too)

    @property
    def row_bytes(self) -> int:
        return math.prod(self.shape[1:]) * self.file_dtype.itemsize

    def stored(self, budget_bytes: int) -> StoredChunks | None:
        if self.reason is not None:
            return None
        if not self.shape:
            chunk_shape: tuple[int, ...] = ()
        else:
            rows = min(max(1, budget_bytes // self.row_bytes), self.shape[0])
            chunk_shape = (rows, *self.shape[1:])
        fill = numpy.zeros((), dtype=self.file_dtype)[()]
        return StoredChunks(chunk_shape, self.file_dtype, (), fill, "none")


def _read_header(file: Any) -> tuple[tuple[int, ...], bool, numpy.dtype]:
    version = numpy.lib.format.read_magic(file)
    if version == (1, 0):
        return numpy.lib.format.read_array_header_1_0(file)
    if version == (2, 0):
        return numpy.lib.format.read_array_header_2_0(file)
    # Version 3 (UTF-8 field names) has no public reader; its header reads as version 2's.
    return numpy.lib.format._read_array_header(file, version)


class _NPYReader(FrameReader):
    def parse(self, file: OpenedFile) -> _NPYLayout:
        shape, fortran, dtype = _read_header(file.file)
        offset = file.file.tell()
        shape = tuple(int(n) for n in shape)
        if dtype.hasobject:
            raise FileUnreadable(
                f"{file.name} holds Python objects, which this server does not load"
            )
        nbytes = math.prod(shape) * dtype.itemsize
        if offset + nbytes > file.size:
            raise FileUnreadable(
                f"{file.name} is truncated: its header promises {nbytes} bytes of data, "
                f"it holds {file.size - offset}"
            )
        if fortran and len(shape) > 1:
            reason = "the array is stored in Fortran order, whose rows are not byte ranges"
        elif math.prod(shape) == 0:
            reason = "the array is empty"
        elif dtype.kind not in _PASSABLE_KINDS or dtype.fields is not None:
            reason = f"values of type {dtype} are re-encoded"
        else:
            reason = None
        return _NPYLayout(
            shape,
            dtype,
            whole_chunks(shape),
            reason,
            offset=offset,
            fortran=fortran and len(shape) > 1,
            file_dtype=dtype,
        )

    def read_region(
        self, file: OpenedFile, layout: FrameLayout, region: tuple[slice, ...]
    ) -> numpy.ndarray:
        assert isinstance(layout, _NPYLayout)
        dtype = layout.file_dtype
        if not layout.shape:
            raw = file.pread(layout.offset, dtype.itemsize)
            return numpy.frombuffer(raw, dtype=dtype).reshape(()).copy()
        # Fortran order is C order of the reversed shape: read that, then transpose.
        shape = layout.shape[::-1] if layout.fortran else layout.shape
        box = region[::-1] if layout.fortran else region
        out = numpy.empty(box_shape(box), dtype=dtype)
        if out.size:
            row_bytes = math.prod(shape[1:]) * dtype.itemsize
            batch = max(1, _BATCH_BYTES // max(row_bytes, 1))
            first, last = box[0].start, box[0].stop
            for start in range(first, last, batch):
                stop = min(last, start + batch)
                raw = file.pread(layout.offset + start * row_bytes, (stop - start) * row_bytes)
                rows = numpy.frombuffer(raw, dtype=dtype).reshape((stop - start, *shape[1:]))
                out[start - first : stop - first] = rows[(slice(None), *box[1:])]
        return out.transpose() if layout.fortran else out

    def stored_chunk(
        self, file: OpenedFile, layout: FrameLayout, coords: tuple[int, ...], meta: ZarrArrayMeta
    ) -> bytes | None:
        assert isinstance(layout, _NPYLayout)
        if meta.compressors or meta.dtype != layout.file_dtype:
            return None
        if not layout.shape:
            return file.tagged(file.pread(layout.offset, layout.file_dtype.itemsize), 0)
        if tuple(meta.chunk_shape[1:]) != tuple(layout.shape[1:]):
            return None  # chunks of whole rows only: nothing else is a byte range
        rows = meta.chunk_shape[0]
        first = coords[0] * rows
        here = min(rows, layout.shape[0] - first)
        payload = file.pread(layout.offset + first * layout.row_bytes, here * layout.row_bytes)
        if here < rows:
            payload += bytes((rows - here) * layout.row_bytes)  # pad the last chunk
        return file.tagged(payload, first, rows)


class NPYAdapter(SingleFileAdapter):
    """Read an NPY file: ``NPYAdapter("file://localhost/a.npy")``."""

    reader_type = _NPYReader


class NPYSequenceAdapter(FileSequenceAdapter):
    """Read a sequence of NPY files of one shape, stacked along a new first dimension."""

    reader_type = _NPYReader


__all__ = ["NPYAdapter", "NPYSequenceAdapter"]
