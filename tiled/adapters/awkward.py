"""Awkward arrays as nodes: in memory, and stored as a directory of buffers.

An awkward array is its form, its length and its buffers (``node0-offsets``, ``node2-data``,
...). The server sends buffers as they are stored, only those a client asks for by form key,
so a sliced read moves only the buffers the slice touches.

Zarr view: the node is a group with one 1-d array per buffer (named as the buffer) and the
form and length in the group's attributes under ``"awkward"``, so that
``awkward.from_buffers(attrs["awkward"]["form"], attrs["awkward"]["length"], {name:
group[name][...]})`` rebuilds the array from any zarr client's reads.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, MutableMapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy

from ..errors import BadRequest, DataUnavailable
from ..structures.awkward import AwkwardStructure
from ..structures.core import StructureFamily
from .base import _GroupHooks, zarr_attributes
from .core import Adapter
from .files import locked, path_from_uri, staged

if TYPE_CHECKING:
    import awkward

    from ..zarr_format.model import ZarrGroupMeta, ZarrOptions

AWKWARD_BUFFERS_MIMETYPE = "application/x-awkward-buffers"


def form_key_of(buffer_name: str) -> str:
    """``node3`` of ``node3-offsets``: buffers are named ``{form key}-{role}``."""
    return buffer_name.rpartition("-")[0] or buffer_name


def select_buffers(names: Iterable[str], form_keys: Iterable[str] | None) -> list[str]:
    """The buffer names belonging to ``form_keys`` (all of them when None)."""
    if form_keys is None:
        return list(names)
    wanted = set(form_keys)
    return [name for name in names if form_key_of(name) in wanted]


class BuffersZarrGroup(_GroupHooks):
    """Zarr hooks of a node viewed as a group of its awkward buffers (awkward, ragged).

    Subclasses give ``zarr_buffer_dtypes()`` (name -> dtype, in form order),
    ``zarr_buffer(name)`` (the buffer as a 1-d numpy array) and ``zarr_group_attributes()``.
    """

    def zarr_buffer_dtypes(self) -> dict[str, numpy.dtype]:
        raise NotImplementedError

    def zarr_buffer(self, name: str) -> numpy.ndarray:
        raise NotImplementedError

    def zarr_group_attributes(self) -> dict[str, Any]:
        raise NotImplementedError

    def child(self, key: str) -> Any:
        from .array import ArrayAdapter

        if key not in self.zarr_buffer_dtypes():
            raise KeyError(key)
        return ArrayAdapter.from_array(self.zarr_buffer(key))

    async def to_zarr_meta(self, options: ZarrOptions | None = None) -> ZarrGroupMeta:
        from ..zarr_format.model import ZarrGroupMeta

        return ZarrGroupMeta(attributes={**zarr_attributes(self), **self.zarr_group_attributes()})

    async def zarr_member_keys(self, offset: int = 0, limit: int | None = None) -> list[str]:
        names = list(self.zarr_buffer_dtypes())
        return names[offset : None if limit is None else offset + limit]


def as_flat(buffer: Any, dtype: numpy.dtype) -> numpy.ndarray:
    """A buffer (bytes or array) as a 1-d array of ``dtype``."""
    if isinstance(buffer, numpy.ndarray):
        return buffer.reshape(-1).view(dtype) if buffer.dtype != dtype else buffer.reshape(-1)
    return numpy.frombuffer(buffer, dtype=dtype)


def as_bytes(buffer: Any) -> bytes:
    return buffer.tobytes() if isinstance(buffer, numpy.ndarray) else bytes(buffer)


class _AwkwardBase(BuffersZarrGroup, Adapter):
    """What awkward nodes share: buffers from ``self._container``, read whole or by form key."""

    structure_family = StructureFamily.awkward

    def __init__(
        self,
        container: Mapping[str, Any],
        structure: AwkwardStructure,
        *,
        metadata: Mapping | None = None,
        specs: Any = None,
    ):
        super().__init__(structure, metadata=metadata, specs=specs)
        self._container = container

    def structure(self) -> AwkwardStructure:
        return self._structure

    def read_buffers(self, form_keys: list[str] | None = None) -> dict[str, bytes]:
        """The buffers of ``form_keys`` (all when None), as bytes, by buffer name."""
        names = select_buffers(self.structure().buffer_dtypes(), form_keys)
        return {name: as_bytes(self._buffer(name)) for name in names}

    def _buffer(self, name: str) -> Any:
        try:
            return self._container[name]
        except KeyError:
            # Created but not written yet (a write puts all buffers in place at once).
            raise DataUnavailable(f"The buffer {name!r} has not been written yet") from None

    def read(self) -> awkward.Array:
        import awkward

        structure = self.structure()
        buffers = {name: self._buffer(name) for name in structure.buffer_dtypes()}
        return awkward.from_buffers(structure.awkward_form, structure.length, buffers)

    def zarr_buffer_dtypes(self) -> dict[str, numpy.dtype]:
        return self.structure().buffer_dtypes()

    def zarr_buffer(self, name: str) -> numpy.ndarray:
        return as_flat(self._buffer(name), self.zarr_buffer_dtypes()[name])

    def zarr_group_attributes(self) -> dict[str, Any]:
        structure = self.structure()
        return {"awkward": {"form": structure.form, "length": structure.length}}

    def __repr__(self) -> str:
        return f"<{type(self).__name__} length={self.structure().length}>"


class AwkwardAdapter(_AwkwardBase):
    """An awkward array held in memory (its buffers, by name)."""

    @classmethod
    def from_array(
        cls, array: Any, *, metadata: Mapping | None = None, specs: Any = None
    ) -> AwkwardAdapter:
        import awkward

        form, length, container = awkward.to_buffers(awkward.to_packed(awkward.Array(array)))
        return cls(
            container, AwkwardStructure(length=length, form=form.to_dict()),
            metadata=metadata, specs=specs,
        )  # fmt: skip


class DirectoryContainer(MutableMapping):
    """Buffers as files of one directory, each named as its buffer (upstream's layout)."""

    def __init__(self, directory: Path):
        self.directory = Path(directory)

    def __getitem__(self, name: str) -> bytes:
        if "/" in name or name.startswith("."):
            raise KeyError(name)
        try:
            return (self.directory / name).read_bytes()
        except FileNotFoundError:
            raise KeyError(name) from None

    def __setitem__(self, name: str, value: bytes) -> None:
        self.write_all({name: value})

    def __delitem__(self, name: str) -> None:
        (self.directory / name).unlink(missing_ok=True)

    def __iter__(self):
        # Staged files (hidden, being written) are not buffers.
        return (p.name for p in self.directory.iterdir() if not p.name.startswith("."))

    def __len__(self) -> int:
        return sum(1 for _ in self)

    def write_all(self, buffers: Mapping[str, bytes]) -> None:
        """Replace buffers together: all become visible at once, or none (blocking)."""
        with locked(self.directory), staged(self.directory) as transaction:
            for name, value in buffers.items():
                transaction.write(self.directory / name, value)


# Buffer roles holding positions in a list's content (never negative, unlike an option's
# index, where -1 stands for a missing value).
_POSITION_ROLES = ("-offsets", "-starts", "-stops")


def check_buffers(structure: AwkwardStructure, buffers: Mapping[str, Any]) -> dict[str, bytes]:
    """The buffers of a whole write, checked against the structure (BadRequest otherwise):
    exactly the buffers the form expects, each a whole number of its elements, and together
    readable as an array of the structure's length."""
    import awkward

    expected = structure.buffer_dtypes()
    missing = sorted(set(expected) - set(buffers))
    extra = sorted(set(buffers) - set(expected))
    if missing or extra:
        raise BadRequest(
            f"The buffers do not match the form: missing {missing}, unexpected {extra}"
        )
    checked = {name: as_bytes(buffers[name]) for name in expected}
    for name, dtype in expected.items():
        if len(checked[name]) % numpy.dtype(dtype).itemsize:
            raise BadRequest(f"Buffer {name!r} is not a whole number of {numpy.dtype(dtype)}")
    for name in expected:
        # awkward's validity check lets a negative position pass where a list is empty.
        if name.endswith(_POSITION_ROLES) and (as_flat(checked[name], expected[name]) < 0).any():
            raise BadRequest(f"Buffer {name!r} holds negative positions")
    try:
        array = awkward.from_buffers(structure.awkward_form, structure.length, checked)
        problem = awkward.validity_error(array)
    except Exception as err:  # awkward raises several kinds for inconsistent buffers
        raise BadRequest(f"The buffers do not form an array of this structure: {err}") from None
    if problem:
        # from_buffers reads only lengths; offsets past the content (or decreasing) show here.
        raise BadRequest(f"The buffers do not form a valid array: {problem}")
    return checked


class AwkwardBuffersAdapter(_AwkwardBase):
    """An awkward array stored as one file per buffer in a directory (``data_uri``)."""

    @classmethod
    def from_uri(
        cls, data_uri: str, structure: AwkwardStructure, *, metadata=None, specs=None
    ) -> AwkwardBuffersAdapter:
        container = DirectoryContainer(path_from_uri(data_uri))
        return cls(container, structure, metadata=metadata, specs=specs)

    @classmethod
    def supported_storage(cls) -> set:
        return {"file"}

    def write_buffers(self, buffers: Mapping[str, Any]) -> None:
        """Replace all buffers (blocking: callers run this on a worker thread)."""
        checked = check_buffers(self.structure(), buffers)
        self._container.write_all(checked)


def check_awkward_structure(structure: AwkwardStructure) -> None:
    """Refuse (InvalidStructure) a structure whose form awkward cannot read."""
    from ..structures.awkward import check_form

    check_form(structure.form)


__all__ = ["AWKWARD_BUFFERS_MIMETYPE", "AwkwardAdapter", "AwkwardBuffersAdapter"]
