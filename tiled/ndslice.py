"""N-dimensional slices and block indices.

:class:`NDSlice` is a tuple of ``int``, ``slice`` and at most one ``Ellipsis``: what ``arr[...]``
accepts. It is read from and written to the query syntax (``"0,2:5,::2"``), numpy's string
syntax and JSON, and it can be expanded for a shape, composed with another slice, split into
pieces of bounded size (the client fetches large selections in several requests) and mapped
onto a chunk grid. :class:`NDBlock` is the same over the chunk grid of an array.

An *expanded* slice (``expand_for_shape``) has one part per dimension, every integer
non-negative and in range, and every slice with a non-negative ``start``, a step and a tight
``stop``; a reversed slice that runs through index 0 has ``stop=None`` (a negative stop would
count from the end in numpy). The extent of an expanded slice is known without the shape.
"""

from __future__ import annotations

import bisect
import builtins
import itertools
import math
import operator
import re
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from .errors import InvalidSlice

Chunks = tuple[tuple[int, ...], ...]

_INT = re.compile(r"^-?\d+$")


class SliceTypeError(InvalidSlice, TypeError):
    """A part that is neither an integer, a slice nor ``...`` (a TypeError, as numpy raises)."""


def is_ellipsis(arg: Any) -> bool:
    return arg is Ellipsis


def _as_part(part: Any) -> Any:
    if part is Ellipsis or isinstance(part, builtins.slice):
        return part
    try:
        return operator.index(part)  # numpy integers too
    except TypeError:
        raise SliceTypeError(
            f"Slice components must be integers, slices or '...', not {part!r}; "
            "use NDSlice.from_numpy_str() or NDSlice.from_json() to parse text or JSON"
        ) from None


def _steps(start: int, stop: int | None, step: int) -> int:
    """How many elements an expanded 1-D slice selects (a reversed slice whose ``stop`` is None
    or negative runs through index 0)."""
    if step < 0 and (stop is None or stop < 0):
        stop = -1
    elif stop is None or stop < 0:
        raise ValueError("A slice open or counted from the end has no extent without a shape")
    return len(range(start, stop, step))


def _slice_steps(part: builtins.slice) -> int:
    if part.start is None or part.start < 0:
        raise ValueError(f"{part} is not expanded: expand it for a shape first")
    return _steps(part.start, part.stop, part.step or 1)


def _tight_slice(start: int, count: int, step: int) -> builtins.slice:
    """The expanded form of ``count`` elements from ``start`` by ``step``."""
    if count <= 0:
        return builtins.slice(0, 0, step)
    last = start + step * (count - 1)
    stop = last + (1 if step > 0 else -1)
    return builtins.slice(start, None if stop < 0 else stop, step)


def _expand_1d(part: Any, size: int, dim: int) -> int | builtins.slice:
    if isinstance(part, int):
        if not -size <= part < size:
            raise IndexError(f"Index {part} is out of bounds for axis {dim} with size {size}")
        return part % size
    if part.step == 0:
        raise ValueError("Slice step cannot be zero")
    start, stop, step = part.indices(size)
    return _tight_slice(start, len(range(start, stop, step)), step)


