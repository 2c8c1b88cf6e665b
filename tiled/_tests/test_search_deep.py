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


@pytest.fixture(scope="module")
def h5_file(tmp_path_factory):
    """A file with a group in it: ``/group/inner`` (metadata ``m``)."""
    import h5py

    path = tmp_path_factory.mktemp("h5") / "file.h5"
    with h5py.File(path, "w") as file:
        file.create_group("group").attrs["m"] = "group"
        file["group/inner"] = numpy.arange(3)
        file["group/inner"].attrs["m"] = "inner"
    return path


def _h5(path):
    from tiled.adapters.hdf5 import HDF5Adapter

    return HDF5Adapter.from_uris(path.as_uri())


def test_a_container_that_cannot_search_deep_says_so(h5_file):
    tree = MapAdapter({"file": _h5(h5_file)})
    with Context.from_app(build_app(tree)) as context:
        response = context.http_client.get("/api/v1/search-deep/file")
        links = context.http_client.get("/api/v1/metadata/file").json()["data"]["links"]
        root_links = context.http_client.get("/api/v1/metadata/").json()["data"]["links"]
    assert response.status_code == 400
    assert response.json()["detail"] == "This node does not support deep search."
    assert "search_deep" not in links  # clients look for it before they ask
    assert root_links["search_deep"].endswith("/api/v1/search-deep/")


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


@pytest.mark.parametrize("cap, status", [(5, 200), (4, 400)])
def test_under_a_policy_the_matches_checked_are_capped(monkeypatch, cap, status):
    """Exactly as many matches as the cap are checked and found; one more is refused."""
    from tiled.adapters.array import ArrayAdapter
    from tiled.server.api import metadata

    monkeypatch.setattr(metadata, "DEEP_SEARCH_CHECKED_MAX", cap)
    leaf = ArrayAdapter.from_array(numpy.ones(1))
    tree = MapAdapter({"a": MapAdapter({str(i): leaf for i in range(4)})})
    policy = SimpleAccessPolicy({}, public=["a"])
    app = build_app(tree, authentication={"allow_anonymous_access": True}, access_policy=policy)
    with Context.from_app(app) as context:
        response = context.http_client.get("/api/v1/search-deep/")
    assert response.status_code == status, response.text
    if status == 200:
        assert _found(response) == ["a", "a/0", "a/1", "a/2", "a/3"]
    else:
        assert "More than 4 matches to check" in response.json()["detail"]


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


def test_our_client_says_when_a_server_cannot_search_deep(h5_file):
    from tiled.queries import Key

    with Context.from_app(build_app(MapAdapter({"file": _h5(h5_file)}))) as context:
        client = from_context(context)
        with pytest.raises(Exception, match="does not support deep search"):
            list(client["file"].search_deep(Key("m") == 1))


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


# --- in-memory trees, and catalogs under a trees: root ---------------------------------------


def _memory_tree(h5_file=None):
    """x/{y/{z}, w}, v: metadata ``m`` names each; ``n`` is set on z and v."""
    from tiled.adapters.array import ArrayAdapter

    def array(**metadata):
        return ArrayAdapter.from_array(numpy.arange(3), metadata=metadata)

    y = MapAdapter({"z": array(m="z", n=1)}, metadata={"m": "y"})
    x = MapAdapter({"y": y, "w": array(m="w")}, metadata={"m": "x"})
    members = {"x": x, "v": array(m="v", n=1)}
    if h5_file is not None:
        members["file"] = _h5(h5_file)
    return MapAdapter(members)


def test_an_in_memory_tree_searches_deep(h5_file):
    tree = _memory_tree(h5_file)
    with Context.from_app(build_app(tree)) as context:
        get = context.http_client.get
        # Parents before their members; a file's node is matched, its groups are not walked
        # (as a catalog does not enter a registered file).
        assert _found(get("/api/v1/search-deep/")) == ["x", "x/y", "x/y/z", "x/w", "v", "file"]
        assert _found(get("/api/v1/search-deep/x")) == ["x/y", "x/y/z", "x/w"]
        assert _found(get("/api/v1/search-deep/", params={"max_depth": 2})) == [
            "x", "x/y", "x/w", "v", "file",
        ]  # fmt: skip
        ones = {f"{EQ}[key]": "n", f"{EQ}[value]": "1"}
        assert _found(get("/api/v1/search-deep/", params=ones)) == ["x/y/z", "v"]
        # A key lookup, and a keys filter, match a node's own key at any depth (as in a catalog).
        lookup = {"filter[lookup][condition][key]": "z"}
        assert _found(get("/api/v1/search-deep/", params=lookup)) == ["x/y/z"]
        keys = {"filter[keys_filter][condition][keys]": json.dumps(["w", "v"])}
        assert _found(get("/api/v1/search-deep/", params=keys)) == ["x/w", "v"]
        page = get("/api/v1/search-deep/", params={"page[offset]": 1, "page[limit]": 2})
        assert _found(page) == ["x/y", "x/y/z"] and page.json()["meta"]["count"] == 6
        links = get("/api/v1/metadata/x/y").json()["data"]["links"]
        assert links["search_deep"].endswith("/api/v1/search-deep/x/y")


