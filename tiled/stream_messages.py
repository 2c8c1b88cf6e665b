"""The messages of live streams (upstream 0.2.20's; see :mod:`tiled.streaming`).

A subscriber of a node hears its updates in order, each numbered in the node's sequence:

- ``container-child-created`` / ``container-child-metadata-updated``: on a container, a child
  was made (with its data sources and access tags), or a child's metadata or specs replaced;
- ``array-data``: an array, a block or a region of it was written (the body as sent);
- ``array-ref``: an array's data source was replaced (the data is fetched from ``uri``);
- ``table-data``: a table or a partition was written, or rows were appended;
- ``ragged-data``: a ragged array, a block of it, or rows appended to it were written.

The first message of a subscription is the node's schema (:func:`schema_message`). The
builders below make the messages a server sends; the classes at the end are the same
messages as a subscriber reads them (upstream's names: ``ChildCreated``, ``ArrayData``, ...;
the client's ``tiled.client.stream`` adds to each what a subscription can do with it). Events
come from the points that announce them to webhooks too (container creation, metadata
replacement); data writes are announced by the routes that receive them, since a write with
``persist=false`` reaches subscribers only.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, ClassVar

from .access.blobs import tags_of_blob
from .errors import WrongStructureFamily
from .structures.data_source import Asset, DataSource  # noqa: F401 - upstream's names

if TYPE_CHECKING:
    from .catalog.core import NodeRecord

SCHEMA_VERSION = 1


def _now() -> str:
    return datetime.now(UTC).isoformat()


# --- messages -------------------------------------------------------------------------------


def _as_requested(source: Any) -> dict[str, Any]:
    """A data source as its creator described it (upstream's message carries the request's):
    the assets of data this server writes are its own choice, not part of the request (and
    their ``num`` of null is refused by upstream's client)."""
    described = source.to_json()
    if described.get("management") == "writable":
        described["assets"] = []
    return described


def child_created(record: NodeRecord) -> dict[str, Any]:
    """``record``'s creation, as its parent's subscribers hear it."""
    return {
        "type": "container-child-created",
        "timestamp": _now(),
        "key": record.key,
        "structure_family": record.structure_family.value,
        "specs": [spec.to_json() for spec in record.specs],
        "metadata": record.metadata,
        "data_sources": [_as_requested(source) for source in record.data_sources],
        "access_tags": sorted(tags_of_blob(record.access_blob)),
    }


def metadata_updated(record: NodeRecord, revision: int | None = None) -> dict[str, Any]:
    """A replacement of ``record``'s metadata or specs, as its parent's subscribers hear it;
    ``revision``: the number under which the replaced version was kept (None: not kept)."""
    message = {
        "type": "container-child-metadata-updated",
        "timestamp": _now(),
        "key": record.key,
        "specs": [spec.to_json() for spec in record.specs],
        "metadata": record.metadata,
    }
    if revision is not None:
        message["revision_number"] = revision
    return message


def array_data(
    mimetype: str,
    shape: tuple[int, ...],
    *,
    offset: tuple[int, ...] | None = None,
    block: tuple[int, ...] | None = None,
) -> dict[str, Any]:
    """Data written to an array: the whole (neither), a block or a region at ``offset``."""
    return {
        "type": "array-data",
        "timestamp": _now(),
        "mimetype": mimetype,
        "shape": list(shape),
        "offset": None if offset is None else list(offset),
        "block": None if block is None else list(block),
    }


def ragged_data(
    mimetype: str,
    shape: Any,
    *,
    offset: tuple[int, ...] | None = None,
    block: tuple[int, ...] | None = None,
) -> dict[str, Any]:
    """Data written to a ragged array: the whole (neither), a block, or rows at ``offset``
    (its shape has variable dimensions: None)."""
    return {**array_data(mimetype, shape, offset=offset, block=block), "type": "ragged-data"}


def array_ref(data_source: Any, shape: tuple[int, ...], patch: Any = None) -> dict[str, Any]:
    """An array's data source replaced; ``patch`` (offset, shape): the region it changed."""
    region = None
    if patch is not None:
        region = {"offset": list(patch.offset), "shape": list(patch.shape)}
    return {
        "type": "array-ref",
        "timestamp": _now(),
        "data_source": data_source.to_json(),
        "patch": region,
        "shape": list(shape),
    }


def table_data(mimetype: str, partition: int | None, append: bool) -> dict[str, Any]:
    """Rows written to a table (``partition`` None: the whole table) or appended."""
    return {
        "type": "table-data",
        "timestamp": _now(),
        "mimetype": mimetype,
        "partition": partition,
        "append": append,
    }


# The first message of a subscription, by the family of the node subscribed to: what the
# updates that follow need to be read (an array's data type, a table's Arrow schema).
def _with_data_type(message_type: str) -> Callable[[Any], dict[str, Any]]:
    return lambda node: {"type": message_type, "data_type": node.structure().data_type.to_json()}


SCHEMAS: dict[str, Callable[[Any], dict[str, Any]]] = {
    "container": lambda node: {"type": "container-schema"},
    "array": _with_data_type("array-schema"),
    "sparse": _with_data_type("array-schema"),
    "table": lambda node: {"type": "table-schema", "arrow_schema": node.structure().arrow_schema},
    "ragged": _with_data_type("ragged-schema"),
}


def schema_message(node: Any, path: str) -> dict[str, Any]:
    """The schema message of ``node`` (served at ``path``); 404 for a family without streams."""
    family = node.structure_family.value
    if family not in SCHEMAS:
        raise WrongStructureFamily(path, family, frozenset(SCHEMAS))
    return {**SCHEMAS[family](node), "version": SCHEMA_VERSION}


# --- the messages as a subscriber reads them ---------------------------------------------------


class UnparseableMessage(RuntimeError):  # upstream's base, which callers may catch
    """A message that decodes but is no schema or update of this protocol."""


def _timestamp(value: Any) -> datetime | None:
    if value is None or isinstance(value, datetime):
        return value
    return datetime.fromisoformat(str(value).replace("Z", "+00:00"))


def _integers(value: Any) -> tuple[int, ...] | None:
    return None if value is None else tuple(int(v) for v in value)


def _shape(value: Any) -> tuple[int | None, ...]:
    # A ragged array's variable dimensions are None.
    return tuple(None if v is None else int(v) for v in value)


def _data_type(value: Any) -> Any:
    from .structures.array import data_type_from_json

    return data_type_from_json(value) if isinstance(value, dict) else value


def _read_specs(values: Any) -> list[Any]:
    from .structures.core import Spec

    return [Spec.from_json(spec) for spec in values or ()]


@dataclass(kw_only=True)
class Schema:
    """The first message of a subscription: what the node's updates need to be read."""

    TYPE: ClassVar[str] = ""
    type: str = ""
    version: int = SCHEMA_VERSION

    def content(self) -> dict[str, Any]:
        """What every update of the node carries besides its own fields (the data type)."""
        return {
            f.name: getattr(self, f.name) for f in fields(self) if f.name not in ("type", "version")
        }

    @classmethod
    def from_message(cls, message: Mapping[str, Any]) -> Schema:
        return cls(**_known(cls, message))


@dataclass(kw_only=True)
class ContainerSchema(Schema):
    TYPE: ClassVar[str] = "container-schema"
    type: str = TYPE


@dataclass(kw_only=True)
class ArraySchema(Schema):
    TYPE: ClassVar[str] = "array-schema"
    type: str = TYPE
    data_type: Any  # a BuiltinDtype or StructDtype

    @classmethod
    def from_message(cls, message: Mapping[str, Any]) -> Schema:
        return cls(**{**_known(cls, message), "data_type": _data_type(message["data_type"])})


@dataclass(kw_only=True)
class RaggedSchema(ArraySchema):
    TYPE: ClassVar[str] = "ragged-schema"
    type: str = TYPE


@dataclass(kw_only=True)
class TableSchema(Schema):
    TYPE: ClassVar[str] = "table-schema"
    type: str = TYPE
    arrow_schema: str


@dataclass(kw_only=True)
class Update:
    """One update of a node, numbered in the node's sequence (from 1)."""

    TYPE: ClassVar[str] = ""
    type: str = ""
    sequence: int
    timestamp: datetime | None = None

    @classmethod
    def from_message(cls, message: Mapping[str, Any], **extra: Any) -> Update:
        """The update a message (with its schema's content) holds; ``extra``: fields of a
        subclass that the message does not carry (the client's subscription)."""
        values = _known(cls, message)
        values["sequence"] = int(message["sequence"])
        values["timestamp"] = _timestamp(message.get("timestamp"))
        return cls(**{**values, **cls._read(message), **extra})

    @classmethod
    def _read(cls, message: Mapping[str, Any]) -> dict[str, Any]:
        """The fields that need more than copying from the message."""
        return {}


def _known(cls: type, message: Mapping[str, Any]) -> dict[str, Any]:
    names = {f.name for f in fields(cls)}
    return {key: value for key, value in message.items() if key in names}


@dataclass(kw_only=True)
class ChildCreated(Update):
    TYPE: ClassVar[str] = "container-child-created"
    type: str = TYPE
    key: str
    structure_family: Any  # a StructureFamily
    specs: list[Any]
    metadata: dict[str, Any]
    data_sources: list[Any]  # DataSources, each structure the JSON sent (as upstream's)
    access_tags: list[str] | None = None

    @classmethod
    def _read(cls, message: Mapping[str, Any]) -> dict[str, Any]:
        from .structures.core import StructureFamily
        from .structures.data_source import data_source_as_sent

        return {
            "structure_family": StructureFamily(message["structure_family"]),
            "specs": _read_specs(message.get("specs")),
            "metadata": message.get("metadata") or {},
            "data_sources": [data_source_as_sent(s) for s in message.get("data_sources") or ()],
        }


@dataclass(kw_only=True)
class ChildMetadataUpdated(Update):
    TYPE: ClassVar[str] = "container-child-metadata-updated"
    type: str = TYPE
    key: str
    specs: list[Any]
    metadata: dict[str, Any]
    revision_number: int | None = None  # where the replaced version was kept

    @classmethod
    def _read(cls, message: Mapping[str, Any]) -> dict[str, Any]:
        return {
            "specs": _read_specs(message.get("specs")),
            "metadata": message.get("metadata") or {},
        }


@dataclass(kw_only=True)
class ArrayData(Update):
    TYPE: ClassVar[str] = "array-data"
    type: str = TYPE
    mimetype: str
    shape: tuple[int, ...]
    offset: tuple[int, ...] | None = None
    block: tuple[int, ...] | None = None
    payload: bytes = b""
    data_type: Any  # from the schema

    @classmethod
    def _read(cls, message: Mapping[str, Any]) -> dict[str, Any]:
        return {
            "shape": _shape(message["shape"]),
            "offset": _integers(message.get("offset")),
            "block": _integers(message.get("block")),
            "payload": message.get("payload") or b"",
            "data_type": _data_type(message.get("data_type")),
        }


@dataclass(kw_only=True)
class RaggedData(ArrayData):
    TYPE: ClassVar[str] = "ragged-data"
    type: str = TYPE


@dataclass(frozen=True)
class ArrayPatch:
    """The region of an array an update changed."""

    offset: tuple[int, ...]
    shape: tuple[int, ...]


@dataclass(kw_only=True)
class ArrayRef(Update):
    TYPE: ClassVar[str] = "array-ref"
    type: str = TYPE
    data_source: Any  # a DataSource, its structure parsed
    patch: ArrayPatch | None = None
    uri: str | None = None
    shape: tuple[int, ...]
    data_type: Any  # from the schema

    @classmethod
    def _read(cls, message: Mapping[str, Any]) -> dict[str, Any]:
        patch = message.get("patch")
        return {
            "data_source": DataSource.from_json(message["data_source"]),
            "patch": ArrayPatch(_integers(patch["offset"]), _integers(patch["shape"]))
            if patch
            else None,
            "shape": _shape(message["shape"]),
            "data_type": _data_type(message.get("data_type")),
        }


@dataclass(kw_only=True)
class TableData(Update):
    TYPE: ClassVar[str] = "table-data"
    type: str = TYPE
    mimetype: str
    partition: int | None = None
    append: bool = False
    payload: bytes = b""
    arrow_schema: str  # from the schema

    @classmethod
    def _read(cls, message: Mapping[str, Any]) -> dict[str, Any]:
        return {"append": bool(message.get("append")), "payload": message.get("payload") or b""}


SCHEMA_TYPES: dict[str, type[Schema]] = {
    cls.TYPE: cls for cls in (ContainerSchema, ArraySchema, RaggedSchema, TableSchema)
}
UPDATE_TYPES: dict[str, type[Update]] = {
    cls.TYPE: cls
    for cls in (ChildCreated, ChildMetadataUpdated, ArrayData, RaggedData, ArrayRef, TableData)
}


def read_schema(message: Mapping[str, Any]) -> Schema:
    """The schema a subscription's first message holds."""
    cls = SCHEMA_TYPES.get(message.get("type"))
    if cls is None:
        raise UnparseableMessage(f"Unrecognized schema message type {message.get('type')!r}")
    try:
        return cls.from_message(message)
    except (KeyError, TypeError, ValueError) as error:
        raise UnparseableMessage(f"Malformed {cls.TYPE!r} message: {error!r}") from None


def read_update(
    message: Mapping[str, Any],
    schema: Schema,
    types: Mapping[str, type[Update]] = UPDATE_TYPES,
    **extra: Any,
) -> Update:
    """The update a message holds, read with its subscription's ``schema``, as the class
    ``types`` gives for its type (``extra``: what that class needs besides the message)."""
    cls = types.get(message.get("type"))
    if cls is None:
        raise UnparseableMessage(f"Unrecognized message type {message.get('type')!r}")
    try:
        return cls.from_message({**message, **schema.content()}, **extra)
    except (KeyError, TypeError, ValueError) as error:
        raise UnparseableMessage(f"Malformed {cls.TYPE!r} message: {error!r}") from None