class NDSlice(tuple):
    """A tuple of ``int``, ``slice`` and at most one ``Ellipsis``, one part per leading dimension
    (it may be shorter than the array's rank: the rest are taken whole)."""

    def __new__(cls, *parts: Any) -> NDSlice:
        if len(parts) == 1 and (isinstance(parts[0], tuple | list) or parts[0] is None):
            parts = tuple(parts[0] or ())
        checked = tuple(_as_part(p) for p in parts)
        if sum(p is Ellipsis for p in checked) > 1:
            raise InvalidSlice(f"A slice can hold only one '...', not {checked}")
        return super().__new__(cls, checked)

    def __bool__(self) -> bool:
        """False when the slice takes everything (no parts, or only ``:`` and ``...``)."""
        return not all(p is Ellipsis or _is_whole(p) for p in self)

    def __getitem__(self, key: Any) -> Any:
        """``slc1[slc2]`` with an NDSlice key composes: ``arr[slc1][slc2] == arr[slc1[slc2]]``."""
        if key is Ellipsis:
            return self
        if isinstance(key, NDSlice):
            return compose_slices(self, key)
        return super().__getitem__(key)

    # ---- text and JSON ----

    @classmethod
    def from_query(cls, text: str | None) -> NDSlice:
        """Parse a ``slice=`` query parameter (``"0,2:5,::2"``, optionally in ``()``/``[]``);
        empty means everything. A zero step is refused here: it can never be applied."""
        result = cls.from_numpy_str(text or "")
        if any(isinstance(p, builtins.slice) and p.step == 0 for p in result):
            raise InvalidSlice(f"Slice step cannot be zero in {text!r}")
        return result

    @classmethod
    def from_numpy_str(cls, arg: str) -> NDSlice:
        """Parse numpy's index syntax, e.g. ``"(1:3, 4, ::2, ...)"``, as ``numpy.s_`` would;
        anything else (expressions, names, stray characters) is an :class:`InvalidSlice`."""
        text = arg.strip().strip("()[]").strip()
        if not text:
            return cls()
        return cls(*(_parse_part(p.strip(), arg) for p in text.split(",")))

    def to_query(self) -> str:
        return ",".join(_format_part(p, keep_unit_step=False) for p in self)

    def to_numpy_str(self) -> str:
        return ",".join(_format_part(p, keep_unit_step=True) for p in self)

    @classmethod
    def from_json(cls, ser: Iterable[Any]) -> NDSlice:
        """From a list of integers and ``{"start", "stop", "step"}`` objects."""
        parts: list[Any] = []
        for item in ser:
            if isinstance(item, dict):
                bounds = [item.get(k) for k in ("start", "stop", "step")]
                if not all(b is None or isinstance(b, int) for b in bounds):
                    raise InvalidSlice(f"Slice bounds must be integers or null: {item!r}")
                parts.append(builtins.slice(*bounds))
            elif isinstance(item, int) and not isinstance(item, bool):
                parts.append(item)
            else:
                raise InvalidSlice(f"Cannot read a slice component from {item!r}")
        return cls(*parts)

    def to_json(self, ndim: int | None = None) -> list[Any]:
        """A list of integers and ``{"start", "stop", "step"}`` objects (JSON has no Ellipsis:
        it becomes as many ``{}`` as dimensions it stands for, which needs ``ndim`` unless it
        is the last part). With ``ndim``, the list is padded with ``{}`` to that length."""
        explicit = [p for p in self if p is not Ellipsis]
        if Ellipsis in self and self[-1] is not Ellipsis and ndim is None:
            raise InvalidSlice("A slice with '...' before its end needs ndim to become JSON")
        if ndim is not None and ndim < len(explicit):
            raise InvalidSlice(f"ndim={ndim} is less than the {len(explicit)} explicit parts")
        width = len(self) if ndim is None else ndim
        head = list(self)
        tail: list[Any] = []
        if Ellipsis in head:
            at = head.index(Ellipsis)
            head, tail = head[:at], head[at + 1 :]
        fill: list[Any] = [builtins.slice(None)] * (width - len(head) - len(tail))
        return [_json_part(p) for p in [*head, *fill, *tail]]

    # ---- shapes ----

    def _resolved(self, ndim: int) -> tuple[Any, ...]:
        """The parts with ``...`` replaced by whole slices, padded to ``ndim``."""
        parts = list(self)
        explicit = len(parts) - (Ellipsis in parts)
        if explicit > ndim:
            raise IndexError(f"Too many indices ({explicit}) for an array of rank {ndim}")
        fill = [builtins.slice(None)] * (ndim - explicit)
        if Ellipsis in parts:
            at = parts.index(Ellipsis)
            return tuple(parts[:at] + fill + parts[at + 1 :])
        return tuple(parts + fill)

    def expand(self, shape: Sequence[int]) -> tuple[int | builtins.slice, ...]:
        """Pad with whole slices (and resolve ``...``) to the rank of ``shape``, refusing too
        many parts or an integer out of range with :class:`InvalidSlice` (the server's 422)."""
        try:
            parts = self._resolved(len(shape))
        except IndexError:
            raise InvalidSlice(
                f"Slice {self.to_query()!r} has more dimensions than shape {list(shape)}"
            ) from None
        for part, size in zip(parts, shape, strict=True):
            if isinstance(part, int) and not -size <= part < size:
                raise InvalidSlice(f"Index {part} is out of range for a dimension of size {size}")
        return parts

    def expand_for_shape(self, shape: Sequence[int]) -> NDSlice:
        """The expanded form for an array of ``shape`` (see the module's docstring): the same
        selection, with every part explicit. IndexError for an index out of range."""
        parts = self._resolved(len(shape))
        pairs = enumerate(zip(parts, shape, strict=True))
        return type(self)(*(_expand_1d(part, size, dim) for dim, (part, size) in pairs))

    def forward_for_shape(self, shape: Sequence[int]) -> tuple[NDSlice, NDSlice]:
        """The selection as a slice whose steps are all positive (zarr and h5py refuse negative
        steps) and the slice that puts what it reads in this slice's order."""
        forward: list[Any] = []
        reorder: list[Any] = []
        for part in self.expand_for_shape(shape):
            if isinstance(part, int):
                forward.append(part)  # its dimension is dropped: nothing to reorder
                continue
            count = _slice_steps(part)
            if part.step > 0 or count == 0:
                forward.append(part if count else builtins.slice(0, 0, 1))
                reorder.append(builtins.slice(None))
                continue
            lowest = part.start + part.step * (count - 1)
            forward.append(builtins.slice(lowest, part.start + 1, -part.step))
            reorder.append(builtins.slice(None, None, -1))
        return NDSlice(*forward), NDSlice(*reorder)

    def is_expanded(self) -> bool:
        """Whether the extent of every part is known without a shape (no ``...``, no open or
        negative bounds): composing needs this of the left-hand slice."""
        for part in self:
            if part is Ellipsis or (isinstance(part, int) and part < 0):
                return False
            if isinstance(part, builtins.slice):
                try:
                    _slice_steps(part)
                except ValueError:
                    return False
        return True

    def is_valid_for_shape(self, shape: Sequence[int]) -> bool:
        try:
            self.expand_for_shape(shape)
        except (IndexError, ValueError):
            return False
        return True

    def shape_after_slice(self, shape: Sequence[int]) -> tuple[int, ...]:
        """The shape of ``arr[self]`` for an array of ``shape``."""
        expanded = self.expand_for_shape(shape)
        return tuple(_slice_steps(p) for p in expanded if isinstance(p, builtins.slice))

    def flat_indices(self, shape: Sequence[int]) -> tuple[int, ...]:
        """The C-order positions (in an array of ``shape``) that this slice selects, in the
        order numpy reads them: which files of a stacked sequence a selection touches."""
        import numpy

        grid = numpy.arange(math.prod(shape)).reshape(tuple(shape))
        return tuple(grid[self.expand_for_shape(shape)].ravel().tolist())

    def unsqueeze(self) -> NDSlice:
        """Integers as one-element slices, so that no dimension is dropped."""
        return type(self)(*(_unit_slice(p) if isinstance(p, int) else p for p in self))

    def is_scalar(self, shape: Sequence[int]) -> bool:
        """Whether the slice picks exactly one element of an array of ``shape``."""
        if len(self) != len(shape):
            return False
        try:
            return all(
                isinstance(p, int) or _slice_steps(p) == 1 for p in self.expand_for_shape(shape)
            )
        except (IndexError, ValueError):
            return False


