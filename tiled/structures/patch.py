"""JSON Patch (RFC 6902) and JSON Merge Patch (RFC 7386) applied to metadata documents."""

from __future__ import annotations

import copy
import re
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


# RFC 6901: an array index is "0" or digits without a leading zero (not "-1", "01", " 1" or
# "1_0", which int() would take); "-" names the position after the last element.
_ARRAY_INDEX = re.compile(r"(?:0|[1-9][0-9]*)\Z")
_END_OF_ARRAY = "-"
# "~" escapes only "~0" ("~") and "~1" ("/").
_BAD_ESCAPE = re.compile(r"~(?![01])")


def _pointer(path: Any, member: str) -> list[str]:
    """The reference tokens of the JSON pointer that member ``member`` of an operation holds."""
    if not isinstance(path, str):
        raise PatchError(f'"{member}" must be a JSON pointer (text), not {path!r}')
    if path == "":
        return []
    if not path.startswith("/"):
        raise PatchError(f'"{member}" must start with "/": {path!r}')
    if _BAD_ESCAPE.search(path):
        raise PatchError(f'"{member}" has a "~" that is neither "~0" nor "~1": {path!r}')
    return [p.replace("~1", "/").replace("~0", "~") for p in path[1:].split("/")]


def _index(container: list, token: str, end_allowed: bool = False) -> int:
    """The position in ``container`` that ``token`` names; ``end_allowed``: where an element
    may be inserted (one past the last, or "-"), else an element that exists."""
    if token == _END_OF_ARRAY:
        if end_allowed:
            return len(container)
        raise PatchError('"-" (past the last element of an array) names no element here')
    if not _ARRAY_INDEX.match(token):
        raise PatchError(f"{token!r} is not an array index")
    if len(token) > len(str(len(container))):  # out of range, and perhaps past int()'s digits
        raise PatchError(f"Array index {token[:20]}... is out of range (length {len(container)})")
    index = int(token)
    if index > len(container) or (index == len(container) and not end_allowed):
        raise PatchError(f"Array index {index} is out of range (length {len(container)})")
    return index


def _child(container: Any, token: str) -> Any:
    if isinstance(container, list):
        return container[_index(container, token)]
    if isinstance(container, dict) and token in container:
        return container[token]
    raise PatchError(f"Path component {token!r} does not exist")


def _parent(document: Any, tokens: list[str]) -> Any:
    target = document
    for token in tokens[:-1]:
        target = _child(target, token)
    return target


def _get(document: Any, tokens: list[str]) -> Any:
    return _child(_parent(document, tokens), tokens[-1]) if tokens else document


def _add(document: Any, tokens: list[str], value: Any) -> Any:
    if not tokens:
        return value
    container = _parent(document, tokens)
    if isinstance(container, list):
        container.insert(_index(container, tokens[-1], end_allowed=True), value)
    elif isinstance(container, dict):
        container[tokens[-1]] = value
    else:
        raise PatchError(f"Path component {tokens[-2]!r} is neither an object nor an array")
    return document


def _remove(document: Any, tokens: list[str]) -> Any:
    if not tokens:
        raise PatchError("Cannot remove the whole document")
    container = _parent(document, tokens)
    _child(container, tokens[-1])  # must exist
    if isinstance(container, list):
        del container[_index(container, tokens[-1])]
    else:
        del container[tokens[-1]]
    return document


def _member(op: dict[str, Any], name: str) -> Any:
    # A member the operation requires: "value" may be null, but must be given.
    if name not in op:
        raise PatchError(f'"{name}" is missing')
    return op[name]


def _op_add(document: Any, op: dict) -> Any:
    value = copy.deepcopy(_member(op, "value"))
    return _add(document, _pointer(op["path"], "path"), value)


def _op_remove(document: Any, op: dict) -> Any:
    return _remove(document, _pointer(op["path"], "path"))


def _op_replace(document: Any, op: dict) -> Any:
    tokens = _pointer(op["path"], "path")
    value = copy.deepcopy(_member(op, "value"))
    if not tokens:
        return value
    return _add(_remove(document, tokens), tokens, value)


def _op_move(document: Any, op: dict) -> Any:
    source = _pointer(_member(op, "from"), "from")
    tokens = _pointer(op["path"], "path")
    if source != tokens and tokens[: len(source)] == source:
        raise PatchError('Cannot move a value into one of its own children ("from" is a prefix)')
    value = _get(document, source)
    return _add(_remove(document, source), tokens, value)


def _op_copy(document: Any, op: dict) -> Any:
    value = copy.deepcopy(_get(document, _pointer(_member(op, "from"), "from")))
    return _add(document, _pointer(op["path"], "path"), value)


def _op_test(document: Any, op: dict) -> Any:
    expected = _member(op, "value")
    if not _same_json(_get(document, _pointer(op["path"], "path")), expected):
        raise PatchError(f"The value at {op['path']!r} is not {expected!r}")
    return document


def _same_json(a: Any, b: Any) -> bool:
    """RFC 6902's equality: Python's, except that true and false are not the numbers 1 and 0."""
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(map(_same_json, a, b))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same_json(a[k], b[k]) for k in a)
    if isinstance(a, list | dict) or isinstance(b, list | dict):
        return False
    return a == b


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
    for number, op in enumerate(operations):
        name = op.get("op") if isinstance(op, dict) else None
        if not isinstance(name, str) or name not in OPERATIONS or "path" not in op:
            raise PatchError(
                f'JSON patch operation {number} is not an object with an "op" out of '
                f'{list(OPERATIONS)} and a "path": {op!r}'
            )
        try:
            result = OPERATIONS[name](result, op)
        except PatchError as err:
            # Which operation failed, for a patch of many.
            raise PatchError(f"JSON patch operation {number} ({name!r}): {err}") from None
    return result


PATCHERS = {
    "application/json-patch+json": json_patch,
    "application/merge-patch+json": merge_patch,
}
