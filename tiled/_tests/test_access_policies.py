"""Access policies: the same visibility and scopes on /api/v1 and /zarr, listings included."""

from __future__ import annotations

import httpx
import numpy
import pytest

from tiled.access.identity import Identity
from tiled.access.policies import ALL_ACCESS, AllowAll, SimpleAccessPolicy, TagBasedAccessPolicy
from tiled.access.scopes import PUBLIC_SCOPES, SINGLE_USER_SCOPES
from tiled.access.view import AccessView
from tiled.adapters.array import ArrayAdapter
from tiled.adapters.mapping import MapAdapter
from tiled.errors import NoSuchEntry
from tiled.server.app import build_app

from .live_server import serve

ALICE = Identity("uuid-a", SINGLE_USER_SCOPES, authenticated=True, identities=(("toy", "alice"),))
BOB = Identity("uuid-b", SINGLE_USER_SCOPES, authenticated=True, identities=(("toy", "bob"),))
READER = Identity(
    "uuid-r", frozenset({"read:metadata"}), authenticated=True, identities=(("toy", "alice"),)
)
ANONYMOUS = Identity(None, PUBLIC_SCOPES)


def tagged(adapter, *tags):
    adapter.access_blob = {"tags": list(tags)}
    return adapter


def tree() -> MapAdapter:
    return MapAdapter(
        {
            "open": tagged(MapAdapter({"x": ArrayAdapter.from_array(numpy.arange(5))}), "public"),
            "alpha": tagged(
                MapAdapter(
                    {
                        "a": ArrayAdapter.from_array(numpy.ones((4, 4))),
                        "secret": tagged(ArrayAdapter.from_array(numpy.zeros(3)), "bob-only"),
                    }
                ),
                "alpha",
            ),
            "untagged": ArrayAdapter.from_array(numpy.arange(3)),
        }
    )


TAGS = {
    "public": {"public": ["read:metadata", "read:data"]},
    "alpha": {"users": {"alice": ["read:metadata", "read:data"], "bob": ["read:metadata"]}},
    "bob-only": {"users": {"bob": ["read:metadata", "read:data"]}},
}


async def visible_keys(view: AccessView, root, parts=()) -> list[str]:
    chain = await view.lookup(root, parts)
    return list(await view.members(chain))


async def test_tag_policy_visibility_and_scopes():
    root = tree()
    policy = TagBasedAccessPolicy(TAGS)
    alice, bob, anonymous = (AccessView(i, policy) for i in (ALICE, BOB, ANONYMOUS))
    assert await visible_keys(alice, root) == ["open", "alpha"]
    assert await visible_keys(anonymous, root) == ["open"]
    assert await visible_keys(alice, root, ("alpha",)) == ["a"]
    assert await visible_keys(bob, root, ("alpha",)) == ["a", "secret"]
    with pytest.raises(NoSuchEntry):
        await alice.lookup(root, ("alpha", "secret"))
    with pytest.raises(NoSuchEntry):
        await anonymous.lookup(root, ("untagged",))
    assert await bob.scopes(await bob.lookup(root, ("alpha", "a"))) == {"read:metadata"}
    narrow = AccessView(READER, policy)  # credentials narrower than the tag's grant
    assert await narrow.scopes(await narrow.lookup(root, ("alpha", "a"))) == {"read:metadata"}


async def test_simple_policy_lists_top_level_nodes():
    root = tree()
    policy = SimpleAccessPolicy({"alice": ["alpha"], "carol": ALL_ACCESS}, public=["open"])
    assert await visible_keys(AccessView(ALICE, policy), root) == ["open", "alpha"]
    assert await visible_keys(AccessView(BOB, policy), root) == ["open"]
    carol = Identity("uuid-c", SINGLE_USER_SCOPES, True, (("toy", "carol"),))
    assert await visible_keys(AccessView(carol, policy), root) == ["open", "alpha", "untagged"]
    assert await visible_keys(AccessView(ALICE, policy), root, ("alpha",)) == ["a", "secret"]
    with pytest.raises(NoSuchEntry):
        await AccessView(BOB, policy).lookup(root, ("alpha", "a"))


