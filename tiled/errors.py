"""The domain exceptions of Tiled, one tree rooted at :class:`TiledError`.

Code below the HTTP layer raises these; the server maps each class to a status code in one
table (``tiled.server.errors``). Nothing here knows about HTTP. An error whose message names a
node (:func:`naming`, :class:`NoSuchEntry`) names it within the tree that raised it
(:class:`NodeAt`); the server names it where it serves that tree.

::

    TiledError
    ├── NotFound                      a node or a key that does not exist
    │   ├── NoSuchEntry               a path segment names no child
    │   ├── WrongStructureFamily      the node exists, but not in a family the operation accepts
    │   └── ZarrKeyNotFound           a zarr document or chunk key the node does not have
    │       └── ChunkOutOfRange       chunk coordinates outside the chunk grid (or wrong rank)
    ├── BadRequest                    malformed client input
    │   ├── InvalidDtype              a dtype string or JSON that names no data type
    │   ├── InvalidStructure          a structure whose parts do not fit together
    │   ├── InvalidSlice              a slice or block specification that cannot be applied
    │   ├── InvalidQuery              a search query that cannot be decoded or evaluated
    │   ├── InvalidKey                a node key that cannot be used
    │   ├── InvalidSpecs              specs malformed, repeated or too many
    │   ├── SpecRejected              a spec's validator refused the node, or an undeclared spec
    │   ├── UnsupportedQuery          a query type the node cannot evaluate
    │   ├── UnsupportedZarrFormat     a zarr format other than 2 and 3
    │   └── InvalidZarrDocument       a zarr metadata document or chunk that cannot be stored
    ├── Unauthenticated               no (valid) credentials where they are required
    ├── Forbidden                     credentials valid, but not allowed to do this
    ├── UnsupportedMediaType          no encoder for the requested media type (or for this shape)
    ├── UnsupportedUploadType         a request body in a media type the route cannot read
    ├── Unsupported                   the node cannot perform the operation at all
    ├── DataUnavailable               the node's data is in a form this server cannot read
    ├── StorageUnavailable            the storage holding the data fails (retry later)
    ├── ShapeMismatchError            stored data cannot be served at the advertised shape
    │   ├── DataNotReadyError         the structure is ahead of the data (retry later)
    │   └── IncompatibleShapeError    the data can never take the advertised shape
    ├── Conflict                      the operation collides with existing state
    ├── PreconditionFailed            a conditional write whose condition does not hold
    └── PayloadTooLarge               a request body over the server's limit
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar


@dataclass(frozen=True)
class NodeAt:
    """A node as an adapter names it in an error: its keys below the root of the tree that
    adapter belongs to (``tree``: the adapter a server is given to serve; for a catalog mounted
    at a node of its database, below that node).

    The adapter cannot know where the server serves its tree (a ``trees:`` path), so the server
    names the node below that path when it answers (``tiled.server.errors``): the client reads
    the path it asked for. ``tree`` None: the keys are already as the client sees them."""

    segments: tuple[str, ...]
    tree: object | None = None


@dataclass(frozen=True)
class NodeMessage:
    """The message of an error that names a node: ``template`` with ``{path}`` (the node's keys
    joined by '/'), ``{segments}`` (their list) and ``fields`` (values kept out of the template,
    so that a brace in a key is not read as a field)."""

    template: str
    node: NodeAt
    fields: Mapping[str, Any] = field(default_factory=dict)

    def text(self, prefix: Sequence[str] = ()) -> str:
        """The message, the node's keys below ``prefix`` (where its tree is served)."""
        segments = [*prefix, *self.node.segments]
        return self.template.format(path="/".join(segments), segments=segments, **self.fields)


class TiledError(Exception):
    """Root of every exception Tiled raises on purpose."""

    # How the message names a node, for errors made by naming() (and every NoSuchEntry): the
    # server names it again where it serves the node's tree.
    naming: NodeMessage | None = None


E = TypeVar("E", bound=TiledError)


def naming(error_class: type[E], node: NodeAt, template: str, **fields: Any) -> E:
    """An ``error_class`` (made from its message) whose message, ``template`` (see
    :class:`NodeMessage`), names ``node``."""
    message = NodeMessage(template, node, fields)
    error = error_class(message.text())
    error.naming = message
    return error


class NotFound(TiledError, KeyError):
    """Something addressed by key does not exist.

    It is also a :class:`KeyError` so mapping-style callers (``adapter[key]``) keep working.
    """

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0]) if self.args else ""


class NoSuchEntry(NotFound):
    """``path``: the keys asked for (a key alone: one member), or a node of a tree (NodeAt)."""

    def __init__(self, path: list[str] | tuple[str, ...] | str | NodeAt):
        if isinstance(path, NodeAt):
            node = path
        else:
            node = NodeAt(tuple(path) if isinstance(path, list | tuple) else (path,))
        self.path = list(node.segments)
        self.naming = NodeMessage("No such entry: {segments}", node)
        super().__init__(self.naming.text())


