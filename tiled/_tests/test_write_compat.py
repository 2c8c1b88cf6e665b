"""The write path as upstream 0.2.20's server answers it: unstored writes (``persist=false``),
the access tags a create or an update answers with, keys the server generates, external data
sources without files, and the deprecated ``PUT /node/full`` route. Upstream's own client is
run against this server where it depends on the answer."""

from __future__ import annotations

import json

import numpy
import pandas
import pyarrow
import pytest

from tiled.catalog import from_uri
from tiled.client import Context, from_context
from tiled.server.app import build_app

from .isolated_python import run_isolated
from .live_server import serve

ARROW = "application/vnd.apache.arrow.file"
OCTET = {"Content-Type": "application/octet-stream"}
INT_ARRAY = {
    "data_type": {"endianness": "little", "kind": "i", "itemsize": 8, "dt_units": None},
    "chunks": [[4]], "shape": [4], "dims": None, "resizable": False,
}  # fmt: skip


@pytest.fixture
def tree(tmp_path):
    return from_uri(
        f"sqlite:///{tmp_path / 'catalog.db'}",
        writable_storage=tmp_path / "data",
        init_if_not_exists=True,
    )


@pytest.fixture
def context(tree):
    with Context.from_app(build_app(tree)) as context:
        yield context


def _arrow_file(table: pyarrow.Table) -> bytes:
    sink = pyarrow.BufferOutputStream()
    with pyarrow.ipc.new_file(sink, table.schema) as writer:
        writer.write_table(table)
    return sink.getvalue().to_pybytes()


# --- 1. persist=false stores nothing (upstream streams it to subscribers only) ---


def test_unpersisted_dense_writes_store_nothing(context):
    client, http = from_context(context), context.http_client
    client.write_array(numpy.arange(4), key="pz")
    full = numpy.full(4, 99).tobytes()
    answer = http.put(
        "/api/v1/array/full/pz", content=full, params={"persist": "false"}, headers=OCTET
    )
    assert answer.status_code == 200, answer.text
    block = numpy.full(4, 98).tobytes()
    params = {"block": "0", "persist": "false"}
    answer = http.put("/api/v1/array/block/pz", content=block, params=params, headers=OCTET)
    assert answer.status_code == 200, answer.text
    assert client["pz"].read().tolist() == [0, 1, 2, 3]
    # The body is checked all the same: one of the wrong size, or a block off the grid, is
    # refused, stored or not.
    short = numpy.arange(3).tobytes()
    for route, extra in (("full", {}), ("block", {"block": "0"})):
        refused = http.put(
            f"/api/v1/array/{route}/pz", content=short, headers=OCTET,
            params={"persist": "false", **extra},
        )  # fmt: skip
        assert 400 <= refused.status_code < 500, refused.text
    off_grid = http.put(
        "/api/v1/array/block/pz", content=block, params={"block": "5", "persist": "false"},
        headers=OCTET,
    )  # fmt: skip
    assert 400 <= off_grid.status_code < 500, off_grid.text
    # Persisted, as before.
    assert http.put("/api/v1/array/full/pz", content=full, headers=OCTET).status_code == 200
    assert client["pz"].read().tolist() == [99] * 4


def test_unpersisted_sparse_writes_store_nothing(context):
    import sparse

    client, http = from_context(context), context.http_client
    client.write_sparse(coords=[[0, 2]], data=[1.0, 2.0], shape=(4,), key="sp")
    body = _arrow_file(pyarrow.table({"dim0": [1, 3], "data": [7.0, 8.0]}))
    headers = {"Content-Type": ARROW}
    for route, extra in (("full", {}), ("block", {"block": "0"})):
        params = {"persist": "false", **extra}
        answer = http.put(f"/api/v1/array/{route}/sp", content=body, params=params, headers=headers)
        assert answer.status_code == 200, answer.text
    stored = client["sp"].read()
    assert isinstance(stored, sparse.COO) and stored.todense().tolist() == [1.0, 0.0, 2.0, 0.0]
    wrong = _arrow_file(pyarrow.table({"dim0": [1], "dim1": [1], "data": [7.0]}))
    refused = http.put(
        "/api/v1/array/full/sp", content=wrong, params={"persist": "false"}, headers=headers
    )
    assert refused.status_code == 400, refused.text


UPSTREAM_UNPERSISTED = r"""
import json, sys
import numpy as np
from tiled.client import from_uri
c = from_uri(sys.argv[1], api_key="secret")
a = c.write_array(np.arange(4), key="pz")
a.write(np.full(4, 99), persist=False)
a.write_block(np.full(4, 98), block=(0,), persist=False)
print(json.dumps(c["pz"].read().tolist()))
"""


def _live(tree):
    return serve(build_app(tree, authentication={"single_user_api_key": "secret"}))


@pytest.mark.slow
def test_upstreams_client_writes_unpersisted_here(tree, upstream_tiled):
    with _live(tree) as server:
        done = run_isolated(upstream_tiled, UPSTREAM_UNPERSISTED, server.url)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == [0, 1, 2, 3]


# --- 2. the access tags a create or an update answers with (no access policy here) ---
# Upstream without a policy keeps no tags and answers with its tags ([] or the node's) when
# the request differs from the node's tags before (none for a new node). This server keeps the
# tags requested; it answers in the same cases, with the tags it stored.