def _is_whole(part: Any) -> bool:
    return (
        isinstance(part, builtins.slice)
        and part.start in (None, 0)
        and part.stop is None
        and part.step in (None, 1)
    )


def _unit_slice(index: int) -> builtins.slice:
    return builtins.slice(index, index + 1 if index != -1 else None)


def _parse_part(part: str, whole: str) -> Any:
    if part == "...":
        return Ellipsis
    if _INT.match(part):
        return _int(part, whole)
    pieces = [p.strip() for p in part.split(":")]
    if len(pieces) not in (2, 3) or not all(p == "" or _INT.match(p) for p in pieces):
        raise InvalidSlice(f"Could not parse slice {whole[:200]!r}")
    return builtins.slice(*(_int(p, whole) if p else None for p in pieces))


def _int(text: str, whole: str) -> int:
    try:
        return int(text)
    except ValueError:  # past the digits int() converts (4300)
        raise InvalidSlice(f"Could not parse slice {whole[:200]!r}: a number is too long") from None


def _format_part(part: Any, *, keep_unit_step: bool) -> str:
    if part is Ellipsis:
        return "..."
    if isinstance(part, int):
        return str(part)
    text = ":".join("" if v is None else str(v) for v in (part.start, part.stop))
    if part.step is None or (part.step == 1 and not keep_unit_step):
        return text
    return f"{text}:{part.step}"