async def test_allow_all_and_deep_filtering():
    root = tree()
    assert await visible_keys(AccessView(ALICE, AllowAll()), root) == ["open", "alpha", "untagged"]
    view = AccessView(ALICE, TagBasedAccessPolicy(TAGS))
    deep = view.members_deep(await view.lookup(root, ()))
    assert await deep.zarr_member_keys() == ["open", "alpha"]
    assert await (await deep.zarr_member("alpha")).zarr_member_keys() == ["a"]
    with pytest.raises(NoSuchEntry):
        await (await deep.zarr_member("alpha")).zarr_member("secret")


def test_tag_definitions_are_validated(tmp_path):
    with pytest.raises(ValueError, match="unknown scopes"):
        TagBasedAccessPolicy({"t": {"public": ["read:everything"]}})
    path = tmp_path / "tags.yml"
    path.write_text("tags:\n  public:\n    public: [read:metadata]\n")
    assert TagBasedAccessPolicy(path).tags["public"]["public"] == {"read:metadata"}


@pytest.fixture(scope="module")
def public_server():
    app = build_app(
        tree(),
        authentication={"allow_anonymous_access": True},
        access_policy=TagBasedAccessPolicy(TAGS),
    )
    with serve(app) as server:
        yield server


# What an anonymous client of a public server with the tag policy gets, on every route family.
ANONYMOUS_MATRIX = [
    ("/api/v1/metadata/open/x", 200),
    ("/api/v1/metadata/alpha", 404),
    ("/api/v1/metadata/untagged", 404),
    ("/api/v1/metadata/alpha/secret", 404),
    ("/api/v1/array/full/open/x", 200),
    ("/api/v1/array/full/alpha/a", 404),
    ("/api/v1/array/block/untagged?block=0", 404),
    ("/api/v1/search/alpha", 404),
    ("/api/v1/container/full/alpha?format=json", 404),
    ("/zarr/v2/open/x/.zarray", 200),
    ("/zarr/v2/open/x/0", 200),
    ("/zarr/v2/alpha/.zgroup", 404),
    ("/zarr/v2/alpha/a/.zarray", 404),
    ("/zarr/v2/alpha/a/0.0", 404),
    ("/zarr/v2/alpha", 404),
    ("/zarr/v3/open/x/c/0", 200),
    ("/zarr/v3/alpha/zarr.json", 404),
    ("/zarr/v3/alpha/a/c/0/0", 404),
    ("/zarr/v3/untagged/zarr.json", 404),
]


@pytest.mark.parametrize(("url", "status"), ANONYMOUS_MATRIX)
def test_anonymous_matrix(public_server, url, status):
    response = httpx.get(public_server.url + url)
    assert response.status_code == status, response.text


def test_listings_search_consolidated_and_exports_omit_invisible_nodes(public_server):
    base = public_server.url
    search = httpx.get(f"{base}/api/v1/search/").json()
    assert [item["id"] for item in search["data"]] == ["open"] and search["meta"]["count"] == 1
    root = httpx.get(f"{base}/api/v1/metadata/").json()["data"]
    assert root["attributes"]["structure"]["count"] == 1
    assert httpx.get(f"{base}/zarr/v2/").json() == [f"{base}/zarr/v2/open"]
    consolidated = httpx.get(f"{base}/zarr/v2/.zmetadata").json()["metadata"]
    assert all(key.startswith(("open", ".z")) for key in consolidated), sorted(consolidated)
    inline = httpx.get(f"{base}/zarr/v3/zarr.json").json()["consolidated_metadata"]["metadata"]
    assert sorted(inline) == ["open", "open/x"]
    exported = httpx.get(f"{base}/api/v1/container/full/", params={"format": "json"}).json()
    assert list(exported["contents"]) == ["open"]


def test_simple_policy_access_list_spellings():
    assert (
        SimpleAccessPolicy({"a": "tiled.access_policies:ALL_ACCESS"}).access_lists["a"]
        == ALL_ACCESS
    )
    with pytest.raises(ValueError, match="list of keys or ALL_ACCESS"):
        SimpleAccessPolicy({"a": "alpha"})


