"""Upstream 0.2.20's tag-based access policy, with tags compiled into the catalog database.

Upstream's own example (``example_configs/toy_authentication.yml`` with
``access_tags/tag_definitions.yml`` and ``compile_tags.py``) is deployed with upstream's
released package: its server, its compiler and its client write arrays tagged ``data_A`` ...
``data_D`` and a container tagged ``data_admin``. The same files are then served by upstream
and by this server side by side (two copies of the deployment), and every user (alice, bob,
cara, admin, and tag-limited API keys) must see the same nodes, read the same data and have
the same writes accepted or refused, with the same tags on what they create. This server's
zarr endpoints show each user exactly the nodes the API shows.
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import httpx
import pytest

from .isolated_python import run_isolated
from .processes import server_process, without_pythonpath

pytestmark = pytest.mark.slow

PASSWORDS = {"alice": "alice-pw", "bob": "bob-pw", "cara": "cara-pw", "admin": "admin"}
ENVIRONMENT = {f"{name.upper()}_PASSWORD": password for name, password in PASSWORDS.items()}

WRITE_AS_ADMIN = r"""
import sys, numpy
from tiled.client import from_uri
client = from_uri(sys.argv[1], api_key=sys.argv[2])
for n in "ABCD":
    client.write_array(10 * numpy.ones((10, 10)) + ord(n), key=n, access_tags=[f"data_{n}"])
