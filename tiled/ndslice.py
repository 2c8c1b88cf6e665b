"""N-dimensional slices and block indices, parsed from and written to upstream's query syntax."""

from __future__ import annotations

import re
from typing import Any

from .errors import InvalidSlice

_INT = re.compile(r"^-?\d+$")


class NDSlice(tuple):
    """A tuple of ``int`` and ``slice`` objects, one per leading dimension (may be shorter)."""

    def __new__(cls, *parts: Any) -> NDSlice:
        if len(parts) == 1 and isinstance(parts[0], tuple | list):
            parts = tuple(parts[0])
        for part in parts:
            if not isinstance(part, int | slice) and part is not Ellipsis:
                raise InvalidSlice(f"Slice components must be integers or slices, not {part!r}")
        return super().__new__(cls, parts)

    @classmethod
    def from_query(cls, text: str | None) -> NDSlice:
        """Parse ``"0,2:5,::2"`` (optionally wrapped in ``()`` or ``[]``); empty means everything."""
        text = (text or "").strip()
        if text[:1] in "([" and text[-1:] in ")]":
            text = text[1:-1]
        if not text:
            return cls()
        return cls(*(_parse_part(p.strip(), text) for p in text.split(",")))

    def to_query(self) -> str:
        return ",".join(_format_part(p) for p in self)

    def expand(self, shape: tuple[int, ...]) -> tuple[slice | int, ...]:
        """Pad with full slices to the rank of ``shape``; refuse too many components."""
        if len(self) > len(shape):
            raise InvalidSlice(
                f"Slice {self.to_query()!r} has more dimensions than shape {list(shape)}"
            )
        for part, size in zip(self, shape, strict=False):
            if isinstance(part, int) and not -size <= part < size:
                raise InvalidSlice(f"Index {part} is out of range for a dimension of size {size}")
        return tuple(self) + (slice(None),) * (len(shape) - len(self))


def _parse_part(part: str, whole: str) -> int | slice:
    if _INT.match(part):
        return int(part)
    pieces = part.split(":")
    if len(pieces) not in (2, 3) or not all(p == "" or _INT.match(p) for p in pieces):
        raise InvalidSlice(f"Could not parse slice {whole!r}")
    values = [int(p) if p else None for p in pieces]
    if len(values) == 3 and values[2] == 0:
        raise InvalidSlice(f"Slice step cannot be zero in {whole!r}")
    return slice(*values)


def _format_part(part: int | slice) -> str:
    if isinstance(part, int):
        return str(part)
    text = ":".join("" if v is None else str(v) for v in (part.start, part.stop))
    return text if part.step in (None, 1) else f"{text}:{part.step}"


class NDBlock(tuple):
    """Block coordinates, one non-negative integer per dimension."""

    def __new__(cls, *parts: int) -> NDBlock:
        if len(parts) == 1 and isinstance(parts[0], tuple | list):
            parts = tuple(parts[0])
        return super().__new__(cls, tuple(int(p) for p in parts))

    @classmethod
    def from_query(cls, text: str) -> NDBlock:
        text = (text or "").strip()
        if not text:
            return cls()
        try:
            return cls(*(int(p) for p in text.split(",")))
        except ValueError:
            raise InvalidSlice(f"Could not parse block {text!r}") from None

    def slices(self, chunks: tuple[tuple[int, ...], ...]) -> tuple[slice, ...]:
        """The region of the array covered by this block, given dask-style chunks."""
        if len(self) != len(chunks):
            raise InvalidSlice(
                f"Block {list(self)} has {len(self)} indices; the array has {len(chunks)} dimensions"
            )
        result = []
        for index, dim_chunks in zip(self, chunks, strict=True):
            if not 0 <= index < len(dim_chunks):
                raise InvalidSlice(f"Block {list(self)} is outside the chunk grid")
            start = sum(dim_chunks[:index])
            result.append(slice(start, start + dim_chunks[index]))
        return tuple(result)
