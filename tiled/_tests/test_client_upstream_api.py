"""The client's methods called as scripts written for upstream Tiled 0.2.20's client call them:
its signatures, its return values, the exceptions it raises. Each test runs against a real
server (``Context.from_app`` over a writable in-memory catalog); ``build_metadata_patches`` is
also compared with upstream's own, run in an environment of upstream's release."""

from __future__ import annotations

import json
import math
import random

import numpy
import pandas
import pytest

from tiled.adapters.array import ArrayAdapter
from tiled.adapters.mapping import MapAdapter
from tiled.catalog import in_memory
from tiled.client import Context, from_context, record_history
from tiled.client.metadata_update import DELETE_KEY, apply_update_patch
from tiled.client.utils import ClientError
from tiled.server.app import build_app
from tiled.structures.core import Spec
from tiled.utils import ListView


@pytest.fixture
def client(tmp_path):
    files = tmp_path / "files"
    files.mkdir()
    catalog = in_memory(writable_storage=str(tmp_path / "data"), readable_storage=[str(files)])
    with Context.from_app(build_app(catalog)) as context:
        yield from_context(context)


def _sent(history, method: str, route: str) -> list:
    """The requests of ``history`` with ``method`` to ``/api/v1/{route}/...``."""
    return [r for r in history.requests if r.method == method and f"/api/v1/{route}/" in str(r.url)]


# --- arrays: write(persist=), write_block(slice=, persist=) -------------------------------------


def test_write_with_persist_false_sends_it_and_stores_nothing(client):
    data = numpy.arange(12.0).reshape(3, 4)
    node = client.write_array(data, key="a")
    with record_history() as history:
        node.write(-data, persist=False)
    (put,) = _sent(history, "PUT", "array/full")
    assert put.url.params["persist"] == "false"
    numpy.testing.assert_array_equal(node.read(), data)
    with record_history() as history:
        node.write(-data, persist=True)  # the default: no parameter, as upstream sends none
    (put,) = _sent(history, "PUT", "array/full")
    assert "persist" not in put.url.params
    numpy.testing.assert_array_equal(node.read(), -data)


def test_write_block_takes_slice_and_persist(client):
    data = numpy.arange(24.0).reshape(4, 6)
    node = client.write_array(numpy.zeros((4, 6)), key="a")
    node.write(data)
    tiles = client.write_array(numpy.zeros((4, 6)), key="tiles")
    tiles.write_block(numpy.zeros((4, 6)), (0,) * 2)  # one block: the whole array

    # Upstream's positional order: array, block, slice, persist.
    with record_history() as history:
        node.write_block(numpy.ones((4, 6)), (0, 0), ..., False)
    (put,) = _sent(history, "PUT", "array/block")
    assert put.url.params["persist"] == "false" and put.url.params["block"] == "0,0"
    numpy.testing.assert_array_equal(node.read(), data)  # not stored

    node.write_block(numpy.ones((4, 6)), (0, 0), slice=..., persist=True)
    numpy.testing.assert_array_equal(node.read(), numpy.ones((4, 6)))


def test_write_block_with_a_slice_writes_that_region_of_the_block(client):
    from tiled.structures.array import ArrayStructure
    from tiled.structures.core import StructureFamily
    from tiled.structures.data_source import DataSource

    structure = ArrayStructure.from_array(numpy.zeros((4, 6)), chunks=((2, 2), (3, 3)))
    node = client.new(StructureFamily.array, [DataSource(StructureFamily.array, structure)],
                      key="grid")  # fmt: skip
    expected = numpy.zeros((4, 6))
    node.write(expected)
    # Rows 0:1 and columns 1:3 of block (1, 1), which starts at (2, 3).
    node.write_block(numpy.full((1, 2), 5.0), (1, 1), slice=(slice(0, 1), slice(1, 3)))
    expected[2:3, 4:6] = 5.0
    numpy.testing.assert_array_equal(node.read(), expected)
    # An integer index takes its axis away, as numpy's does.
    node.write_block(numpy.full(3, 7.0), (0, 0), slice=(1, slice(None)))
    expected[1, 0:3] = 7.0
    numpy.testing.assert_array_equal(node.read(), expected)
    # Not stored with persist=False.
    node.write_block(numpy.full((1, 2), 9.0), (1, 1), slice=(slice(1, 2), slice(0, 2)),
                     persist=False)  # fmt: skip
    numpy.testing.assert_array_equal(node.read(), expected)
    # Data of the whole block's shape go to the whole block, as upstream's server takes them.
    node.write_block(numpy.full((2, 3), 3.0), (0, 1), slice=(slice(0, 1), slice(0, 1)))
    expected[0:2, 3:6] = 3.0
    numpy.testing.assert_array_equal(node.read(), expected)
    with pytest.raises(ValueError, match="step"):
        node.write_block(numpy.zeros((1, 2)), (0, 0), slice=(slice(0, 2, 2), slice(0, 2)))


