"""HDF5 files as Tiled nodes: files and groups are containers, datasets are arrays, attributes
are metadata.

Opening and caching
-------------------
Each file is opened once per process, read-only and SWMR-safe by default, and shared by every
node in it. Every use first compares the file's identity (device, inode, size, modification
time) with the one it was opened at; a changed file is closed and opened again, and all that was
learnt from it (group listings, attributes, dataset descriptions, chunk indexes) is learnt again.
Nothing is read when an adapter is made: a missing, truncated, corrupt or unreadable file
answers a :class:`~tiled.errors.DataUnavailable` (415) on its own nodes, and the tree around it
keeps serving.

The zarr view
-------------
:func:`zarr_storage` is the one place that decides whether a dataset's stored bytes already are
zarr chunks: chunked datasets whose filter pipeline maps onto numcodecs codecs (deflate, shuffle,
blosc, zstd, or none) and uncompressed contiguous datasets. Their chunks are served as byte
ranges of the file, read with one ``pread`` and never decoded; a chunk the file never wrote is
an absent zarr key, which zarr reads as the fill value. Every other dataset is decoded by h5py
and re-encoded with the server's codec, and its metadata says why under ``zarr_view``. So is a
dataset of more than ``MAX_CHUNKS_PER_DIMENSION`` HDF5 chunks along a dimension: its structure
lists coarser chunks (whole multiples of HDF5's), and its zarr chunks are the structure's.

Elements that are fixed-size arrays (HDF5 array types) are served as h5py reads them: an array
of the base type with the block's dimensions appended, whose stored chunks still pass through.

As upstream serves them
-----------------------
Scalar and empty datasets have a leading axis of one (a scalar is ``(1,)``); broken soft and
external links are listed and answer :class:`~tiled.utils.BrokenLink` (404) when looked up;
variable-length strings are fixed-length bytes and other variable-length data an empty
placeholder, both with a ``UserWarning``; a catalog's structure of another shape reshapes the
data (re-encoded in the zarr view); a group's /metadata inlines its tree to ``INLINED_DEPTH``.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import functools
import logging
import math
import os
import threading
import warnings
import weakref
from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import h5py
import numcodecs
import numpy
from numpy.lib.recfunctions import repack_fields

from ..errors import (
    Conflict,
    DataUnavailable,
    InvalidStructure,
    NoSuchEntry,
    NotFound,
    TiledError,
    ZarrKeyNotFound,
)
from ..ndslice import NDSlice
from ..structures.array import ArrayStructure, data_type_from_numpy
from ..structures.core import StructureFamily
from ..utils import BrokenLink, run_sync
from ..zarr_format.codecs import same_codecs
from ..zarr_format.model import (
    MAX_CHUNKS_PER_DIMENSION,
    VARIABLE_LENGTH_STRING,
    ZARR_VIEW_KEY,
    EncodedChunk,
    ZarrArrayMeta,
    ZarrGroupMeta,
    ZarrOptions,
    bounded_chunk_shape,
    re_encoded_view,
    regular_chunks,
    stored_chunks_view,
    unavailable_view,
    with_zarr_view,
)
from .base import ArrayAdapterBase, zarr_attributes
from .files import asset_uris, file_identity, identity_etag, open_failure, path_from_uri
from .mapping import MapAdapter
from .utils import force_reshape

with contextlib.suppress(ImportError):
    import hdf5plugin  # noqa: F401  (registers blosc, zstd, bitshuffle, ... with HDF5 when present)

logger = logging.getLogger(__name__)

# Upstream's environment variable; this server reads SWMR-safely unless told otherwise.
SWMR_DEFAULT = bool(int(os.getenv("TILED_HDF5_SWMR_DEFAULT", "1")))
# Open files kept per process; the least recently used beyond this are closed.
MAX_OPEN_FILES = int(os.getenv("TILED_HDF5_MAX_OPEN_FILES", "128"))
# Upstream's name and environment variable: how deep a group's /metadata inlines its members
# (read when a request is answered, so it can be changed at run time).
INLINED_DEPTH = int(os.getenv("TILED_HDF5_INLINED_CONTENTS_MAX_DEPTH", "7"))

T = TypeVar("T")


# --- errors ------------------------------------------------------------------------------------


@contextlib.contextmanager
def _file_errors(path: str) -> Iterator[None]:
    """Turn what h5py and the OS raise about a file into Tiled's errors (4xx, never 500)."""
    name = Path(path).name
    try:
        yield
    except TiledError:
        raise
    except (FileNotFoundError, PermissionError, IsADirectoryError) as err:
        raise DataUnavailable(f"HDF5 file {name!r} {open_failure(err)}") from None
    except (OSError, RuntimeError, ValueError) as err:
        # h5py reports corrupt, truncated and unreadable files (and missing filter plugins)
        # as OSError, and a few lower-level failures as RuntimeError/ValueError. The client
        # gets a 415 with the message; the traceback, which tells a bad file from a fault here,
        # goes to the debug log (not higher: registration probes bad files as a matter of course).
        logger.debug("Cannot read HDF5 file %s", path, exc_info=True)
        raise DataUnavailable(f"Cannot read HDF5 file {name!r}: {err}") from None


class _FileChanged(Exception):
    """The file changed between opening it and reading from it: retry with a fresh handle."""


# --- one open handle per file -------------------------------------------------------------------


@dataclass(frozen=True)
class _Options:
    swmr: bool = SWMR_DEFAULT
    libver: str | tuple | None = "latest"
    locking: bool | str | None = None


_MISSING = object()


@dataclass(frozen=True)
class _Uncached:
    """A value learnt through an external link: true of another file, whose changes this
    file's identity does not show, so it is used once and not remembered."""

    value: Any


