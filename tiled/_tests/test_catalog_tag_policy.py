"""The tag policy with definitions compiled into the catalog (upstream 0.2.20's), on a live
server: reads, writes, tag-limited API keys, zarr, and recompilation while serving.

The side-by-side comparison with upstream's own server is test_upstream_tag_policy.py; these
tests pin the rules one by one, fast.
"""

from __future__ import annotations

import asyncio
import json
import time

import httpx
import numpy
import pytest

from tiled.access.catalog_tags import CatalogTagPolicy
from tiled.access_control.access_tags import AccessTagsCompiler
from tiled.catalog import from_uri
from tiled.server.app import build_app
from tiled.server.connection_pool import close_database_connection_pool
from tiled.server.settings import DatabaseSettings

from .live_server import serve
from .postgres import temporary_database

PASSWORDS = {"alice": "a-pw", "bob": "b-pw", "cara": "c-pw", "root": "r-pw"}
READ = ["read:metadata", "read:data"]
WRITE = [*READ, "write:metadata", "write:data", "create:node", "delete:node"]
DEFINITIONS = {
    "roles": {"reader": {"scopes": READ}, "writer": {"scopes": WRITE}},
    "tags": {
        "lab": {"groups": [{"name": "staff", "role": "reader"}], "auto_tags": [{"name": "ops"}]},
        "cara_only": {"users": [{"name": "cara", "role": "writer"}]},
        "open": {"auto_tags": [{"name": "public"}]},
        "ops": {"users": [{"name": "cara", "role": "writer"}]},
    },
    "tag_owners": {"ops": {"users": [{"name": "cara"}]}, "lab": {"users": [{"name": "cara"}]}},
}
GROUPS = {"staff": ["alice", "bob"]}


def compile_into(uri: str, definitions: dict) -> None:
    async def run():
        settings = DatabaseSettings(uri=uri)
        compiler = AccessTagsCompiler(WRITE, definitions, settings, GROUPS.__getitem__)
        compiler.load_tag_config()
        await compiler.compile()
        await close_database_connection_pool(settings)

    asyncio.run(run())


def authentication() -> dict:
    return {
        "providers": [
            {
                "provider": "toy",
                "authenticator": "tiled.authenticators:DictionaryAuthenticator",
                "args": {"users_to_passwords": PASSWORDS},
            }
        ],
        "secret_keys": ["a-signing-key-for-this-test-only-0123456789"],
        "tiled_admins": [{"provider": "toy", "id": "root"}],
    }


@pytest.fixture(params=["sqlite", "postgresql"])
def catalog_uri(request, tmp_path):
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'catalog.db'}"
        return
    with temporary_database("tiled_tag_policy") as uri:
        yield uri


@pytest.fixture
def deployment(tmp_path, catalog_uri):
    """A catalog with tags compiled in, served with the policy; yields (url, catalog uri)."""
    uri = catalog_uri
    compile_into(uri, DEFINITIONS)  # before the catalog exists, as compile_tags.py advises
    catalog = from_uri(
        uri, writable_storage=tmp_path / "data", init_if_not_exists=True,
        top_level_access_blob={"tags": ["public"]},
    )  # fmt: skip
    policy = CatalogTagPolicy(provider="toy", refresh_seconds=0.2)
    app = build_app(
        catalog,
        authentication(),
        server_settings={
            "database": {"uri": f"sqlite:///{tmp_path / 'authn.db'}", "init_if_not_exists": True}
        },
        access_policy=policy,
    )
    with serve(app) as server:
        root = login(server.url, "root")
        for key, tags in [("lab", ["lab"]), ("private", ["cara_only"]), ("open", ["open"])]:
            made = post(server.url, root, "", key, tags=tags)
            assert made.status_code == 200, made.text
        array = post(server.url, root, "lab", "image", tags=["lab"], family="array")
        assert array.status_code == 200, array.text
        yield server.url, uri


def login(url: str, user: str) -> dict:
    response = httpx.post(
        f"{url}/api/v1/auth/provider/toy/token",
        data={"username": user, "password": PASSWORDS[user]},
    )
    assert response.status_code == 200, response.text
    return {"Authorization": f"Bearer {response.json()['access_token']}"}


