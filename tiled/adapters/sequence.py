"""Arrays read from files: one file as a node, or an ordered sequence of files stacked as one.

Every file adapter of the array family (TIFF, NPY, JPEG, PNG) is a :class:`FileArrayAdapter`
with a format-specific :class:`FrameReader`; a single file is the special case of a sequence
of one file with no stacking axis. What lives here, once for all formats:

- **Opening files safely.** :func:`opened` opens a file, records its identity (device, inode,
  size, modification time) and checks it again when the read is over, so a file that changes
  while it is read gives :class:`FileChanged` rather than a mix of two versions. Missing,
  unreadable, corrupt and truncated files give :class:`FileUnreadable`. Both are
  :class:`tiled.errors.DataUnavailable`: a 4xx answer on that node alone, which the zarr
  consolidated metadata of its parents leaves out, so the rest of the tree keeps serving.
  Data is read with ``os.pread`` on the opened descriptor, never through a memory map: a
  mapped file truncated by another process would kill the server with SIGBUS.
- **Layouts parsed once per version of a file.** A reader parses a file's header into a
  :class:`FrameLayout` (shape, dtype, native chunks and, when the file's bytes can be served
  as zarr chunks, how) and keeps it until the file's identity changes.
- **The zarr view.** When the first file's layout says its chunks can be passed through, the
  node's zarr metadata declares that chunk grid and codec chain (one file per chunk along the
  stacking axes) and every chunk is the file's byte range, read with one pread and never
  decoded. A file of the sequence whose own layout differs is decoded and re-encoded into the
  declared chain, so the view stays correct. Otherwise the family defaults decode and
  re-encode. Either way the node's metadata says which, under ``zarr_view``.
"""

from __future__ import annotations

import builtins
import contextlib
import itertools
import logging
import math
import os
import stat
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy

from ..errors import BadRequest, DataUnavailable, TiledError
from ..ndslice import NDSlice
from ..structures.array import ArrayStructure, data_type_from_numpy
from ..utils import run_sync
from ..zarr_format.model import (
    EncodedChunk,
    ZarrArrayMeta,
    ZarrOptions,
    re_encoded_view,
    stored_chunks_view,
    unavailable_view,
    with_zarr_view,
)
from .base import ArrayAdapterBase, zarr_attributes
from .files import (
    FileIdentity,
    asset_uris,
    file_identity,
    identity_etag,
    open_failure,
    path_from_uri,
)

if TYPE_CHECKING:
    from ..structures.data_source import DataSource

logger = logging.getLogger(__name__)

# How many files of a sequence one read opens at once: reading is I/O bound and the codecs
# release the GIL, so a few threads keep the storage busy.
IO_WORKERS = 8
# Readers (parsed layouts) an adapter keeps, most recently used first.
MAX_READERS = 256
# Decoded whole files kept for formats that can only be decoded whole (JPEG, PNG, irregular
# TIFF): a zarr view cuts a frame into several chunks, which must not decode it each time.
DECODED_CACHE_BYTES = 256 * 1024 * 1024
# Soft cap on the bytes of whole frames held at once by one read of many files: each worker
# holds about one frame while it reads, so this bounds the threads (at least one) a read
# uses. Upstream's name and environment variable, so its deployments tune it alike.
READ_BATCH_BYTES = int(os.environ.get("TILED_SEQUENCE_READ_BATCH_BYTES") or (1 << 30))
_MESSAGE_LIMIT = 300


# --- errors ---------------------------------------------------------------------------------


class FileUnreadable(DataUnavailable):
    """A file of the node cannot be read: missing, not permitted, corrupt or truncated."""


class FileChanged(FileUnreadable):
    """A file changed while it was read, or no longer holds what the node's structure says."""


def _short(err: BaseException) -> str:
    text = f"{type(err).__name__}: {err}"
    return text if len(text) <= _MESSAGE_LIMIT else text[: _MESSAGE_LIMIT - 3] + "..."


# --- opening files ----------------------------------------------------------------------------


