"""A JSON Patch (RFC 6902) that turns one JSON document into another, for
``BaseClient.build_metadata_patches``.

Upstream Tiled's client builds these patches with the ``jsonpatch`` package
(``JsonPatch.from_diff(src, dst, dumps=orjson.dumps).patch``); scripts written for it may
print, store or compare the patches, so this module makes the same operations, in the same
order, with the same paths, without depending on either package:

- objects are compared member by member: first the members removed (in the order of the
  source), then those added (in the order of the target), then the members both have, each
  compared in turn (recursively for objects and arrays);
- arrays are compared by runs: the common start and end are skipped, and what lies between is
  matched up with ``difflib.SequenceMatcher`` where that takes fewer operations than comparing
  item by item; an item compared with another of a different value is removed and added (a
  ``replace`` when the two operations are next to each other);
- a value removed in one place and added in another (equal as JSON) is moved instead;
- scalars are equal when they are written the same way as JSON (so ``1``, ``1.0`` and
  ``True`` differ), as orjson writes them.

Where upstream's client fails (it compares two values that orjson cannot write, such as numpy
scalars or bytes), these are compared by type and equality instead. tiled/_tests/
test_client_upstream_api.py compares the patches with those of upstream's release.
"""

from __future__ import annotations

import bisect
import collections
import copy
import dataclasses
import datetime
import enum
import json
import math
import uuid
from collections.abc import MutableMapping, MutableSequence
from difflib import SequenceMatcher
from typing import Any

# Up to which product of their lengths two arrays are matched up item by item (beyond it,
# frequent items are not matched up unless next to other matches).
EXACT_MATCH_LIMIT = 500**2

_ADDED, _REMOVED = 0, 1


class Unserializable(TypeError):
    """A value that JSON (as orjson writes it, without options) has no form for."""


# --- values as JSON text -----------------------------------------------------------------------


def json_text(value: Any) -> str:
    """``value`` as compact JSON text, with orjson's rules (without options): which values it
    takes, and which it writes alike (NaN and infinities as ``null``, a datetime as its ISO
    text, a dataclass as its public fields, an enumeration as its value). Unserializable
    (a TypeError) for what orjson refuses: numpy scalars, bytes, sets, integers past 64 bits,
    mapping keys that are not ``str``, text that UTF-8 cannot encode."""
    return "".join(_text_parts(value, 0))


_MAX_DEPTH = 254  # orjson's limit of nesting


def _text_parts(value: Any, depth: int) -> Any:
    if depth > _MAX_DEPTH:
        raise Unserializable("Recursion limit reached")
    if value is None:
        yield "null"
    elif value is True or value is False:
        yield "true" if value else "false"
    elif isinstance(value, enum.Enum):  # before str and int: an IntEnum is an int too
        yield from _text_parts(value.value, depth)
    elif isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise Unserializable("str is not valid UTF-8: surrogates not allowed") from None
        yield json.dumps(value, ensure_ascii=False)
    elif isinstance(value, int):
        if not -(2**63) <= value < 2**64:
            raise Unserializable("Integer exceeds 64-bit range")
        yield str(int(value))
    elif type(value) is float:
        yield repr(value) if math.isfinite(value) else "null"
    elif isinstance(value, dict):
        yield "{"
        for number, (key, item) in enumerate(value.items()):
            if type(key) is not str:
                raise Unserializable("Dict key must be str")
            yield ("," if number else "") + json.dumps(key, ensure_ascii=False) + ":"
            yield from _text_parts(item, depth + 1)
        yield "}"
    elif isinstance(value, list) or type(value) is tuple:
        yield "["
        for number, item in enumerate(value):
            if number:
                yield ","
            yield from _text_parts(item, depth + 1)
        yield "]"
    elif isinstance(value, datetime.datetime | datetime.date):
        yield json.dumps(value.isoformat())
    elif isinstance(value, datetime.time):
        if value.tzinfo is not None:
            raise Unserializable("datetime.time must not have tzinfo set")
        yield json.dumps(value.isoformat())
    elif isinstance(value, uuid.UUID):
        yield json.dumps(str(value))
    elif dataclasses.is_dataclass(value) and not isinstance(value, type):
        fields = {
            field.name: getattr(value, field.name)
            for field in dataclasses.fields(value)
            if not field.name.startswith("_")
        }
        yield from _text_parts(fields, depth)
    else:
        raise Unserializable(f"Type is not JSON serializable: {type(value).__name__}")