def post(url, headers, parent, key, *, tags=None, family="container", blob=None):
    body = {"structure_family": family, "id": key}
    if tags is not None:
        body["access_tags"] = tags
    if blob is not None:
        body["access_blob"] = blob
    if family == "array":
        data = numpy.arange(4.0)
        body["data_sources"] = [
            {
                "structure_family": "array",
                "mimetype": "application/x-zarr",
                "structure": {
                    "data_type": {"endianness": "little", "kind": "f", "itemsize": 8, "dt_units": None},
                    "chunks": [[4]], "shape": [4], "dims": None, "resizable": False,
                },
            }
        ]  # fmt: skip
        made = httpx.post(f"{url}/api/v1/metadata/{parent}", json=body, headers=headers)
        if made.status_code == 200:
            path = f"{parent}/{key}".strip("/")
            written = httpx.put(
                f"{url}/api/v1/array/full/{path}", content=data.tobytes(), headers=headers
            )
            assert written.status_code == 200, written.text
        return made
    return httpx.post(f"{url}/api/v1/metadata/{parent}", json=body, headers=headers)


def listing(url: str, headers: dict, path: str = "") -> list[str]:
    response = httpx.get(f"{url}/api/v1/search/{path}", headers=headers)
    assert response.status_code == 200, response.text
    return [item["id"] for item in response.json()["data"]]


def test_who_sees_what(deployment):
    url, _ = deployment
    alice, bob, cara = (login(url, name) for name in ("alice", "bob", "cara"))
    assert listing(url, alice) == listing(url, bob) == ["lab", "open"]
    assert listing(url, cara) == ["lab", "private", "open"]
    assert httpx.get(f"{url}/api/v1/metadata/private", headers=alice).status_code == 404
    assert httpx.get(f"{url}/api/v1/array/full/lab/image", headers=alice).status_code == 200
    # No inheritance: each node's own tags decide (lab/image carries "lab" itself).
    tags = httpx.get(f"{url}/api/v1/metadata/lab/image", headers=alice).json()
    assert tags["data"]["attributes"]["access_tags"] == ["lab"]
    # zarr shows the same tree.
    assert httpx.get(f"{url}/zarr/v3/lab/image/c/0", headers=alice).status_code == 200
    assert httpx.get(f"{url}/zarr/v3/private/zarr.json", headers=alice).status_code == 404
    inline = httpx.get(f"{url}/zarr/v3/zarr.json", headers=alice).json()
    assert sorted(inline["consolidated_metadata"]["metadata"]) == ["lab", "lab/image", "open"]
    # alice may read lab but not write there.
    assert post(url, alice, "lab", "mine").status_code == 403


def test_writes_are_decided_by_the_policy(deployment):
    url, _ = deployment
    cara, alice = login(url, "cara"), login(url, "alice")
    own = post(url, cara, "private", "own")
    assert own.status_code == 200 and own.json()["access_tags"] == ["user:cara"]
    owned = post(url, cara, "private", "shared", tags=["ops"])
    assert owned.status_code == 200 and "access_tags" not in owned.json()
    legacy = post(url, cara, "private", "legacy", blob={"tags": ["ops"]})
    assert legacy.status_code == 200, legacy.text
    for tags in (["cara_only"], ["public"], ["user:alice"], ["nope"], []):
        refused = post(url, cara, "private", "refused", tags=tags)
        assert refused.status_code == 403, (tags, refused.text)
        assert refused.json()["detail"].startswith("Access policy rejects the provided access tags")
    both = httpx.post(
        f"{url}/api/v1/metadata/private",
        json={"structure_family": "container", "access_tags": ["ops"], "access_blob": {}},
        headers=cara,
    )
    assert both.status_code == 400
    # cara owns "lab" and may add it; she may not hand her node to alice's principal tag.
    moved = httpx.put(
        f"{url}/api/v1/metadata/private/shared", json={"access_tags": ["lab", "ops"]}, headers=cara
    )
    assert moved.status_code == 200, moved.text
    # Its own tags would let alice see it, but its parent (cara_only) hides it from her.
    assert httpx.get(f"{url}/api/v1/metadata/private/shared", headers=alice).status_code == 404
    patched = httpx.patch(
        f"{url}/api/v1/metadata/private/own",
        json={"content-type": "application/json-patch+json",
              "access_tags": [{"op": "add", "path": "/-", "value": "user:alice"}]},
        headers=cara,
    )  # fmt: skip
    assert patched.status_code == 403
    # Nothing was changed by the refusals.
    after = httpx.get(f"{url}/api/v1/metadata/private/own", headers=cara).json()
    assert after["data"]["attributes"]["access_tags"] == ["user:cara"]
    assert listing(url, cara, "private") == ["own", "shared", "legacy"]


