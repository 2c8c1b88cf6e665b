"""Structures and parameters the catalog cannot hold are refused through /api/v1 with a 4xx and
a ``detail``, and leave the catalog and its storage as they were (was: 500s, silent coercions,
or arrays accepted that no later read could serve)."""

from __future__ import annotations

import copy

import httpx
import numpy
import pytest

from tiled.catalog import from_uri
from tiled.server.app import build_app

from .live_server import serve
from .test_catalog import database_uri, postgres_database, storage  # noqa: F401 (fixtures)
from .test_catalog_http import HEADERS, array_request

DATA = numpy.arange(3 * 4, dtype="float64").reshape(3, 4)
TOO_MANY = 1_000_001  # one chunk more than a dimension may have
HUGE = 99999999999999999999


def created(key: str, **structure) -> dict:
    """A request creating array ``key`` (3 float64 values) with ``structure`` changed."""
    body = array_request(key, numpy.zeros(3), [[3]])
    body["data_sources"][0]["structure"].update(structure)
    return body


def with_assets(assets: list) -> dict:
    body = created("y")
    body["data_sources"][0]["assets"] = assets
    return body


def with_dtype(data_type: dict) -> dict:
    return created("y", data_type=data_type)


def sparse(chunks: list, shape: list) -> dict:
    structure = {"chunks": chunks, "shape": shape, "data_type": None, "layout": "COO"}
    source = {"structure_family": "sparse", "structure": structure, "management": "writable"}
    return {"id": "y", "structure_family": "sparse", "data_sources": [source]}


def patched(offset: str) -> dict:
    """A PATCH of x writing ones (3 by 4) at ``offset``, growing x if need be."""
    params = {"offset": offset, "shape": "3,4", "extend": "true"}
    return {"params": params, "content": numpy.ones((3, 4)).tobytes()}


FLOAT64 = {"endianness": "little", "kind": "f", "itemsize": 8, "dt_units": None}
MERGE = "application/merge-patch+json"

# (method, url, request keywords, expected status): each must change nothing.
REFUSED = {
    # More chunks along a dimension than /zarr admits (reading them exhausted memory).
    "too-many-chunks": ("post", "/api/v1/metadata/", {"json": created(
        "y", shape=[TOO_MANY], chunks=[[1] * TOO_MANY])}, 400),
    "too-many-sparse-chunks": ("post", "/api/v1/metadata/", {"json": sparse(
        [[1] * TOO_MANY], [TOO_MANY])}, 400),
    # A grown grid over the limit (was a MemoryError), or sizes past 64 bits (OverflowError).
    "grown-too-many-chunks": ("patch", "/api/v1/array/full/x", patched("1000000000,0"), 400),
    "grown-past-64-bits": ("patch", "/api/v1/array/full/x", patched(f"{HUGE},0"), 400),
    # An empty offset names no position (a shorter one is upstream's "along the first").
    "empty-offset": ("patch", "/api/v1/array/full/x", patched(""), 400),
    # Shapes and byte counts numpy cannot index (later reads were OverflowErrors).
    "shape-past-64-bits": ("post", "/api/v1/metadata/", {"json": created(
        "y", shape=[2**70], chunks=[[2**70]])}, 400),
    "bytes-past-64-bits": ("post", "/api/v1/metadata/", {"json": created(
        "y", shape=[2**62], chunks=[[2**62]])}, 400),
    # Data types zarr or numpy refuse (were 500s), or that lie about their size.
    "empty-string-type": ("post", "/api/v1/metadata/", {"json": with_dtype(
        {"kind": "S", "itemsize": 0, "endianness": "not_applicable"})}, 400),
    "duplicate-field": ("post", "/api/v1/metadata/", {"json": with_dtype({"itemsize": 16, "fields": [
        {"name": "a", "dtype": FLOAT64}, {"name": "a", "dtype": FLOAT64}]})}, 400),
    "record-smaller-than-fields": ("post", "/api/v1/metadata/", {"json": with_dtype(
        {"itemsize": 1, "fields": [{"name": "a", "dtype": FLOAT64}]})}, 400),
    "boolean-itemsize": ("post", "/api/v1/metadata/", {"json": with_dtype(
        {"kind": "b", "itemsize": True, "endianness": "not_applicable"})}, 400),
    # dims are names, one per dimension (a number was a 500).
    "dims-not-names": ("post", "/api/v1/metadata/", {"json": created("y", dims=[1])}, 400),
    "dims-a-string": ("post", "/api/v1/metadata/", {"json": created("y", dims="x")}, 400),
    # Assets need a data_uri string and an is_directory boolean (were 500s).
    "empty-asset": ("post", "/api/v1/metadata/", {"json": with_assets([{}])}, 400),
    "numeric-data-uri": ("post", "/api/v1/register/", {"json": with_assets(
        [{"data_uri": 5}])}, 400),
    "register-empty-asset": ("post", "/api/v1/register/", {"json": with_assets([{}])}, 400),
    # Sizes were truncated (3.5 -> 3), parsed ("3") or counted (true -> 1).
    "float-shape": ("post", "/api/v1/metadata/", {"json": created("y", shape=[3.5])}, 400),
    "rounded-shape": ("post", "/api/v1/metadata/", {"json": created(
        "y", shape=[2.9], chunks=[[2]])}, 400),
    "string-shape": ("post", "/api/v1/metadata/", {"json": created("y", shape=["3"])}, 400),
    "boolean-shape": ("post", "/api/v1/metadata/", {"json": created(
        "y", shape=[True], chunks=[[1]])}, 400),
    "float-chunks": ("post", "/api/v1/metadata/", {"json": created("y", chunks=[[3.0]])}, 400),
    "resizable-not-boolean": ("post", "/api/v1/metadata/", {"json": created(
        "y", resizable=[1])}, 400),
    # A patch's content-type is a name (a list was an unhashable 500).
    "content-type-list": ("patch", "/api/v1/metadata/x", {"json": {
        "content-type": [MERGE], "metadata": {"a": 1}}}, 406),
    "content-type-object": ("patch", "/api/v1/metadata/x", {"json": {
        "content-type": {"a": MERGE}, "metadata": {"a": 1}}}, 406),
    # A revision number past 64 bits (was an OverflowError in the database driver).
    "revision-past-64-bits": ("delete", "/api/v1/revisions/x", {"params": {
        "number": str(HUGE * 1000)}}, 422),
}  # fmt: skip


