"""Metadata a client may not write, through /api/v1 and /zarr, on SQLite and PostgreSQL: a clear
4xx with a ``detail`` (never a 500), and the node, its revisions and its zarr documents as they
were."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import numpy
import pytest

from tiled.access.policies import SimpleAccessPolicy
from tiled.catalog import from_uri
from tiled.server.app import build_app

from .live_server import serve
from .test_catalog import database_uri, postgres_database, storage  # noqa: F401 (fixtures)
from .test_catalog_http import HEADERS, array_request, live_catalog  # noqa: F401 (fixture)

JSON_PATCH = "application/json-patch+json"
MERGE_PATCH = "application/merge-patch+json"
METADATA = {"units": "m", "l": [1, 2], "n": 1}
# The zarr documents of ``x`` and of the root (whose consolidated metadata lists every node).
DOCUMENTS = ["v2/.zmetadata", "v2/x/.zarray", "v2/x/.zattrs", "v3/zarr.json", "v3/x/zarr.json"]


def observed(client: httpx.Client, storage: Path) -> tuple:  # noqa: F811
    """Everything a refused write must leave as it was: the node's metadata, specs and
    revisions, the zarr documents of both formats, the stored files."""
    node = client.get("/api/v1/metadata/x").json()["data"]["attributes"]
    revisions = client.get("/api/v1/revisions/x").json()["data"]
    documents = [client.get(f"/zarr/{key}").content for key in DOCUMENTS]
    files = sorted(str(p.relative_to(storage)) for p in storage.rglob("*"))
    return node["metadata"], node["specs"], revisions, documents, files


@pytest.fixture
def client(live_catalog, storage):  # noqa: F811
    """A client of a catalog server holding the array ``x`` (with METADATA), and a check that
    a request is refused with ``status`` and changes nothing."""
    server_context, _ = live_catalog()
    with server_context as server, httpx.Client(base_url=server.url, headers=HEADERS) as client:
        request = {**array_request("x", numpy.arange(4.0), [[2, 2]]), "metadata": METADATA}
        assert client.post("/api/v1/metadata/", json=request).status_code == 200

        def refused(method: str, url: str, status: int = 400, **kwargs) -> str:
            before = observed(client, storage)
            response = client.request(method, url, **kwargs)
            assert response.status_code == status, response.text
            assert observed(client, storage) == before
            return response.json()["detail"]

        client.refused = refused
        yield client


def raw_json(document: str) -> dict:
    # httpx cannot encode a lone surrogate: the body is sent as the JSON escape itself.
    return {"content": document.encode(), "headers": {"Content-Type": "application/json"}}


@pytest.mark.parametrize(
    ("operations", "words"),
    [
        ([{"op": "add", "path": 5, "value": 1}], '"path" must be a JSON pointer'),
        ([{"op": "copy", "from": 5, "path": "/c"}], '"from" must be a JSON pointer'),
        ([{"op": "move", "path": "/m"}], '"from" is missing'),
        ([{"op": "copy", "path": "/c"}], '"from" is missing'),
        ([{"op": "add", "path": "/l/0"}], '"value" is missing'),
        ([{"op": "replace", "path": "/units"}], '"value" is missing'),
        ([{"op": "add", "path": "/l/abc", "value": 1}], "not an array index"),
        ([{"op": "add", "path": "/l/01", "value": 1}], "not an array index"),
        ([{"op": "add", "path": "/l/" + "1" * 5000, "value": 1}], "out of range"),  # int() refuses
        ([{"op": "add", "path": "/l/1_0", "value": 1}], "not an array index"),
        ([{"op": "remove", "path": "/l/-1"}], "not an array index"),
        ([{"op": "add", "path": "/l/3", "value": 1}], "out of range"),
        ([{"op": "remove", "path": "/l/-"}], '"-"'),
        ([{"op": "add", "path": "/units/x", "value": 1}], "neither an object nor an array"),
        ([{"op": "add", "path": "/a~2", "value": 1}], '"~"'),
        ([{"op": "move", "from": "/l", "path": "/l/0"}], "own children"),
        ([{"op": "test", "path": "/n", "value": True}], "is not True"),
        ([{"op": "test", "path": "/units", "value": "s"}], "is not 's'"),
        ([{"op": "nope", "path": "/a"}], '"op"'),
        ([{"op": ["add"], "path": "/a", "value": 1}], '"op"'),
        ([{"op": "remove"}], '"path"'),
    ],
)
def test_malformed_json_patch_operations_are_400(client, operations, words):
    body = {"content-type": JSON_PATCH, "metadata": [{"op": "test", "path": "/n", "value": 1}]}
    body["metadata"] = body["metadata"] + operations  # the second operation is the bad one
    detail = client.refused("PATCH", "/api/v1/metadata/x", json=body)
    assert "operation 1" in detail and words in detail


@pytest.mark.parametrize(
    ("content_type", "specs"),
    [
        (MERGE_PATCH, "abc"),
        (MERGE_PATCH, {"a": 1}),
        (JSON_PATCH, [{"op": "replace", "path": "", "value": "abc"}]),
    ],
)
def test_patched_specs_must_be_a_list(client, content_type, specs):
    # As a PUT of such specs is refused (422).
    client.refused(
        "PATCH",
        "/api/v1/metadata/x",
        422,
        json={"content-type": content_type, "specs": specs},
    )


@pytest.mark.parametrize(
    ("method", "url", "document"),
    [
        ("PUT", "/api/v1/metadata/x", '{"metadata": {"a": "\\ud800"}}'),
        ("POST", "/api/v1/metadata/", '{"id": "n", "structure_family": "container", "metadata": {"a": "\\ud800"}}'),
        ("POST", "/api/v1/metadata/", '{"id": "n", "structure_family": "container", "metadata": {"\\udfff": 1}}'),
        ("PATCH", "/api/v1/metadata/x", f'{{"content-type": "{MERGE_PATCH}", "metadata": {{"a": "\\ud800"}}}}'),
    ],
)  # fmt: skip
def test_text_without_utf8_form_is_not_stored(client, method, url, document):
    detail = client.refused(method, url, **raw_json(document))
    assert "surrogate" in detail


WIDE = 2**64  # one past the largest integer msgpack carries


@pytest.mark.parametrize(
    ("method", "url", "document"),
    [
        ("PUT", "/api/v1/metadata/x", f'{{"metadata": {{"a": {WIDE}}}}}'),
        ("POST", "/api/v1/metadata/", f'{{"id": "n", "structure_family": "container", "metadata": {{"a": [{-(2**63) - 1}]}}}}'),
        ("PATCH", "/api/v1/metadata/x", f'{{"content-type": "{MERGE_PATCH}", "metadata": {{"a": {{"b": {WIDE}}}}}}}'),
        ("PATCH", "/api/v1/metadata/x", f'{{"content-type": "{JSON_PATCH}", "metadata": [{{"op": "add", "path": "/a", "value": {WIDE}}}]}}'),
        ("PUT", "/zarr/v2/x/.zattrs", f'{{"a": {WIDE}}}'),
    ],
)  # fmt: skip
def test_integers_past_64_bits_are_not_stored(client, method, url, document):
    # Stored, msgpack (the documents upstream's client asks for) could never send them.
    detail = client.refused(method, url, **raw_json(document))
    assert "64-bit" in detail


def test_integers_of_64_bits_are_stored_and_sent_as_msgpack(client):
    import msgpack

    edges = {"max": 2**64 - 1, "min": -(2**63)}
    assert client.put("/api/v1/metadata/x", json={"metadata": edges}).status_code == 200
    response = client.get("/api/v1/metadata/x", headers={"Accept": "application/x-msgpack"})
    assert msgpack.unpackb(response.content)["data"]["attributes"]["metadata"] == edges


def test_wide_integers_held_by_a_tree_are_sent_as_text_in_msgpack():
    import msgpack

    from tiled.adapters.mapping import MapAdapter

    tree = MapAdapter({"n": MapAdapter({}, metadata={"wide": WIDE, "l": [1, -WIDE]})})
    with serve(build_app(tree, authentication={"allow_anonymous_access": True})) as live:
        url = f"{live.url}/api/v1/metadata/n"
        as_json = httpx.get(url).json()["data"]["attributes"]["metadata"]
        assert as_json == {"wide": WIDE, "l": [1, -WIDE]}
        packed = httpx.get(url, headers={"Accept": "application/x-msgpack"})
        assert packed.status_code == 200, packed.text
        metadata = msgpack.unpackb(packed.content)["data"]["attributes"]["metadata"]
        assert metadata == {"wide": str(WIDE), "l": [1, str(-WIDE)]}


def zarr_json(client: httpx.Client, **changes) -> dict:
    return {**client.get("/zarr/v3/x/zarr.json").json(), **changes}


@pytest.mark.parametrize("attributes", [[1], "x", 1])
@pytest.mark.parametrize("path", ["x", "new"])
def test_zarr_attributes_must_be_an_object(client, attributes, path):
    document = zarr_json(client, attributes=attributes)
    detail = client.refused("PUT", f"/zarr/v3/{path}/zarr.json", json=document)
    assert "must be a JSON object" in detail


@pytest.mark.parametrize("dims", [1, [1], "t", None, {}, ["a", "b"]])
def test_v2_dimension_names_must_be_names_of_each_dimension(client, dims):
    assert client.put("/zarr/v2/x/.zattrs", json={"_ARRAY_DIMENSIONS": ["t"]}).status_code == 204
    detail = client.refused("PUT", "/zarr/v2/x/.zattrs", json={"_ARRAY_DIMENSIONS": dims, "u": 1})
    assert "_ARRAY_DIMENSIONS" in detail or "rank" in detail


@pytest.mark.parametrize(
    ("key", "document"),
    [
        (".zmetadata", b"garbage"),
        (".zmetadata", b"[]"),
        (".zmetadata", json.dumps({"zarr_consolidated_format": 2, "metadata": {}}).encode()),
        (".zgroup", json.dumps({"zarr_format": 3}).encode()),
        (".zgroup", json.dumps({"zarr_format": True}).encode()),
        ("g/.zgroup", json.dumps({"zarr_format": 3}).encode()),
    ],
)
def test_derived_v2_documents_must_be_what_they_claim(client, key, document):
    detail = client.refused("PUT", f"/zarr/v2/{key}", content=document)
    assert key.rpartition("/")[2] in detail


def test_a_zarr_create_over_a_hidden_node_says_the_name_is_taken(database_uri, storage):  # noqa: F811
    tree = from_uri(database_uri, writable_storage=storage, init_if_not_exists=True)
    owner = build_app(tree, authentication={"single_user_api_key": "secret"})
    with serve(owner) as server, httpx.Client(base_url=server.url, headers=HEADERS) as client:
        body = {"id": "alice_data", "structure_family": "container", "metadata": {"a": 1}}
        assert client.post("/api/v1/metadata/", json=body).status_code == 200
        taken = client.post("/api/v1/metadata/", json=body).json()["detail"]
    # A user (the same key) whose policy hides every top-level node.
    hiding = build_app(
        tree,
        authentication={"single_user_api_key": "secret"},
        access_policy=SimpleAccessPolicy({}),
    )
    group = {"zarr_format": 3, "node_type": "group", "attributes": {"b": 2}}
    with serve(hiding) as server, httpx.Client(base_url=server.url, headers=HEADERS) as client:
        assert client.get("/api/v1/metadata/alice_data").status_code == 404
        response = client.put("/zarr/v3/alice_data/zarr.json", json=group)
        assert response.status_code == 409, response.text
        assert response.json()["detail"] == taken  # no more than POST says
        assert "other writers" not in taken and "already" in taken
    with serve(owner) as server, httpx.Client(base_url=server.url, headers=HEADERS) as client:
        node = client.get("/api/v1/metadata/alice_data").json()["data"]["attributes"]
        assert node["metadata"] == {"a": 1}
        assert client.get("/api/v1/revisions/alice_data").json()["data"] == []