def test_a_key_holding_a_slash_is_refused():
    with Context.from_app(build_app(MapAdapter({"a": MapAdapter({"b/c": MapAdapter({})})}))) as c:
        response = c.http_client.get("/api/v1/search-deep/")
    assert response.status_code == 400
    assert "'b/c'" in response.json()["detail"]


@pytest.fixture
def trees_app(catalog, tmp_path):
    """A ``trees:`` root: the catalog at /raw/cat (under a synthetic parent) beside an
    in-memory tree at /mem."""
    from tiled.server.app import build_app_from_config

    uri, storage = catalog
    catalog_args = {"uri": uri, "writable_storage": [str(storage)]}

    def build(**top):
        config = {
            "trees": [
                {"path": "/mem", "tree": f"{__name__}:_memory_tree"},
                {"path": "/raw/cat", "tree": "catalog", "args": catalog_args},
            ],
            **top,
        }
        return build_app_from_config(config)

    return build


CATALOG_PATHS = ["outside", "a", "a/inside", "a/b", "a/b/deep"]
MEMORY_PATHS = ["x", "x/y", "x/y/z", "x/w", "v"]


def test_a_trees_root_searches_its_catalogs_too(trees_app):
    with Context.from_app(trees_app()) as context:
        get = context.http_client.get
        everything = get("/api/v1/search-deep/")
        expected = [
            "mem", *(f"mem/{path}" for path in MEMORY_PATHS),
            "raw", "raw/cat", *(f"raw/cat/{path}" for path in CATALOG_PATHS),
        ]  # fmt: skip
        assert _found(everything) == expected
        assert everything.json()["meta"]["count"] == len(expected)
        # Pages across the in-memory part and the catalog's, in either order of reading.
        pages = [
            _found(get("/api/v1/search-deep/", params={"page[offset]": o, "page[limit]": 4}))
            for o in (12, 0, 8, 4)
        ]
        assert [*pages[1], *pages[3], *pages[2], *pages[0]] == expected
        # Queries reach the catalog (in SQL) and the in-memory tree alike.
        ones = {f"{EQ}[key]": "n", f"{EQ}[value]": "1"}
        assert _found(get("/api/v1/search-deep/", params=ones)) == [
            "mem/x/y/z", "mem/v", "raw/cat/outside", "raw/cat/a/inside",
        ]  # fmt: skip
        lookup = {"filter[lookup][condition][key]": "deep"}
        assert _found(get("/api/v1/search-deep/raw", params=lookup)) == ["raw/cat/a/b/deep"]
        # max_depth counts levels from where the search starts, into the catalog too.
        assert _found(get("/api/v1/search-deep/raw", params={"max_depth": 3})) == [
            "raw/cat", "raw/cat/outside", "raw/cat/a", "raw/cat/a/inside", "raw/cat/a/b",
        ]  # fmt: skip
        assert _found(get("/api/v1/search-deep/raw", params={"max_depth": 1})) == ["raw/cat"]
        counted = get("/api/v1/search-deep/", params={"fields": "count"}).json()
        assert counted["meta"]["count"] == len(expected)
        item = everything.json()["data"][-1]
        assert item["links"]["self"].endswith("/api/v1/metadata/raw/cat/a/b/deep")


def test_a_trees_root_under_a_policy(trees_app):
    """Under a policy, the catalog's matches are checked along their paths as the in-memory
    ones are: only what the public may see is found (this policy rules on top-level keys)."""
    policy = {
        "access_policy": "tiled.access.policies:SimpleAccessPolicy",
        "args": {"access_lists": {}, "public": ["raw"]},
    }
    app = trees_app(authentication={"allow_anonymous_access": True}, access_control=policy)
    with Context.from_app(app) as context:
        found = _found(context.http_client.get("/api/v1/search-deep/"))
    assert found == ["raw", "raw/cat", *(f"raw/cat/{path}" for path in CATALOG_PATHS)]


def test_both_clients_search_an_in_memory_tree_deep(upstream_tiled):
    from tiled.queries import Key

    app = build_app(_memory_tree(), authentication={"allow_anonymous_access": True})
    with Context.from_app(app) as context:
        found = from_context(context).search_deep(Key("n") == 1)
        assert list(found) == [("x", "y", "z"), ("v",)]
        assert found[("x", "y", "z")].read().tolist() == [0, 1, 2]
    script = UPSTREAM_CLIENT.replace('client["a"]', "client").replace("== 2", "== 1")
    script = script.replace('("b", "deep")', '("x", "y", "z")')
    with serve(app) as server:
        done = run_isolated(upstream_tiled, script, server.url)
    assert done.returncode == 0, done.stderr
    answer = json.loads(done.stdout)
    assert answer["keys"] == [["x", "y", "z"], ["v"]]
    assert answer["values"] == [0, 1, 2]
    assert answer["all"] == [path.split("/") for path in MEMORY_PATHS]
    assert answer["count"] == 5
