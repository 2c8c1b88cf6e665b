"""Responses in the shape each Python client release reads, as upstream 0.2.20 answers them,
and pagination links that a client can follow without sending its query again."""

from __future__ import annotations

import httpx
import pytest

from tiled.access.scopes import ALL_SCOPES, ScopeName, validate_scopes
from tiled.catalog import from_uri
from tiled.server.app import build_app

from .live_server import serve

LEGACY = {"user-agent": "python-tiled/0.2.18"}
MODERN = {"user-agent": "python-tiled/0.2.19"}
MODERN_DEVELOPMENT = {"user-agent": "python-tiled/0.2.19.dev47+g1234abc"}
OTHER = {"user-agent": "curl/8.0"}


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    directory = tmp_path_factory.mktemp("dialects")
    catalog = from_uri(
        f"sqlite:///{directory / 'catalog.db'}",
        writable_storage=directory / "data",
        init_if_not_exists=True,
    )
    app = build_app(catalog, authentication={"single_user_api_key": "secret"})
    with serve(app) as live:
        client = httpx.Client(base_url=live.url, headers={"Authorization": "Apikey secret"})
        for key, tags in [("tagged", ["beam", "lab"]), ("owned", ["user:alice"]), ("plain", None)]:
            body = {"id": key, "structure_family": "container", "metadata": {"n": key}}
            if tags is not None:
                body["access_tags"] = tags
            assert client.post("/api/v1/metadata/", json=body).status_code == 200
        yield client
        client.close()


def _attributes(client: httpx.Client, key: str, agent: dict[str, str]) -> dict:
    response = client.get(f"/api/v1/metadata/{key}", headers=agent)
    assert response.status_code == 200, response.text
    return response.json()["data"]["attributes"]


@pytest.mark.parametrize("agent", [MODERN, MODERN_DEVELOPMENT, OTHER])
def test_current_clients_read_access_tags(server, agent):
    attributes = _attributes(server, "tagged", agent)
    assert attributes["access_tags"] == ["beam", "lab"]
    assert "access_blob" not in attributes
    assert _attributes(server, "plain", agent)["access_tags"] == []


def test_clients_before_0_2_19_read_an_access_blob(server):
    tagged = _attributes(server, "tagged", LEGACY)
    assert tagged["access_blob"] == {"tags": ["beam", "lab"]}
    assert "access_tags" not in tagged
    assert _attributes(server, "owned", LEGACY)["access_blob"] == {"user": "alice"}
    listed = server.get("/api/v1/search/", headers=LEGACY).json()["data"]
    assert {item["id"]: item["attributes"]["access_blob"] for item in listed} == {
        "tagged": {"tags": ["beam", "lab"]},
        "owned": {"user": "alice"},
        "plain": {"tags": []},
    }
    # Only the fields asked for: no tags asked, none sent (in either spelling).
    only = server.get("/api/v1/metadata/tagged", params={"fields": "metadata"}, headers=LEGACY)
    assert only.json()["data"]["attributes"]["access_blob"] is None


def test_a_write_reports_tags_in_the_clients_dialect(server):
    body = {"id": "new_legacy", "structure_family": "container", "metadata": {}}
    legacy = server.post("/api/v1/metadata/", json=body, headers=LEGACY).json()
    assert "access_tags" not in legacy and legacy["access_blob"] == {"tags": []}
    modern = server.post(
        "/api/v1/metadata/", json={**body, "id": "new_modern"}, headers=MODERN
    ).json()
    assert "access_blob" not in modern and modern["access_tags"] == []


def test_following_next_links_keeps_the_query(server):
    """Each link keeps the filters (and fields) of the request: following ``next`` alone reads
    the rest of the same search."""
    params = {
        "filter[regex][condition][key]": "n",
        "filter[regex][condition][pattern]": "^(tagged|plain)$",
        "fields": "metadata",
        "page[limit]": "1",
    }
    page = server.get("/api/v1/search/", params=params).json()
    found = [item["id"] for item in page["data"]]
    assert page["meta"]["count"] == 2
    while page["links"]["next"]:
        assert (
            "filter%5Bregex%5D" in page["links"]["next"] or "filter[regex]" in page["links"]["next"]
        )
        page = server.get(page["links"]["next"]).json()
        found += [item["id"] for item in page["data"]]
        assert page["meta"]["count"] == 2
    assert sorted(found) == ["plain", "tagged"]
    first = server.get(page["links"]["first"]).json()
    assert first["meta"]["count"] == 2 and first["data"][0]["attributes"]["structure"] is None


def test_scope_names_are_their_strings():
    assert ScopeName.read_data == "read:data" and f"{ScopeName.read_data}" == "read:data"
    assert {ScopeName.read_metadata} == {"read:metadata"}
    assert ALL_SCOPES == {scope.value for scope in ScopeName}
    validate_scopes(["read:data", ScopeName.metrics], "The key's scopes")
    with pytest.raises(ValueError, match=r"The key's scopes contains \['read:everything'\]"):
        validate_scopes(["read:data", "read:everything"], "The key's scopes")