def test_api_keys_limited_to_tags(deployment):
    url, _ = deployment
    cara = login(url, "cara")
    refused = httpx.post(
        f"{url}/api/v1/auth/apikey", json={"scopes": ["inherit"], "access_tags": ["lab"]},
        headers=cara,
    )  # fmt: skip
    assert refused.status_code == 403
    secret = httpx.post(
        f"{url}/api/v1/auth/apikey", json={"scopes": READ, "access_tags": ["public", "lab"]},
        headers=cara,
    ).json()["secret"]  # fmt: skip
    key = {"Authorization": f"Apikey {secret}"}
    assert listing(url, key) == ["lab"]  # not private (cara_only), not open (a public tag, but
    assert (
        httpx.get(f"{url}/zarr/v2/private/.zgroup", headers=key).status_code == 404
    )  # not "open")
    assert httpx.get(f"{url}/zarr/v2/lab/image/0", headers=key).status_code == 200
    # A key without the root's tag sees nothing at all (the root is listable, empty).
    narrow = httpx.post(
        f"{url}/api/v1/auth/apikey", json={"scopes": READ, "access_tags": ["lab"]}, headers=cara
    ).json()["secret"]
    assert listing(url, {"Authorization": f"Apikey {narrow}"}) == []
    # A key limited to tags makes keys limited to those tags (or some of them), never more.
    maker = httpx.post(
        f"{url}/api/v1/auth/apikey",
        json={"scopes": [*READ, "create:apikeys"], "access_tags": ["public", "lab"]},
        headers=cara,
    ).json()["secret"]  # fmt: skip
    maker = {"Authorization": f"Apikey {maker}"}
    made = httpx.post(f"{url}/api/v1/auth/apikey", json={"scopes": READ}, headers=maker)
    assert made.status_code == 200, made.text
    assert sorted(made.json()["access_tags"]) == ["lab", "public"]
    assert listing(url, {"Authorization": f"Apikey {made.json()['secret']}"}) == ["lab"]
    beyond = httpx.post(
        f"{url}/api/v1/auth/apikey", json={"scopes": READ, "access_tags": ["lab", "ops"]},
        headers=maker,
    )  # fmt: skip
    assert beyond.status_code == 403 and "['ops']" in beyond.json()["detail"]
    inherit = httpx.post(f"{url}/api/v1/auth/apikey", json={}, headers=maker)
    assert inherit.status_code == 200, inherit.text
    assert inherit.json()["scopes"] != ["inherit"] and inherit.json()["access_tags"]


def test_zarr_writes_are_decided_by_the_policy(deployment):
    url, _ = deployment
    alice, cara = login(url, "alice"), login(url, "cara")
    group = json.dumps({"zarr_format": 3, "node_type": "group", "attributes": {}}).encode()
    array = json.dumps({
        "zarr_format": 3, "node_type": "array", "shape": [2], "data_type": "uint8",
        "chunk_grid": {"name": "regular", "configuration": {"chunk_shape": [2]}},
        "chunk_key_encoding": {"name": "default", "configuration": {"separator": "/"}},
        "fill_value": 0, "codecs": [{"name": "bytes"}], "attributes": {"by": "cara"},
    }).encode()  # fmt: skip

    def put(headers, key, body):
        return httpx.put(f"{url}/zarr/v3/{key}", content=body, headers=headers)

    # No credentials: 401; a reader of lab: 403 there; a node it cannot see: 404.
    assert put({}, "lab/new/zarr.json", group).status_code == 401
    assert put(alice, "lab/new/zarr.json", group).status_code == 403
    assert put(alice, "lab/image/c/0", b"\x00" * 32).status_code == 403
    # Refused before the body is read: not a 400 for a body nobody will look at.
    assert put(alice, "lab/image/zarr.json", b"not json").status_code == 403
    assert put(alice, "lab/zarr.json", group).status_code == 403
    assert put(alice, "private/new/zarr.json", group).status_code == 404
    assert httpx.delete(f"{url}/zarr/v3/lab/image/zarr.json", headers=alice).status_code == 403
    # A writer where the policy says so: the new nodes get the tags the policy gives.
    assert put(cara, "private/z/zarr.json", group).status_code == 201
    assert put(cara, "private/z/a/zarr.json", array).status_code == 201
    assert put(cara, "private/z/a/c/0", b"\x01\x02").status_code == 201
    made = httpx.get(f"{url}/api/v1/metadata/private/z/a", headers=cara).json()
    assert made["data"]["attributes"]["access_tags"] == ["user:cara"]
    assert made["data"]["attributes"]["metadata"] == {"by": "cara"}
    assert httpx.get(f"{url}/zarr/v3/private/z/a/c/0", headers=alice).status_code == 404
    # A key with read scopes only cannot write anywhere: 401, as for reads without scopes.
    secret = httpx.post(f"{url}/api/v1/auth/apikey", json={"scopes": READ}, headers=cara).json()[
        "secret"
    ]
    reader = {"Authorization": f"Apikey {secret}"}
    assert put(reader, "private/z/a/c/0", b"\x03\x04").status_code == 401
    assert put(reader, "private/z/a/zarr.json", b"not json").status_code == 401
    waiting = httpx.put(f"{url}/zarr/v2/private/z/b/.zattrs", content=b"{}", headers=reader)
    assert waiting.status_code == 401  # at once: no wait for b's .zarray
    assert httpx.get(f"{url}/zarr/v3/private/z/a/c/0", headers=cara).content == b"\x01\x02"