def _same_json(a: Any, b: Any) -> bool:
    """Whether ``a`` and ``b`` are written alike as JSON. Values without a JSON form (which
    upstream's client fails on here) are alike when they are of one type and equal."""
    try:
        return json_text(a) == json_text(b)
    except (Unserializable, RecursionError):
        return type(a) is type(b) and _equal(a, b)


def _equal(a: Any, b: Any) -> bool:
    try:
        return bool(a == b)
    except Exception:  # e.g. numpy arrays, whose == is elementwise
        return a is b


def _sorted_members(value: Any) -> Any:
    """``value`` with the members of its objects sorted by name (copied, arrays too)."""
    if value is None or isinstance(value, str | int | float):
        return value
    if isinstance(value, MutableMapping):
        return {key: _sorted_members(value[key]) for key in sorted(value)}
    if isinstance(value, MutableSequence):
        return [_sorted_members(item) for item in value]
    return value


def _item_key(value: Any) -> str:
    """What an array item is matched up by: its JSON with sorted members (raises for a value
    without a JSON form, or with names that cannot be sorted)."""
    return json_text(_sorted_members(value))


# --- locations in a document being patched -----------------------------------------------------


class _Member:
    """A member name that is not ``str`` (``1`` in ``{1: "a"}``): it is compared like any
    other, but no path can name it."""

    __slots__ = ("key",)

    def __init__(self, key: Any):
        self.key = key

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _Member) and self.key == other.key

    def __hash__(self) -> int:
        return hash(self.key)


def _member(key: Any) -> Any:
    return key if isinstance(key, str) else _Member(key)


class _Element:
    """An element that an array holds at some point of the diff. Operations name elements,
    not indices: an operation replaced later (by a move) shifts the indices of those after it,
    which are worked out when the operations are written (``_Diff.operations``)."""

    __slots__ = ("array", "initial", "label", "present")

    def __init__(self, array: _Array, label: int, initial: bool):
        self.array = array
        self.label = label  # its place in the array's order
        self.initial = initial  # an element of the source document's array
        self.present = False

    def index(self) -> int:
        """Its index in the array (where it would be if it is not in the array now)."""
        return bisect.bisect_left(self.array.present_labels, self.label)


class _Array:
    """Every element an array has had during the diff, in their order (which stays the order
    of those it holds at any point, whichever operations are replaced later). The order is
    kept as increasing labels, so that an element's index is a binary search."""

    GAP = 1 << 32  # between the labels of elements placed at either end

    def __init__(self) -> None:
        self.elements: list[_Element] = []
        self.labels: list[int] = []
        self.present: list[_Element] = []
        self.present_labels: list[int] = []

    def at(self, index: int) -> _Element:
        """The element at ``index`` now. The source's elements not reached yet are made on
        demand, after all the others."""
        while len(self.present) <= index:
            label = self.labels[-1] + self.GAP if self.labels else 0
            element = _Element(self, label, initial=True)
            self.elements.append(element)
            self.labels.append(label)
            self.add(element)
        return self.present[index]

    def insert(self, index: int) -> _Element:
        """A new element inserted at ``index``: right after the element before it (at the
        very front for index 0)."""
        position = bisect.bisect_right(self.labels, self.at(index - 1).label) if index else 0
        if not self.labels:
            label = 0
        elif position == 0:
            label = self.labels[0] - self.GAP
        elif position == len(self.labels):
            label = self.labels[-1] + self.GAP
        else:
            if self.labels[position] - self.labels[position - 1] < 2:
                self._relabel()
            label = (self.labels[position - 1] + self.labels[position]) // 2
        element = _Element(self, label, initial=False)
        self.elements.insert(position, element)
        self.labels.insert(position, label)
        self.add(element)
        return element

    def _relabel(self) -> None:
        for number, element in enumerate(self.elements):
            element.label = number * self.GAP
        self.labels = [element.label for element in self.elements]
        self.present_labels = [element.label for element in self.present]

    def add(self, element: _Element) -> None:
        if not element.present:
            position = bisect.bisect_left(self.present_labels, element.label)
            self.present.insert(position, element)
            self.present_labels.insert(position, element.label)
            element.present = True

    def remove(self, element: _Element) -> None:
        if element.present:
            position = bisect.bisect_left(self.present_labels, element.label)
            del self.present[position]
            del self.present_labels[position]
            element.present = False

    def reset(self) -> None:
        """Back to the elements of the source document."""
        for element in self.elements:
            element.present = element.initial
        self.present = [element for element in self.elements if element.initial]
        self.present_labels = [element.label for element in self.present]


