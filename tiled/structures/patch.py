"""JSON Patch (RFC 6902) and JSON Merge Patch (RFC 7386) applied to metadata documents."""

from __future__ import annotations

import copy
from typing import Any

from ..errors import BadRequest


class PatchError(BadRequest):
    pass


def merge_patch(document: Any, patch: Any) -> Any:
    """RFC 7386: objects merge recursively, ``null`` deletes, anything else replaces."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = dict(document) if isinstance(document, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


def _pointer(path: str) -> list[str]:
    if path == "":
        return []
    if not path.startswith("/"):
        raise PatchError(f"JSON pointer must start with '/': {path!r}")
    return [p.replace("~1", "/").replace("~0", "~") for p in path[1:].split("/")]


def _parent(document: Any, parts: list[str]) -> tuple[Any, str]:
    target = document
    for part in parts[:-1]:
        target = _child(target, part)
    return target, parts[-1]


def _child(container: Any, part: str) -> Any:
    try:
        return container[int(part)] if isinstance(container, list) else container[part]
    except (KeyError, IndexError, ValueError, TypeError):
        raise PatchError(f"Path component {part!r} does not exist") from None


def _get(document: Any, path: str) -> Any:
    target = document
    for part in _pointer(path):
        target = _child(target, part)
    return target


def _add(document: Any, path: str, value: Any) -> Any:
    parts = _pointer(path)
    if not parts:
        return value
    container, last = _parent(document, parts)
    if isinstance(container, list):
        index = len(container) if last == "-" else int(last)
        if not 0 <= index <= len(container):
            raise PatchError(f"Index {last} out of range")
        container.insert(index, value)
    elif isinstance(container, dict):
        container[last] = value
    else:
        raise PatchError(f"Cannot add at {path!r}")
    return document


def _remove(document: Any, path: str) -> Any:
    parts = _pointer(path)
    if not parts:
        raise PatchError("Cannot remove the whole document")
    container, last = _parent(document, parts)
    _child(container, last)  # must exist
    if isinstance(container, list):
        del container[int(last)]
    else:
        del container[last]
    return document


def _op_add(document: Any, op: dict) -> Any:
    return _add(document, op["path"], copy.deepcopy(op.get("value")))


def _op_remove(document: Any, op: dict) -> Any:
    return _remove(document, op["path"])


def _op_replace(document: Any, op: dict) -> Any:
    if not _pointer(op["path"]):
        return copy.deepcopy(op.get("value"))
    return _add(_remove(document, op["path"]), op["path"], copy.deepcopy(op.get("value")))


def _op_move(document: Any, op: dict) -> Any:
    value = _get(document, op["from"])
    return _add(_remove(document, op["from"]), op["path"], value)


def _op_copy(document: Any, op: dict) -> Any:
    return _add(document, op["path"], copy.deepcopy(_get(document, op["from"])))


def _op_test(document: Any, op: dict) -> Any:
    if _get(document, op["path"]) != op.get("value"):
        raise PatchError(f"Test failed at {op['path']!r}")
    return document


OPERATIONS = {
    "add": _op_add,
    "remove": _op_remove,
    "replace": _op_replace,
    "move": _op_move,
    "copy": _op_copy,
    "test": _op_test,
}


def json_patch(document: Any, operations: list[dict[str, Any]]) -> Any:
    """RFC 6902 on a copy of ``document``; the original is untouched if any operation fails."""
    if not isinstance(operations, list):
        raise PatchError("A JSON patch is a list of operations")
    result = copy.deepcopy(document)
    for op in operations:
        if not isinstance(op, dict) or "path" not in op or op.get("op") not in OPERATIONS:
            raise PatchError(f"Malformed or unknown JSON patch operation {op!r}")
        result = OPERATIONS[op["op"]](result, op)
    return result


PATCHERS = {
    "application/json-patch+json": json_patch,
    "application/merge-patch+json": merge_patch,
}
