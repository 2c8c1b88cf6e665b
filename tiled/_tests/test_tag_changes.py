"""Changing a node's access tags is an access decision: under a tag policy a principal with
``write:metadata`` cannot retag a node to reach data it could not read, nor widen its own access,
on create, metadata PUT or PATCH; refusals are 403 and change nothing."""

from __future__ import annotations

import httpx
import pytest

from tiled.access.policies import TagBasedAccessPolicy
from tiled.catalog import from_uri
from tiled.config import Authentication
from tiled.server.app import build_app

from .live_server import serve

USERS = {"admin": "pw0", "carol": "pw1"}
SCOPES = ["read:metadata", "read:data", "write:metadata", "write:data", "create:node"]
TAGS = {
    # carol may edit metadata here but not read the data.
    "edit-only": {"users": {"carol": ["read:metadata", "write:metadata"]}},
    "carol-reads": {"users": {"carol": ["read:metadata", "read:data", "write:metadata"]}},
    "carol-all": {"users": {"carol": SCOPES}},
    "everyone": {"public": ["read:metadata", "read:data"]},
}


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    directory = tmp_path_factory.mktemp("tags")
    catalog = from_uri(
        f"sqlite:///{directory}/catalog.db",
        writable_storage=[str(directory / "data")],
        init_if_not_exists=True,
    )
    authentication = Authentication(
        providers=[{
            "provider": "toy",
            "authenticator": "tiled.authenticators:DictionaryAuthenticator",
            "args": {"users_to_passwords": USERS},
        }],
        secret_keys=["not-a-secret-but-long-enough-for-tests"],
        allow_anonymous_access=True,
    )  # fmt: skip
    policy = TagBasedAccessPolicy(TAGS, admins=["admin"])
    app = build_app(catalog, authentication=authentication, access_policy=policy)
    with serve(app) as live:
        admin = _client(live, "admin")
        for key, tags in [("secret", ["edit-only"]), ("readable", ["carol-reads"]),
                          ("home", ["carol-all"])]:  # fmt: skip
            body = {"id": key, "structure_family": "container", "access_tags": tags}
            assert admin.post("/api/v1/metadata/", json=body).status_code == 200
        yield live


def _client(live, user: str) -> httpx.Client:
    client = httpx.Client(base_url=live.url)
    form = {"username": user, "password": USERS[user]}
    tokens = client.post("/api/v1/auth/provider/toy/token", data=form).json()
    client.headers["Authorization"] = f"Bearer {tokens['access_token']}"
    return client


def _tags(client: httpx.Client, key: str) -> list[str]:
    document = client.get(f"/api/v1/metadata/{key}", params={"include_data_sources": "true"})
    tags = document.json()["data"]["attributes"]["access_tags"]
    return [tag for tag in tags if not tag.startswith("user:")]


def _put(client, key, tags):
    return client.put(f"/api/v1/metadata/{key}", json={"metadata": {}, "access_tags": tags})


def _patch(client, key, tags):
    body = {"content-type": "application/merge-patch+json", "access_tags": tags}
    return client.patch(f"/api/v1/metadata/{key}", json=body)


def _put_blob(client, key, tags):
    # The deprecated spelling (clients before upstream 0.2.19): an access_blob of tags.
    body = {"metadata": {}, "access_blob": {"tags": tags}}
    return client.put(f"/api/v1/metadata/{key}", json=body)


def _patch_blob(client, key, tags):
    body = {"content-type": "application/merge-patch+json", "access_blob": {"tags": tags}}
    return client.patch(f"/api/v1/metadata/{key}", json=body)


CHANGES = [_put, _patch, _put_blob, _patch_blob]


@pytest.mark.parametrize("change", CHANGES)
def test_no_retagging_data_one_could_not_read(server, change):
    carol, admin = _client(server, "carol"), _client(server, "admin")
    assert carol.get("/api/v1/metadata/secret").status_code == 200  # visible, editable
    for tags in (["carol-reads"], ["everyone"], ["edit-only", "everyone"]):
        refused = change(carol, "secret", tags)
        assert refused.status_code == 403, refused.text
        assert "read:data" in refused.json()["detail"]
    assert _tags(admin, "secret") == ["edit-only"]
    assert httpx.get(f"{server.url}/api/v1/metadata/secret").status_code == 404


@pytest.mark.parametrize("change", CHANGES)
def test_no_widening_ones_own_access(server, change):
    carol, admin = _client(server, "carol"), _client(server, "admin")
    refused = change(carol, "readable", ["carol-all"])
    assert refused.status_code == 403, refused.text
    assert "write:data" in refused.json()["detail"]
    assert _tags(admin, "readable") == ["carol-reads"]