class OpenedFile:
    """An open file and the identity it had when opened."""

    def __init__(self, path: Path, file: Any):
        self.path = path
        self.file = file
        self.identity = file_identity(os.fstat(file.fileno()))

    @property
    def name(self) -> str:
        # Messages name the file, not its directory: clients need not learn server paths.
        return self.path.name

    @property
    def size(self) -> int:
        return self.identity[2]

    def pread(self, offset: int, size: int) -> bytes:
        """``size`` bytes at ``offset``, or :class:`FileUnreadable` if the file is too short."""
        if offset < 0 or offset + size > self.size:
            raise FileUnreadable(
                f"{self.name} is truncated: its data at bytes {offset}-{offset + size} lie "
                f"beyond its end ({self.size} bytes)"
            )
        data = os.pread(self.file.fileno(), size, offset)
        if len(data) != size:
            raise FileChanged(f"{self.name} shrank while it was read; try again")
        return data

    def unchanged(self) -> bool:
        # The open descriptor's own file: rewriting it in place changes its size or time; a
        # file replaced by rename leaves the version being read intact, which is no error.
        return file_identity(os.fstat(self.file.fileno())) == self.identity

    def tagged(self, payload: bytes, *parts: int) -> EncodedChunk:
        """Chunk bytes taken from this version of the file, with an ETag made from the file's
        identity and ``parts`` (where in the file), as static file servers do: no hashing."""
        return EncodedChunk.tagged(payload, identity_etag(self.identity, *parts))


def open_regular_file(path: Path) -> Any:
    """``path`` opened for binary reading, if it is a regular file (symbolic links followed);
    :class:`FileUnreadable` if it is a FIFO, a socket or a device.

    Opened without blocking: opening a FIFO for reading would wait for a writer forever,
    holding a worker thread that no shutdown can end. A regular file ignores the flag, which
    is cleared before its bytes are read anyway."""
    nonblocking = getattr(os, "O_NONBLOCK", 0)

    def opener(name: str, flags: int) -> int:
        return os.open(name, flags | nonblocking)

    # Through open(), so that the file's ``name`` is its path, which format libraries read.
    file = open(path, "rb", opener=opener)  # noqa: SIM115 (closed by the caller)
    try:
        if not stat.S_ISREG(os.fstat(file.fileno()).st_mode):
            raise FileUnreadable(f"{path.name} is not a regular file (a FIFO, socket or device)")
        if nonblocking:
            os.set_blocking(file.fileno(), True)
    except BaseException:
        file.close()
        raise
    return file


@contextlib.contextmanager
def opened(path: Path) -> Iterator[OpenedFile]:
    """Open ``path`` for reading; any failure inside becomes a :class:`FileUnreadable`.

    Whatever goes wrong while a file's bytes are parsed or decoded (each library raises its
    own exceptions for corrupt input), the client gets a 4xx naming the file; the original
    exception is logged at debug level. If the file changed meanwhile, that is the error reported.
    """
    name = path.name
    try:
        file = open_regular_file(path)
    except OSError as err:
        raise FileUnreadable(f"{name} {open_failure(err)}") from None
    with file:
        handle = OpenedFile(path, file)
        try:
            yield handle
        except MemoryError:
            raise
        except Exception as err:
            if not handle.unchanged():
                raise FileChanged(f"{name} changed while it was read; try again") from err
            if isinstance(err, TiledError):
                raise
            if isinstance(err, PermissionError):
                raise FileUnreadable(f"{name} {open_failure(err)}") from err
            # The reason reaches the client (or the walk's one-line skip) in the message
            # below; the traceback is for whoever debugs the format's library.
            logger.debug("Cannot read %s", path, exc_info=True)
            raise FileUnreadable(
                f"{name} cannot be read; it may be corrupt or truncated ({_short(err)})"
            ) from err
        if not handle.unchanged():
            raise FileChanged(f"{name} changed while it was read; try again")


# --- decoded frames -------------------------------------------------------------------------