def _inside(parts: tuple, container: tuple) -> bool:
    return len(parts) > len(container) and parts[: len(container)] == container


def _without_element(parts: tuple, removed: tuple) -> tuple:
    """``parts`` (indices as they are with an element at ``removed``) once it is gone."""
    depth = len(removed) - 1
    index = removed[-1]
    if (
        isinstance(index, int)
        and _inside(parts, removed[:-1])
        and parts[depth] > index
    ):  # fmt: skip
        return (*parts[:depth], parts[depth] - 1, *parts[depth + 1 :])
    return parts


def _pointer(parts: tuple) -> str:
    """RFC 6901 pointer of ``parts``; a TypeError for a member whose name is not text."""
    for part in parts:
        if isinstance(part, _Member):
            raise TypeError(
                f"can't create an operation for the object member {part.key!r}: its name is "
                "not a string, which the path of an operation can't refer to"
            )
    return "".join("/" + str(part).replace("~", "~0").replace("/", "~1") for part in parts)


# --- the diff ---------------------------------------------------------------------------------


class _Operation:
    __slots__ = ("op", "path", "source", "value", "live")

    def __init__(self, op: str, path: tuple, value: Any = None, source: tuple | None = None):
        self.op = op
        self.path = path  # a location: member names and _Elements
        self.source = source  # a move's "from"
        self.value = value
        self.live = True


