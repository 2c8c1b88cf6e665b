"""Access policies written for upstream's interface (``tiled.access_control.protocols``), run
by this server on a live catalog: who sees, reads and writes what, through /api/v1 and /zarr,
configured in Python or YAML; and upstream's ``ExternalPolicyDecisionPoint`` asking a real
decision service over HTTP."""

from __future__ import annotations

import json

import httpx
import numpy
import pytest

from tiled.access_control.access_policies import NO_ACCESS, ExternalPolicyDecisionPoint
from tiled.access_control.protocols import AccessPolicy, normalize_access_tags
from tiled.access_control.scopes import NO_SCOPES
from tiled.catalog import from_uri
from tiled.queries import AccessTagsFilter
from tiled.server.app import build_app, build_app_from_config
from tiled.server.schemas import Principal, PrincipalType

from .live_server import serve
from .postgres import temporary_database

PASSWORDS = {"alice": "a-pw", "bob": "b-pw", "cara": "c-pw"}
GRANTS = {"alice": {"a", "public"}, "bob": {"b", "public"}}  # cara: none


def _name(principal: Principal | None) -> str | None:
    if principal is None:
        return None
    assert isinstance(principal, Principal) and principal.type == PrincipalType.user
    return principal.identities[0].id


class TagsPerUser(AccessPolicy):
    """A policy as sites write them for upstream: each user reads the nodes carrying one of
    their tags and their own (``user:<name>``); anonymous requests read ``public`` ones;
    cara may see nothing (``NO_ACCESS``). New nodes take the tags asked for, if the creator
    holds them all, else 403; without tags, the creator's own."""

    def _tags(self, principal: Principal | None) -> set[str]:
        name = _name(principal)
        if name is None:
            return {"public"}
        return GRANTS.get(name, set()) | {f"user:{name}"}

    async def init_node(self, principal, authn_access_tags, authn_scopes, access_tags=None):
        if access_tags is None:
            return True, normalize_access_tags([f"user:{_name(principal)}"])
        if not access_tags <= self._tags(principal):
            raise ValueError(f"cannot apply tags {sorted(access_tags - self._tags(principal))}")
        return False, access_tags

    async def allowed_scopes(self, node, principal, authn_access_tags, authn_scopes):
        tags = getattr(node, "access_tags", None)
        if not tags or tags & self._tags(principal):
            return set(authn_scopes)
        return NO_SCOPES

    async def filters(self, node, principal, authn_access_tags, authn_scopes, scopes):
        if _name(principal) == "cara":
            return NO_ACCESS
        return [AccessTagsFilter(sorted(self._tags(principal)))]


def _authentication() -> dict:
    return {
        "providers": [
            {
                "provider": "toy",
                "authenticator": "tiled.authenticators:DictionaryAuthenticator",
                "args": {"users_to_passwords": PASSWORDS},
            }
        ],
        "secret_keys": ["a-signing-key-for-this-test-only-0123456789"],
        "allow_anonymous_access": True,
    }


def _login(url: str, user: str) -> dict[str, str]:
    response = httpx.post(
        f"{url}/api/v1/auth/provider/toy/token",
        data={"username": user, "password": PASSWORDS[user]},
    )
    assert response.status_code == 200, response.text
    return {"Authorization": f"Bearer {response.json()['access_token']}"}


def _create(url, headers, parent, key, tags=None, family="container"):
    body: dict = {"id": key, "structure_family": family, "metadata": {"color": "red"}}
    if tags is not None:
        body["access_tags"] = tags
    if family == "array":
        body["data_sources"] = [
            {
                "structure_family": "array",
                "mimetype": "application/x-zarr",
                "structure": {
                    "data_type": {"endianness": "little", "kind": "i", "itemsize": 1, "dt_units": None},
                    "chunks": [[3]], "shape": [3], "dims": None, "resizable": False,
                },
            }
        ]  # fmt: skip
    response = httpx.post(f"{url}/api/v1/metadata/{parent}", json=body, headers=headers)
    if response.status_code == 200 and family == "array":
        written = httpx.put(
            f"{url}/api/v1/array/full/{parent}/{key}".replace("//", "/").replace(":/", "://"),
            content=numpy.array([1, 2, 3], dtype="i1").tobytes(),
            headers=headers,
        )
        assert written.status_code == 200, written.text
    return response


def _listing(url: str, headers: dict, path: str = "") -> list[str]:
    response = httpx.get(f"{url}/api/v1/search/{path}", headers=headers)
    assert response.status_code == 200, response.text
    return sorted(item["id"] for item in response.json()["data"])