def test_a_block_off_the_grid_is_the_servers_error(client):
    data = numpy.arange(24.0).reshape(4, 6)
    node = client.write_array(data, key="a")
    for block in [(1, 0), (-2, 0), (0,), (0, 0, 0)]:
        # Upstream's client gets the server's refusal (an HTTPStatusError); this client's
        # callers caught an IndexError: it is both.
        with pytest.raises(ClientError) as caught:
            node.write_block(data, block)
        assert caught.value.response.status_code == 422
        assert isinstance(caught.value, IndexError)
    node.write_block(-data, (-1, -1))  # negative indices count from the end
    numpy.testing.assert_array_equal(node.read(), -data)


# --- metadata ---------------------------------------------------------------------------------


def test_patch_metadata_takes_access_tags_patch(client):
    node = client.create_container("c", metadata={"x": 1})
    assert list(node.access_tags) == []
    node.patch_metadata(access_tags_patch=[{"op": "add", "path": "/-", "value": "t"}])
    assert list(node.access_tags) == ["t"] and list(client["c"].access_tags) == ["t"]
    # Upstream's positional order: metadata_patch, specs_patch, access_tags_patch.
    node.patch_metadata(
        [{"op": "add", "path": "/y", "value": 2}],
        [{"op": "add", "path": "/-", "value": "a_spec"}],
        [{"op": "add", "path": "/-", "value": "u"}],
    )
    assert dict(node.metadata) == {"x": 1, "y": 2}
    assert node.specs == [Spec("a_spec")] and list(node.access_tags) == ["t", "u"]
    # A merge patch names the specs (upstream's client sends them as specs).
    node.patch_metadata(specs_patch=["b_spec"], content_type="application/merge-patch+json")
    assert node.specs == [Spec("b_spec")]


def test_build_metadata_patches_as_upstream(client):
    node = client.write_array(
        [1, 2], key="a", specs=["one"], access_tags=["t"],
        metadata={"x": 1, "nested": {"p": 1, "q": [1, 2]}, "gone": 5, "kept": "k"},
    )  # fmt: skip
    md, sp, tp = node.build_metadata_patches(
        metadata={"y": 2, "nested": {"q": DELETE_KEY, "r": 3}, "gone": DELETE_KEY},
        specs=["one", "two"],
        access_tags=["t", "u"],
    )
    assert md == [
        {"op": "remove", "path": "/gone"},
        {"op": "add", "path": "/y", "value": 2},
        {"op": "remove", "path": "/nested/q"},
        {"op": "add", "path": "/nested/r", "value": 3},
    ]
    assert sp == [{"op": "add", "path": "/1", "value": "two"}]
    assert tp == [{"op": "add", "path": "/1", "value": "u"}]
    # Not given: an empty metadata patch, no specs or tags patch (no tags: none either).
    assert node.build_metadata_patches() == ([], None, None)
    assert node.build_metadata_patches(access_tags=[]) == ([], None, None)
    # A value moved elsewhere is a move; a value changed a replacement.
    moved, _, _ = node.build_metadata_patches({"x": DELETE_KEY, "z": 1, "kept": "K"})
    assert moved == [
        {"op": "move", "from": "/x", "path": "/z"},
        {"op": "replace", "path": "/kept", "value": "K"},
    ]
    with pytest.raises(ValueError):
        node.build_metadata_patches(metadata=[1])
    # The patches do what update_metadata does.
    node.patch_metadata(metadata_patch=md, specs_patch=sp, access_tags_patch=tp)
    assert dict(node.metadata) == {"x": 1, "nested": {"p": 1, "r": 3}, "kept": "k", "y": 2}
    assert node.specs == [Spec("one"), Spec("two")] and list(node.access_tags) == ["t", "u"]
    assert dict(client["a"].metadata) == dict(node.metadata)