class WrongStructureFamily(NotFound):
    def __init__(self, path: str, family: str, accepted: set[str] | frozenset[str]):
        self.family = family
        self.accepted = set(accepted)
        super().__init__(
            f"The node at {path} has structure family {family} and this endpoint is "
            f"compatible with structure families {sorted(self.accepted)}"
        )


class ZarrKeyNotFound(NotFound):
    """A zarr store has no such key; a zarr client reads this as 'absent' or 'fill value'."""


class ChunkOutOfRange(ZarrKeyNotFound):
    def __init__(self, coords: tuple[int, ...] | list[int], grid: tuple[int, ...]):
        self.coords = tuple(coords)
        self.grid = tuple(grid)
        if len(self.coords) != len(self.grid):
            reason = f"has rank {len(self.coords)} but the array has rank {len(self.grid)}"
        else:
            reason = f"is outside the chunk grid {list(self.grid)}"
        super().__init__(f"Chunk coordinates {list(self.coords)} {reason}")


class BadRequest(TiledError, ValueError):
    """The client sent something that cannot be used."""


class InvalidDtype(BadRequest):
    def __init__(self, value: object, reason: str = ""):
        self.value = value
        super().__init__(f"Invalid data type {value!r}" + (f": {reason}" if reason else ""))


class InvalidStructure(BadRequest):
    pass


class InvalidSlice(BadRequest):
    pass


class InvalidQuery(BadRequest):
    pass


class InvalidSpecs(BadRequest):
    """Specs that are malformed, repeated, or too many."""


class SpecRejected(BadRequest):
    """A node refused by the validator of one of its specs, or declaring a spec the server
    does not know while it rejects undeclared specs."""


class InvalidKey(BadRequest):
    """A key that cannot name a node (empty, or with '/', '..' or control characters)."""


class UnsupportedQuery(BadRequest):
    def __init__(self, name: str):
        self.name = name
        super().__init__(f"The query type {name!r} is not supported on this node.")


class UnsupportedZarrFormat(BadRequest):
    def __init__(self, value: object):
        self.value = value
        super().__init__(f"Unsupported zarr format {value!r}; supported formats are 2 and 3")


class InvalidZarrDocument(BadRequest):
    """A zarr document a client wrote that cannot be stored (zarr-python's own parser refuses
    it, or it asks for what the server does not allow), or a chunk that does not decode."""


class Unauthenticated(TiledError):
    def __init__(self, message: str, headers: dict[str, str] | None = None):
        self.headers = headers or {}
        super().__init__(message)


class Forbidden(TiledError):
    pass


class UnsupportedMediaType(TiledError):
    pass


class UnsupportedUploadType(TiledError):
    """The request's body is in a media type (its ``Content-Type``) the route cannot read:
    415, where a response that cannot be given in an accepted type is 406."""


class Unsupported(TiledError):
    """The node does not implement the requested operation."""


class Conflict(TiledError, ValueError):
    """Also a ValueError: upstream's ``tiled.utils.Conflicts`` (this class) is one."""


class DataUnavailable(TiledError):
    """The node exists and is listed, but its data is stored in a form this server cannot read
    (a media type with no adapter, a structure family it does not serve); the message names it.
    """


class ServiceUnavailable(TiledError):
    """A service the server depends on (its database, its object store) cannot be reached
    now: the same request may succeed later, so clients may retry."""

    retry_after = 1

    @property
    def headers(self) -> dict[str, str]:
        return {"Retry-After": str(self.retry_after)}


class StorageUnavailable(ServiceUnavailable):
    """The storage that holds the node's data (an object store) cannot be reached or fails
    now: the same request may succeed later, so clients may retry."""

    retry_after = 5


class UnfinishedWrite(StorageUnavailable):
    """A write was stored whole (committed), but the store failed while it was being made
    visible: the next write to the node finishes it first. Whoever records the write
    elsewhere (the catalog's structure) records it, then lets this error through."""


class ShapeMismatchError(TiledError, ValueError):
    """Stored data cannot be served at the shape its structure advertises."""


class DataNotReadyError(ShapeMismatchError):
    """The structure advertises more along the leading axis than the storage holds yet (a
    file still being appended to): the same read may succeed later, so clients may retry."""

    # Seconds a client should wait before retrying; sent as Retry-After.
    retry_after = 1

    @property
    def headers(self) -> dict[str, str]:
        return {"Retry-After": str(self.retry_after)}


class IncompatibleShapeError(ShapeMismatchError):
    """The data cannot take the advertised shape however long one waits (the trailing
    dimensions or the total sizes disagree)."""


class PreconditionFailed(TiledError):
    """``If-Match`` or ``If-None-Match`` of a write does not hold: another writer was first."""


class PayloadTooLarge(TiledError):
    """A request body larger than the server accepts."""