def test_a_create_answers_with_the_access_tags(context):
    http = context.http_client
    plain = http.post("/api/v1/metadata/", json={"id": "plain", "structure_family": "container"})
    assert plain.status_code == 200, plain.text
    assert plain.json()["access_tags"] == []  # as upstream
    registered = http.post("/api/v1/register/", json={"id": "reg", "structure_family": "container"})
    assert registered.status_code == 200, registered.text
    assert registered.json()["access_tags"] == []
    tagged = {"id": "tagged", "structure_family": "container", "access_tags": ["b", "a", "b"]}
    answer = http.post("/api/v1/metadata/", json=tagged)
    assert answer.status_code == 200, answer.text
    assert answer.json()["access_tags"] == ["a", "b"]
    stored = http.get("/api/v1/metadata/tagged").json()["data"]["attributes"]["access_tags"]
    assert stored == ["a", "b"]
    # Exactly the tags a new node has (none): no answer, as upstream.
    empty = {"id": "empty", "structure_family": "container", "access_tags": []}
    answer = http.post("/api/v1/metadata/", json=empty)
    assert answer.status_code == 200 and "access_tags" not in answer.json()


def test_an_update_answers_with_the_access_tags_when_they_change(context):
    http = context.http_client
    http.post("/api/v1/metadata/", json={"id": "n", "structure_family": "container"})
    put = http.put("/api/v1/metadata/n", json={"metadata": {"x": 1}, "access_tags": ["t"]})
    assert put.status_code == 200, put.text
    assert put.json()["access_tags"] == ["t"]
    # No tags sent, or the node's own: none reported (as upstream).
    for body in ({"metadata": {"x": 2}}, {"metadata": {"x": 3}, "access_tags": ["t"]}):
        untouched = http.put("/api/v1/metadata/n", json=body)
        assert untouched.status_code == 200 and "access_tags" not in untouched.json()
    patch = {
        "content-type": "application/json-patch+json",
        "access_tags": [{"op": "add", "path": "/-", "value": "u"}],
    }
    patched = http.patch("/api/v1/metadata/n", json=patch)
    assert patched.status_code == 200, patched.text
    assert patched.json()["access_tags"] == ["t", "u"]
    merge = {"content-type": "application/merge-patch+json", "metadata": {"y": 1}}
    merged = http.patch("/api/v1/metadata/n", json=merge)
    assert merged.status_code == 200 and "access_tags" not in merged.json()
    stored = http.get("/api/v1/metadata/n").json()["data"]["attributes"]["access_tags"]
    assert stored == ["t", "u"]


UPSTREAM_TAGS = r"""
import json, sys
from tiled.client import from_uri
c = from_uri(sys.argv[1], api_key="secret")
x = c.create_container("k")
created = list(x.access_tags)
copy = x.metadata_copy()
x.patch_metadata(access_tags_patch=[{"op": "add", "path": "/-", "value": "t"}])
y = c.create_container("tagged", access_tags=["a"])
print(json.dumps({
    "created": created, "copy": [copy[0], copy[1], list(copy[2])],
    "patched": list(x.access_tags), "stored": list(c["k"].access_tags),
    "tagged": list(y.access_tags),
}))
"""


@pytest.mark.slow
def test_upstreams_client_reads_the_access_tags_it_is_answered(tree, upstream_tiled):
    with _live(tree) as server:
        done = run_isolated(upstream_tiled, UPSTREAM_TAGS, server.url)
    assert done.returncode == 0, done.stderr
    answer = json.loads(done.stdout)
    assert answer["created"] == [] and answer["copy"] == [{}, [], []]
    # What this server stored (it keeps tags without a policy); the client agrees with it.
    assert answer["patched"] == answer["stored"] == ["t"]
    assert answer["tagged"] == ["a"]


# --- 4. an empty id asks for a generated key (upstream: ``body.id or key_maker()``) ---


def test_an_empty_id_asks_for_a_generated_key(context):
    http = context.http_client
    answer = http.post("/api/v1/metadata/", json={"id": "", "structure_family": "container"})
    assert answer.status_code == 200, answer.text
    key = answer.json()["id"]
    assert key and http.get(f"/api/v1/metadata/{key}").status_code == 200


# --- 5. an external data source without files is refused ---


@pytest.mark.parametrize("route", ["metadata", "register"])
@pytest.mark.parametrize("mimetype", [None, "application/x-zarr"])
def test_an_external_data_source_without_assets_is_refused(context, route, mimetype):
    http = context.http_client
    source = {
        "structure_family": "array", "structure": INT_ARRAY, "management": "external",
        "assets": [], "parameters": {},
    }  # fmt: skip
    if mimetype:
        source["mimetype"] = mimetype
    body = {"id": "ext", "structure_family": "array", "data_sources": [source]}
    refused = http.post(f"/api/v1/{route}/", json=body)
    # 415 as upstream (it refuses one without a mimetype it can read: 415).
    assert refused.status_code == 415, refused.text
    assert "external" in refused.json()["detail"]
    assert http.get("/api/v1/metadata/ext").status_code == 404


# --- 6. PUT /node/full: upstream's deprecated spelling of PUT /table/full ---


def test_put_node_full_writes_a_table(context):
    client, http = from_context(context), context.http_client
    client.write_dataframe(pandas.DataFrame({"a": [1, 2]}), key="t")
    body = _arrow_file(pyarrow.table({"a": [5, 6]}))
    answer = http.put("/api/v1/node/full/t", content=body, headers={"Content-Type": ARROW})
    assert answer.status_code == 200, answer.text
    assert client["t"].read()["a"].tolist() == [5, 6]
    operation = http.get("/openapi.json").json()["paths"]["/api/v1/node/full/{path}"]
    assert operation["put"].get("deprecated") is True