def _json_part(part: int | builtins.slice) -> Any:
    if isinstance(part, int):
        return part
    bounds = {"start": part.start, "stop": part.stop, "step": part.step}
    return {k: v for k, v in bounds.items() if v is not None}


class NDBlock(NDSlice):
    """Indices into the chunk grid of an array: an integer picks one chunk along a dimension,
    a slice (of step 1) a run of adjacent chunks."""

    def __new__(cls, *parts: Any) -> NDBlock:
        block = super().__new__(cls, *parts)
        for part in block:
            if isinstance(part, builtins.slice) and part.step not in (None, 1):
                raise InvalidSlice(f"A block can only take adjacent chunks (step 1), not {part}")
        return block

    @classmethod
    def from_query(cls, text: str | None) -> NDBlock:
        """Parse a ``block=`` query parameter: comma-separated chunk indices."""
        text = (text or "").strip()
        if not text:
            return cls()
        try:
            return cls(*(int(p) for p in text.split(",")))
        except ValueError:
            raise InvalidSlice(f"Could not parse block {text!r}") from None

    def _grid_parts(self, chunks: Chunks) -> tuple[Any, ...]:
        return self.expand_for_shape(tuple(len(c) for c in chunks))

    def slices(self, chunks: Chunks) -> tuple[builtins.slice, ...]:
        """The region of the array covered by this block, given dask-style chunks; a wrong rank
        or a block off the grid is an :class:`InvalidSlice` (the server's 422)."""
        if len(self) != len(chunks) or Ellipsis in self:
            raise InvalidSlice(
                f"Block {list(self)} has {len(self)} indices; the array has {len(chunks)} dimensions"
            )
        for part, dim_chunks in zip(self, chunks, strict=True):
            if isinstance(part, int):
                inside = 0 <= part < len(dim_chunks)
            else:
                start, stop, _ = part.indices(len(dim_chunks))
                inside = (part.start is None or part.start >= 0) and start < stop
            if not inside:
                raise InvalidSlice(f"Block {list(self)} is outside the chunk grid")
        return tuple(self.slice_from_chunks(chunks))

    def slice_from_chunks(self, chunks: Chunks) -> NDSlice:
        """The slice of the whole array that this block covers (one part per dimension)."""
        region = []
        for part, dim_chunks in zip(self._grid_parts(chunks), chunks, strict=True):
            offsets = (0, *itertools.accumulate(dim_chunks))
            first, last = (part, part + 1) if isinstance(part, int) else (part.start, part.stop)
            region.append(builtins.slice(offsets[first], offsets[last]))
        return NDSlice(*region)

    def shape_from_chunks(self, chunks: Chunks) -> tuple[int, ...]:
        """The shape of the array this block covers (every dimension kept)."""
        return tuple(s.stop - s.start for s in self.slice_from_chunks(chunks))

    def chunk_indices(self, chunks: Chunks) -> list[tuple[int, ...]]:
        """Every chunk index in this block, in C order."""
        axes = [
            [part] if isinstance(part, int) else range(part.start, part.stop)
            for part in self._grid_parts(chunks)
        ]
        return sorted(itertools.product(*axes))


# ---- merging ----


