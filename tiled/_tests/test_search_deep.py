"""``GET /api/v1/search-deep/{path}`` (upstream 0.2.20): a container's descendants at any
depth, on SQLite and PostgreSQL catalogs, under an access policy, and read by upstream's own
client (``Container.search_deep``)."""

from __future__ import annotations

import asyncio
import json

import numpy
import pytest

from tiled.access.policies import SimpleAccessPolicy, TagBasedAccessPolicy
from tiled.adapters.mapping import MapAdapter
from tiled.catalog import from_uri
from tiled.client import Context, from_context
from tiled.server.app import build_app

from .isolated_python import run_isolated
from .live_server import serve
from .test_catalog import database_uri, postgres_database  # noqa: F401 (fixtures)

EQ = "filter[eq][condition]"


@pytest.fixture
def catalog(database_uri, tmp_path):  # noqa: F811
    """outside; a/{inside, b/{deep}}: metadata ``m`` names each, ``n`` is set on some."""
    uri = database_uri
    tree = from_uri(uri, writable_storage=tmp_path / "data", init_if_not_exists=True)
    with Context.from_app(build_app(tree)) as context:
        client = from_context(context)
        client.write_array(numpy.ones(2), key="outside", metadata={"m": "outside", "n": 1})
        a = client.create_container("a", metadata={"m": "a"})
        a.write_array(numpy.ones(2), key="inside", metadata={"m": "inside", "n": 1})
        a.create_container("b", metadata={"m": "b"}).write_array(
            numpy.arange(3), key="deep", metadata={"m": "deep", "n": 2}
        )
    return uri, tmp_path / "data"


def _served(catalog, **kwargs):
    uri, storage = catalog
    return build_app(from_uri(uri, writable_storage=storage), **kwargs)


def _found(response) -> list[str]:
    assert response.status_code == 200, response.text
    return [
        "/".join([*item["attributes"]["ancestors"], item["id"]]) for item in response.json()["data"]
    ]


def test_descendants_at_any_depth_with_queries_depth_and_pages(catalog):
    with Context.from_app(_served(catalog)) as context:
        get = context.http_client.get
        everything = get("/api/v1/search-deep/")
        assert _found(everything) == ["outside", "a", "a/inside", "a/b", "a/b/deep"]
        assert everything.json()["meta"]["count"] == 5
        item = everything.json()["data"][-1]
        assert item["links"]["self"].endswith("/api/v1/metadata/a/b/deep")
        assert item["attributes"]["structure_family"] == "array"
        # Below a node, narrowed by queries (AND) and by depth.
        assert _found(get("/api/v1/search-deep/a")) == ["a/inside", "a/b", "a/b/deep"]
        assert _found(get("/api/v1/search-deep/a", params={"max_depth": 1})) == [
            "a/inside",
            "a/b",
        ]
        ones = {f"{EQ}[key]": "n", f"{EQ}[value]": "1"}
        assert _found(get("/api/v1/search-deep/", params=ones)) == ["outside", "a/inside"]
        twos = {f"{EQ}[key]": "n", f"{EQ}[value]": "2"}
        assert _found(get("/api/v1/search-deep/a", params=twos)) == ["a/b/deep"]
        # Pages: offset and limit, and the count of them all.
        page = get("/api/v1/search-deep/", params={"page[offset]": 2, "page[limit]": 2})
        assert _found(page) == ["a/inside", "a/b"] and page.json()["meta"]["count"] == 5
        assert page.json()["links"]["next"] is not None
        counted = get("/api/v1/search-deep/", params={"fields": "count"}).json()
        assert counted["meta"]["count"] == 5
        # The container's links name the route.
        links = get("/api/v1/metadata/a").json()["data"]["links"]
        assert links["search_deep"].endswith("/api/v1/search-deep/a")


@pytest.mark.parametrize(
    "path, params, status, detail",
    [
        ("a", {"sort": "m"}, 400, "Sorting is not supported for deep search."),
        ("a", {"page[cursor]": "3"}, 400, "page[cursor] does not apply"),
        ("a/inside", {}, 404, "has structure family array"),
        ("a", {"max_depth": 0}, 422, None),
        ("a", {"max_depth": 65}, 422, None),
        ("nope", {}, 404, "No such entry"),
    ],
)
def test_refusals(catalog, path, params, status, detail):
    with Context.from_app(_served(catalog)) as context:
        response = context.http_client.get(f"/api/v1/search-deep/{path}", params=params)
    assert response.status_code == status, response.text
    if detail is not None:
        assert detail in response.json()["detail"]


def test_a_container_that_cannot_search_deep_says_so():
    with Context.from_app(build_app(MapAdapter({"x": MapAdapter({})}))) as context:
        response = context.http_client.get("/api/v1/search-deep/")
        links = context.http_client.get("/api/v1/metadata/x").json()["data"]["links"]
    assert response.status_code == 400
    assert response.json()["detail"] == "This node does not support deep search."
    assert "search_deep" not in links  # clients look for it before they ask


def test_an_empty_sort_and_a_key_lookup_as_upstream(catalog):
    with Context.from_app(_served(catalog)) as context:
        get = context.http_client.get
        assert _found(get("/api/v1/search-deep/a", params={"sort": ""})) == [
            "a/inside", "a/b", "a/b/deep",
        ]  # fmt: skip
        lookup = {"filter[lookup][condition][key]": "deep"}
        assert _found(get("/api/v1/search-deep/", params=lookup)) == ["a/b/deep"]