@pytest.fixture
def live_catalog(database_uri, storage):  # noqa: F811
    tree = from_uri(database_uri, writable_storage=storage, init_if_not_exists=True)
    return serve(build_app(tree, authentication={"single_user_api_key": "secret"}))


def state(client: httpx.Client, storage) -> tuple:  # noqa: F811
    """What a refused request must leave as it was: nodes, x's data, revisions and files."""
    return (
        client.get("/api/v1/search/").json()["data"],
        client.get("/api/v1/array/full/x").content,
        client.get("/api/v1/revisions/x").json()["data"],
        sorted(str(p.relative_to(storage)) for p in storage.rglob("*")),
    )


def prepared(client: httpx.Client) -> None:
    """Array x, written once, with one revision of its metadata."""
    assert client.post("/api/v1/metadata/", json=array_request("x", DATA, [[2, 1], [4]])).is_success
    assert client.put("/api/v1/array/full/x", content=DATA.tobytes()).is_success
    assert client.put("/api/v1/metadata/x", json={"metadata": {"v": 2}}).is_success


@pytest.mark.parametrize(("method", "url", "kwargs", "status"), REFUSED.values(), ids=list(REFUSED))
def test_refused_requests_change_nothing(live_catalog, storage, method, url, kwargs, status):  # noqa: F811
    with live_catalog as server, httpx.Client(base_url=server.url, headers=HEADERS) as client:
        prepared(client)
        before = state(client, storage)
        response = client.request(method.upper(), url, **copy.deepcopy(kwargs))
        assert response.status_code == status, response.text
        assert response.json()["detail"]
        assert state(client, storage) == before


def test_data_source_patch_must_lie_inside_the_array(live_catalog, storage):  # noqa: F811
    """An echo of a stored data source changes nothing, but its patch region is still checked
    (an offset past 64 bits was answered 200)."""
    with live_catalog as server, httpx.Client(base_url=server.url, headers=HEADERS) as client:
        prepared(client)
        (source,) = client.get(
            "/api/v1/metadata/x", params={"include_data_sources": "true"}
        ).json()["data"]["attributes"]["data_sources"]
        url = "/api/v1/data_source/x"
        before = state(client, storage)
        for offset in (f"{HUGE},0", "3,0"):
            params = {"patch_shape": "1,1", "patch_offset": offset}
            response = client.put(url, params=params, json={"data_source": source})
            assert response.status_code == 400, response.text
            assert response.json()["detail"]
        assert state(client, storage) == before
        params = {"patch_shape": "1,1", "patch_offset": "2,3"}
        assert client.put(url, params=params, json={"data_source": source}).status_code == 200


def test_limits_are_inclusive(live_catalog):
    """What the refusals above bound is still accepted at the bound: a grid of exactly the
    largest number of chunks, a record type with padding, named dims, per-dimension flags."""
    record = {"itemsize": 16, "fields": [{"name": "a", "dtype": FLOAT64}]}
    with live_catalog as server, httpx.Client(base_url=server.url, headers=HEADERS) as client:
        bodies = [
            created("grid", shape=[TOO_MANY - 1], chunks=[[1] * (TOO_MANY - 1)]),
            created("record", data_type=record),
            created("named", dims=["x"], resizable=[True]),
        ]
        for body in bodies:
            response = client.post("/api/v1/metadata/", json=body)
            assert response.status_code == 200, response.text
        attributes = client.get("/api/v1/metadata/named").json()["data"]["attributes"]
        assert attributes["structure"]["dims"] == ["x"]
        assert attributes["structure"]["resizable"] == [True]