shared = client.create_container("shared", access_tags=["data_admin"])
shared.write_array(numpy.arange(3), key="inside", access_tags=["data_admin"])
"""


def _token(url: str, user: str) -> str:
    response = httpx.post(
        f"{url}/api/v1/auth/provider/toy/token",
        data={"username": user, "password": PASSWORDS[user]},
    )
    assert response.status_code == 200, response.text
    return response.json()["access_token"]


def _headers(url: str, who: str | tuple[str, str]) -> dict[str, str]:
    if isinstance(who, tuple):  # an API key: ("apikey", secret)
        return {"Authorization": f"Apikey {who[1]}"}
    return {"Authorization": f"Bearer {_token(url, who)}"}


READ_WRITE = ["read:metadata", "read:data", "write:metadata", "create:node"]


def _api_key(url: str, user: str, access_tags: list[str] | None) -> str:
    scopes = ["inherit"] if access_tags is None else READ_WRITE
    response = httpx.post(
        f"{url}/api/v1/auth/apikey",
        json={"expires_in": None, "scopes": scopes, "access_tags": access_tags},
        headers=_headers(url, user),
    )
    assert response.status_code == 200, response.text
    return response.json()["secret"]


def _seen(url: str, headers: dict[str, str]) -> dict[str, object]:
    """Every node reachable by listing, with its family, tags and how reading its data went."""
    seen: dict[str, object] = {}
    pending = [""]
    while pending:
        path = pending.pop()
        response = httpx.get(f"{url}/api/v1/search/{path}", headers=headers)
        if response.status_code != 200:
            seen[f"/{path} (listing)"] = response.status_code
            continue
        for item in response.json()["data"]:
            child = f"{path}/{item['id']}".strip("/")
            family = item["attributes"]["structure_family"]
            entry: dict[str, object] = {
                "family": family,
                "tags": sorted(item["attributes"].get("access_tags") or []),
            }
            if family == "container":
                pending.append(child)
            else:
                data = httpx.get(f"{url}/api/v1/array/full/{child}", headers=headers)
                entry["data"] = data.status_code
            seen[child] = entry
    return seen


def _zarr_visible(url: str, headers: dict[str, str], paths: list[str]) -> dict[str, int]:
    return {
        path: httpx.get(f"{url}/zarr/v3/{path}/zarr.json", headers=headers).status_code
        for path in paths
    }


# Writes tried by each user, after which everyone looks again: (who, method, path, body).
WRITES = [
    ("cara", "POST", "shared", {"structure_family": "container", "id": "own"}),
    ("cara", "POST", "shared", {"structure_family": "container", "id": "admin_tagged",
                                "access_tags": ["data_admin"]}),
    ("cara", "POST", "shared", {"structure_family": "container", "id": "legacy",
                                "access_blob": {"tags": ["data_admin"]}}),
    ("cara", "POST", "shared", {"structure_family": "container", "id": "not_owner",
                                "access_tags": ["data_A"]}),
    ("cara", "POST", "shared", {"structure_family": "container", "id": "pub",
                                "access_tags": ["public"]}),
    ("cara", "POST", "shared", {"structure_family": "container", "id": "impersonate",
                                "access_tags": ["user:alice"]}),
    ("cara", "POST", "shared", {"structure_family": "container", "id": "undefined",
                                "access_tags": ["no_such_tag"]}),
    ("cara", "POST", "shared", {"structure_family": "container", "id": "empty",
                                "access_tags": []}),
    ("alice", "POST", "", {"structure_family": "container", "id": "alices"}),
    ("alice", "POST", "shared", {"structure_family": "container", "id": "alices"}),
    ("bob", "PUT", "C", {"metadata": {"by": "bob"}}),
    ("cara", "PUT", "shared/own", {"access_tags": ["data_admin"]}),
    ("cara", "PUT", "shared/admin_tagged", {"access_tags": ["data_B"]}),
    ("admin", "PUT", "C", {"access_tags": ["data_B"]}),
    ("admin", "PATCH", "D", {"content-type": "application/merge-patch+json", "specs": None,
                             "access_tags": ["data_D", "public"]}),
    ("cara", "PATCH", "shared/admin_tagged", {"content-type": "application/json-patch+json",
                                              "specs": None, "access_tags": [
                                                  {"op": "add", "path": "/-", "value": "data_A"}]}),
    ("bob", "PATCH", "A", {"content-type": "application/merge-patch+json", "specs": None,
                           "metadata": {"x": 1}}),
    ("admin", "POST", "", {"structure_family": "container", "id": "untagged",
                           "access_tags": []}),
]  # fmt: skip


def _write(url: str, who: str, method: str, path: str, body: dict) -> dict[str, object]:
    response = httpx.request(
        method, f"{url}/api/v1/metadata/{path}", json=body, headers=_headers(url, who)
    )
    outcome: dict[str, object] = {"status": response.status_code}
    if response.status_code == 200:
        outcome["access_tags"] = response.json().get("access_tags")
    else:
        assert "detail" in response.json(), response.text
    return outcome


def _observe(url: str, keys: dict[str, str]) -> dict[str, object]:
    observed: dict[str, object] = {}
    for user in PASSWORDS:
        observed[user] = _seen(url, _headers(url, user))
    for name, secret in keys.items():
        observed[name] = _seen(url, _headers(url, ("apikey", secret)))
    observed["anonymous"] = httpx.get(f"{url}/api/v1/search/").status_code
    return observed


def _session(url: str, keys: dict[str, str]) -> tuple[dict, list, dict]:
    before = _observe(url, keys)
    outcomes = [_write(url, *write) for write in WRITES]
    after = _observe(url, keys)
    return before, outcomes, after


def test_upstream_tag_policy_is_served_alike(upstream_tiled, upstream_example_configs, tmp_path):
    upstream = [str(upstream_tiled.parent / "tiled")]
    ours = [str(Path(sys.executable).parent / "tiled")]
    deployment = tmp_path / "upstream"
    shutil.copytree(upstream_example_configs, deployment / "example_configs")
    serve = ["serve", "config", "example_configs/toy_authentication.yml"]
    upstream_env = {**without_pythonpath(), **ENVIRONMENT}

    # The deployment, made with upstream's package only.
    with server_process([*upstream, *serve], deployment, env=upstream_env) as url:
        for user in PASSWORDS:
            _token(url, user)  # each principal exists before the compilation
        compiled = run_isolated(
            upstream_tiled, _script(deployment / "example_configs/access_tags/compile_tags.py")
        )
        assert compiled.returncode == 0, compiled.stderr
        admin_key = _api_key(url, "admin", None)
        written = run_isolated(upstream_tiled, WRITE_AS_ADMIN, url, admin_key)
        assert written.returncode == 0, written.stderr
        keys = {
            "cara limited to data_A": _api_key(url, "cara", ["data_A"]),
            "cara limited to public and data_A": _api_key(url, "cara", ["public", "data_A"]),
            "cara limited to data_admin and public": _api_key(
                url, "cara", ["data_admin", "public"]
            ),
        }
    here = tmp_path / "here"
    shutil.copytree(deployment, here)

    with server_process([*upstream, *serve], deployment, env=upstream_env) as url:
        expected = _session(url, keys)
    with server_process([*ours, *serve], here, env={**os.environ, **ENVIRONMENT}) as url:
        observed = _session(url, keys)
        # zarr shows each user exactly what the API shows.
        everything = sorted(observed[2]["admin"])
        for user in ("alice", "bob", "cara"):
            zarr = _zarr_visible(url, _headers(url, user), everything)
            assert {p for p, status in zarr.items() if status == 200} == set(observed[2][user])
            assert set(zarr.values()) <= {200, 404}
        array = httpx.get(f"{url}/zarr/v3/A/c/0/0", headers=_headers(url, "alice"))
        assert array.status_code == 200

    before, outcomes, after = observed
    assert before == expected[0]
    assert outcomes == expected[1]
    assert after == expected[2]
    # What upstream's example promises, checked on its own terms.
    assert sorted(before["alice"]) == ["A", "B", "D"]
    assert sorted(before["bob"]) == ["A", "C", "D"]
    assert sorted(before["cara"]) == ["A", "B", "C", "D", "shared", "shared/inside"]
    assert before["cara limited to data_A"] == {}
    assert sorted(before["cara limited to public and data_A"]) == ["A"]
    assert outcomes[0] == {"status": 200, "access_tags": ["user:cara"]}
    assert [o["status"] for o in outcomes[3:8]] == [403] * 5
    assert before["alice"]["A"]["data"] == 200
    # After the writes: C moved from data_C to data_B, D became public, cara's node took
    # data_admin in place of her own tag.
    assert sorted(after["alice"]) == ["A", "B", "C", "D"]
    assert sorted(after["bob"]) == ["A", "D"]
    assert after["cara"]["shared/own"]["tags"] == ["data_admin"]
    assert sorted(after["cara limited to public and data_A"]) == ["A", "D"]
    assert "untagged" in after["admin"] and "untagged" not in after["cara"]


def _script(path: Path) -> str:
    """Run a script file by path under ``run_isolated`` (which runs ``-c`` code)."""
    return (
        "import runpy, sys\n"
        f"sys.argv = [{str(path)!r}]\n"
        f"runpy.run_path({str(path)!r}, run_name='__main__')\n"
    )