class DecodedCache:
    """Recently decoded values, keyed by file identity, bounded in total bytes."""

    def __init__(self, budget: int):
        self.budget = budget
        self._items: OrderedDict[Any, tuple[Any, int]] = OrderedDict()
        self._total = 0
        self._lock = threading.Lock()

    def get_or_make(self, key: Any, make: Callable[[], Any], size_of: Callable[[Any], int]) -> Any:
        with self._lock:
            if key in self._items:
                self._items.move_to_end(key)
                return self._items[key][0]
        value = make()  # outside the lock: decoding may take long
        size = size_of(value)
        if size <= self.budget // 4:  # one huge frame must not evict everything else
            with self._lock:
                if key not in self._items:
                    self._items[key] = (value, size)
                    self._total += size
                while self._total > self.budget:
                    _, (_, dropped) = self._items.popitem(last=False)
                    self._total -= dropped
        return value

    def clear(self) -> None:
        with self._lock:
            self._items.clear()
            self._total = 0


DECODED = DecodedCache(DECODED_CACHE_BYTES)


def decoded_array(file: OpenedFile, decode: Callable[[], numpy.ndarray]) -> numpy.ndarray:
    """The whole array of ``file`` decoded by ``decode``, shared while the file is unchanged."""

    def make() -> numpy.ndarray:
        array = numpy.asarray(decode())
        array.flags.writeable = False  # shared between requests
        return array

    return DECODED.get_or_make((file.path, file.identity), make, lambda a: a.nbytes)


# --- layouts and readers ----------------------------------------------------------------------


@dataclass(frozen=True)
class StoredChunks:
    """How a file's stored bytes are zarr chunks: grid, element type (with the file's byte
    order) and bytes-to-bytes codecs."""

    chunk_shape: tuple[int, ...]
    dtype: numpy.dtype
    compressors: tuple[Any, ...] = ()
    fill_value: Any = None
    codec: str = "none"  # as the node's metadata names it


@dataclass(frozen=True)
class FrameLayout:
    """What a file's header says about the array in it. ``reason`` says why its chunks cannot
    be passed through to zarr clients; None means they can."""

    shape: tuple[int, ...]
    dtype: numpy.dtype  # of the values read (native byte order)
    chunks: tuple[tuple[int, ...], ...]  # the file's native chunks, dask style
    reason: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)

    def stored(self, budget_bytes: int) -> StoredChunks | None:
        """The zarr chunking of the stored bytes (``budget_bytes`` guides formats that may
        cut their data anywhere), or None when it cannot be passed through."""
        return None


def whole_chunks(shape: Sequence[int]) -> tuple[tuple[int, ...], ...]:
    return tuple((int(n),) for n in shape)


class FrameReader:
    """One file holding one array. Subclasses implement :meth:`parse` and :meth:`read_region`
    and, when their stored bytes can be zarr chunks, :meth:`stored_chunk`."""

    def __init__(self, path: Path):
        self.path = path
        self.expect: tuple[tuple[int, ...] | None, numpy.dtype | None] = (None, None)
        self._cached: tuple[FileIdentity, FrameLayout] | None = None

    # --- per format ---

    def parse(self, file: OpenedFile) -> FrameLayout:
        raise NotImplementedError

    def read_region(
        self, file: OpenedFile, layout: FrameLayout, region: tuple[slice, ...]
    ) -> numpy.ndarray:
        """The values in ``region`` (slices with non-negative start <= stop, step 1)."""
        raise NotImplementedError

    def stored_chunk(
        self, file: OpenedFile, layout: FrameLayout, coords: tuple[int, ...], meta: ZarrArrayMeta
    ) -> bytes | None:
        """The chunk at ``coords`` of a grid of ``meta.chunk_shape``, encoded as ``meta`` says,
        taken from the stored bytes; None when this file cannot provide it so."""
        return None

    # --- shared ---

    def layout(self, file: OpenedFile) -> FrameLayout:
        cached = self._cached
        if cached is None or cached[0] != file.identity:
            cached = (file.identity, self.parse(file))
            self._cached = cached  # a plain assignment: concurrent parses just repeat work
        layout = cached[1]
        self._check(layout, file)
        return layout

    def _check(self, layout: FrameLayout, file: OpenedFile) -> None:
        shape, dtype = self.expect
        if shape is not None and tuple(layout.shape) != tuple(shape):
            raise FileChanged(
                f"{file.name} holds an array of shape {list(layout.shape)}; this node expects "
                f"{list(shape)}"
            )
        if dtype is not None and layout.dtype.newbyteorder("=") != dtype.newbyteorder("="):
            raise FileChanged(
                f"{file.name} holds values of type {layout.dtype}; this node expects {dtype}"
            )

    def describe(self) -> FrameLayout:
        with opened(self.path) as file:
            return self.layout(file)

    def read(self, region: tuple[slice, ...]) -> numpy.ndarray:
        with opened(self.path) as file:
            return self.read_region(file, self.layout(file), region)

    def chunk(self, coords: tuple[int, ...], meta: ZarrArrayMeta) -> bytes | None:
        with opened(self.path) as file:
            layout = self.layout(file)
            if layout.reason is not None:
                return None
            return self.stored_chunk(file, layout, coords, meta)