def _merge_dimension(column: tuple[Any, ...]) -> tuple[Any, bool]:
    """The merge of one dimension of several slices, and whether it differs among them.
    ValueError when the parts are neither equal nor adjacent runs of one step."""
    if all(p is Ellipsis for p in column):
        return Ellipsis, False
    if any(p is Ellipsis for p in column):
        raise ValueError("'...' must be in the same place in every slice to merge them")
    if all(isinstance(p, int) for p in column):
        values = sorted(set(column))
        if len(values) == 1:
            return values[0], False
        if values != list(range(values[0], values[-1] + 1)):
            raise ValueError(f"Indices {values} are not consecutive")
        return builtins.slice(values[0], values[-1] + 1), True
    parts = [builtins.slice(p, p + 1) if isinstance(p, int) else p for p in column]
    steps = {p.step or 1 for p in parts}
    if len(steps) != 1:
        raise ValueError("Slices of different steps cannot be merged")
    (step,) = steps
    runs = sorted(
        {(p.start or 0, p.stop) for p in parts}, key=operator.itemgetter(0), reverse=step < 0
    )
    if len(runs) == 1:
        return column[0], False
    # Adjacent runs chain: each one stops where the next one starts. Two runs from one start
    # overlap (whichever of them the sort put first: the order of equal starts is arbitrary).
    for (first, stop), (start, _) in itertools.pairwise(runs):
        if stop is None or stop != start or first == start:
            raise ValueError(f"Slices {parts} are not adjacent")
    return builtins.slice(runs[0][0], runs[-1][1], parts[0].step), True


def merge_slices(*args: NDSlice) -> NDSlice:
    """One slice selecting what the given slices select together, when they are equal in every
    dimension but one where they are adjacent (``0:3`` and ``3:6``, or indices ``0, 1, 2``).
    An :class:`NDBlock` when every argument is one. ValueError when they cannot be merged."""
    if len(args) == 1:
        return args[0]
    if len({len(a) for a in args}) != 1:
        raise ValueError("Slices of different lengths cannot be merged")
    merged = [_merge_dimension(column) for column in zip(*args, strict=True)]
    if sum(changed for _, changed in merged) > 1:
        raise ValueError("Slices that differ in more than one dimension cannot be merged")
    kind = NDBlock if all(isinstance(a, NDBlock) for a in args) else NDSlice
    return kind(*(part for part, _ in merged))


# ---- splitting ----