def test_allowed_changes_and_undefined_tags(server):
    carol, admin = _client(server, "carol"), _client(server, "admin")
    # Within what she holds: her data may be narrowed or shared with everyone.
    assert _put(carol, "home", ["carol-reads"]).status_code == 200
    assert _tags(admin, "home") == ["carol-reads"]
    assert _put(carol, "home", ["carol-reads", "everyone"]).status_code == 200
    undefined = _put(admin, "home", ["no-such-tag"])
    assert undefined.status_code == 403 and "no-such-tag" in undefined.json()["detail"]
    assert _put(admin, "home", ["carol-all"]).status_code == 200  # admins may
    assert _tags(admin, "home") == ["carol-all"]


def test_new_nodes_take_defined_tags_only(server):
    carol = _client(server, "carol")
    body = {"id": "new", "structure_family": "container", "access_tags": ["nonsense"]}
    assert carol.post("/api/v1/metadata/home", json=body).status_code == 403
    body["access_tags"] = ["carol-all"]
    assert carol.post("/api/v1/metadata/home", json=body).status_code == 200


# --- API keys limited to tags ----------------------------------------------------------------


@pytest.fixture(scope="module")
def keyed(server):
    """A container under two tags holding an array under each; API keys of carol and of the
    admin, each limited to one tag."""
    import numpy

    from tiled.client import from_uri

    admin = _client(server, "admin")
    admin_key = admin.post("/api/v1/auth/apikey", json={"scopes": ["inherit"]}).json()["secret"]
    writer = from_uri(server.url, api_key=admin_key)
    mine = writer.create_container("mine", access_tags=["carol-reads", "everyone"])
    mine.write_array(numpy.arange(3), key="a", access_tags=["carol-reads"])
    mine.write_array(numpy.arange(4), key="b", access_tags=["carol-all"])
    mine.write_array(numpy.arange(5), key="c", access_tags=["everyone"])
    carol = _client(server, "carol")
    scopes = ["read:metadata", "read:data"]

    def key(client, tags):
        body = {"scopes": scopes, "access_tags": tags}
        response = client.post("/api/v1/auth/apikey", json=body)
        assert response.status_code == 200, response.text
        return response.json()["secret"]

    return {
        "carol": key(carol, ["carol-reads"]),
        "carol-unlimited": key(carol, None),
        "admin": key(admin, ["everyone"]),
    }


def _keyed_client(server, secret) -> httpx.Client:
    return httpx.Client(base_url=server.url, headers={"Authorization": f"Apikey {secret}"})


@pytest.mark.parametrize(
    "who, reachable, unreachable",
    [
        ("carol", ["a"], ["b", "c"]),  # c is public, but this key is limited to carol-reads
        ("carol-unlimited", ["a", "b", "c"], []),
        ("admin", ["c"], ["a", "b"]),  # an admin's limited key is limited too
    ],
)
def test_keys_limited_to_tags_reach_only_those(server, keyed, who, reachable, unreachable):
    with _keyed_client(server, keyed[who]) as client:
        for name in reachable:
            for url in (f"/api/v1/metadata/mine/{name}", f"/api/v1/array/full/mine/{name}",
                        f"/zarr/v3/mine/{name}/zarr.json", f"/zarr/v2/mine/{name}/.zarray",
                        f"/zarr/v3/mine/{name}/c/0"):  # fmt: skip
                assert client.get(url).status_code == 200, (who, url)
        for name in unreachable:
            for url in (f"/api/v1/metadata/mine/{name}", f"/api/v1/array/full/mine/{name}",
                        f"/zarr/v3/mine/{name}/zarr.json", f"/zarr/v2/mine/{name}/.zarray",
                        f"/zarr/v3/mine/{name}/c/0"):  # fmt: skip
                assert client.get(url).status_code == 404, (who, url)
        listed = [item["id"] for item in client.get("/api/v1/search/mine").json()["data"]]
        assert listed == reachable
        assert client.get("/api/v1/search/mine").json()["meta"]["count"] == len(reachable)
        zarr_listing = [url.rsplit("/", 1)[-1] for url in client.get("/zarr/v3/mine/").json()]
        assert zarr_listing == reachable
        consolidated = client.get("/zarr/v3/mine/zarr.json").json()["consolidated_metadata"]
        assert sorted(consolidated["metadata"]) == reachable
        exported = client.get(
            "/api/v1/container/full/mine", params={"format": "application/x-hdf5"}
        )
        assert exported.status_code == 200
        import io

        import h5py

        with h5py.File(io.BytesIO(exported.content)) as file:
            assert sorted(file) == reachable