# --- slicing ----------------------------------------------------------------------------------


def expand_slice(selection: Any, shape: tuple[int, ...]) -> tuple[int | builtins.slice, ...]:
    """A selection (NDSlice, tuple, int, slice, Ellipsis) as one int or slice per dimension."""
    parts = tuple(selection) if isinstance(selection, tuple | list) else (selection,)
    if any(p is Ellipsis for p in parts):
        at = next(i for i, p in enumerate(parts) if p is Ellipsis)
        rest = [p for p in parts[at + 1 :] if p is not Ellipsis]
        fill = max(len(shape) - at - len(rest), 0)
        parts = (*parts[:at], *(builtins.slice(None),) * fill, *rest)
    return NDSlice(*parts).expand(shape)


def bounding_box(
    selection: Any, shape: tuple[int, ...]
) -> tuple[tuple[builtins.slice, ...], tuple[Any, ...]]:
    """The smallest box (step-1 slices) holding a selection, and the index that takes the
    selection out of that box: formats read boxes, the caller applies steps and integers."""
    box: list[builtins.slice] = []
    post: list[int | builtins.slice] = []
    for part, size in zip(expand_slice(selection, shape), shape, strict=True):
        if isinstance(part, int):
            index = part % size
            box.append(builtins.slice(index, index + 1))
            post.append(0)
            continue
        selected = range(*part.indices(size))
        if not selected:
            box.append(builtins.slice(0, 0))
            post.append(builtins.slice(None))
            continue
        lo, hi = min(selected[0], selected[-1]), max(selected[0], selected[-1]) + 1
        box.append(builtins.slice(lo, hi))
        if selected.step == 1:
            post.append(builtins.slice(None))
        else:
            stop = selected[-1] - lo + (1 if selected.step > 0 else -1)
            post.append(
                builtins.slice(selected[0] - lo, stop if stop >= 0 else None, selected.step)
            )
    # The trailing Ellipsis keeps a 0-d array (not a numpy scalar) when every index is an int.
    return tuple(box), (*post, Ellipsis)


def box_shape(box: Sequence[builtins.slice]) -> tuple[int, ...]:
    return tuple(s.stop - s.start for s in box)


