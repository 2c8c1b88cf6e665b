"""Upstream Tiled's example configurations, file by file: served, or refused naming the key.

The files are upstream's own, unchanged: the ``example_configs/`` folder of upstream's released
0.2.20 source distribution, which the ``upstream_example_configs`` fixture (``conftest.py``)
downloads from PyPI at test time; they are not kept in this repository. :data:`OUTCOMES`
states what this server does with each Tiled configuration file in it, :data:`NOT_TILED_CONFIGS`
names the other YAML files there; a YAML file in neither, or an entry without a file, fails the
test.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Callable
from dataclasses import dataclass

import httpx
import pytest

from tiled.config import ConfigError, construct_build_app_kwargs, parse_configs
from tiled.server.app import build_app, build_app_from_config

from .live_server import serve
from .test_cli import TILED

# Every module test reads the downloaded source distribution.
pytestmark = pytest.mark.slow
# The variables the examples reference (${NAME}); the values are made up.
ENVIRONMENT = {
    "ALICE_PASSWORD": "alicepw",
    "BOB_PASSWORD": "bobpw",
    "CARA_PASSWORD": "carapw",
    "POSTGRES_PASSWORD": "pgpw",
    "REDIS_PASSWORD": "redispw",
    "GOOGLE_CLIENT_ID": "id",
    "GOOGLE_CLIENT_SECRET": "secret",
    "ORCID_CLIENT_ID": "id",
    "ORCID_CLIENT_SECRET": "secret",
    "OIDC_CLIENT_ID": "id",
    "OIDC_CLIENT_SECRET": "secret",
    "OIDC_BASE_URL": "http://localhost:9000",
}


@dataclass(frozen=True)
class Serves:
    """Parses, builds, and answers on a live server: ``check(url, headers)`` passes, with
    ``api_key`` as the single-user key (``environment``: more variables to set)."""

    check: Callable[[str, dict], None]
    api_key: str
    environment: tuple[tuple[str, str], ...] = ()
    # Directories that the example's readme says to create beside it (it is then served from
    # its own directory).
    directories: tuple[str, ...] = ()


@dataclass(frozen=True)
class Parses:
    """A valid configuration; building it would make directories outside the test's, or
    serving it needs services the tests do not run (``why``)."""

    why: str


@dataclass(frozen=True)
class Refused:
    """A ConfigError with exactly these problems: (key, fragment of the why) each."""

    problems: tuple[tuple[str, str], ...]


def _minimal_tree(url: str, headers: dict) -> None:
    assert httpx.get(f"{url}/api/v1/metadata/A").status_code == 401
    node = httpx.get(f"{url}/api/v1/metadata/A", headers=headers).json()["data"]
    assert node["attributes"]["structure"]["shape"] == [100, 100]
    root = httpx.get(f"{url}/api/v1/metadata/", headers=headers).json()["data"]
    assert root["attributes"]["metadata"] == {"thing": "stuff"}
    listing = httpx.get(f"{url}/api/v1/search/", headers=headers).json()["data"]
    assert [item["id"] for item in listing] == ["A", "B", "C", "D"]
    zarr = httpx.get(f"{url}/zarr/v3/B/zarr.json", headers=headers).json()
    assert zarr["shape"] == [100, 100, 100]


def _empty_catalog(url: str, headers: dict) -> None:
    assert httpx.get(f"{url}/api/v1/metadata/").status_code == 401
    root = httpx.get(f"{url}/api/v1/metadata/", headers=headers)
    assert root.status_code == 200, root.text
    assert root.json()["data"]["attributes"]["structure_family"] == "container"


def _bucket_without_its_store(url: str, headers: dict) -> None:
    """bucket_storage.yml names a MinIO bucket on localhost:9000, which the tests do not run
    (a real store is tested in test_bucket_storage): the catalog serves, and data written to
    the store that does not answer are refused 503, to be retried."""
    assert httpx.get(f"{url}/api/v1/metadata/", headers=headers).status_code == 200
    array = {"data_type": {"endianness": "little", "kind": "f", "itemsize": 8},
             "chunks": [[3]], "shape": [3]}  # fmt: skip
    source = {"structure_family": "array", "structure": array}
    made = httpx.post(
        f"{url}/api/v1/metadata/", headers=headers, timeout=60,
        json={"structure_family": "array", "data_sources": [source]},
    )  # fmt: skip
    assert made.status_code == 503 and made.headers["retry-after"], made.text


def _external_login(provider: str, host: str) -> Callable[[str, dict], None]:
    """google_auth.yml, orcid_auth.yml: an OpenID Connect login is offered; its provider
    is on the internet, which the tests do not reach: the login answers 503 (or, where the
    internet is reached, sends the browser there) and the server serves on."""

    def check(url: str, headers: dict) -> None:
        about = httpx.get(f"{url}/api/v1/").json()["authentication"]
        assert about["required"] is True
        [offered] = about["providers"]
        assert (offered["provider"], offered["mode"]) == (provider, "external")
        assert httpx.get(f"{url}/api/v1/metadata/A").status_code == 401
        login = httpx.get(f"{url}/api/v1/auth/provider/{provider}/authorize", timeout=60)
        if login.status_code == 307:
            assert httpx.URL(login.headers["location"]).host == host
        else:
            assert login.status_code == 503, login.text
            assert "identity provider" in login.json()["detail"]
        assert httpx.get(f"{url}/api/v1/").status_code == 200

    return check


def _tag_policy_from_the_catalog(url: str, headers: dict) -> None:
    """toy_authentication.yml: the tag policy reads tags from the catalog (none compiled yet):
    the root is public, and what the admin tags ``public`` anyone logged in sees."""

    def login(user: str, password: str) -> dict:
        response = httpx.post(
            f"{url}/api/v1/auth/provider/toy/token", data={"username": user, "password": password}
        )
        assert response.status_code == 200, response.text
        return {"Authorization": f"Bearer {response.json()['access_token']}"}

    alice, admin = login("alice", ENVIRONMENT["ALICE_PASSWORD"]), login("admin", "admin")
    root = httpx.get(f"{url}/api/v1/metadata/", headers=alice).json()["data"]
    assert root["attributes"]["access_tags"] == ["public"]
    for body, status in [({"access_tags": ["public"]}, 200), ({}, 200)]:
        made = httpx.post(
            f"{url}/api/v1/metadata/", json={"structure_family": "container", **body}, headers=admin
        )
        assert made.status_code == status, made.text
    listing = httpx.get(f"{url}/api/v1/search/", headers=alice).json()["data"]
    assert [item["attributes"]["access_tags"] for item in listing] == [["public"]]
    refused = httpx.post(
        f"{url}/api/v1/metadata/", json={"structure_family": "container"}, headers=alice
    )
    assert refused.status_code == 403, refused.text


NOT_SUPPORTED = "not supported by this server"
SAML = "SAML login (SAMLAuthenticator)"


def _streams_from_memory(url: str, headers: dict) -> None:
    """single_catalog_single_user.yml: a catalog with live streams kept in memory."""
    from websockets.sync.client import connect

    _empty_catalog(url, headers)
    stream = url.replace("http", "ws", 1) + "/api/v1/stream/single/"
    with connect(stream, additional_headers=headers) as websocket:
        assert websocket.recv(timeout=10) == '{"type":"container-schema","version":1}'


OUTCOMES = {
    "small_single_user_demo.yml": Serves(
        _minimal_tree, "demokey", (("TILED_SINGLE_USER_API_KEY", "demokey"),)
    ),
    "graphs/graph_example_config.yml": Serves(_empty_catalog, api_key="secret"),
    "toy_authentication.yml": Serves(_tag_policy_from_the_catalog, api_key=""),
    "config_for_containerfile.yml": Parses("the container's writable /storage directory"),
    "scalable_catalog_single_user.yml": Parses("PostgreSQL and Redis servers with passwords"),
    "single_catalog_single_user.yml": Serves(
        _streams_from_memory, "secret", (("TILED_SINGLE_USER_API_KEY", "secret"),)
    ),
    "bucket_storage/bucket_storage.yml": Serves(
        _bucket_without_its_store,
        "secret",
        (("TILED_SINGLE_USER_API_KEY", "secret"),),
        directories=("storage",),
    ),
    "multiple_providers.yml": Refused(
        (("trees[0] (/)", "cannot import 'tiled.examples.nexus:build_tree'"),)
    ),
    "saml.yml": Refused((("authentication.providers[0].authenticator", SAML),)),
    "google_auth.yml": Serves(_external_login("google", "accounts.google.com"), api_key=""),
    "orcid_auth.yml": Serves(_external_login("orcid", "orcid.org"), api_key=""),
}

# The YAML files in upstream's example_configs/ that are not Tiled server configurations.
NOT_TILED_CONFIGS = {
    "access_tags/tag_definitions.yml": "access-tag definitions, input of compile_tags.py",
    "bucket_storage/docker-compose.yml": "Docker Compose file (MinIO and Tiled)",
    "keycloak_oidc/compose.yaml": "Docker Compose file (Keycloak, OAuth2 Proxy, Tiled)",
    "keycloak_oidc/oauth2-alpha.yaml": "OAuth2 Proxy alpha configuration",
}


def test_every_example_has_an_outcome(upstream_example_configs):
    files = {
        path.relative_to(upstream_example_configs).as_posix()
        for path in upstream_example_configs.rglob("*")
        if path.suffix in (".yml", ".yaml")
    }
    assert files == set(OUTCOMES) | set(NOT_TILED_CONFIGS)
    assert not set(OUTCOMES) & set(NOT_TILED_CONFIGS)


@pytest.fixture
def examples(upstream_example_configs, tmp_path, monkeypatch):
    """A copy of upstream's ``example_configs/`` in the working directory (the catalogs write
    to ``./example_configs/...``), with the variables the examples reference set."""
    copy = tmp_path / "example_configs"
    shutil.copytree(upstream_example_configs, copy)
    monkeypatch.chdir(tmp_path)
    for name, value in ENVIRONMENT.items():
        monkeypatch.setenv(name, value)
    return copy


@pytest.mark.parametrize("name", sorted(OUTCOMES))
def test_example(examples, monkeypatch, name):
    path = examples / name
    outcome = OUTCOMES[name]
    for variable, value in getattr(outcome, "environment", ()):
        monkeypatch.setenv(variable, value)
    if isinstance(outcome, Refused):
        with pytest.raises(ConfigError) as info:
            construct_build_app_kwargs(parse_configs(path))
        problems = info.value.problems
        assert len(problems) == len(outcome.problems), problems
        for line, (key, fragment) in zip(problems, outcome.problems, strict=True):
            prefix = f"{path}: {key}: " if key else f"{path}: "
            assert line.startswith(prefix) and fragment in line, (line, prefix, fragment)
        return
    if isinstance(outcome, Parses):
        assert parse_configs(path).streaming_cache is not None
        return
    for directory in outcome.directories:
        # As its readme says: made beside the example, which is served from its directory
        # (relative paths are relative to the working directory, as upstream's).
        (path.parent / directory).mkdir(exist_ok=True)
        monkeypatch.chdir(path.parent)
    config = parse_configs(path)
    with serve(build_app(**construct_build_app_kwargs(config))) as server:
        outcome.check(server.url, {"Authorization": f"Apikey {outcome.api_key}"})


def test_the_environment_overrides_the_example_file(examples, monkeypatch):
    """graph_example_config.yml sets the key "secret"; TILED_SINGLE_USER_API_KEY wins over
    the file."""
    monkeypatch.setenv("TILED_SINGLE_USER_API_KEY", "fromenv")
    app = build_app_from_config(parse_configs(examples / "graphs/graph_example_config.yml"))
    with serve(app) as server:
        metadata = f"{server.url}/api/v1/metadata/"
        assert httpx.get(metadata, headers={"Authorization": "Apikey fromenv"}).is_success
        assert httpx.get(metadata, headers={"Authorization": "Apikey secret"}).status_code == 401


def test_refusal_on_the_command_line_is_one_line_per_problem(examples):
    """`tiled serve config` with an example this server refuses: exit 1, no traceback."""
    import os

    path = examples / "saml.yml"
    env = {**os.environ, **ENVIRONMENT}
    result = subprocess.run(
        [*TILED, "serve", "config", str(path)], capture_output=True, text=True, env=env, timeout=60
    )
    assert result.returncode == 1
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith(f"Error: {path}: authentication.providers[0].authenticator: ")
    assert SAML in line


def test_the_same_example_from_python(examples):
    """build_app_from_config refuses the same way (no server, no traceback to read)."""
    with pytest.raises(ConfigError, match=r"authenticator: not supported by this server"):
        build_app_from_config(parse_configs(examples / "saml.yml"))