def _app(tmp_path, catalog_uri: str, policy) -> object:
    """A catalog at ``catalog_uri`` served with ``policy`` (users of _authentication)."""
    catalog = from_uri(catalog_uri, writable_storage=tmp_path / "data", init_if_not_exists=True)
    return build_app(
        catalog,
        _authentication(),
        server_settings={
            "database": {"uri": f"sqlite:///{tmp_path / 'authn.db'}", "init_if_not_exists": True}
        },
        access_policy=policy,
    )


@pytest.fixture(params=["sqlite", "postgresql"])
def catalog_uri(request, tmp_path):
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'catalog.db'}"
        return
    with temporary_database("tiled_upstream_policy") as uri:
        yield uri


@pytest.fixture
def deployment(tmp_path, catalog_uri):
    with serve(_app(tmp_path, catalog_uri, TagsPerUser())) as server:
        url = server.url
        alice, bob = _login(url, "alice"), _login(url, "bob")
        for who, key, tags in [
            (alice, "a1", ["a"]),
            (bob, "b1", ["b"]),
            (alice, "pub", ["public"]),
        ]:
            assert _create(url, who, "", key, tags).status_code == 200
        assert _create(url, alice, "a1", "image", ["a"], family="array").status_code == 200
        assert _create(url, alice, "a1", "bobs", ["public"]).status_code == 200
        yield url


def test_each_principal_sees_what_the_policy_filters_in(deployment):
    url = deployment
    alice, bob, cara = (_login(url, name) for name in ("alice", "bob", "cara"))
    assert _listing(url, alice) == ["a1", "pub"]
    assert _listing(url, bob) == ["b1", "pub"]
    assert _listing(url, {}) == ["pub"]
    assert _listing(url, cara) == []  # NO_ACCESS
    assert _listing(url, alice, "a1") == ["bobs", "image"]
    # Not visible is not found, on every route; the parent's filters hide a visible child.
    for path in ("metadata/a1", "metadata/a1/image", "array/full/a1/image", "search/a1"):
        assert httpx.get(f"{url}/api/v1/{path}", headers=bob).status_code == 404, path
    assert httpx.get(f"{url}/api/v1/metadata/a1/bobs", headers=bob).status_code == 404
    assert httpx.get(f"{url}/api/v1/metadata/pub", headers=cara).status_code == 404
    read = httpx.get(
        f"{url}/api/v1/array/full/a1/image", headers={**alice, "Accept": "application/json"}
    )
    assert read.json() == [1, 2, 3]


def test_zarr_shows_the_same(deployment):
    url = deployment
    alice, bob = _login(url, "alice"), _login(url, "bob")
    assert httpx.get(f"{url}/zarr/v3/a1/image/c/0", headers=alice).status_code == 200
    assert httpx.get(f"{url}/zarr/v3/a1/image/c/0", headers=bob).status_code == 404
    assert httpx.get(f"{url}/zarr/v3/a1/zarr.json", headers=bob).status_code == 404
    consolidated = httpx.get(f"{url}/zarr/v2/.zmetadata", headers=bob).json()["metadata"]
    assert {key.split("/")[0] for key in consolidated if "/" in key} == {"b1", "pub"}


def test_deep_search_and_searches_are_filtered(deployment):
    url = deployment
    bob = _login(url, "bob")
    found = httpx.get(
        f"{url}/api/v1/search-deep/", params={"filter[eq][condition][key]": "color",
                                              "filter[eq][condition][value]": '"red"'},
        headers=bob,
    ).json()  # fmt: skip
    paths = sorted(
        "/".join([*item["attributes"]["ancestors"], item["id"]]) for item in found["data"]
    )
    assert paths == ["b1", "pub"] and found["meta"]["count"] == 2


def test_writes_are_decided_by_init_node(deployment):
    url = deployment
    alice = _login(url, "alice")
    refused = _create(url, alice, "a1", "stolen", ["b"])
    assert refused.status_code == 403
    assert "Access policy rejects the provided access tags" in refused.json()["detail"]
    assert "cannot apply tags ['b']" in refused.json()["detail"]
    assert "stolen" not in _listing(url, alice, "a1")
    own = _create(url, alice, "a1", "mine")
    assert own.status_code == 200 and own.json()["access_tags"] == ["user:alice"]
    assert "mine" in _listing(url, alice, "a1")
    assert httpx.get(f"{url}/api/v1/metadata/a1/mine", headers=alice).json()["data"]["attributes"][
        "access_tags"
    ] == ["user:alice"]
    # Writing needs the scope on the parent: bob cannot even see a1.
    assert _create(url, _login(url, "bob"), "a1", "x", ["b"]).status_code == 404


