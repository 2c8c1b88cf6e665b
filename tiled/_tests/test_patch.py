"""JSON Patch (RFC 6902) and JSON Merge Patch (RFC 7386) on metadata."""

import pytest

from tiled.errors import BadRequest
from tiled.structures.patch import json_patch, merge_patch

DOCUMENT = {"a": 1, "b": {"c": [1, 2]}, "s": "x"}


def test_json_patch_operations():
    patched = json_patch(
        DOCUMENT,
        [
            {"op": "add", "path": "/b/c/-", "value": 3},
            {"op": "add", "path": "/b/c/0", "value": 0},
            {"op": "replace", "path": "/a", "value": 5},
            {"op": "move", "from": "/a", "path": "/z"},
            {"op": "copy", "from": "/z", "path": "/y"},
            {"op": "remove", "path": "/s"},
            {"op": "test", "path": "/y", "value": 5},
            {"op": "add", "path": "/k~1j", "value": True},
        ],
    )
    assert patched == {"b": {"c": [0, 1, 2, 3]}, "z": 5, "y": 5, "k/j": True}
    assert DOCUMENT == {"a": 1, "b": {"c": [1, 2]}, "s": "x"}  # untouched


@pytest.mark.parametrize(
    "operations",
    [
        [{"op": "remove", "path": "/nope"}],
        [{"op": "test", "path": "/a", "value": 2}],
        [{"op": "explode", "path": "/a"}],
        [{"path": "/a"}],
        {"op": "add"},
        [{"op": "add", "path": "a", "value": 1}],
        [{"op": "add", "path": "/b/c/9", "value": 1}],
    ],
)
def test_bad_json_patches_are_refused_whole(operations):
    with pytest.raises(BadRequest):
        json_patch(DOCUMENT, operations)


def test_merge_patch():
    assert merge_patch(DOCUMENT, {"a": None, "b": {"d": 1}, "s": ["list"]}) == {
        "b": {"c": [1, 2], "d": 1},
        "s": ["list"],
    }
    assert merge_patch(DOCUMENT, "replaced") == "replaced"