async def test_search_results_inline_only_visible_members():
    import xarray

    from tiled.adapters.xarray import DatasetAdapter

    dataset = DatasetAdapter.from_dataset(
        xarray.Dataset({"v": ("x", [1.0, 2.0]), "hidden": ("x", [3.0, 4.0])})
    )
    dataset.access_blob = {"tags": ["public"]}
    dataset["hidden"].access_blob = {"tags": ["bob-only"]}
    app = build_app(
        MapAdapter({"ds": dataset}),
        authentication={"allow_anonymous_access": True},
        access_policy=TagBasedAccessPolicy(TAGS),
    )
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://t"
    ) as client:
        found = (await client.get("/api/v1/search/")).json()["data"][0]
        assert list(found["attributes"]["structure"]["contents"]) == ["v"]
        assert (await client.get("/api/v1/metadata/ds/hidden")).status_code == 404


async def test_exports_leave_out_members_whose_data_the_identity_may_not_read():
    # Seen (read:metadata) is not readable (read:data): a whole-container export must not hand
    # over what the member's own data route refuses.
    import io
    import zipfile

    import h5py

    peek = {"peek": {"public": ["read:metadata"]}}
    app = build_app(
        MapAdapter(
            {
                "mixed": tagged(
                    MapAdapter(
                        {
                            "readable": tagged(ArrayAdapter.from_array(numpy.arange(3)), "public"),
                            "peek": tagged(ArrayAdapter.from_array(numpy.full(3, 7)), "peek"),
                            "sub": tagged(
                                MapAdapter(
                                    {"deep": tagged(ArrayAdapter.from_array(numpy.ones(2)), "peek")}
                                ),
                                "public",
                            ),
                        }
                    ),
                    "public",
                )
            }
        ),
        authentication={"allow_anonymous_access": True},
        access_policy=TagBasedAccessPolicy({**TAGS, **peek}),
    )
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://t"
    ) as client:
        assert (await client.get("/api/v1/metadata/mixed/peek")).status_code == 200
        assert (await client.get("/api/v1/array/full/mixed/peek")).status_code == 403
        exported = await client.get("/api/v1/container/full/mixed?format=application/x-hdf5")
        assert exported.status_code == 200, exported.text
        with h5py.File(io.BytesIO(exported.content), "r") as file:
            assert sorted(file) == ["readable", "sub"]
            assert list(file["sub"]) == []
        exported = await client.get("/api/v1/container/full/mixed?format=application/x-zarr")
        assert exported.status_code == 200, exported.text
        names = zipfile.ZipFile(io.BytesIO(exported.content)).namelist()
        assert any(name.startswith("readable/") for name in names), names
        assert not any("peek" in name or "deep" in name for name in names), names
        asked = await client.get(
            "/api/v1/container/full/mixed?format=application/x-hdf5&field=peek"
        )
        assert asked.status_code == 400, asked.text


async def test_visible_node_without_the_scope_is_refused_alike_on_every_route():
    # One rule decides 404 against 403 for /api/v1 and /zarr: the same answer, word for word.
    peek = {"peek": {"public": ["read:metadata"]}}
    app = build_app(
        MapAdapter({"p": tagged(ArrayAdapter.from_array(numpy.arange(4)), "peek")}),
        authentication={"allow_anonymous_access": True},
        access_policy=TagBasedAccessPolicy({**TAGS, **peek}),
    )
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://t"
    ) as client:
        assert (await client.get("/api/v1/metadata/p")).status_code == 200
        assert (await client.get("/zarr/v3/p/zarr.json")).status_code == 200
        refusals = [
            await client.get(url)
            for url in ("/api/v1/array/full/p", "/zarr/v2/p/0", "/zarr/v3/p/c/0")
        ]
        assert [r.status_code for r in refusals] == [403, 403, 403]
        assert len({r.json()["detail"] for r in refusals}) == 1, [r.json() for r in refusals]
        hidden = [await client.get(url) for url in ("/api/v1/metadata/q", "/zarr/v3/q/c/0")]
        assert [r.status_code for r in hidden] == [404, 404]