def test_under_a_policy_a_match_below_an_invisible_node_is_not_found(catalog, tmp_path):
    """Every node along a match's path must be visible: ``pub/hidden/shown`` is tagged
    public, but ``pub/hidden`` is staff's only, so anonymous callers see neither."""
    uri, storage = catalog

    async def tag() -> None:
        tree = from_uri(uri, writable_storage=storage)
        await tree.startup()
        try:
            public = {"tags": ["public"]}
            pub = await tree.create_node(
                key="pub", structure_family="container", access_blob=public
            )
            hidden = await pub.create_node(
                key="hidden", structure_family="container", access_blob={"tags": ["staff"]}
            )
            await hidden.create_node(key="shown", structure_family="container", access_blob=public)
            await pub.create_node(key="seen", structure_family="container", access_blob=public)
        finally:
            await tree.shutdown()

    asyncio.run(tag())
    policy = TagBasedAccessPolicy(
        {
            "public": {"public": ["read:metadata", "read:data"]},
            "staff": {"users": {"someone": ["read:metadata"]}},
        }
    )
    app = _served(catalog, authentication={"allow_anonymous_access": True}, access_policy=policy)
    with Context.from_app(app) as context:
        response = context.http_client.get("/api/v1/search-deep/")
        assert _found(response) == ["pub", "pub/seen"]
        assert response.json()["meta"]["count"] == 2
        assert _found(context.http_client.get("/api/v1/search-deep/pub")) == ["pub/seen"]


UPSTREAM_CLIENT = r"""
import json, sys
from tiled.client import from_uri
from tiled.queries import Key
client = from_uri(sys.argv[1])
found = client["a"].search_deep(Key("n") == 2)
everything = client.search_deep(Key("m") != "none")
print(json.dumps({
    "keys": [list(key) for key in found.keys()],
    "values": found[("b", "deep")].read().tolist(),
    "all": [list(key) for key in everything.keys()],
    "count": len(everything),
}))
"""


def test_upstreams_client_searches_deep_here(catalog, upstream_tiled):
    app = _served(catalog, authentication={"allow_anonymous_access": True})
    with serve(app) as server:
        done = run_isolated(upstream_tiled, UPSTREAM_CLIENT, server.url)
    assert done.returncode == 0, done.stderr
    answer = json.loads(done.stdout)
    assert answer["keys"] == [["b", "deep"]]
    assert answer["values"] == [0, 1, 2]
    assert answer["all"] == [["outside"], ["a"], ["a", "inside"], ["a", "b"], ["a", "b", "deep"]]
    assert answer["count"] == 5


def test_our_client_searches_deep(catalog):
    from tiled.queries import Key

    with Context.from_app(_served(catalog)) as context:
        client = from_context(context)
        found = client["a"].search_deep(Key("n") == 2)
        assert list(found) == [("b", "deep")]
        assert len(found) == 1
        assert found[("b", "deep")].read().tolist() == [0, 1, 2]
        assert found["b/deep"].metadata["m"] == "deep"
        everything = client.search_deep(Key("m") != "none")
        assert len(everything) == 5
        assert [key for key, _ in everything.items()] == [
            ("outside",), ("a",), ("a", "inside"), ("a", "b"), ("a", "b", "deep"),
        ]  # fmt: skip
        assert list(client.search_deep(Key("m") != "none", max_depth=1)) == [("outside",), ("a",)]
        with pytest.raises(KeyError):
            found[("nope",)]
        assert found["/b/deep/"].metadata["m"] == "deep"
        # Views that can be read again, indexed and sliced.
        values = everything.values()
        assert [node.metadata["m"] for node in values] == [node.metadata["m"] for node in values]
        assert values[0].metadata["m"] == "outside" and len(values) == 5
        assert everything.keys()[1:3] == [("a",), ("a", "inside")]
        assert everything.keys().page_size(2)[:4] == list(everything.keys())[:4]
        assert everything.items().first()[0] == ("outside",)
        with pytest.raises(TypeError):
            client.search_deep()


def test_our_client_says_when_a_server_cannot_search_deep():
    from tiled.queries import Key

    with Context.from_app(build_app(MapAdapter({"x": MapAdapter({})}))) as context:
        client = from_context(context)
        with pytest.raises(Exception, match="does not support deep search"):
            list(client.search_deep(Key("m") == 1))


def test_under_a_policy_a_registered_file_gone_missing_is_still_listed(tmp_path):
    """Matches are checked with the adapters their listing gave, which open no file: one
    unreadable registered file must not fail the search (it did: each match was looked up
    again, which opened it)."""
    import h5py

    from tiled.client.register import HTTPTarget, Settings, Walker

    files = tmp_path / "files"
    files.mkdir()
    with h5py.File(files / "scan.h5", "w") as file:
        file["x"] = numpy.arange(3)
    uri = f"sqlite:///{tmp_path / 'catalog.db'}"
    options = {"readable_storage": [files]}
    tree = from_uri(uri, init_if_not_exists=True, **options)
    with serve(build_app(tree, authentication={"single_user_api_key": "key"})) as server:

        async def register() -> None:
            async with HTTPTarget(server.url, "key") as target:
                await Walker(target, files, "/", Settings.init()).run()

        asyncio.run(register())
    (files / "scan.h5").unlink()
    policy = SimpleAccessPolicy({}, public=["scan"])
    app = build_app(
        from_uri(uri, **options),
        authentication={"allow_anonymous_access": True},
        access_policy=policy,
    )
    with Context.from_app(app) as context:
        response = context.http_client.get("/api/v1/search-deep/")
    assert _found(response) == ["scan"]