def split_1d(
    start: int,
    stop: int | None,
    step: int,
    max_len: int,
    pref_splits: Iterable[int] | None = None,
) -> list[tuple[int, int | None]]:
    """Cut the expanded slice ``start:stop:step`` into adjacent ``(start, stop)`` runs of at
    most ``max_len`` elements each, as few as possible and about equal; a cut may move to one
    of ``pref_splits`` (chunk boundaries, say) that stays within ``max_len``.

    A reversed slice through index 0 (``stop`` None or negative) ends with ``stop=None``."""
    if start == stop:
        return [(start, stop)]
    through_zero = step < 0 and (stop is None or stop < 0)
    end = -1 if through_zero else stop
    count = len(range(start, end, step))
    on_grid = range(start, end, step)
    # Preferred cuts as element counts from ``start``, strictly inside the selection.
    preferred = sorted({(x - start) // step for x in pref_splits or () if x in on_grid} - {0})
    cuts = [0]
    while count - cuts[-1] > max_len:
        here = cuts[-1]
        remaining = count - here
        ideal = here + math.ceil(remaining / math.ceil(remaining / max_len))
        window = preferred[
            bisect.bisect_right(preferred, here) : bisect.bisect_right(preferred, here + max_len)
        ]
        cuts.append(min(window, key=lambda c: abs(c - ideal)) if window else ideal)
    bounds = [start + step * c for c in cuts]
    return [
        *itertools.pairwise(bounds),
        (bounds[-1], None if through_zero else stop),
    ]


def split_slice(
    arr_slice: NDSlice,
    max_size: int,
    pref_splits: Sequence[Sequence[int]] | None = None,
) -> dict[tuple[int, ...], NDSlice]:
    """Cut an expanded slice into pieces of at most ``max_size`` elements, keyed by their
    position in the grid of pieces (one key entry per dimension the selection keeps).

    Leading dimensions are cut first, so that each piece is whole trailing rows: contiguous in
    C order, in the source and in the result. ``pref_splits`` gives, per dimension, positions
    where a cut is preferred (the chunk boundaries of the source).

    A slice with no parts (everything, shape unknown) is returned whole."""
    arr_slice = NDSlice(arr_slice)
    if not len(arr_slice):
        return {(): arr_slice}
    if not arr_slice.is_expanded():
        raise ValueError(f"Expand {arr_slice} for the array's shape before splitting it")
    parts = arr_slice.unsqueeze()
    counts = [_slice_steps(p) for p in parts]
    pieces: list[list[Any]] = [[p] for p in parts]
    for dim, part in enumerate(parts if math.prod(counts) else ()):  # nothing to cut if empty
        trailing = math.prod(counts[dim + 1 :])
        max_len = max(1, max_size // trailing)
        runs = split_1d(
            part.start,
            part.stop,
            part.step or 1,
            max_len,
            pref_splits[dim] if pref_splits is not None else None,
        )
        pieces[dim] = [builtins.slice(a, b, part.step) for a, b in runs]
        if trailing <= max_size:
            break
    # Dimensions indexed by an integer stay integers and take no place in the keys.
    axes = [
        [original] if isinstance(original, int) else dim_pieces
        for original, dim_pieces in zip(arr_slice, pieces, strict=True)
    ]
    kept = [i for i, original in enumerate(arr_slice) if not isinstance(original, int)]
    return {
        tuple(position[i] for i in kept): NDSlice(*(axes[d][i] for d, i in enumerate(position)))
        for position in itertools.product(*(range(len(a)) for a in axes))
    }


# ---- composition ----


def _compose_1d(outer: builtins.slice, inner: Any) -> int | builtins.slice:
    """``inner`` applied to what the expanded slice ``outer`` selects, as one index of the
    original axis."""
    step = outer.step or 1
    length = _slice_steps(outer)
    if isinstance(inner, int):
        if not -length <= inner < length:
            raise IndexError(f"Index {inner} is out of bounds for a selection of {length}")
        return outer.start + step * (inner % length)
    first, stop, inner_step = inner.indices(length)
    count = len(range(first, stop, inner_step))
    return _tight_slice(outer.start + step * first, count, step * inner_step)


def compose_slices(slc1: NDSlice, slc2: NDSlice) -> NDSlice:
    """One slice equal to applying ``slc1`` then ``slc2``: ``arr[slc1][slc2]`` is
    ``arr[compose_slices(slc1, slc2)]``.

    ``slc1`` must be expanded (its extents known). A ``...`` in ``slc2`` other than at its end
    is resolved as if ``slc1`` covered every dimension of the array, as an expanded slice does.
    """
    kind = NDBlock if isinstance(slc1, NDBlock) and isinstance(slc2, NDBlock) else NDSlice
    slc1 = slc1 if isinstance(slc1, NDSlice) else NDSlice(slc1)
    slc2 = slc2 if isinstance(slc2, NDSlice) else NDSlice(slc2)
    if not slc2:
        return slc1
    if not slc1:
        return slc2
    if not slc1.is_expanded():
        raise ValueError(f"Cannot compose with {slc1}: its extent needs the array's shape")
    kept = [i for i, p in enumerate(slc1) if isinstance(p, builtins.slice)]
    inner = list(slc2)
    if Ellipsis in inner:
        at = inner.index(Ellipsis)
        if at == len(inner) - 1:
            inner = inner[:at]
        elif len(inner) - 1 > len(kept):
            raise ValueError(f"{slc2} has more parts than the dimensions {slc1} leaves")
        else:
            fill = [builtins.slice(None)] * (len(kept) - len(inner) + 1)
            inner = inner[:at] + fill + inner[at + 1 :]
    result: list[Any] = list(slc1)
    for position, part in zip(kept, inner, strict=False):
        result[position] = _compose_1d(slc1[position], part)
    # Parts beyond the dimensions slc1 keeps apply to the dimensions it did not name.
    return kind(*result, *inner[len(kept) :])


# ---- chunk grids ----


def block_for_slice(chunks: Chunks, slice: Sequence[Any] | None = None) -> tuple[NDBlock, NDSlice]:
    """The chunks a slice of a chunked array touches (an :class:`NDBlock` of adjacent chunks)
    and the slice to apply to those chunks put together to get the selection. Reading by
    block this way spares the source a general slicing path. IndexError out of range."""
    wanted = NDSlice(slice or ())
    if not wanted:
        return NDBlock(*(builtins.slice(0, len(c)) for c in chunks)), NDSlice()
    shape = tuple(sum(c) for c in chunks)
    block: list[Any] = []
    within: list[Any] = []
    for part, dim_chunks in zip(wanted.expand_for_shape(shape), chunks, strict=True):
        offsets = (0, *itertools.accumulate(dim_chunks))

        def chunk_of(index: int, offsets: tuple[int, ...] = offsets) -> int:
            return bisect.bisect_right(offsets, index) - 1

        if isinstance(part, int):
            chunk = chunk_of(part)
            block.append(chunk)
            within.append(part - offsets[chunk])
            continue
        count = _slice_steps(part)
        if count == 0:
            block.append(builtins.slice(0, 0))
            within.append(builtins.slice(0, 0))
            continue
        step = part.step or 1
        ends = (part.start, part.start + step * (count - 1))
        first, last = chunk_of(min(ends)), chunk_of(max(ends))
        block.append(first if first == last else builtins.slice(first, last + 1))
        base = offsets[first]
        stop = None if part.stop is None or part.stop - base < 0 else part.stop - base
        within.append(builtins.slice(part.start - base, stop, None if step == 1 else step))
    return NDBlock(*block), NDSlice(*within)


def build_nested_grid(
    indices: Sequence[tuple[int, ...]],
    callable: Callable[[tuple[int, ...]], Any] | None = None,  # upstream's parameter name
    dim: int = 0,
) -> Any:
    """Nest C-ordered N-dimensional indices into lists, one level per dimension, as
    ``numpy.block`` takes them; ``callable`` (if given) turns each index into its leaf."""
    if dim == len(indices[0]):
        return callable(indices[0]) if callable is not None else indices[0]
    return [
        build_nested_grid(list(group), callable, dim + 1)
        for _, group in itertools.groupby(indices, key=operator.itemgetter(dim))
    ]


__all__ = [
    "NDBlock",
    "NDSlice",
    "block_for_slice",
    "build_nested_grid",
    "compose_slices",
    "is_ellipsis",
    "merge_slices",
    "patched_region",
    "split_1d",
    "split_slice",
]


def patched_region(
    shape: tuple[int, ...],
    offset: Sequence[int],
    data_shape: tuple[int, ...],
    extend: bool,
    *,
    stored: bool = True,
) -> tuple[tuple[slice, ...], tuple[int, ...]]:
    """Where data of ``data_shape`` at ``offset`` (missing trailing offsets are 0, as upstream
    pads them) lands, and the array's shape after the write; refuses a region outside an array
    it may not grow."""
    from .errors import BadRequest, Conflict

    if len(data_shape) != len(shape):
        raise BadRequest(f"The data have {len(data_shape)} dimensions; the array has {len(shape)}")
    # An empty offset names no position at all (upstream refuses it too); a shorter one is the
    # upstream client's spelling of "along the first dimensions".
    if (shape and not offset) or len(offset) > len(shape) or any(o < 0 for o in offset):
        raise BadRequest(f"Invalid offset {list(offset)} for an array of shape {list(shape)}")
    offset = tuple(offset) + (0,) * (len(shape) - len(offset))
    region = tuple(slice(o, o + n) for o, n in zip(offset, data_shape, strict=True))
    needed = tuple(max(size, r.stop) for size, r in zip(shape, region, strict=True))
    if needed != tuple(shape) and not extend:
        remedy = (
            "Use ?extend=true to grow the array."
            if stored
            else "A write that is not stored (persist=false) cannot grow the array."
        )
        raise Conflict(
            f"Data of shape {list(data_shape)} at offset {list(offset)} do not fit within the "
            f"array's shape {list(shape)}. {remedy}"
        )
    return region, needed
