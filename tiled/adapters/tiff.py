"""TIFF files, and sequences of TIFF files stacked as one node, as array nodes.

A TIFF stores each page's pixels in *segments*: tiles (stored full size, edge tiles padded)
or strips of rows (the last one may be shorter). When the first image series of a file is a
plain stack of pages whose segments form a regular grid, this adapter reads only the segments
a request overlaps, and:

- **passes segments through** to zarr clients when they are uncompressed or compressed with
  deflate or zstd, without a predictor, with whole-byte samples: the zarr metadata declares
  one chunk per tile (or per strip; uncompressed strips are cut further to the chunk budget,
  since any run of their rows is one byte range) with the numcodecs ``Zlib`` or ``Zstd``
  codec, and each chunk is the file's byte range, read with one pread, never decoded. The
  one exception is a short last strip, which is padded to a full chunk (compressed ones are
  decoded, padded and compressed again with the same codec);
- **falls back** otherwise (LZW, JPEG, predictors, packed bits, irregular series): segments
  are decoded by tifffile and the zarr chunks are re-encoded with the server's codec. The
  node's metadata says which, under ``zarr_view``.

Segments that pass through are decoded here with numcodecs for ``/api/v1`` reads too, so
deflate and zstd files read the same whether or not tifffile's optional codecs are installed.
"""

from __future__ import annotations

import enum
import itertools
import math
from dataclasses import dataclass
from typing import Any

import numcodecs
import numpy
import tifffile

from ..zarr_format.codecs import same_codecs
from ..zarr_format.model import ZarrArrayMeta, split_dimension
from .sequence import (
    FileSequenceAdapter,
    FileUnreadable,
    FrameLayout,
    FrameReader,
    OpenedFile,
    SingleFileAdapter,
    StoredChunks,
    box_shape,
    decoded_array,
    whole_chunks,
)

# TIFF compressions whose segments are exactly what a zarr codec writes, with that codec.
# Deflate segments are zlib streams (RFC 1950), which is numcodecs' Zlib; zstd ones are
# plain zstd frames.
_CODECS: dict[int, tuple[str, Any]] = {
    1: ("none", None),
    8: ("zlib", numcodecs.Zlib),  # ADOBE_DEFLATE
    32946: ("zlib", numcodecs.Zlib),  # DEFLATE, the older code
    50000: ("zstd", numcodecs.Zstd),
}
_YCBCR = 6
_JPEG = 7

# Tags that locate the data rather than describe it (and can be very long); not metadata.
_LAYOUT_TAGS = frozenset(
    {"StripOffsets", "StripByteCounts", "TileOffsets", "TileByteCounts", "JPEGTables"}
)
_LONGEST_TAG = 1024
_SKIP = object()


def _json_tag(value: Any) -> Any:
    """A tag value as JSON (enums as their numbers, tuples as lists), or ``_SKIP``."""
    if isinstance(value, enum.Enum):
        return _json_tag(value.value)
    if isinstance(value, numpy.generic):
        return value.item()
    if isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, tuple | list) and len(value) <= _LONGEST_TAG:
        items = [_json_tag(v) for v in value]
        return _SKIP if any(i is _SKIP for i in items) else items
    return _SKIP  # bytes, arrays, structures: not representable simply


def _tags(page: Any) -> dict[str, Any]:
    tags = {}
    for tag in page.tags.values():
        if tag.name in _LAYOUT_TAGS:
            continue
        value = _json_tag(tag.value)
        if value is not _SKIP:
            tags[tag.name] = value
    return tags


def _enum_name(kind: type[enum.IntEnum], value: int) -> str:
    try:
        return kind(value).name
    except ValueError:
        return str(value)