class _OpenFile:
    """An HDF5 file open at one identity, with what has been learnt from it.

    ``lock`` serializes every use of the h5py handle with closing it (h5py serializes its
    calls anyway). ``fd`` is a descriptor of our own for ``pread``: it needs no lock and stays
    open until the last reader lets go of this object, even after the h5py handle is closed.
    """

    def __init__(self, path: str, options: _Options):
        self.path = path
        self.lock = threading.RLock()
        self.closed = False
        self._memo: dict[Any, Any] = {}
        self.fd = os.open(path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
        weakref.finalize(self, os.close, self.fd)
        self.identity = file_identity(os.fstat(self.fd))
        kwargs: dict[str, Any] = {"swmr": options.swmr, "libver": options.libver}
        if options.locking is not None:
            kwargs["locking"] = options.locking
        try:
            self.h5 = h5py.File(path, "r", **kwargs)
        except OSError as err:
            # HDF5 shares one open file per process: if other code here holds it open without
            # SWMR, a SWMR open is refused; share theirs instead.
            if not options.swmr or "SWMR read access flag" not in str(err):
                raise
            self.h5 = h5py.File(path, "r", **{**kwargs, "swmr": False})

    def memo(self, key: Any, build: Callable[[], T]) -> T:
        """``build()``, computed once per open file (the file's identity fixes the answer)."""
        value = self._memo.get(key, _MISSING)
        if value is _MISSING:
            with self.lock:
                value = self._memo.get(key, _MISSING)
                if value is _MISSING:
                    value = build()
                    if isinstance(value, _Uncached):
                        return value.value
                    self._memo[key] = value
        return value

    def known(self, key: Any) -> Any:
        """What was learnt under ``key``, or ``_MISSING`` (no lock: a long read elsewhere on
        this file does not hold up what is already known)."""
        return self._memo.get(key, _MISSING)

    def retire(self) -> None:
        # Closed under the lock, so no reader is inside h5py with it; HDF5 shares one open file
        # between handles of the same inode, so the old one must be closed before reopening.
        with self.lock:
            if not self.closed:
                self.closed = True
                self._memo.clear()  # it may hold h5py objects of this file
                with contextlib.suppress(Exception):
                    self.h5.close()


class _Registry:
    """The open files of this process, by path, reopened when their identity changes.

    One handle per path: HDF5 itself shares one open file per inode within a process, so the
    first opener's options (SWMR, locking) are the ones in force.
    """

    def __init__(self, capacity: int):
        self.capacity = capacity
        self._handles: OrderedDict[str, _OpenFile] = OrderedDict()
        self._lock = threading.Lock()
        self._opening: dict[str, threading.Lock] = {}

    def peek(self, path: str) -> _OpenFile | None:
        """The open handle if it is still current (one ``stat``, no lock), else None."""
        handle = self._handles.get(path)
        if handle is None or handle.closed:
            return None
        try:
            current = file_identity(os.stat(path))
        except OSError:
            return None
        return handle if current == handle.identity else None

    def current(self, path: str, options: _Options) -> _OpenFile:
        """The handle of ``path`` as the file is now, opening or reopening it as needed."""
        with _file_errors(path):
            try:
                identity = file_identity(os.stat(path))
            except OSError:
                with self._lock:
                    gone = self._handles.pop(path, None)
                if gone is not None:
                    gone.retire()  # the file is gone (or hidden): let go of it
                raise
            handle = self._handles.get(path)
            if handle is not None and handle.identity == identity and not handle.closed:
                return handle
            with self._lock:
                opening = self._opening.setdefault(path, threading.Lock())
            with opening:
                handle = self._handles.get(path)
                if handle is not None:
                    if handle.identity == file_identity(os.stat(path)) and not handle.closed:
                        return handle
                    handle.retire()
                handle = _OpenFile(path, options)
                with self._lock:
                    self._handles[path] = handle
                    self._handles.move_to_end(path)
                    evicted = []
                    while len(self._handles) > self.capacity:
                        evicted.append(self._handles.popitem(last=False)[1])
        for old in evicted:
            old.retire()
        return handle

    def close_all(self) -> None:
        with self._lock:
            handles = list(self._handles.values())
            self._handles.clear()
        for handle in handles:
            handle.retire()


_registry = _Registry(MAX_OPEN_FILES)
# h5py objects left alive until the interpreter tears modules down are freed after the HDF5
# library has shut down, which crashes the process at exit: close everything first (atexit
# runs this before h5py's own handler, registered when h5py was imported, earlier).
atexit.register(_registry.close_all)


@dataclass(frozen=True)
class _Source:
    """An HDF5 file (as a path) and how to open it."""

    path: str
    options: _Options = _Options()

    def use(self, function: Callable[[_OpenFile], T]) -> T:
        """``function(handle)`` under the handle's lock, on the file as it is now."""
        for _ in range(3):
            handle = _registry.current(self.path, self.options)
            with handle.lock:
                if handle.closed:
                    continue  # closed by a reopen between lookup and lock: look again
                with _file_errors(self.path):
                    return function(handle)
        raise Conflict(f"HDF5 file {Path(self.path).name!r} keeps changing; try again")

    def learn(self, key: Any, build: Callable[[_OpenFile], T]) -> T:
        """``build(handle)`` for the file as it is now, computed once per open file."""
        value = _registry.current(self.path, self.options).known(key)
        if value is not _MISSING:
            return value
        return self.use(lambda h: h.memo(key, lambda: build(h)))

    def warm(self, *keys: Any) -> bool:
        """Whether everything under ``keys`` is known for the file as it is now (no I/O)."""
        handle = _registry.peek(self.path)
        return handle is not None and all(handle.known(k) is not _MISSING for k in keys)


def _node(handle: _OpenFile, name: str) -> Any:
    """The h5py object at ``name`` (cached per open file, unless it is in a linked file).

    A name that is not in the file is a :class:`~tiled.errors.NoSuchEntry`; a name that is,
    as a soft or external link whose target is missing, a :class:`~tiled.utils.BrokenLink`
    (both KeyErrors, both 404).
    """

    def lookup() -> Any:
        if name in ("", "/"):
            return handle.h5
        try:
            found = handle.h5[name]
        except KeyError:
            _raise_missing(handle, name)
        return _Uncached(found) if _elsewhere(handle, found) else found

    return handle.memo(("node", name), lookup)


def _raise_missing(handle: _OpenFile, name: str) -> None:
    """Why ``name`` cannot be opened: a link on the way to it is broken, or it is not there."""
    node, walked = handle.h5, ""
    for segment in name.strip("/").split("/"):
        walked = f"{walked}/{segment}"
        if not isinstance(node, h5py.Group) or node.get(segment, getlink=True) is None:
            raise NoSuchEntry(name)
        try:
            node = node[segment]
        except (KeyError, OSError):
            raise BrokenLink(
                f"{walked} in {Path(handle.path).name!r} is a link whose target is missing"
            ) from None
    raise NoSuchEntry(name)


def _elsewhere(handle: _OpenFile, node: Any) -> bool:
    """Whether an h5py object lives in another file than ``handle``'s (an external link)."""
    return node.file.id != handle.h5.id


# --- attributes --------------------------------------------------------------------------------


def json_value(value: Any) -> Any:
    """An HDF5 attribute value as JSON-able data (text decoded, arrays as lists)."""
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    if value is None or isinstance(value, str | bool | int | float):
        return value
    if isinstance(value, numpy.ndarray):
        return json_value(value.tolist())
    if isinstance(value, numpy.generic):
        return json_value(value.item())
    if isinstance(value, list | tuple):
        return [json_value(v) for v in value]
    if isinstance(value, complex):
        return {"real": value.real, "imag": value.imag}
    if isinstance(value, h5py.Empty):
        return None
    return str(value)  # references and other exotic values: their text form


def _attributes_at(handle: _OpenFile, name: str) -> dict[str, Any] | _Uncached:
    node = _node(handle, name)
    attributes = _attributes(node)
    return _Uncached(attributes) if _elsewhere(handle, node) else attributes


def _attributes(node: Any) -> dict[str, Any]:
    result = {}
    for name in node.attrs:
        try:
            result[name] = json_value(node.attrs[name])
        except (OSError, TypeError, ValueError) as err:
            # An attribute of a type h5py cannot read must not hide the node.
            logger.debug("Skipping HDF5 attribute %r of %s: %s", name, node.name, err)
    return result


# --- can the stored bytes be zarr chunks? ------------------------------------------------------

_DEFLATE, _SHUFFLE, _FLETCHER32, _SZIP, _NBIT, _SCALEOFFSET = 1, 2, 3, 4, 5, 6
_LZF, _BLOSC, _ZSTD = 32000, 32001, 32015
_BLOSC_NAMES = {0: "blosclz", 1: "lz4", 2: "lz4hc", 3: "snappy", 4: "zlib", 5: "zstd"}
_NOT_EXPRESSIBLE = {
    _FLETCHER32: "fletcher32 appends a checksum to every chunk",
    _SZIP: "szip has no numcodecs codec",
    _NBIT: "n-bit packing has no numcodecs codec",
    _SCALEOFFSET: "scale-offset has no numcodecs codec",
    _LZF: "numcodecs has no LZF codec",
}


@dataclass(frozen=True)
class ZarrStorage:
    """How a dataset's stored bytes read as zarr chunks, unchanged.

    ``layout`` is "chunked" (one zarr chunk per HDF5 chunk, through ``compressors``) or
    "contiguous" (raw bytes at ``offset``, None when the file never allocated them).
    ``partial_edges_raw`` says whether HDF5 stores partial edge chunks unfiltered (True), with
    the filters (False) or cannot tell (None); only False lets edge chunks pass through.
    """

    layout: str
    dtype: numpy.dtype
    compressors: tuple[Any, ...] = ()
    chunk_shape: tuple[int, ...] | None = None
    offset: int | None = None
    partial_edges_raw: bool | None = False


def _codec_for_filter(code: int, values: tuple[int, ...], name: str, itemsize: int) -> Any:
    """The numcodecs codec that decodes what one HDF5 filter wrote, or why there is none."""
    if code == _DEFLATE:
        return numcodecs.Zlib(level=values[0] if values else 6)  # deflate writes zlib streams
    if code == _SHUFFLE:
        return numcodecs.Shuffle(elementsize=values[0] if values else itemsize)
    if code == _BLOSC:
        # hdf5-blosc's parameters: version, format, typesize, bufsize, clevel, shuffle, codec.
        compressor = values[6] if len(values) > 6 else 0
        cname = _BLOSC_NAMES.get(compressor)
        if cname is None or cname not in numcodecs.blosc.list_compressors():
            return f"HDF5 filter blosc ({code}): compressor {compressor} is not in numcodecs"
        clevel = values[4] if len(values) > 4 else 5
        shuffle = values[5] if len(values) > 5 else 1
        return numcodecs.Blosc(cname=cname, clevel=clevel, shuffle=shuffle)
    if code == _ZSTD:
        return numcodecs.Zstd(level=values[0] if values else 3)  # whole zstd frames
    reason = _NOT_EXPRESSIBLE.get(code, "it has no numcodecs codec")
    return f"HDF5 filter {name or code!s} ({code}): {reason}"


def _element_type(dtype: numpy.dtype) -> tuple[numpy.dtype, tuple[int, ...]]:
    """The element type a dataset of ``dtype`` is served with, and the inner dimensions its
    elements add to the dataset's shape.

    An HDF5 array type (numpy's sub-array dtype, such as ``("f4", (3,))``) is a fixed-size
    block of a base type: h5py reads a dataset of them with the block's dimensions appended,
    and its stored bytes are the C-ordered base elements, so it is served as that array of the
    base type (numpy, tiled's structures and zarr all refuse sub-array element types). Blocks
    of variable-length data keep their type: they are served as a placeholder.
    """
    inner: tuple[int, ...] = ()
    while dtype.subdtype is not None and not dtype.hasobject:
        dtype, block = dtype.subdtype  # numpy may nest them: ("(2,)f4", (3,)) is (3, 2) of f4
        inner += tuple(block)
    return dtype, inner


def _element_type_reason(dataset: h5py.Dataset) -> str | None:
    """Why the stored elements are not the bytes of a numpy dtype zarr knows, or None."""
    dtype, _ = _element_type(dataset.dtype)
    if dtype.hasobject:
        if h5py.check_string_dtype(dtype) is not None:
            return "variable-length strings are stored in the file's heap, not in the chunks"
        return "variable-length or reference elements"
    if dtype.fields is not None:
        if repack_fields(dtype) != dtype:
            return "compound type with padding between members"
        if dtype != dtype.newbyteorder("<"):
            return "compound type with big-endian members (zarr v3 cannot say so)"
    try:
        same = dataset.id.get_type().equal(h5py.h5t.py_create(dataset.dtype, logical=True))
    except (TypeError, ValueError):
        same = False
    if not same:
        return "HDF5 converts the stored element type on reading"
    return _zarr_type_reason(dtype)


def _zarr_type_reason(dtype: numpy.dtype) -> str | None:
    """Why zarr cannot hold elements of ``dtype`` (e.g. long doubles), or None."""
    from ..zarr_format.zarr_python import zarr_data_type

    try:
        zarr_data_type(dtype)
    except (TypeError, ValueError):
        return f"zarr has no data type for {dtype}"
    return None


@functools.cache
def _get_chunk_opts() -> Any:
    # h5py does not wrap H5Pget_chunk_opts; its extension module links the HDF5 library.
    try:
        function = ctypes.CDLL(h5py.h5p.__file__).H5Pget_chunk_opts
    except (OSError, AttributeError):
        return None
    function.argtypes = [ctypes.c_int64, ctypes.POINTER(ctypes.c_uint)]
    function.restype = ctypes.c_int
    return function


def _partial_edges_raw(plist: Any) -> bool | None:
    """Whether the dataset stores partial edge chunks unfiltered (HDF5's
    H5D_CHUNK_DONT_FILTER_PARTIAL_CHUNKS, which h5py cannot report); None when unknown."""
    function = _get_chunk_opts()
    options = ctypes.c_uint(0)
    if function is None or function(plist.id, ctypes.byref(options)) < 0:
        return None
    return bool(options.value & 0x2)


def zarr_storage(dataset: h5py.Dataset) -> ZarrStorage | str:
    """The zarr codec chain that reads this dataset's stored bytes as they are, or the reason
    there is none (then its zarr chunks are decoded by h5py and re-encoded)."""
    if dataset.shape is None:
        return "null dataspace (no elements)"
    reason = _element_type_reason(dataset)
    if reason is not None:
        return reason
    dtype, inner = _element_type(dataset.dtype)
    plist = dataset.id.get_create_plist()
    layout = plist.get_layout()
    if layout == h5py.h5d.VIRTUAL:
        return "virtual dataset: its data live in other datasets"
    if plist.get_external_count():
        return "raw data kept in external files"
    if layout == h5py.h5d.COMPACT:
        return "compact layout: the data are kept in the object header"
    if layout == h5py.h5d.CONTIGUOUS:
        return ZarrStorage("contiguous", dtype, offset=dataset.id.get_offset())
    if layout != h5py.h5d.CHUNKED:
        return f"unknown storage layout {layout}"
    compressors = []
    for index in range(plist.get_nfilters()):
        code, _flags, values, name = plist.get_filter(index)
        # HDF5's filters see whole stored elements (an array type's block is one element).
        codec = _codec_for_filter(
            code, tuple(values), name.decode(errors="replace"), dataset.dtype.itemsize
        )
        if isinstance(codec, str):
            return codec
        compressors.append(codec)
    return ZarrStorage(
        "chunked",
        dtype,
        tuple(compressors),
        chunk_shape=tuple(dataset.chunks) + inner,  # a chunk holds whole blocks
        partial_edges_raw=_partial_edges_raw(plist) if compressors else False,
    )


def contiguous_chunk_shape(shape: Sequence[int], itemsize: int, budget: int) -> tuple[int, ...]:
    """A chunk shape whose every chunk is one byte range of C-ordered data: whole along the
    inner axes, a slab of the outermost axis that does not fit the budget, 1 before it."""
    shape = [max(int(s), 1) for s in shape]
    inner = max(int(itemsize), 1)
    for axis in reversed(range(len(shape))):
        if inner * shape[axis] > budget:
            rows = max(1, budget // inner)
            return (1,) * axis + (rows,) + tuple(shape[axis + 1 :])
        inner *= shape[axis]
    return tuple(shape)


# --- chunk index -------------------------------------------------------------------------------


@dataclass(frozen=True)
class _ChunkIndex:
    """Where each written chunk is in the file: byte offset, size and filter mask, sorted by
    the chunk's linear number in the grid (compact: 24 bytes a chunk)."""

    grid: tuple[int, ...]
    numbers: numpy.ndarray
    offsets: numpy.ndarray
    sizes: numpy.ndarray
    masks: numpy.ndarray

    @classmethod
    def build(cls, dataset: h5py.Dataset) -> _ChunkIndex:
        shape, chunks = dataset.shape, dataset.chunks
        grid = tuple(math.ceil(s / c) for s, c in zip(shape, chunks, strict=True))
        rows: list[tuple[int, int, int, int]] = []

        def visit(info: Any) -> None:
            coords = tuple(o // c for o, c in zip(info.chunk_offset, chunks, strict=True))
            if all(i < n for i, n in zip(coords, grid, strict=True)):  # not beyond a shrink
                number = int(numpy.ravel_multi_index(coords, grid))
                rows.append((number, info.byte_offset, info.size, info.filter_mask))

        if hasattr(dataset.id, "chunk_iter"):  # one pass over the index (HDF5 >= 1.12.3)
            dataset.id.chunk_iter(visit)
        else:
            for i in range(dataset.id.get_num_chunks()):
                visit(dataset.id.get_chunk_info(i))
        table = numpy.array(sorted(rows), dtype=numpy.int64).reshape(-1, 4)
        return cls(grid, table[:, 0].copy(), table[:, 1].copy(), table[:, 2].copy(), table[:, 3])

    def find(self, coords: Sequence[int]) -> tuple[int, int, int] | None:
        """(byte offset, size, filter mask) of a written chunk, None for one never written."""
        number = int(numpy.ravel_multi_index(tuple(coords), self.grid)) if self.grid else 0
        i = int(numpy.searchsorted(self.numbers, number))
        if i == len(self.numbers) or self.numbers[i] != number:
            return None
        return int(self.offsets[i]), int(self.sizes[i]), int(self.masks[i])


# --- datasets ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Description:
    """What a dataset is, learnt once per open file without reading its data.

    ``shape`` is the shape served. A scalar or empty dataset has no first axis along which
    the files of a multi-file node are concatenated, so (as upstream does) it is served with a
    leading axis of one (``lead``): a scalar is ``(1,)``, an empty ``(0,)`` is ``(1, 0)``. The
    stored bytes are the same, so this changes neither reads nor the zarr pass-through.
    Elements of an HDF5 array type add their block's dimensions (see :func:`_element_type`).
    """

    shape: tuple[int, ...]
    dtype: numpy.dtype  # what h5py reads, an array type's base type
    # The chunk shape served (None unless chunked): HDF5's, coarser along a dimension where
    # HDF5's would be more than MAX_CHUNKS_PER_DIMENSION (see bounded_chunk_shape).
    chunks: tuple[int, ...] | None
    storage: ZarrStorage | str  # the pass-through plan, or why there is none
    fill_value: Any
    unsupported: str | None  # elements neither native reads nor zarr can serve
    zarr_unsupported: str | None  # elements zarr cannot hold, even re-encoded
    lead: bool = False  # served with a leading axis of one
    placeholder: bool = False  # variable-length non-text elements, served as empty bytes

    @property
    def vlen_string(self) -> bool:
        return self.dtype.kind == "O" and h5py.check_string_dtype(self.dtype) is not None

    @property
    def zarr_dtype(self) -> numpy.dtype:
        return self.zarr_type_of(self.dtype)

    @staticmethod
    def zarr_type_of(dtype: numpy.dtype) -> numpy.dtype:
        """The element type of the zarr view when it is re-encoded."""
        if dtype.kind == "O" and h5py.check_string_dtype(dtype) is not None:
            return VARIABLE_LENGTH_STRING
        if dtype.fields is not None:
            # zarr v3 records no byte order per member and no padding: packed, little-endian.
            return repack_fields(dtype).newbyteorder("<")
        return dtype

    def native_chunks(self) -> tuple[tuple[int, ...], ...]:
        return self._native_chunks

    @functools.cached_property
    def _native_chunks(self) -> tuple[tuple[int, ...], ...]:
        # Upstream's blocks, so that structures registered by upstream match: the HDF5 chunks,
        # else (contiguous storage, variable-length strings) the whole dataset. Kept: there may
        # be a million per dimension, and every request for the node asks for them.
        if self.chunks is not None and not self.vlen_string and not self.lead:
            return regular_chunks(self.shape, self.chunks)
        return tuple((size,) for size in self.shape)


_PLACEHOLDER_DTYPE = numpy.dtype("S1")


def _served_shape(
    stored: tuple[int, ...] | None, inner: tuple[int, ...] = ()
) -> tuple[tuple[int, ...], bool]:
    """The shape a dataset of shape ``stored`` (whose elements are blocks of shape ``inner``)
    is served at, and whether a leading axis of one was added (see :class:`_Description`). A
    null dataspace (h5py.Empty) has neither elements nor dimensions: ``(0,)``, as it reads."""
    if stored is None:
        return (0, *inner), False
    if stored == () or 0 in stored:
        return (1, *stored, *inner), True
    return (*stored, *inner), False


def _uniform_fill_value(fill_value: Any, inner: tuple[int, ...]) -> tuple[Any, bool]:
    """The one fill value of an element, and whether there is one: an array type's fill value
    is a block, which zarr can declare only when all its values are the same."""
    if not inner or fill_value is None:
        return fill_value, True
    block = numpy.asarray(fill_value)
    first = block.flat[0] if block.size else None
    try:
        uniform = block.size > 0 and bool(numpy.all(block == first))
    except (TypeError, ValueError):  # members numpy cannot compare
        uniform = False
    return (first, True) if uniform else (None, False)


def _is_placeholder(dtype: numpy.dtype) -> bool:
    return dtype.hasobject and dtype.fields is None and h5py.check_string_dtype(dtype) is None


def _describe(dataset: h5py.Dataset, path: str) -> _Description | _Uncached:
    dtype, inner = _element_type(dataset.dtype)
    shape, lead = _served_shape(dataset.shape, inner)
    unsupported, placeholder = None, False
    if _is_placeholder(dtype):
        # Upstream serves these (with a warning) as empty bytes of the dataset's shape.
        placeholder = True
    elif dtype.fields is not None and any(dtype.fields[name][0].hasobject for name in dtype.names):
        unsupported = "compound types with variable-length members are not supported"
    try:
        fill_value = dataset.fillvalue if unsupported is None and not placeholder else None
    except (OSError, TypeError, ValueError):
        fill_value = None
    fill_value, uniform_fill = _uniform_fill_value(fill_value, inner)
    elsewhere = _in_other_file(dataset, path)
    storage = elsewhere or zarr_storage(dataset)
    if lead and isinstance(storage, ZarrStorage) and storage.layout == "chunked":
        storage = "no elements"  # chunks of the stored rank, none of them written
    if not uniform_fill and isinstance(storage, ZarrStorage):
        # Unwritten stored chunks would read as the one declared value, not the file's block.
        storage = "the fill value differs within an array type's block"
    chunks = (*dataset.chunks, *inner) if dataset.chunks else None
    if chunks is not None and not lead:
        bounded = bounded_chunk_shape(shape, chunks)
        if bounded != chunks:
            if isinstance(storage, ZarrStorage):
                # The zarr view's chunks are the structure's: stored chunks of another size
                # cannot be passed through.
                storage = (
                    f"more than {MAX_CHUNKS_PER_DIMENSION} HDF5 chunks along a dimension; "
                    f"served in chunks of {list(bounded)}"
                )
            chunks = bounded
    zarr_unsupported = unsupported or _zarr_type_reason(_Description.zarr_type_of(dtype))
    description = _Description(
        shape=shape,
        dtype=dtype,
        chunks=chunks,
        storage=storage,
        fill_value=fill_value,
        unsupported=unsupported,
        zarr_unsupported=(
            "variable-length sequences and references have no zarr form"
            if placeholder
            else zarr_unsupported
        ),
        lead=lead,
        placeholder=placeholder,
    )
    # Through an external link: the other file may change unseen, so describe it each time.
    return _Uncached(description) if elsewhere else description


def _zarr_view(description: _Description) -> dict[str, str]:
    """How the zarr view serves a dataset's chunks, for its metadata."""
    if description.zarr_unsupported is not None:
        return unavailable_view(description.zarr_unsupported)
    storage = description.storage
    if isinstance(storage, str):
        return re_encoded_view(storage)
    return stored_chunks_view("+".join(c.codec_id for c in storage.compressors) or "none")


def _in_other_file(dataset: h5py.Dataset, path: str) -> str | None:
    # Offsets learnt through an external link are offsets in the linked file, not this one.
    try:
        same = os.path.samefile(dataset.file.filename, path)
    except OSError:
        same = False
    return None if same else "external link: the data are in another file"


def _h5_selection(ndslice: NDSlice, shape: tuple[int, ...]) -> tuple[tuple, tuple | None]:
    """What h5py can select (integers, forward slices) and the numpy indexing left to do."""
    if not ndslice:
        return (), None
    parts = list(ndslice)
    if Ellipsis in parts:
        at = parts.index(Ellipsis)
        parts[at : at + 1] = [slice(None)] * (len(shape) - len(parts) + 1)
    parts = list(NDSlice(*parts).expand(shape))  # validates rank and integer bounds
    selection, rest = [], []
    for part in parts:
        if isinstance(part, slice) and part.step is not None and part.step < 0:
            selection.append(slice(None))  # h5py refuses negative steps: numpy takes them
            rest.append(part)
        else:
            selection.append(part)
            if not isinstance(part, int):  # an integer removes its axis from the result
                rest.append(slice(None))
    negative = any(isinstance(p, slice) and p.step is not None and p.step < 0 for p in parts)
    return tuple(selection), tuple(rest) if negative else None


class HDF5ArrayAdapter(ArrayAdapterBase):
    """One HDF5 dataset as an array node.

    The structure, the attributes and the zarr plan are learnt from the file lazily and again
    whenever the file changes (an SWMR writer appending, a file replaced). ``structure`` (from a
    catalog) is honored while it still describes the file's dataset: same shape and data type.
    """

    def __init__(
        self,
        source: _Source,
        dataset: str,
        *,
        structure: ArrayStructure | None = None,
        metadata: Mapping[str, Any] | None = None,
        specs: Any = None,
    ):
        super().__init__(structure, metadata=metadata, specs=specs)
        self._source = source
        self._name = dataset if dataset.startswith("/") else f"/{dataset}"

    # (description, element type, structure) of the last structure built: see structure().
    _structure_memo: tuple[_Description, numpy.dtype, ArrayStructure] | None = None

    # --- construction (upstream's names and parameters) ---

    @classmethod
    def from_uris(
        cls,
        *data_uris: str,
        dataset: str | Sequence[str] | None = None,
        slice: str | NDSlice | None = None,
        squeeze: bool = False,
        swmr: bool = SWMR_DEFAULT,
        libver: str = "latest",
        locking: bool | str | None = None,
        structure: ArrayStructure | None = None,
        metadata: Mapping[str, Any] | None = None,
        specs: Any = None,
    ) -> ArrayAdapterBase:
        """The dataset ``dataset`` of the file(s) ``data_uris``; several files are concatenated
        along the first axis, and ``slice``/``squeeze`` select a part, as upstream does."""
        if not data_uris:
            raise InvalidStructure("An HDF5 array needs at least one file")
        name = _dataset_name(dataset)
        if name == "/":
            raise InvalidStructure("An HDF5 array needs the path of a dataset inside the file")
        options = _Options(swmr=swmr, libver=libver, locking=locking)
        sources = [_Source(str(path_from_uri(uri)), options) for uri in data_uris]
        if len(sources) == 1 and not slice and not squeeze:
            return cls(sources[0], name, structure=structure, metadata=metadata, specs=specs)
        return _CombinedArrayAdapter(
            [HDF5ArrayAdapter(source, name) for source in sources],
            slice=_as_ndslice(slice),
            squeeze=squeeze,
            structure=structure,
            metadata=metadata,
            specs=specs,
        )

    @classmethod
    def from_catalog(cls, data_source: Any, node: Any, /, **parameters: Any) -> ArrayAdapterBase:
        """The dataset a catalog registered: ``data_source.parameters`` name it (``dataset``)
        and say how to open it; the node's metadata is merged over the file's attributes."""
        return cls.from_uris(
            *_data_uris(data_source),
            structure=_given_structure(data_source),
            metadata=getattr(node, "metadata_", None),
            specs=getattr(node, "specs", None),
            **parameters,
        )

    # --- what the dataset is ---

    def _description(self) -> _Description:
        name = self._name
        return self._source.learn(
            ("describe", name), lambda h: _describe(_dataset(h, name), h.path)
        )

    def _native_dtype(self, description: _Description) -> numpy.dtype:
        if description.unsupported is not None:
            return numpy.dtype("V8")  # a placeholder: reading the data answers why it cannot be
        if description.placeholder:
            return _PLACEHOLDER_DTYPE
        if description.vlen_string:
            # Upstream serves variable-length strings as fixed-length UTF-8 bytes, as wide as
            # the longest: learnt once per open file.
            name = self._name
            width = self._source.learn(
                ("width", name), lambda h: _longest_string(_dataset(h, name))
            )
            return numpy.dtype(f"S{max(width, 1)}")
        if description.dtype.fields is not None:
            return repack_fields(description.dtype)
        return description.dtype

    def _served_as(self, description: _Description) -> ArrayStructure | None:
        """The catalog's structure when the data are served at its shape rather than the
        file's (upstream's reshaping: trimmed to it, or reshaped to the same size), else None.
        A catalog structure of another data type describes another dataset: the file wins."""
        given = self._structure
        if given is None or tuple(given.shape) == description.shape:
            return None
        if given.data_type.to_numpy_dtype() != self._native_dtype(description):
            return None
        return given

    def _warn_if_objects(self, description: _Description) -> None:
        # Upstream warns so, and its users filter on "The dataset".
        if description.vlen_string:
            warnings.warn(
                f"The dataset {self._name} holds variable-length strings; they are served as "
                "fixed-length UTF-8 bytes, as wide as the longest. Store fixed-length strings "
                "to avoid this.",
                UserWarning,
                stacklevel=3,
            )
        elif description.placeholder:
            warnings.warn(
                f"The dataset {self._name} holds variable-length sequences or references, "
                "which cannot be served; an empty placeholder of its shape is served instead.",
                UserWarning,
                stacklevel=3,
            )

    def structure(self) -> ArrayStructure:
        description = self._description()
        self._warn_if_objects(description)
        dtype = self._native_dtype(description)
        given = self._structure
        if given is not None and given.data_type.to_numpy_dtype() == dtype:
            # At the file's shape, or another one that reads reshape the data to.
            return given
        # A request asks several times, and checking a million chunk sizes takes a tenth of a
        # second: kept while the file's description (learnt again when it changes) is the same.
        memo = self._structure_memo
        if memo is not None and memo[0] is description and memo[1] == dtype:
            return memo[2]
        structure = ArrayStructure(
            data_type=data_type_from_numpy(dtype),
            chunks=description.native_chunks(),
            shape=description.shape,
            resizable=False,
        )
        self._structure_memo = (description, dtype, structure)
        return structure

    def metadata(self) -> dict[str, Any]:
        try:
            name = self._name
            description = self._description()  # refuses a group, as reads do
            attributes = self._source.learn(("attrs", name), lambda h: _attributes_at(h, name))
        except DataUnavailable as err:
            # Listings show the node still; reading it answers the error.
            logger.warning("%s", err)
            return dict(self._metadata)
        view = _zarr_view(description)
        if view["chunks"] != "unavailable" and self._served_as(description) is not None:
            view = re_encoded_view("served at the shape its catalog entry gives, not the file's")
        return with_zarr_view({**attributes, **self._metadata}, view)

    # --- native reads ---

    def read(self, slice: NDSlice = NDSlice()) -> numpy.ndarray:
        description = self._description()
        if description.unsupported is not None:
            raise DataUnavailable(f"{self._name}: {description.unsupported}")
        self._warn_if_objects(description)
        dtype = self._native_dtype(description)
        data = self._read_served(description, NDSlice(*slice) if slice else NDSlice(), False)
        if data.dtype != dtype:
            data = data.astype(dtype)
        return data

    def _read_served(
        self, description: _Description, ndslice: NDSlice, as_text: bool
    ) -> numpy.ndarray:
        """``ndslice`` of the data at the shape served (the catalog's, when it differs)."""
        target = self._served_as(description)
        if target is None:
            return self._read_h5(ndslice, as_text=as_text)
        shape, stored = tuple(target.shape), description.shape
        whole = NDSlice()
        if len(shape) == len(stored) and shape[1:] == stored[1:] and stored[0] > shape[0]:
            whole = NDSlice(slice(0, shape[0]))  # grown since registered: only what is served
        return _numpy_select(force_reshape(self._read_h5(whole, as_text=as_text), shape), ndslice)

    def _read_h5(self, ndslice: NDSlice, *, as_text: bool) -> numpy.ndarray:
        name = self._name

        def read(handle: _OpenFile) -> numpy.ndarray:
            dataset = _dataset(handle, name)
            _, inner = _element_type(dataset.dtype)
            shape, lead = _served_shape(dataset.shape, inner)
            if dataset.shape is None:
                return numpy.zeros((0,), dtype=dataset.dtype)  # an array type's: (0, *inner)
            if _is_placeholder(dataset.dtype):
                empty = numpy.broadcast_to(numpy.zeros((), _PLACEHOLDER_DTYPE), shape)
                return numpy.ascontiguousarray(_numpy_select(empty, ndslice))
            source = dataset.asstr(errors="replace") if as_text else dataset
            if lead:  # at most one element: read it whole, then select
                return _numpy_select(numpy.asarray(source[()])[numpy.newaxis], ndslice)
            selection, rest = _h5_selection(ndslice, shape)
            rank = len(dataset.shape)
            outer = selection[:rank]
            data = numpy.asarray(source[outer] if outer else source[()])
            if len(selection) > rank:
                # h5py selects whole elements: an array type's block is selected in memory,
                # past the axes h5py kept (an integer drops its axis).
                kept = tuple(slice(None) for part in outer if not isinstance(part, int))
                data = data[(*kept, *selection[rank:])]
            return data[rest] if rest is not None else data

        return self._source.use(read)

    # --- the zarr view ---

    def zarr_layout(self) -> tuple[tuple[int, ...], Sequence[Sequence[int]], numpy.dtype, Any]:
        # Not structure(): that may read every variable-length string to learn their width.
        description = self._description()
        given = self._structure
        if given is not None and (
            tuple(given.shape) == description.shape or self._served_as(description) is not None
        ):
            return tuple(given.shape), given.chunks, description.zarr_dtype, given.dims
        return description.shape, description.native_chunks(), description.zarr_dtype, None

    def zarr_dtype(self) -> numpy.dtype:
        return self._description().zarr_dtype

    def zarr_fill_value(self) -> Any:
        description = self._description()
        if description.vlen_string or description.fill_value is None:
            return None
        return numpy.asarray(description.fill_value).astype(description.zarr_dtype)[()]

    def read_zarr_region(self, region: tuple[slice, ...]) -> numpy.ndarray:
        description = self._description()
        if description.vlen_string:
            return self._read_served(description, NDSlice(*region), True)
        data = self.read(slice=NDSlice(*region))
        return data.astype(description.zarr_dtype) if data.dtype.fields is not None else data

    async def to_zarr_meta(self, options: ZarrOptions | None = None) -> ZarrArrayMeta:
        # Every step may open the file (checking it is current is a stat): on a worker thread.
        return await run_sync(self._zarr_meta, options or ZarrOptions())

    def _zarr_meta(self, options: ZarrOptions) -> ZarrArrayMeta:
        description = self._description()
        if description.zarr_unsupported is not None:
            raise DataUnavailable(f"{self._name}: {description.zarr_unsupported}")
        storage = description.storage
        if isinstance(storage, str) or self._served_as(description) is not None:
            return self.default_zarr_meta(options)  # decoded by h5py, re-encoded
        if storage.layout == "chunked":
            chunk_shape = storage.chunk_shape
        else:
            chunk_shape = contiguous_chunk_shape(
                description.shape, storage.dtype.itemsize, options.chunk_budget_bytes
            )
        return ZarrArrayMeta(
            shape=description.shape,
            chunk_shape=chunk_shape,
            dtype=storage.dtype,
            fill_value=description.fill_value,
            compressors=storage.compressors,
            attributes=zarr_attributes(self),
        )

    async def to_zarr_chunk(self, coords: Sequence[int], meta: ZarrArrayMeta) -> bytes:
        region = meta.chunk_region(coords)  # refuses coordinates outside the grid before any I/O
        # Describing the dataset may open the file: the whole decision is on a worker thread.
        return await run_sync(self._zarr_chunk, tuple(coords), region, meta)

    def _zarr_chunk(
        self, coords: tuple[int, ...], region: tuple[slice, ...], meta: ZarrArrayMeta
    ) -> bytes:
        description = self._description()
        storage = description.storage
        if (
            isinstance(storage, str)
            or not _declares(meta, storage)
            or self._served_as(description) is not None  # at the catalog's shape
        ):
            return self._encode_region(region, meta)
        for attempt in range(2):
            try:
                return self._stored_chunk(coords, meta)
            except _FileChanged:
                if attempt:
                    raise Conflict(
                        f"HDF5 file {Path(self._source.path).name!r} changed while it was "
                        "being read; try again"
                    ) from None
        raise AssertionError("unreachable")

    def _stored_chunk(self, coords: tuple[int, ...], meta: ZarrArrayMeta) -> bytes:
        """The stored bytes of one zarr chunk: one ``pread``, never decoded."""
        name = self._name
        handle = _registry.current(self._source.path, self._source.options)
        # Description, index and bytes all come from this one open file.
        description = _learn(
            handle, ("describe", name), lambda: _describe(_dataset(handle, name), handle.path)
        )
        storage = description.storage
        if description.shape != meta.shape:
            raise _FileChanged  # the file changed between the metadata and this chunk
        if not isinstance(storage, ZarrStorage) or not _declares(meta, storage):
            # Rewritten with other filters since: the declared chain, re-encoded.
            return self._encode_region(meta.chunk_region(coords), meta)
        if storage.layout == "contiguous":
            return _contiguous_chunk(handle, storage, coords, meta)
        index = _learn(handle, ("index", name), lambda: _ChunkIndex.build(_dataset(handle, name)))
        # An array type's block is whole in every chunk: the index knows the stored rank only.
        found = index.find(coords[: len(index.grid)])
        if found is None:
            # Never written: the dataset's fill value, which the metadata declares.
            raise ZarrKeyNotFound(f"Chunk {list(coords)} holds only the fill value")
        offset, size, mask = found
        partial = any(
            (i + 1) * c > s for i, c, s in zip(coords, meta.chunk_shape, meta.shape, strict=True)
        )
        if mask or (partial and storage.partial_edges_raw is not False):
            # Some filters were skipped for this chunk (an optional filter that failed, or an
            # edge chunk HDF5 stores unfiltered): decode it and encode it with the declared chain.
            return meta.encode_chunk(self.read(slice=NDSlice(*meta.chunk_region(coords))))
        return _pread(handle, offset, size)


def _numpy_select(data: numpy.ndarray, ndslice: NDSlice) -> numpy.ndarray:
    """``ndslice`` of an array in memory, checked as h5py selections are."""
    if not ndslice:
        return data
    selection, rest = _h5_selection(ndslice, data.shape)
    data = data[selection]
    return data[rest] if rest is not None else data


def _declares(meta: ZarrArrayMeta, storage: ZarrStorage) -> bool:
    """Whether ``meta`` declares the stored bytes as they are (element type and codecs)."""
    return meta.dtype == storage.dtype and same_codecs(meta.compressors, storage.compressors)


def _learn(handle: _OpenFile, key: Any, build: Callable[[], T]) -> T:
    """``handle.memo(key, build)``, refusing a handle closed by a reopen meanwhile."""
    value = handle.known(key)
    if value is not _MISSING:
        return value  # learnt from this very file state: still true, even if since closed
    with handle.lock:
        if handle.closed:
            raise _FileChanged
        with _file_errors(handle.path):
            return handle.memo(key, build)


def _split_axis(shape: Sequence[int], chunk: Sequence[int]) -> int:
    """The axis at which a contiguous chunk shape (see :func:`contiguous_chunk_shape`) is a
    slab: 1 before it, whole after it."""
    whole = [max(int(s), 1) for s in shape]
    for axis in range(len(shape)):
        if all(c == 1 for c in chunk[:axis]) and list(chunk[axis + 1 :]) == whole[axis + 1 :]:
            return axis
    raise InvalidStructure(f"chunk shape {list(chunk)} is not one byte range of {list(shape)}")


def _contiguous_chunk(
    handle: _OpenFile, storage: ZarrStorage, coords: tuple[int, ...], meta: ZarrArrayMeta
) -> bytes:
    if storage.offset is None:  # storage never allocated: all fill value
        raise ZarrKeyNotFound(f"Chunk {list(coords)} holds only the fill value")
    shape, chunk, itemsize = meta.shape, meta.chunk_shape, storage.dtype.itemsize
    if not shape:
        return _pread(handle, storage.offset, itemsize)
    axis = _split_axis(shape, chunk)
    inner = math.prod(shape[axis + 1 :])
    start = [*coords[:axis], coords[axis] * chunk[axis]] + [0] * (len(shape) - axis - 1)
    first = int(numpy.ravel_multi_index(tuple(start), shape))
    rows = min(chunk[axis], shape[axis] - start[axis])
    payload = _pread(handle, storage.offset + first * itemsize, rows * inner * itemsize)
    missing = (chunk[axis] - rows) * inner
    if not missing:
        return payload
    # The last slab is short; zarr chunks are full-size, so pad (with the fill value).
    padding = numpy.zeros(missing, dtype=storage.dtype)
    if meta.fill_value is not None:
        padding[...] = meta.fill_value
    return EncodedChunk.tagged(payload + padding.tobytes(), payload.etag)


def _pread(handle: _OpenFile, offset: int, size: int) -> EncodedChunk:
    """``size`` bytes at ``offset``, checked to come from the file as it was indexed."""
    try:
        payload = os.pread(handle.fd, size, offset)
        identity = file_identity(os.fstat(handle.fd))
    except OSError as err:
        raise DataUnavailable(f"Cannot read HDF5 file {Path(handle.path).name!r}: {err}") from None
    if len(payload) != size or identity != handle.identity:
        raise _FileChanged
    return EncodedChunk.tagged(payload, identity_etag(handle.identity, offset, size))


def _dataset(handle: _OpenFile, name: str) -> h5py.Dataset:
    node = _node(handle, name)
    if not isinstance(node, h5py.Dataset):
        raise DataUnavailable(f"{name} in {Path(handle.path).name!r} is a group, not a dataset")
    return node


def _longest_string(dataset: h5py.Dataset) -> int:
    if dataset.shape is None or dataset.size == 0:
        return 1
    return numpy.asarray(dataset[()], dtype=bytes).dtype.itemsize


# --- datasets combined from several files, or a part of one (upstream's parameters) -----------


class _DatasetReader:
    """An array-like over one file's dataset, for dask to read by regions."""

    def __init__(self, adapter: HDF5ArrayAdapter):
        structure = adapter.structure()
        self.adapter = adapter
        self.shape = structure.shape
        self.dtype = structure.data_type.to_numpy_dtype()
        self.ndim = len(self.shape)
        self.chunks = structure.chunks

    def __getitem__(self, key: Any) -> numpy.ndarray:
        key = key if isinstance(key, tuple) else (key,)
        return self.adapter.read(NDSlice(*key))


class _CombinedArrayAdapter(HDF5ArrayAdapter):
    """Datasets of several files concatenated along the first axis (scalar and empty datasets
    have a leading axis of one, so they are stacked), optionally sliced and squeezed, and
    served at the catalog's ``structure`` when one is given. It is an :class:`HDF5ArrayAdapter`
    as upstream's is; its zarr chunks are re-encoded (the generic hooks below)."""

    def __init__(
        self,
        parts: list[HDF5ArrayAdapter],
        *,
        slice: NDSlice | None,
        squeeze: bool,
        structure: ArrayStructure | None = None,
        metadata: Mapping[str, Any] | None = None,
        specs: Any = None,
    ):
        ArrayAdapterBase.__init__(self, structure, metadata=metadata, specs=specs)
        self._parts = parts
        self._slice = slice
        self._squeeze = squeeze
        self._source, self._name = parts[0]._source, parts[0]._name

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self._name} of {len(self._parts)} file(s)>"

    def _array(self) -> Any:
        import dask.array

        readers = [_DatasetReader(part) for part in self._parts]
        arrays = [
            dask.array.from_array(r, chunks=r.chunks or -1, asarray=True, lock=False, fancy=False)
            for r in readers
        ]
        array = dask.array.concatenate(arrays, axis=0) if len(arrays) > 1 else arrays[0]
        if self._slice:
            array = array[tuple(self._slice)]
        if self._squeeze:
            array = array.squeeze()
        return array

    def structure(self) -> ArrayStructure:
        array = self._array()
        given = self._structure
        if given is not None and given.data_type.to_numpy_dtype() == array.dtype:
            return given  # reads reshape the data to it
        return ArrayStructure.from_array(array)

    def metadata(self) -> dict[str, Any]:
        first = self._parts[0].metadata()
        first.pop(ZARR_VIEW_KEY, None)
        reason = (
            f"concatenated from {len(self._parts)} files"
            if len(self._parts) > 1
            else "a part of the stored dataset"
        )
        return with_zarr_view({**first, **self._metadata}, re_encoded_view(reason))

    def read(self, slice: NDSlice = NDSlice()) -> numpy.ndarray:
        array = self._array()
        given = self._structure
        if given is not None and given.data_type.to_numpy_dtype() == array.dtype:
            array = force_reshape(array, given.shape)
        if slice:
            array = array[tuple(slice)]
        return numpy.asarray(array.compute(scheduler="sync"))

    # The zarr view of a combination is re-encoded from read(): the generic hooks.
    zarr_layout = ArrayAdapterBase.zarr_layout
    zarr_dtype = ArrayAdapterBase.zarr_dtype
    zarr_fill_value = ArrayAdapterBase.zarr_fill_value
    read_zarr_region = ArrayAdapterBase.read_zarr_region
    to_zarr_chunk = ArrayAdapterBase.to_zarr_chunk

    async def to_zarr_meta(self, options: ZarrOptions | None = None) -> ZarrArrayMeta:
        # The structure and metadata are read from every part's file: on a worker thread.
        return await run_sync(self.default_zarr_meta, options)


# --- groups -----------------------------------------------------------------------------------


# What a member of a group is, as listed.
_GROUP, _DATASET, _BROKEN = "group", "dataset", "broken link"
_KINDS = {h5py.Group: _GROUP, h5py.Dataset: _DATASET, None: _BROKEN}


def _members(handle: _OpenFile, group: str) -> dict[str, str] | _Uncached:
    """The members of a group, in the file's order: name -> group, dataset or broken link.

    Broken soft and external links are listed, as upstream lists them (a file's layout says
    they are there), and answer 404 when looked up; named data types are left out, and so are
    links back to the group itself or one of its ancestors, which would make the tree endless
    (h5py's ``visititems`` likewise visits each object once).
    """
    node = _node(handle, group)
    if not isinstance(node, h5py.Group):
        raise DataUnavailable(f"{group} in {Path(handle.path).name!r} is a dataset, not a group")
    members, external, ancestors = {}, False, None
    for name in node:
        # What an external link names can change without this file changing: a listing
        # holding one is learnt again each time.
        external = external or node.get(name, getclass=True, getlink=True) is h5py.ExternalLink
        try:
            kind = node.get(name, getclass=True)
        except (KeyError, OSError, RuntimeError):
            kind = None  # a dangling soft link, an external link to a missing file or object
        if kind is h5py.Group:
            ancestors = _ancestor_ids(handle, group) if ancestors is None else ancestors
            if node[name].id in ancestors:
                logger.info(
                    "%s/%s in %r links back to %s: left out",
                    group.rstrip("/"),
                    name,
                    Path(handle.path).name,
                    node[name].name,
                )
                continue
        if kind in _KINDS:
            members[name] = _KINDS[kind]
    return _Uncached(members) if external or _elsewhere(handle, node) else members


def _ancestor_ids(handle: _OpenFile, group: str) -> set[Any]:
    """The h5py object ids of ``group`` and of every group on the path to it."""
    prefixes = ["/"]
    for segment in group.strip("/").split("/") if group.strip("/") else ():
        prefixes.append(f"{prefixes[-1].rstrip('/')}/{segment}")
    return {_node(handle, prefix).id for prefix in prefixes}


class _BrokenLinkNode(MapAdapter):
    """What a listing shows for a broken link: an empty container saying so. Looking the
    link up answers :class:`~tiled.utils.BrokenLink` (404); an export leaves it empty."""

    search_deep = None  # a file's members: matched by a deep search, not entered (see HDF5Adapter)

    def __init__(self, reason: str):
        super().__init__({}, metadata={"broken_link": reason})
        self.reason = reason


class _GroupMembers(Mapping):
    """The members of an HDF5 group as a live mapping of adapters, made on demand.

    ``more`` are further files holding the same layout (upstream's several ``data_uris``):
    each dataset is then the concatenation of its namesakes in all the files.
    """

    def __init__(self, source: _Source, group: str, more: tuple[_Source, ...] = ()):
        self.source, self.group, self.more = source, group, more

    def listing(self) -> dict[str, str]:
        group = self.group
        return self.source.learn(("members", group), lambda h: _members(h, group))

    def __getitem__(self, key: str) -> Any:
        kind = self.listing()[key]  # KeyError for a missing member
        name = f"{self.group.rstrip('/')}/{key}"
        if kind == _BROKEN:
            return _BrokenLinkNode(
                f"{name} in {Path(self.source.path).name!r} is a link whose target is missing"
            )
        if kind == _GROUP:
            return HDF5Adapter(self.source, name, more=self.more)
        if self.more:
            parts = [HDF5ArrayAdapter(s, name) for s in (self.source, *self.more)]
            return _CombinedArrayAdapter(parts, slice=None, squeeze=False)
        return HDF5ArrayAdapter(self.source, name)

    def __contains__(self, key: object) -> bool:
        return key in self.listing()

    def __iter__(self) -> Iterator[str]:
        return iter(list(self.listing()))

    def __len__(self) -> int:
        return len(self.listing())


class HDF5Adapter(MapAdapter):
    """An HDF5 file or group as a container: groups are containers, datasets arrays, and the
    attributes (converted to JSON values) the metadata. NeXus files are groups like any other
    (their ``NX_class`` attributes are metadata).

    ``HDF5Adapter.from_uris("file://localhost/path/to/file.h5")`` serves a whole file;
    ``dataset="entry/data"`` serves one group, or one dataset (then it is an
    :class:`HDF5ArrayAdapter`). Search and sorting work on the members' metadata, as for any
    mapping.
    """

    structure_family = StructureFamily.container
    # Members read from a file: a deep search matches the file's node but does not open it to
    # walk its groups (as a catalog does not enter a registered file, and as upstream).
    search_deep = None

    def __init__(
        self,
        source: _Source,
        group: str = "/",
        *,
        more: tuple[_Source, ...] = (),
        metadata: Mapping[str, Any] | None = None,
        specs: Any = None,
        **kwargs: Any,
    ):
        group = group if group.startswith("/") else f"/{group}"
        members = _GroupMembers(source, group, tuple(more))
        super().__init__(members, metadata=metadata, specs=specs, **kwargs)
        self._members = members

    @classmethod
    def from_uris(
        cls,
        *data_uris: str,
        dataset: str | Sequence[str] | None = None,
        swmr: bool = SWMR_DEFAULT,
        libver: str = "latest",
        locking: bool | str | None = None,
        metadata: Mapping[str, Any] | None = None,
        specs: Any = None,
        **kwargs: Any,
    ) -> HDF5Adapter | ArrayAdapterBase:
        """The file (or the group or dataset ``dataset`` in it) at ``data_uris[0]``.

        A whole file is opened only when first used; naming a ``dataset`` opens the file now,
        to tell a group from a dataset. Datasets take ``slice``/``squeeze`` too (see
        :meth:`HDF5ArrayAdapter.from_uris`).
        """
        if not data_uris:
            raise InvalidStructure("An HDF5 node needs a file")
        options = _Options(swmr=swmr, libver=libver, locking=locking)
        sources = [_Source(str(path_from_uri(uri)), options) for uri in data_uris]
        name = _dataset_name(dataset)
        if name != "/" and sources[0].use(lambda h: isinstance(_node(h, name), h5py.Dataset)):
            return HDF5ArrayAdapter.from_uris(
                *data_uris,
                dataset=name,
                swmr=swmr,
                libver=libver,
                locking=locking,
                metadata=metadata,
                specs=specs,
                **kwargs,
            )
        return cls(sources[0], name, more=tuple(sources[1:]), metadata=metadata, specs=specs)

    @classmethod
    def from_catalog(
        cls, data_source: Any, node: Any, /, **parameters: Any
    ) -> HDF5Adapter | ArrayAdapterBase:
        """What a catalog registered: an array data source is one dataset, a container one
        file or group (``parameters["dataset"]``, default the root), opened when first used."""
        family = StructureFamily(getattr(data_source, "structure_family", "container"))
        if family == StructureFamily.array:
            return HDF5ArrayAdapter.from_catalog(data_source, node, **parameters)
        options = _Options(
            **{k: parameters[k] for k in ("swmr", "libver", "locking") if k in parameters}
        )
        sources = [_Source(str(path_from_uri(uri)), options) for uri in _data_uris(data_source)]
        return cls(
            sources[0],
            _dataset_name(parameters.get("dataset")),
            more=tuple(sources[1:]),
            metadata=getattr(node, "metadata_", None),
            specs=getattr(node, "specs", None),
        )

    def __repr__(self) -> str:
        return (
            f"<{type(self).__name__} {Path(self._members.source.path).name}:{self._members.group}>"
        )

    def metadata(self) -> dict[str, Any]:
        source, group = self._members.source, self._members.group
        try:
            attributes = source.learn(("attrs", group), lambda h: _attributes_at(h, group))
        except (DataUnavailable, NotFound) as err:
            # The listing that holds this node keeps working; the node's own reads answer.
            logger.warning("%s", err)
            return dict(self._metadata)
        return {**attributes, **self._metadata}

    def _listed(self) -> bool:
        """Whether the members and attributes are known (then nothing blocks on the file)."""
        group = self._members.group
        return self._members.source.warm(("members", group), ("attrs", group))

    async def count(self) -> int:
        try:
            return len(self) if self._listed() else await run_sync(len, self)
        except (DataUnavailable, NotFound) as err:
            # Counted as empty where its parent lists it; listing it answers the error.
            logger.warning("%s", err)
            return 0

    async def items_range(self, offset: int = 0, limit: int | None = None) -> list[tuple[str, Any]]:
        stop = None if limit is None else offset + limit

        def items() -> list[tuple[str, Any]]:
            found = list(self.items()[offset:stop])
            for _, child in found:
                # Learnt here, on a worker thread, what the listing will ask of each member.
                child.metadata()
                if isinstance(child, HDF5ArrayAdapter):
                    with contextlib.suppress(TiledError):
                        child.structure()
            return found

        return await run_sync(items)

    def __getitem__(self, key: str) -> Any:
        child = super().__getitem__(key)
        if isinstance(child, _BrokenLinkNode):
            raise BrokenLink(child.reason)
        return child

    def inlined_contents_enabled(self, depth: int) -> bool:
        # Upstream's choice: a file's tree is described in one request, to INLINED_DEPTH.
        return depth <= INLINED_DEPTH

    async def zarr_member_keys(self, offset: int = 0, limit: int | None = None) -> list[str]:
        # A broken link has nothing to read: the zarr group leaves it out.
        stop = None if limit is None else offset + limit

        def readable() -> list[str]:
            return [k for k, kind in self._members.listing().items() if kind != _BROKEN]

        return (await run_sync(readable))[offset:stop]

    async def lookup_adapter(self, segments: Sequence[str]) -> Any:
        if len(segments) == 1 and self._listed():
            return self._lookup(segments)  # the common step, answered from memory
        return await run_sync(self._lookup, segments)

    def _lookup(self, segments: Sequence[str]) -> Any:
        node: Any = self
        for depth, key in enumerate(segments):
            if not isinstance(node, HDF5Adapter):
                raise NoSuchEntry(list(segments[: depth + 1]))
            try:
                node = node[key]
            except BrokenLink:
                raise
            except KeyError:
                raise NoSuchEntry(list(segments[: depth + 1])) from None
        return node

    async def to_zarr_meta(self, options: ZarrOptions | None = None) -> ZarrGroupMeta:
        # metadata() tolerates an unreadable file (for listings); the group itself must not.
        await run_sync(lambda: (self._members.listing(), self.metadata()))
        return ZarrGroupMeta(attributes=zarr_attributes(self))


# --- helpers for the constructors --------------------------------------------------------------


def _dataset_name(dataset: str | Sequence[str] | None) -> str:
    if dataset is None:
        return "/"
    if not isinstance(dataset, str):
        dataset = "/".join(dataset)
    return "/" + dataset.strip("/") if dataset.strip("/") else "/"


def _as_ndslice(value: str | NDSlice | None) -> NDSlice | None:
    if not value:
        return None
    return value if isinstance(value, NDSlice) else NDSlice.from_query(value)


def _data_uris(data_source: Any) -> list[str]:
    uris = asset_uris(data_source)
    if not uris:
        raise InvalidStructure("An HDF5 data source needs at least one asset")
    return uris


def _given_structure(data_source: Any) -> ArrayStructure | None:
    structure = getattr(data_source, "structure", None)
    if structure is None or isinstance(structure, ArrayStructure):
        return structure
    if isinstance(structure, Mapping):
        return ArrayStructure.from_json(dict(structure))
    return None


__all__ = [
    "HDF5Adapter",
    "HDF5ArrayAdapter",
    "SWMR_DEFAULT",
    "ZarrStorage",
    "contiguous_chunk_shape",
    "json_value",
    "zarr_storage",
]