class _Diff:
    def __init__(self) -> None:
        self.log: list[_Operation] = []
        # The additions and removals not yet paired up into moves, by the value's key.
        self.pending: tuple[dict[Any, list[_Operation]], dict[Any, list[_Operation]]] = ({}, {})
        self.arrays: dict[tuple, _Array] = {}

    # locations

    def array(self, location: tuple) -> _Array:
        found = self.arrays.get(location)
        if found is None:
            found = self.arrays[location] = _Array()
        return found

    def location(self, parts: tuple) -> tuple:
        location: tuple = ()
        for part in parts:
            if isinstance(part, int):
                part = self.array(location).at(part)
            location = (*location, part)
        return location

    def new_location(self, path: tuple, key: Any) -> tuple:
        location = self.location(path)
        if isinstance(key, int):
            key = self.array(location).insert(key)
        return (*location, key)

    @staticmethod
    def parts(location: tuple) -> tuple:
        return tuple(part.index() if isinstance(part, _Element) else part for part in location)

    @staticmethod
    def set_present(location: tuple, present: bool) -> None:
        if location and isinstance(location[-1], _Element):
            element = location[-1]
            if present:
                element.array.add(element)
            else:
                element.array.remove(element)

    # operations and their pairing into moves

    def emit(self, operation: _Operation) -> _Operation:
        self.log.append(operation)
        return operation

    @staticmethod
    def move_key(value: Any) -> Any:
        try:
            return _item_key(value)
        except (TypeError, ValueError, RecursionError):
            return ("id", id(value))  # only moved where it is added unchanged

    def keep(self, value: Any, operation: _Operation, kind: int) -> None:
        self.pending[kind].setdefault(self.move_key(value), []).append(operation)

    def take(self, value: Any, kind: int) -> _Operation | None:
        stack = self.pending[kind].get(self.move_key(value))
        return stack.pop() if stack else None

    def added(self, path: tuple, key: Any, value: Any) -> None:
        target = (*path, key)
        removal = self.take(value, _REMOVED)
        if removal is not None:
            source = self.parts(removal.path)
            if not _inside(target, source):  # a value cannot move into itself
                removal.live = False
                if source != target:
                    self.emit(_Operation("move", self.new_location(path, key), source=removal.path))
                else:  # the removed value stays where this one would go
                    self.set_present(removal.path, True)
                return
        addition = self.emit(_Operation("add", self.new_location(path, key), value))
        self.keep(value, addition, _ADDED)

    def removed(self, path: tuple, key: Any, value: Any) -> None:
        source = (*path, key)
        location = self.location(source)
        addition = self.take(value, _ADDED)
        if addition is not None:
            added = self.parts(addition.path)
            addition.live = False
            if _without_element(source, added) != added:
                self.set_present(location, False)
                self.emit(_Operation("move", addition.path, source=location))
            else:  # the value stays where the added one would be
                self.set_present(addition.path, False)
            return
        self.set_present(location, False)
        removal = self.emit(_Operation("remove", location))
        self.keep(value, removal, _REMOVED)

    def replaced(self, path: tuple, key: Any, value: Any) -> None:
        location = self.location(path if key is None else (*path, key))
        self.emit(_Operation("replace", location, value))

    # comparisons

    def compare(self, path: tuple, key: Any, src: Any, dst: Any) -> None:
        here = path if key is None else (*path, key)
        if isinstance(src, MutableMapping) and isinstance(dst, MutableMapping):
            self.compare_objects(here, src, dst)
        elif isinstance(src, MutableSequence) and isinstance(dst, MutableSequence):
            self.compare_arrays(here, src, dst)
        elif not _same_json(src, dst):
            self.replaced(path, key, dst)

    def compare_objects(self, path: tuple, src: Any, dst: Any) -> None:
        for key in [key for key in src if key not in dst]:
            self.removed(path, _member(key), src[key])
        for key in [key for key in dst if key not in src]:
            self.added(path, _member(key), dst[key])
        for key in [key for key in src if key in dst]:
            self.compare(path, _member(key), src[key], dst[key])

    def compare_arrays(self, path: tuple, src: Any, dst: Any) -> None:
        # While a run is compared the array is dst[:j1] + src[i1:]: src[i1] is at index j1.
        for i1, i2, j1, j2 in _differing_runs(src, dst):
            paired = min(i2 - i1, j2 - j1)
            for index in range(j1, j1 + paired):
                old, new = src[i1 + index - j1], dst[index]
                if isinstance(old, MutableMapping) and isinstance(new, MutableMapping):
                    self.compare_objects((*path, index), old, new)
                elif isinstance(old, MutableSequence) and isinstance(new, MutableSequence):
                    self.compare_arrays((*path, index), old, new)
                elif not _same_json(old, new):
                    self.removed(path, index, old)
                    self.added(path, index, new)
            for old in src[i1 + paired : i2]:
                self.removed(path, j1 + paired, old)
            for index in range(j1 + paired, j2):
                self.added(path, index, dst[index])

    # the result

    def operations(self) -> list[dict[str, Any]]:
        """The live operations with the indices at which they apply, each removal followed
        by an addition at the same place made one replacement."""
        for array in self.arrays.values():
            array.reset()
        replayed = []
        for operation in self.log:
            if not operation.live:
                continue
            written: dict[str, Any] = {"op": operation.op}
            if operation.source is not None:
                written["from"] = self.parts(operation.source)
                self.set_present(operation.source, False)
            written["path"] = self.parts(operation.path)
            if operation.op == "remove":
                self.set_present(operation.path, False)
            elif operation.op in ("add", "move"):
                self.set_present(operation.path, True)
            if operation.op in ("add", "replace"):
                written["value"] = operation.value
            replayed.append(written)
        result = []
        position = 0
        while position < len(replayed):
            first = replayed[position]
            second = replayed[position + 1] if position + 1 < len(replayed) else None
            if (
                second is not None
                and first["op"] == "remove"
                and second["op"] == "add"
                and first["path"] == second["path"]
            ):
                result.append(
                    {"op": "replace", "path": _pointer(second["path"]), "value": second["value"]}
                )
                position += 2
                continue
            for name in ("from", "path"):
                if name in first:
                    first[name] = _pointer(first[name])
            result.append(first)
            position += 1
        return copy.deepcopy(result)