def test_a_recompilation_shows_while_serving(deployment):
    url, uri = deployment
    bob = login(url, "bob")
    assert "private" not in listing(url, bob)
    changed = {**DEFINITIONS, "tags": {**DEFINITIONS["tags"]}}
    changed["tags"]["cara_only"] = {"users": [{"name": "cara", "role": "writer"},
                                              {"name": "bob", "role": "reader"}]}  # fmt: skip
    compile_into(uri, changed)
    deadline = time.monotonic() + 10
    while "private" not in listing(url, bob):
        assert time.monotonic() < deadline, "the recompilation did not show"
        time.sleep(0.1)


def test_served_without_lifespan(tmp_path):
    """An app whose lifespan does not run (e.g. under an ASGI test client) starts the policy on
    its first request."""
    uri = f"sqlite:///{tmp_path / 'catalog.db'}"
    compile_into(uri, DEFINITIONS)
    catalog = from_uri(uri, init_if_not_exists=True, top_level_access_blob={"tags": ["public"]})
    app = build_app(
        catalog,
        {"single_user_api_key": "secret"},
        access_policy=CatalogTagPolicy(provider="toy"),
    )

    async def ask():
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            return await client.get("/api/v1/search/", headers={"Authorization": "Apikey secret"})

    response = asyncio.run(ask())
    assert response.status_code == 200, response.text
    assert response.json()["data"] == []


def test_a_tree_without_catalog_is_refused():
    from tiled.adapters.mapping import MapAdapter

    with pytest.raises(ValueError, match="must be \\(or mount\\) an SQL catalog"):
        asyncio.run(CatalogTagPolicy(provider="toy").startup(MapAdapter({})))


def test_an_admins_key_limited_to_tags_is_limited(deployment):
    url, _ = deployment
    root = login(url, "root")
    assert listing(url, root) == ["lab", "private", "open"]  # admins see everything
    secret = httpx.post(
        f"{url}/api/v1/auth/apikey", json={"scopes": READ, "access_tags": ["public", "open"]},
        headers=root,
    ).json()["secret"]  # fmt: skip
    key = {"Authorization": f"Apikey {secret}"}
    assert listing(url, key) == ["open"]
    assert httpx.get(f"{url}/api/v1/metadata/lab/image", headers=key).status_code == 404
    assert httpx.get(f"{url}/zarr/v3/lab/image/c/0", headers=key).status_code == 404
    assert httpx.get(f"{url}/api/v1/metadata/open", headers=key).status_code == 200


def test_a_service_granted_a_tag_by_its_uuid(deployment):
    """Tag definitions name a service principal by its uuid (dashed, as the admin API gives
    it): after a recompilation, within the policy's refresh, the service's API key sees and
    writes the tagged nodes, and its own nodes are tagged ``service:<uuid>``."""
    url, uri = deployment
    root = login(url, "root")
    service = httpx.post(
        f"{url}/api/v1/auth/principal", params={"role": "user"}, headers=root
    ).json()
    secret = httpx.post(
        f"{url}/api/v1/auth/principal/{service['uuid']}/apikey",
        json={"scopes": WRITE}, headers=root,
    ).json()["secret"]  # fmt: skip
    key = {"Authorization": f"Apikey {secret}"}
    assert "private" not in listing(url, key)
    changed = {**DEFINITIONS, "tags": {**DEFINITIONS["tags"]}}
    changed["tags"]["cara_only"] = {"users": [{"name": "cara", "role": "writer"},
                                              {"name": service["uuid"], "role": "writer"}]}  # fmt: skip
    changed["tag_owners"] = {**DEFINITIONS["tag_owners"],
                             "cara_only": {"users": [{"name": service["uuid"]}]}}  # fmt: skip
    compile_into(uri, changed)
    deadline = time.monotonic() + 10
    while "private" not in listing(url, key):
        assert time.monotonic() < deadline, "the recompilation did not show"
        time.sleep(0.1)
    made = post(url, key, "private", "tagged", tags=["cara_only"])
    assert made.status_code == 200, made.text
    own = post(url, key, "private", "owned")
    assert own.status_code == 200, own.text
    assert own.json()["access_tags"] == [f"service:{service['uuid']}"]
    assert listing(url, key, "private") == ["tagged", "owned"]
    assert listing(url, login(url, "cara"), "private") == ["tagged"]