def test_metadata_copy_is_metadata_specs_and_access_tags(client):
    node = client.create_container("c", metadata={"a": {"b": 1}}, specs=["s"], access_tags=["t"])
    copied = node.metadata_copy()
    assert copied == [{"a": {"b": 1}}, [Spec("s")], ["t"]]
    metadata, specs, access_tags = copied
    assert isinstance(metadata, dict) and isinstance(specs, list) and isinstance(access_tags, list)
    # The documented idiom: edit the first, send it back.
    md = node.metadata_copy()[0]
    md["a"]["b"] = 2
    md["c"] = 3
    assert node.metadata["a"] == {"b": 1}  # a copy, detached
    node.update_metadata(metadata=md)
    assert dict(client["c"].metadata) == {"a": {"b": 2}, "c": 3}


def test_specs_and_access_tags_are_read_only_views(client, tmp_path):
    node = client.create_container("c", specs=["s"], access_tags=["t"])
    for view in (node.specs, node.access_tags):
        assert isinstance(view, ListView)
        with pytest.raises(TypeError):
            view[0] = "changed"
        assert not hasattr(view, "append")
    assert node.specs == [Spec("s")] and node.access_tags == ["t"]
    # A node without access tags (outside any catalog): no attribute, as upstream.
    tree = MapAdapter({"x": ArrayAdapter.from_array(numpy.zeros(2))})
    with Context.from_app(build_app(tree)) as context:
        plain = from_context(context)["x"]
        assert not hasattr(plain, "access_tags")
        with pytest.raises(AttributeError):
            _ = plain.access_tags
        assert plain.metadata_copy() == [{}, [], []]


@pytest.mark.parametrize(
    "specs", [[f"s{i}" for i in range(21)], ["same", "same"]], ids=["21 specs", "duplicates"]
)
def test_specs_the_server_refuses_are_client_errors(client, specs):
    with pytest.raises(ClientError) as caught:
        client.create_container("c", specs=specs)
    assert caught.value.response.status_code == 422
    node = client.create_container("d")
    with pytest.raises(ClientError):
        node.update_metadata(specs=specs)
    with pytest.raises(ClientError):
        node.replace_metadata(metadata={}, specs=specs)
    assert list(client["d"].specs) == []


# --- containers -------------------------------------------------------------------------------


def test_delete_contents_returns_the_container(client):
    for key in "abc":
        client.write_array([1], key=key)
    assert client.delete_contents(["a", "a"], external_only=False) is client
    assert list(client.delete_contents("b", external_only=False)) == ["c"]
    assert len(client.delete_contents(external_only=False)) == 0


def test_write_dataframe_and_write_table_take_data(client):
    frame = pandas.DataFrame({"x": [1, 2, 3], "y": [0.5, 1.5, 2.5]})
    by_data = client.write_dataframe(data=frame, key="t1")
    pandas.testing.assert_frame_equal(by_data.read(), frame)
    pandas.testing.assert_frame_equal(client.write_table(data=frame, key="t2").read(), frame)
    pandas.testing.assert_frame_equal(client.write_dataframe(frame, key="t3").read(), frame)
    # This client's keyword, kept.
    pandas.testing.assert_frame_equal(client.write_dataframe(dataframe=frame, key="t4").read(),
                                      frame)  # fmt: skip
    with pytest.raises(TypeError):
        client.write_dataframe(data=frame, dataframe=frame)


def test_data_sources_carry_the_structure_as_sent(client):
    node = client.write_array(numpy.zeros((3, 4), dtype="int32"), key="a")
    (source,) = node.data_sources()
    assert isinstance(source.structure, dict)
    assert source.structure["shape"] == [3, 4]
    assert source.structure["data_type"]["itemsize"] == 4
    assert source.structure == node.item["attributes"]["structure"]
    assert source.structure_family == "array" and source.management == "writable"
    assert source.mimetype == "application/x-zarr" and source.assets[0].is_directory
    # A data source read so goes back as it came (a new node of the same structure).
    copy = client.new(source.structure_family, [source], key="copy")
    assert copy.shape == (3, 4) and copy.dtype == numpy.dtype("int32")
    table = client.write_dataframe(pandas.DataFrame({"x": [1, 2]}), key="t")
    (source,) = table.data_sources()
    assert source.structure["npartitions"] == 1 and source.structure["columns"] == ["x"]


def test_registering_a_missing_file_is_file_not_found(client, tmp_path):
    missing = tmp_path / "files" / "missing.npy"
    with pytest.raises(FileNotFoundError) as caught:
        client.register(missing)
    assert caught.value.filename == str(missing)
    assert isinstance(caught.value, ValueError)  # as this client raised before