def run_all(function: Callable[[Any], None], items: Sequence[Any], item_bytes: int = 0) -> None:
    """Call ``function`` on every item, on a few threads when there are several.

    ``item_bytes``: the memory one call holds while it runs (a whole frame); the threads are
    limited so that together they hold about :data:`READ_BATCH_BYTES` at most.
    """
    workers = min(IO_WORKERS, len(items))
    if item_bytes > 0:
        workers = min(workers, READ_BATCH_BYTES // item_bytes)
    if workers <= 1:
        for item in items:
            function(item)
        return
    with ThreadPoolExecutor(max_workers=workers) as pool:
        for _ in pool.map(function, items):
            pass  # consume, so the first failure is raised here


def file_grid(shape: tuple[int, ...], count: int, stacked: bool) -> tuple[int, ...] | None:
    """The leading dimensions of ``shape`` that enumerate ``count`` stacked files (one file
    per cell), or None when no prefix of the shape multiplies to ``count``."""
    if not stacked:
        return ()
    product = 1
    for j, size in enumerate(shape, start=1):
        product *= size
        if product == count:
            return tuple(shape[:j])
        if product > count:
            break
    return None


# --- the adapter ------------------------------------------------------------------------------


class FileArrayAdapter(ArrayAdapterBase):
    """An array node read from one file, or from a sequence of files stacked along new
    leading dimensions (one file per cell of those dimensions).

    The files must all hold arrays of the same shape and type. A structure given by a catalog
    may also reshape the stack (upstream's sequences allow it): then reads load every file.
    """

    reader_type: ClassVar[type[FrameReader]]
    stacked: ClassVar[bool] = False
    # A catalog may declare another shape of as many elements: reads reshape the files'
    # values (see tiled.catalog.registered.DECLARED_CHANGES).
    declared_structure_changes: ClassVar[frozenset[str]] = frozenset({"shape"})

    def __init__(
        self,
        data_uris: Iterable[str],
        structure: ArrayStructure | None = None,
        *,
        metadata: dict[str, Any] | None = None,
        specs: Any = None,
    ):
        self._paths = [path_from_uri(uri) for uri in data_uris]
        if not self._paths:
            raise BadRequest(f"{type(self).__name__} needs at least one file")
        if not self.stacked and len(self._paths) != 1:
            raise BadRequest(f"{type(self).__name__} reads one file, got {len(self._paths)}")
        self._readers: OrderedDict[int, FrameReader] = OrderedDict()
        self._lock = threading.Lock()
        self._expect: tuple[tuple[int, ...] | None, numpy.dtype | None] = (None, None)
        # Whether the structure reshapes the files' arrays rather than stacking them; known
        # when the first file has been looked at.
        self._reshaped: bool | None = None
        first = None
        if structure is None:
            first = self._reader(0).describe()
            lead = (len(self._paths),) if self.stacked else ()
            chunks = ((1,) * len(self._paths),) if self.stacked else ()
            structure = ArrayStructure(
                data_type_from_numpy(first.dtype), chunks + first.chunks, lead + first.shape
            )
        super().__init__(structure, metadata=metadata, specs=specs)
        self._grid = file_grid(structure.shape, len(self._paths), self.stacked)
        self._frame = structure.shape[len(self._grid) :] if self._grid is not None else None
        self._set_expectation(None)
        if first is not None:
            self._decide_reshaped(first.shape)

    # --- construction from URIs and catalogs (upstream's signatures) ---

    @classmethod
    def from_catalog(
        cls, data_source: DataSource, node: Any, /, **parameters: Any
    ) -> FileArrayAdapter:
        uris = parameters.pop("data_uris", None) or parameters.pop("data_uri", None)
        if isinstance(uris, str):
            uris = [uris]
        return cls._build(
            list(uris or asset_uris(data_source)),
            structure=data_source.structure,
            metadata=node.metadata_,
            specs=node.specs,
        )

    @classmethod
    def _build(
        cls, uris: list[str], *, structure=None, metadata=None, specs=None
    ) -> FileArrayAdapter:
        return cls(uris, structure, metadata=metadata, specs=specs)

    # --- files ---

    @property
    def paths(self) -> list[Path]:
        return list(self._paths)

    def _set_expectation(self, frame: tuple[int, ...] | None) -> None:
        self._expect = (frame, self.structure().data_type.to_numpy_dtype())
        with self._lock:
            for reader in self._readers.values():
                reader.expect = self._expect

    def _reader(self, index: int) -> FrameReader:
        with self._lock:
            reader = self._readers.get(index)
            if reader is None:
                reader = self.reader_type(self._paths[index])
                reader.expect = self._expect
                self._readers[index] = reader
                if len(self._readers) > MAX_READERS:
                    self._readers.popitem(last=False)
            else:
                self._readers.move_to_end(index)
            return reader

    def _decide_reshaped(self, file_shape: tuple[int, ...]) -> None:
        self._reshaped = self._frame is None or tuple(file_shape) != tuple(self._frame)
        # From now on every file must hold the first file's shape.
        self._set_expectation(tuple(file_shape))

    def _is_reshaped(self) -> bool:
        if self._reshaped is None:
            self._decide_reshaped(self._reader(0).describe().shape)
        return bool(self._reshaped)

    def _file_index(self, lead: Sequence[int]) -> int:
        return int(numpy.ravel_multi_index(tuple(lead), self._grid)) if self._grid else 0

    # --- reading ---

    def read(self, slice: NDSlice = NDSlice()) -> numpy.ndarray:
        shape = self.structure().shape
        box, post = bounding_box(slice, shape)
        if self._is_reshaped():
            return self._read_reshaped()[box][post]
        return self._read_box(box)[post]

    def read_zarr_region(self, region: tuple[slice, ...]) -> numpy.ndarray:
        if self._is_reshaped():
            return self._read_reshaped()[region]
        return self._read_box(region)

    def _read_box(self, box: tuple[slice, ...]) -> numpy.ndarray:
        out = numpy.empty(box_shape(box), dtype=self.structure().data_type.to_numpy_dtype())
        if out.size == 0:
            return out
        g = len(self._grid)
        lead_box, frame_box = box[:g], box[g:]
        cells = list(itertools.product(*(range(s.start, s.stop) for s in lead_box)))

        def fill(cell: tuple[int, ...]) -> None:
            at = tuple(i - s.start for i, s in zip(cell, lead_box, strict=True))
            out[at] = self._reader(self._file_index(cell)).read(frame_box)

        run_all(fill, cells, self._frame_bytes())
        return out

    def _frame_bytes(self) -> int:
        """The bytes of one whole file's values (what a reader may decode to read a part);
        not reshaped, a file holds the structure's trailing dimensions."""
        itemsize = self.structure().data_type.to_numpy_dtype().itemsize
        return math.prod(self._frame or ()) * itemsize

    def _read_reshaped(self) -> numpy.ndarray:
        frame = self._reader(0).describe()  # every other file must match it (the expectation)
        size = math.prod(frame.shape)
        shape = self.structure().shape
        if size * len(self._paths) != math.prod(shape):
            raise FileChanged(
                f"The files hold {size * len(self._paths)} values, which cannot be shaped as "
                f"this node's {list(shape)}"
            )
        # Each file's values go straight to their place in the result: no second copy.
        flat = numpy.empty(
            size * len(self._paths), dtype=self.structure().data_type.to_numpy_dtype()
        )
        whole = tuple(slice(0, n) for n in frame.shape)

        def load(index: int) -> None:
            flat[index * size : (index + 1) * size] = self._reader(index).read(whole).ravel()

        run_all(load, range(len(self._paths)), size * frame.dtype.itemsize)
        return flat.reshape(shape)

    # --- zarr ---

    def _stored_plan(self, budget: int) -> StoredChunks | None:
        if self._is_reshaped():
            return None
        return self._reader(0).describe().stored(budget)

    async def to_zarr_meta(self, options: ZarrOptions | None = None) -> ZarrArrayMeta:
        # Every answer here opens a file (its layout, its metadata): on a worker thread.
        return await run_sync(self._zarr_meta, options or ZarrOptions())

    def _zarr_meta(self, options: ZarrOptions) -> ZarrArrayMeta:
        plan = self._stored_plan(options.chunk_budget_bytes)
        if plan is None:
            return self.default_zarr_meta(options)
        structure = self.structure()
        return ZarrArrayMeta(
            shape=structure.shape,
            chunk_shape=(1,) * len(self._grid) + tuple(plan.chunk_shape),
            dtype=plan.dtype,
            fill_value=plan.fill_value,
            compressors=plan.compressors,
            dimension_names=structure.dims,
            attributes=zarr_attributes(self),
        )

    async def to_zarr_chunk(self, coords: Sequence[int], meta: ZarrArrayMeta) -> bytes:
        region = meta.chunk_region(coords)  # refuses coordinates outside the grid first
        return await run_sync(self._zarr_chunk, tuple(coords), region, meta)

    def _zarr_chunk(
        self, coords: tuple[int, ...], region: tuple[slice, ...], meta: ZarrArrayMeta
    ) -> bytes:
        if self._is_reshaped():
            return meta.encode_chunk(self.read_zarr_region(region))
        g = len(self._grid)
        if any(size != 1 for size in meta.chunk_shape[:g]):
            return meta.encode_chunk(self._read_box(region))  # chunks spanning several files
        reader = self._reader(self._file_index(coords[:g]))
        frame_meta = _frame_meta(meta, g)
        stored = reader.chunk(coords[g:], frame_meta)
        if stored is not None:
            return stored
        # This file's bytes are not in the declared form (another layout than the first
        # file's, or no pass-through at all): decode it and encode into the declared chain.
        values = reader.read(region[g:])
        return meta.encode_chunk(values.reshape(box_shape(region)))

    # --- metadata ---

    def zarr_view(self) -> dict[str, str]:
        """How the zarr view serves this node's chunks, for its metadata."""
        try:
            if self._is_reshaped():
                return re_encoded_view("the node reshapes its files' arrays")
            layout = self._reader(0).describe()
        except TiledError as err:
            return unavailable_view(str(err))
        if layout.reason is not None:
            return re_encoded_view(layout.reason)
        plan = layout.stored(ZarrOptions().chunk_budget_bytes)
        codec = plan.codec if plan else "none"
        if self.stacked:
            note = "files laid out unlike the first are decoded and re-encoded"
            return stored_chunks_view(codec, note=note)
        return stored_chunks_view(codec)

    def file_metadata(self) -> dict[str, Any]:
        """What the file says about itself (single files only: a sequence has many)."""
        if self.stacked:
            return {}
        try:
            return dict(self._reader(0).describe().metadata)
        except TiledError:
            return {}

    def metadata(self) -> dict[str, Any]:
        # Never raises: a listing must go on when one file is unreadable; the reason is shown.
        return with_zarr_view({**self.file_metadata(), **self._metadata}, self.zarr_view())

    def __repr__(self) -> str:
        s = self.structure()
        return f"<{type(self).__name__} shape={list(s.shape)} files={len(self._paths)}>"


def _frame_meta(meta: ZarrArrayMeta, lead: int) -> ZarrArrayMeta:
    """The part of ``meta`` one file of a stack covers (the stacking dimensions dropped)."""
    if not lead:
        return meta
    return ZarrArrayMeta(
        shape=meta.shape[lead:],
        chunk_shape=meta.chunk_shape[lead:],
        dtype=meta.dtype,
        fill_value=meta.fill_value,
        compressors=meta.compressors,
    )


class FileSequenceAdapter(FileArrayAdapter):
    """Upstream's base of file sequences: files stacked along a new first dimension, one
    chunk per file along it. ``chunks`` (from the data source's properties) is accepted for
    compatibility; the files' own shapes say whether the structure reshapes them."""

    stacked = True

    def __init__(
        self,
        data_uris: Iterable[str] | None = None,
        structure: ArrayStructure | None = None,
        *,
        metadata: dict[str, Any] | None = None,
        specs: Any = None,
        chunks: Any = None,
    ):
        super().__init__(data_uris or [], structure, metadata=metadata, specs=specs)

    @classmethod
    def from_uris(cls, *data_uris: str, **parameters: Any) -> FileSequenceAdapter:
        # Upstream takes no parameters here; structure, metadata and specs are allowed.
        return cls._build(
            list(data_uris),
            structure=parameters.get("structure"),
            metadata=parameters.get("metadata"),
            specs=parameters.get("specs"),
        )


class SingleFileAdapter(FileArrayAdapter):
    """Upstream's single-file adapters: ``Adapter(data_uri, structure=None, *, metadata, specs)``."""

    def __init__(
        self,
        data_uri: str,
        structure: ArrayStructure | None = None,
        *,
        metadata: dict[str, Any] | None = None,
        specs: Any = None,
    ):
        super().__init__([data_uri], structure, metadata=metadata, specs=specs)

    @classmethod
    def from_uris(cls, data_uri: str, **parameters: Any) -> SingleFileAdapter:
        # Upstream ignores other parameters here; so do we, so its catalogs open alike.
        return cls._build(
            [data_uri],
            structure=parameters.get("structure"),
            metadata=parameters.get("metadata"),
            specs=parameters.get("specs"),
        )

    @classmethod
    def _build(
        cls, uris: list[str], *, structure=None, metadata=None, specs=None
    ) -> SingleFileAdapter:
        if len(uris) != 1:
            raise BadRequest(f"{cls.__name__} reads one file, got {len(uris)}")
        return cls(uris[0], structure, metadata=metadata, specs=specs)


__all__ = [
    "DECODED",
    "FileArrayAdapter",
    "FileChanged",
    "FileSequenceAdapter",
    "FileUnreadable",
    "FrameLayout",
    "FrameReader",
    "OpenedFile",
    "READ_BATCH_BYTES",
    "SingleFileAdapter",
    "StoredChunks",
    "bounding_box",
    "opened",
]