def test_configured_in_yaml_by_import_path(tmp_path):
    config = {
        "trees": [
            {
                "path": "/",
                "tree": "catalog",
                "args": {
                    "uri": f"sqlite:///{tmp_path / 'catalog.db'}",
                    "writable_storage": str(tmp_path / "data"),
                    "init_if_not_exists": True,
                },
            }
        ],
        "authentication": _authentication(),
        "database": {"uri": f"sqlite:///{tmp_path / 'authn.db'}", "init_if_not_exists": True},
        "access_control": {"access_policy": f"{__name__}:TagsPerUser", "args": {}},
    }
    app = build_app_from_config(config)
    # Upstream's applications expose the policy configured (this server runs it wrapped).
    assert isinstance(app.state.access_policy, TagsPerUser)
    with serve(app) as server:
        alice = _login(server.url, "alice")
        assert _create(server.url, alice, "", "a1", ["a"]).status_code == 200
        assert _create(server.url, alice, "", "x", ["b"]).status_code == 403
        assert _listing(server.url, alice) == ["a1"]
        assert _listing(server.url, _login(server.url, "bob")) == []


class DecisionService:
    """A policy decision service as ExternalPolicyDecisionPoint asks one (an OPA-like HTTP
    API): each endpoint reads the JSON input and answers ``{"result": ...}``."""

    def __init__(self):
        self.asked: list[tuple[str, dict]] = []

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        decision_input = json.loads(body)
        self.asked.append((scope["path"], decision_input))
        user = decision_input["user"]
        tags = sorted(GRANTS.get(user, set()) | ({"public"} if user is None else set()))
        node_tags = set(decision_input.get("tags") or ())
        # As Open Policy Agent answers a rule that is undefined for this input: no result.
        # (A result of false would be read as "tags not changed", as upstream reads it.)
        if scope["path"] == "/v1/create" and not (user and node_tags <= set(tags)):
            return await self._answer(send, {})
        results = {
            "/v1/create": False,
            "/v1/tags": tags,
            "/v1/scopes": ["read:metadata", "read:data", "write:metadata", "create:node"]
            if not node_tags or node_tags & set(tags)
            else [],
        }
        await self._answer(send, {"result": results[scope["path"]]})

    async def _answer(self, send, document):
        payload = json.dumps(document).encode()
        headers = [(b"content-type", b"application/json")]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": payload})


class SiteDecisionPoint(ExternalPolicyDecisionPoint):
    """What a site writes: the input its decision service reads."""

    def build_input(self, principal, authn_access_tags, authn_scopes, access_tags=None):
        return json.dumps(
            {"user": _name(principal), "tags": sorted(access_tags) if access_tags else None}
        )


def test_external_policy_decision_point_asks_a_decision_service(tmp_path):
    service = DecisionService()
    with serve(service) as decisions:
        policy = SiteDecisionPoint(
            authorization_provider=decisions.url + "/v1/",
            create_node_endpoint="create",
            allowed_tags_endpoint="tags",
            scopes_endpoint="scopes",
        )
        with serve(_app(tmp_path, f"sqlite:///{tmp_path / 'catalog.db'}", policy)) as server:
            url = server.url
            alice, bob = _login(url, "alice"), _login(url, "bob")
            assert _create(url, alice, "", "a1", ["a"]).status_code == 200
            assert _create(url, bob, "", "b1", ["b"]).status_code == 200
            assert _create(url, alice, "", "nope", ["b"]).status_code == 403
            assert _listing(url, alice) == ["a1"]
            assert _listing(url, bob) == ["b1"]
            assert httpx.get(f"{url}/api/v1/metadata/b1", headers=alice).status_code == 404
            assert httpx.get(f"{url}/zarr/v3/a1/zarr.json", headers=alice).status_code == 200
    asked = {path for path, _ in service.asked}
    assert asked == {"/v1/create", "/v1/tags", "/v1/scopes"}
    assert ("/v1/create", {"user": "alice", "tags": ["a"]}) in service.asked


def test_a_decision_service_that_is_down_refuses(tmp_path):
    """A policy that cannot decide (its service refuses connections) fails closed: 503 with
    Retry-After, never data, and the server stays up."""
    policy = SiteDecisionPoint(
        authorization_provider="http://127.0.0.1:9/v1/",
        create_node_endpoint="create", allowed_tags_endpoint="tags", scopes_endpoint="scopes",
    )  # fmt: skip
    with serve(_app(tmp_path, f"sqlite:///{tmp_path / 'catalog.db'}", policy)) as server:
        alice = _login(server.url, "alice")
        for path in ("/api/v1/search/", "/api/v1/metadata/", "/zarr/v3/zarr.json"):
            response = httpx.get(f"{server.url}{path}", headers=alice)
            assert response.status_code == 503, (path, response.text)
            assert "access policy could not decide" in response.json()["detail"]
            assert response.headers["retry-after"]
        assert _create(server.url, alice, "", "x", ["a"]).status_code == 503
        assert httpx.get(f"{server.url}/healthz").status_code == 200