@dataclass(frozen=True, eq=False)  # holds arrays: compared by identity
class _Segments:
    """The regular segment grid of a stack of identically laid out pages."""

    lead: tuple[int, ...]  # the series' dimensions before each page's own
    height: int
    width: int
    samples: int  # samples per pixel
    separate: bool  # planar configuration 2: one plane of segments per sample
    rows: int  # segment height: tile length, or rows per strip
    cols: int  # segment width: tile width, or the image width for strips
    strips: bool
    offsets: numpy.ndarray  # (pages, segments)
    counts: numpy.ndarray  # (pages, segments)
    file_dtype: numpy.dtype  # one sample as stored, in the file's byte order
    codec: Any  # numcodecs codec class, or None when uncompressed
    codec_name: str
    own_decode: bool  # decoded here with numcodecs (the segments pass through)
    keyframe: Any  # the tifffile page that decodes every page's segments otherwise
    decode_error: str | None  # why tifffile cannot decode them here, if it cannot

    @property
    def down(self) -> int:
        return math.ceil(self.height / self.rows)

    @property
    def across(self) -> int:
        return math.ceil(self.width / self.cols)

    @property
    def in_segment(self) -> int:
        """Samples per pixel inside one segment."""
        return 1 if self.separate else self.samples

    @property
    def row_bytes(self) -> int:
        return self.cols * self.in_segment * self.file_dtype.itemsize

    def index(self, plane: int, y: int, x: int) -> int:
        # TIFF orders segments by plane, then row, then column.
        return (plane * self.down + y) * self.across + x

    def core_chunk(self, rows: int) -> tuple[int, ...]:
        if self.separate:
            return (1, rows, self.cols)
        if self.samples > 1:
            return (rows, self.cols, self.samples)
        return (rows, self.cols)

    def chunks(self) -> tuple[tuple[int, ...], ...]:
        lead = tuple((1,) * n for n in self.lead)
        ys = split_dimension(self.height, self.rows)
        xs = split_dimension(self.width, self.cols)
        if self.separate:
            return (*lead, (1,) * self.samples, ys, xs)
        if self.samples > 1:
            return (*lead, ys, xs, (self.samples,))
        return (*lead, ys, xs)

    def compressors(self) -> tuple[Any, ...]:
        return () if self.codec is None else (self.codec(),)

    def page_of(self, cell: tuple[int, ...]) -> int:
        return int(numpy.ravel_multi_index(cell, self.lead)) if self.lead else 0