# --- build_metadata_patches against upstream's own ---------------------------------------------

UPSTREAM_PATCHES = r"""
import json, sys, types
from tiled.client.base import BaseClient
from tiled.client.metadata_update import DELETE_KEY
from tiled.structures.core import Spec

def decode(value):
    if value == "__DELETE_KEY__":
        return DELETE_KEY
    if isinstance(value, dict):
        if set(value) == {"__spec__"}:
            return Spec(value["__spec__"])
        return {k: decode(v) for k, v in value.items()}
    if isinstance(value, list):
        return [decode(v) for v in value]
    return value

def encode(value):
    if isinstance(value, Spec):
        return {"__spec__": value.name}
    raise TypeError(repr(value))

results = []
for case in json.load(sys.stdin):
    node = types.SimpleNamespace(_item={"attributes": case["attributes"]})
    try:
        found = BaseClient.build_metadata_patches(node, **decode(case["arguments"]))
        results.append({"patches": list(found)})
    except Exception as error:
        results.append({"error": type(error).__name__})
print(json.dumps(results, default=encode))
"""


def _scalar(r: random.Random):
    return r.choice([0, 1, 2, True, False, None, 1.0, 2.5, "a", "b", "", "x/y~z", math.nan])


def _value(r: random.Random, depth: int):
    kind = r.random()
    if depth <= 0 or kind < 0.45:
        return _scalar(r)
    if kind < 0.75:
        return [_value(r, depth - 1) for _ in range(r.randint(0, 5))]
    return {r.choice("abcdef"): _value(r, depth - 1) for _ in range(r.randint(0, 4))}


def _update(r: random.Random, current, depth: int):
    """An update as update_metadata takes it: new keys, changed values, DELETE_KEY, nested
    updates, and values taken from elsewhere in ``current`` (which become moves)."""
    update = {}
    elsewhere = list(current.values()) if isinstance(current, dict) else []
    for _ in range(r.randint(0, 5)):
        key = r.choice("abcdefg")
        kind = r.random()
        if kind < 0.2:
            update[key] = "__DELETE_KEY__"
        elif kind < 0.4 and isinstance(current.get(key), dict) and depth > 0:
            update[key] = _update(r, current[key], depth - 1)
        elif kind < 0.55 and elsewhere:
            update[key] = r.choice(elsewhere)
        elif kind < 0.75 and isinstance(current.get(key), list):
            changed = list(current[key])
            for _ in range(r.randint(1, 3)):
                if changed and r.random() < 0.4:
                    del changed[r.randrange(len(changed))]
                elif changed and r.random() < 0.5:
                    changed.insert(r.randrange(len(changed) + 1), changed.pop())
                else:
                    changed.insert(r.randint(0, len(changed)), _value(r, 1))
            update[key] = changed
        else:
            update[key] = _value(r, 2)
    return update


