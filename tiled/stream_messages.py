"""The messages of live streams (upstream 0.2.20's; see :mod:`tiled.streaming`).

A subscriber of a node hears its updates in order, each numbered in the node's sequence:

- ``container-child-created`` / ``container-child-metadata-updated``: on a container, a child
  was made (with its data sources and access tags), or a child's metadata or specs replaced;
- ``array-data``: an array, a block or a region of it was written (the body as sent);
- ``array-ref``: an array's data source was replaced (the data is fetched from ``uri``);
- ``table-data``: a table or a partition was written, or rows were appended;
- ``ragged-data``: a ragged array, a block of it, or rows appended to it were written.

The first message of a subscription is the node's schema (:func:`schema_message`). Events
come from the points that announce them to webhooks too (container creation, metadata
replacement); data writes are announced by the routes that receive them, since a write with
``persist=false`` reaches subscribers only.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from .access.blobs import tags_of_blob
from .errors import WrongStructureFamily

if TYPE_CHECKING:
    from .catalog.core import NodeRecord

SCHEMA_VERSION = 1


def _now() -> str:
    return datetime.now(UTC).isoformat()


def _specs(record: NodeRecord) -> list[dict[str, Any]]:
    return [{"name": spec.name, "version": spec.version} for spec in record.specs]


# --- messages -------------------------------------------------------------------------------


def child_created(record: NodeRecord) -> dict[str, Any]:
    """``record``'s creation, as its parent's subscribers hear it."""
    return {
        "type": "container-child-created",
        "timestamp": _now(),
        "key": record.key,
        "structure_family": record.structure_family.value,
        "specs": _specs(record),
        "metadata": record.metadata,
        "data_sources": [source.to_json() for source in record.data_sources],
        "access_tags": sorted(tags_of_blob(record.access_blob)),
    }


def metadata_updated(record: NodeRecord) -> dict[str, Any]:
    """A replacement of ``record``'s metadata or specs, as its parent's subscribers hear it."""
    return {
        "type": "container-child-metadata-updated",
        "timestamp": _now(),
        "key": record.key,
        "specs": _specs(record),
        "metadata": record.metadata,
    }


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
SCHEMAS: dict[str, Callable[[Any], dict[str, Any]]] = {
    "container": lambda node: {"type": "container-schema"},
    "array": lambda node: {
        "type": "array-schema",
        "data_type": node.structure().data_type.to_json(),
    },
    "sparse": lambda node: {
        "type": "array-schema",
        "data_type": node.structure().data_type.to_json(),
    },
    "table": lambda node: {"type": "table-schema", "arrow_schema": node.structure().arrow_schema},
    "ragged": lambda node: {
        "type": "ragged-schema",
        "data_type": node.structure().data_type.to_json(),
    },
}


def schema_message(node: Any, path: str) -> dict[str, Any]:
    """The schema message of ``node`` (served at ``path``); 404 for a family without streams."""
    family = node.structure_family.value
    if family not in SCHEMAS:
        raise WrongStructureFamily(path, family, frozenset(SCHEMAS))
    return {**SCHEMAS[family](node), "version": SCHEMA_VERSION}