def _positional_cost(old: Any, new: Any) -> int:
    """About how many operations turn ``old`` into ``new`` comparing arrays item by item."""
    if _equal(old, new):
        return 0
    if isinstance(old, MutableMapping) and isinstance(new, MutableMapping):
        changed = sum(_positional_cost(old[key], new[key]) if key in new else 1 for key in old)
        return changed + sum(key not in old for key in new)
    if isinstance(old, MutableSequence) and isinstance(new, MutableSequence):
        return abs(len(old) - len(new)) + sum(
            _positional_cost(a, b) for a, b in zip(old, new, strict=False)
        )
    return 1


def _differing_runs(src: Any, dst: Any) -> list[tuple[int, int, int, int]]:
    """``(i1, i2, j1, j2)`` for each run ``src[i1:i2]`` that becomes ``dst[j1:j2]``, between
    runs of items both have (so that an item inserted at the front does not change all the
    items after it)."""
    try:
        src_keys = [_item_key(item) for item in src]
        dst_keys = [_item_key(item) for item in dst]
    except (TypeError, ValueError, RecursionError):
        return [(0, len(src), 0, len(dst))]  # compared item by item
    shorter = min(len(src), len(dst))
    start = 0
    while start < shorter and src_keys[start] == dst_keys[start]:
        start += 1
    tail = 0
    while tail < shorter - start and src_keys[-1 - tail] == dst_keys[-1 - tail]:
        tail += 1
    src_end, dst_end = len(src) - tail, len(dst) - tail

    def cost(i1: int, i2: int, j1: int, j2: int) -> int:
        pairs = zip(range(i1, i2), range(j1, j2), strict=False)
        return abs((i2 - i1) - (j2 - j1)) + sum(
            _positional_cost(src[i], dst[j]) for i, j in pairs if src_keys[i] != dst_keys[j]
        )

    by_position = (start, src_end, start, dst_end)
    position_cost = cost(*by_position)
    exact = (src_end - start) * (dst_end - start) <= EXACT_MATCH_LIMIT
    if not exact:
        # Matching long arrays of repeated items takes quadratic time: not when comparing by
        # position would take about as long.
        counts = collections.Counter(dst_keys[start:dst_end])
        comparisons = sum(counts[key] for key in src_keys[start:src_end])
        if comparisons > max(EXACT_MATCH_LIMIT, position_cost**2):
            return [by_position]
    matcher = SequenceMatcher(
        None, src_keys[start:src_end], dst_keys[start:dst_end], autojunk=not exact
    )
    runs = [
        (start + i1, start + i2, start + j1, start + j2)
        for tag, i1, i2, j1, j2 in matcher.get_opcodes()
        if tag != "equal"
    ]
    # Items equal by chance can take more operations matched up than compared by position.
    if sum(cost(*run) for run in runs) > position_cost:
        return [by_position]
    return runs


def json_patch_from_diff(src: Any, dst: Any) -> list[dict[str, Any]]:
    """The JSON Patch operations that turn ``src`` into ``dst`` (values copied), as upstream
    Tiled's client makes them (see the module). A TypeError when the documents differ in a
    member whose name is not text (no path can name it)."""
    diff = _Diff()
    diff.compare((), None, src, dst)
    return diff.operations()


__all__ = ["json_patch_from_diff", "json_text"]