def _decoded(value):
    if value == "__DELETE_KEY__":
        return DELETE_KEY
    if isinstance(value, dict):
        if set(value) == {"__spec__"}:
            return Spec(value["__spec__"])
        return {k: _decoded(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_decoded(v) for v in value]
    return value


def _encoded(value):
    if isinstance(value, Spec):
        return {"__spec__": value.name}
    raise TypeError(repr(value))


def _cases() -> list[dict]:
    cases = [
        # update_metadata's documented examples, specs and tags added, removed, reordered.
        {"metadata": {"x": 1, "n": {"p": 1}}, "arguments": {"metadata": {"n": {"q": 2}}}},
        {"metadata": {"x": 1}, "arguments": {"metadata": {"x": "__DELETE_KEY__", "y": 1}}},
        {"metadata": {"l": [1, 2, 3]}, "arguments": {"metadata": {"l": [0, 1, 2, 3, 4]}}},
        {"metadata": {"l": [1, 2, 3]}, "arguments": {"metadata": {"l": [3, 2, 1]}}},
        {"metadata": {"a": [{"k": 1}, {"k": 2}]}, "arguments": {"metadata": {"a": [{"k": 2}]}}},
        {"metadata": {"n": None}, "arguments": {"metadata": {"n": math.nan, "m": None}}},
        {"metadata": {"x": 1}, "arguments": {"metadata": {"x": 1.0, "y": True}}},
        {"specs": ["a", "b", "c"], "arguments": {"specs": ["c", "a"]}},
        {"specs": ["a"], "arguments": {"specs": ["a", {"__spec__": "b"}]}},
        {"specs": ["a"], "arguments": {"specs": []}},
        {"tags": ["t"], "arguments": {"access_tags": ["u", "t"]}},
        {"tags": ["t"], "arguments": {"access_tags": []}},
        {"metadata": {"x": 1}, "arguments": {"metadata": {"x": {"y": "__DELETE_KEY__"}}}},
        {"metadata": {}, "arguments": {}},
    ]
    r = random.Random(20)
    for _ in range(400):
        metadata = {r.choice("abcdefg"): _value(r, 3) for _ in range(r.randint(0, 6))}
        cases.append({"metadata": metadata, "arguments": {"metadata": _update(r, metadata, 2)}})
    for _ in range(60):
        names = r.sample("abcdefgh", r.randint(0, 6))
        wanted = r.sample("abcdefgh", r.randint(0, 6))
        cases.append({"specs": names, "tags": names, "arguments": {"specs": wanted,
                                                                    "access_tags": wanted}})  # fmt: skip
    return [
        {
            "attributes": {
                "metadata": case.get("metadata", {}),
                "specs": [{"name": name, "version": None} for name in case.get("specs", [])],
                "access_tags": case.get("tags", []),
            },
            "arguments": case["arguments"],
        }
        for case in cases
    ]


@pytest.mark.slow
def test_build_metadata_patches_matches_upstreams(client, upstream_tiled):
    # Upstream's method on a stand-in node (it reads only the item's attributes), in
    # upstream's environment (run as isolated_python.run_isolated runs it, given stdin).
    import subprocess

    cases = _cases()
    done = subprocess.run(
        [upstream_tiled, "-I", "-c", UPSTREAM_PATCHES],
        input=json.dumps(cases), capture_output=True, text=True, timeout=300,
        cwd=upstream_tiled.parent,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    expected = json.loads(done.stdout)
    node = client.create_container("c")
    mismatches = []
    for case, upstream in zip(cases, expected, strict=True):
        node._item["attributes"].update(json.loads(json.dumps(case["attributes"])))
        try:
            found = node.build_metadata_patches(**_decoded(case["arguments"]))
            ours = {"patches": json.loads(json.dumps(list(found), default=_encoded))}
        except Exception as error:
            ours = {"error": type(error).__name__}
        if ours != upstream:
            mismatches.append((case, upstream, ours))
    assert not mismatches, mismatches[:3]
    assert len(expected) == len(cases) > 400


def test_apply_update_patch_as_upstream():
    document = {"a": {"b": 1, "c": 2}, "d": 3}
    updated = apply_update_patch(document, {"a": {"c": DELETE_KEY, "e": {"f": DELETE_KEY}}})
    assert updated is document and document == {"a": {"b": 1, "e": {}}, "d": 3}
    assert apply_update_patch({"a": 1}, [1]) == [1]  # not a dict: replaces the document
    assert apply_update_patch({"a": 1}, {"b": 2}, {"a": DELETE_KEY}) == {"b": 2}


def test_upstreams_script_runs_unchanged(client, tmp_path):
    """One script of upstream's idioms, start to end."""
    c = client
    arr = c.write_array(numpy.zeros((2, 3)), key="arr", metadata={"units": "m"}, specs=["s"])
    arr.write(numpy.ones((2, 3)), persist=False)
    arr.write_block(numpy.ones((2, 3)), (0, 0), slice=..., persist=True)
    md = arr.metadata_copy()[0]
    md["units"] = "mm"
    md["gone"] = DELETE_KEY
    metadata_patch, specs_patch, access_tags_patch = arr.build_metadata_patches(
        metadata=md, specs=["s", "t"]
    )
    arr.patch_metadata(
        metadata_patch=metadata_patch, specs_patch=specs_patch, access_tags_patch=access_tags_patch
    )
    assert arr.metadata["units"] == "mm" and [s.name for s in arr.specs] == ["s", "t"]
    (ds,) = arr.data_sources()
    assert ds.structure["shape"] == [2, 3]
    c.write_dataframe(data=pandas.DataFrame({"a": [1]}), key="df")
    assert sorted(c.delete_contents("df", external_only=False)) == ["arr"]
    try:
        c.create_container("bad", specs=["x", "x"])
    except ClientError as error:
        assert error.response.status_code == 422
    else:
        raise AssertionError("duplicate specs were accepted")
    try:
        c.register(tmp_path / "files" / "nothing.npy")
    except FileNotFoundError:
        pass
    numpy.testing.assert_array_equal(arr.read(), numpy.ones((2, 3)))