@dataclass(frozen=True, eq=False)
class _TiffLayout(FrameLayout):
    segments: _Segments | None = None

    def stored(self, budget_bytes: int) -> StoredChunks | None:
        seg = self.segments
        if seg is None or self.reason is not None:
            return None
        rows = seg.rows
        if seg.strips and seg.codec is None:
            # Rows of an uncompressed strip are in order, so any run of them is one byte
            # range: cut strips into chunks within the budget (a divisor of the strip height,
            # so that no chunk straddles two strips).
            rows = _largest_divisor(seg.rows, max(1, budget_bytes // seg.row_bytes))
        chunk_shape = (1,) * len(seg.lead) + seg.core_chunk(rows)
        dtype = seg.file_dtype
        # Segments never written (byte count 0) read as zeros, as tifffile reads them.
        return StoredChunks(chunk_shape, dtype, seg.compressors(), dtype.type(0), seg.codec_name)


def _largest_divisor(n: int, limit: int) -> int:
    if limit >= n:
        return n
    best = 1
    for d in range(1, math.isqrt(n) + 1):
        if n % d == 0:
            for candidate in (d, n // d):
                if candidate <= limit:
                    best = max(best, candidate)
    return best


def _segments(tif: Any, series: Any, shape: tuple[int, ...]) -> tuple[_Segments | None, str]:
    """The segment grid of ``series``, or None and why it has none."""
    page = series.keyframe
    if page.imagedepth > 1 or page.tiledepth > 1:
        return None, "volumetric (SGI) tiles are decoded whole"
    if page.photometric == _YCBCR and page.compression != _JPEG:
        return None, "subsampled YCbCr pixels are decoded whole"
    pages = list(series.pages)
    height, width, samples = page.imagelength, page.imagewidth, page.samplesperpixel
    separate = page.planarconfig == 2 and samples > 1
    if separate:
        core: tuple[int, ...] = (samples, height, width)
    elif samples > 1:
        core = (height, width, samples)
    else:
        core = (height, width)
    lead = shape[: len(shape) - len(core)]
    if (
        any(p is None for p in pages)
        or tuple(shape[len(lead) :]) != core
        or math.prod(lead) != len(pages)
    ):
        return None, "the image series is not a plain stack of pages, so it is decoded whole"
    if page.is_tiled:
        rows, cols, strips = page.tilelength, page.tilewidth, False
    else:
        rows, cols, strips = min(page.rowsperstrip or height, height), width, True
    planes = samples if separate else 1
    expected = planes * math.ceil(height / rows) * math.ceil(width / cols)
    offsets = numpy.array([p.dataoffsets for p in pages], dtype=numpy.int64)
    counts = numpy.array([p.databytecounts for p in pages], dtype=numpy.int64)
    if offsets.shape != (len(pages), expected) or counts.shape != offsets.shape:
        return None, "the pages' segments do not form a regular grid, so they are decoded whole"
    dtype = numpy.dtype(series.dtype)
    codec_name, codec = _CODECS.get(page.compression, (None, None))
    if codec_name is None:
        reason = f"TIFF compression {_enum_name(tifffile.COMPRESSION, page.compression)} has no zarr codec"
    elif page.predictor != 1:
        reason = (
            f"the TIFF predictor {_enum_name(tifffile.PREDICTOR, page.predictor)} has no zarr codec"
        )
    elif page.bitspersample != dtype.itemsize * 8:
        reason = f"samples of {page.bitspersample} bits are not whole bytes"
    elif page.fillorder != 1:
        reason = "the bits of each byte are stored in reverse order (FillOrder 2)"
    elif dtype.kind not in "biufc":
        reason = f"samples of type {dtype} have no zarr codec chain"
    else:
        reason = ""
    decode_error = None
    if reason:
        try:
            tifffile.TIFF.DECOMPRESSORS[page.compression]
        except KeyError as err:
            decode_error = str(err.args[0] if err.args else err)
    segments = _Segments(
        lead=tuple(lead),
        height=height,
        width=width,
        samples=samples,
        separate=separate,
        rows=rows,
        cols=cols,
        strips=strips,
        offsets=offsets,
        counts=counts,
        file_dtype=dtype.newbyteorder(tif.byteorder) if dtype.itemsize > 1 else dtype,
        codec=codec,
        codec_name=codec_name or "",
        own_decode=not reason,
        keyframe=page,
        decode_error=decode_error,
    )
    return segments, reason


class _TiffReader(FrameReader):
    def parse(self, file: OpenedFile) -> _TiffLayout:
        with tifffile.TiffFile(file.file) as tif:  # closing it leaves our file open
            if not tif.series:
                raise FileUnreadable(f"{file.name} holds no image")
            series = tif.series[0]
            shape = tuple(int(n) for n in series.shape)
            tags = _tags(tif.pages.first)
            segments, reason = _segments(tif, series, shape)
            dtype = numpy.dtype(series.dtype)
        chunks = segments.chunks() if segments is not None else whole_chunks(shape)
        return _TiffLayout(shape, dtype, chunks, reason or None, tags, segments=segments)

    def read_region(
        self, file: OpenedFile, layout: FrameLayout, region: tuple[slice, ...]
    ) -> numpy.ndarray:
        assert isinstance(layout, _TiffLayout)
        seg = layout.segments
        if seg is None:
            return decoded_array(file, lambda: _decode_whole(file))[region]
        out = numpy.empty(box_shape(region), dtype=layout.dtype)
        if out.size == 0:
            return out
        n = len(seg.lead)
        lead_box, core = region[:n], region[n:]
        # The page part of the box as (planes, rows, columns, samples within a segment).
        if seg.separate:
            planes, ys, xs, ss = core[0], core[1], core[2], slice(0, 1)
        elif seg.samples > 1:
            planes, ys, xs, ss = slice(0, 1), core[0], core[1], core[2]
        else:
            planes, ys, xs, ss = slice(0, 1), core[0], core[1], slice(0, 1)
        box4 = box_shape((planes, ys, xs, ss))
        view = out.reshape(box_shape(lead_box) + box4)  # only inserts length-1 axes: a view
        for cell in itertools.product(*(range(s.start, s.stop) for s in lead_box)):
            page = seg.page_of(cell)
            target = view[tuple(i - s.start for i, s in zip(cell, lead_box, strict=True))]
            for plane in range(planes.start, planes.stop):
                for ty in range(ys.start // seg.rows, (ys.stop - 1) // seg.rows + 1):
                    for tx in range(xs.start // seg.cols, (xs.stop - 1) // seg.cols + 1):
                        values = _segment(file, seg, page, seg.index(plane, ty, tx))
                        y0, x0 = ty * seg.rows, tx * seg.cols
                        ya, yb = max(ys.start, y0), min(ys.stop, y0 + values.shape[0])
                        xa, xb = max(xs.start, x0), min(xs.stop, x0 + seg.cols)
                        target[
                            plane - planes.start,
                            ya - ys.start : yb - ys.start,
                            xa - xs.start : xb - xs.start,
                        ] = values[ya - y0 : yb - y0, xa - x0 : xb - x0, ss]
        return out

    def stored_chunk(
        self, file: OpenedFile, layout: FrameLayout, coords: tuple[int, ...], meta: ZarrArrayMeta
    ) -> bytes | None:
        assert isinstance(layout, _TiffLayout)
        seg = layout.segments
        if seg is None or not seg.own_decode:
            return None
        n = len(seg.lead)
        if meta.dtype != seg.file_dtype or not same_codecs(meta.compressors, seg.compressors()):
            return None
        if any(size != 1 for size in meta.chunk_shape[:n]):
            return None
        rows = meta.chunk_shape[n + 1] if seg.separate else meta.chunk_shape[n]
        if meta.chunk_shape[n:] != seg.core_chunk(rows):
            return None
        if rows != seg.rows and not (seg.strips and seg.codec is None and seg.rows % rows == 0):
            return None
        core = coords[n:]
        plane, cy, cx = (core[0], core[1], core[2]) if seg.separate else (0, core[0], core[1])
        first_row = cy * rows
        ty = first_row // seg.rows
        index = seg.index(plane, ty, cx)
        page = seg.page_of(coords[:n])
        offset, count = int(seg.offsets[page, index]), int(seg.counts[page, index])
        if count == 0:
            return None  # never written: the caller encodes the zeros it reads as
        chunk_bytes = rows * seg.row_bytes
        rows_here = min(rows, seg.height - first_row)  # fewer only in a short last strip
        if seg.codec is None:
            skip = (first_row - ty * seg.rows) * seg.row_bytes
            need = chunk_bytes if not seg.strips else rows_here * seg.row_bytes
            if skip + need > count:
                raise FileUnreadable(f"{file.name}: a segment holds fewer bytes than its pixels")
            payload = file.pread(offset + skip, need)
            if need < chunk_bytes:
                payload += bytes(chunk_bytes - need)  # pad the short strip to a whole chunk
            return file.tagged(payload, offset + skip, need)
        raw = file.pread(offset, count)
        if seg.strips and rows_here < rows:
            # A short last strip: decode, pad with zeros, compress again with the same codec.
            codec = seg.codec()
            data = numpy.frombuffer(codec.decode(raw), dtype=numpy.uint8)
            need = rows_here * seg.row_bytes
            if data.size < need:
                raise FileUnreadable(f"{file.name}: a strip holds fewer bytes than its pixels")
            padded = numpy.zeros(chunk_bytes, dtype=numpy.uint8)
            padded[:need] = data[:need]
            return file.tagged(bytes(codec.encode(padded)), offset, count)
        return file.tagged(raw, offset, count)


def _segment(file: OpenedFile, seg: _Segments, page: int, index: int) -> numpy.ndarray:
    """One segment's samples as (rows, columns, samples within the segment)."""
    y = index % (seg.down * seg.across) // seg.across
    rows = seg.rows if not seg.strips else min(seg.rows, seg.height - y * seg.rows)
    shape = (rows, seg.cols, seg.in_segment)
    offset, count = int(seg.offsets[page, index]), int(seg.counts[page, index])
    if count == 0:
        return numpy.zeros(shape, dtype=seg.file_dtype)  # never written: zeros, as tifffile
    raw = file.pread(offset, count)
    if seg.own_decode:
        data = raw if seg.codec is None else seg.codec().decode(raw)
        need = math.prod(shape)
        if len(data) < need * seg.file_dtype.itemsize:
            raise FileUnreadable(f"{file.name}: a segment holds fewer bytes than its pixels")
        return numpy.frombuffer(data, dtype=seg.file_dtype, count=need).reshape(shape)
    if seg.decode_error is not None:
        raise FileUnreadable(f"{file.name} cannot be decoded by this server: {seg.decode_error}")
    keyframe = seg.keyframe
    decoded, _, _ = keyframe.decode(raw, index, jpegtables=keyframe.jpegtables)
    if decoded is None:
        return numpy.zeros(shape, dtype=seg.file_dtype)
    return decoded.reshape(decoded.shape[-3:])[:rows]


def _decode_whole(file: OpenedFile) -> numpy.ndarray:
    with tifffile.TiffFile(file.file) as tif:
        return tif.series[0].asarray()


class TiffAdapter(SingleFileAdapter):
    """Read a TIFF file (its first image series): ``TiffAdapter("file://localhost/a.tif")``.

    Its metadata holds the first page's tags, then the node's own metadata.
    """

    reader_type = _TiffReader


class TiffSequenceAdapter(FileSequenceAdapter):
    """Read a sequence of TIFF files of one shape, stacked along a new first dimension."""

    reader_type = _TiffReader


__all__ = ["TiffAdapter", "TiffSequenceAdapter"]
