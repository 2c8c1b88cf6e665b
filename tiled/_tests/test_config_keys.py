"""Every configuration key: upstream's are known (served, no effect, or refused naming the key
and why), and the reference page lists every key and environment variable."""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydantic import BaseModel

from tiled import config as config_module
from tiled.config import ConfigError, construct_build_app_kwargs
from tiled.server.app import build_app
from tiled.server.settings import LOCATIONS

from .live_server import serve

REFERENCE = Path(__file__).resolve().parents[2] / "docs" / "source" / "reference"
MINIMAL = "tiled.examples.generated_minimal:tree"
TREES = {"trees": [{"path": "/", "tree": MINIMAL}]}
NOT_SUPPORTED = "not supported by this server"


def _catalog(tmp_path: Path, **args: Any) -> dict:
    return {"catalog": {"uri": f"sqlite:///{tmp_path}/catalog.db", **args}}


def _tree_catalog(tmp_path: Path, **args: Any) -> dict:
    uri = f"sqlite:///{tmp_path}/catalog.db"
    return {"trees": [{"path": "/", "tree": "catalog", "args": {"uri": uri, **args}}]}


USERS = {"alice": "pw"}
PROVIDER = {
    "provider": "toy",
    "authenticator": "tiled.authenticators:DictionaryAuthenticator",
    "args": {"users_to_passwords": USERS, "confirmation_message": "Hello {id}"},
}


def accept_all(spec, metadata, entry, structure_family, structure):
    """A spec validator that accepts every node (named by import path above)."""
    return None


# (key, document, expected): "yes" builds; "no effect" builds and logs the key; "refused" is a
# ConfigError line "<key>: not supported by this server: ...". Keys and forms from upstream
# 0.2.20's configuration schema and models.
UPSTREAM = [
    ("trees[].path", lambda t: {"trees": [{"path": "demo", "tree": MINIMAL}]}, "yes"),
    ("trees[].tree", lambda t: TREES, "yes"),
    ("trees[].args", lambda t: {"trees": [{"path": "/", "tree": MINIMAL, "args": None}]}, "yes"),
    ("trees[].tree: catalog", lambda t: _tree_catalog(t, init_if_not_exists=True), "yes"),
    ("catalog.uri", lambda t: _catalog(t), "yes"),
    ("catalog.metadata", lambda t: _catalog(t, metadata={"a": 1}), "yes"),
    ("catalog.specs", lambda t: _catalog(t, specs=["x"]), "yes"),
    ("catalog.writable_storage", lambda t: _catalog(t, writable_storage=str(t / "d")), "yes"),
    ("catalog.readable_storage", lambda t: _catalog(t, readable_storage=[str(t)]), "yes"),
    ("catalog.init_if_not_exists", lambda t: _catalog(t, init_if_not_exists=False), "yes"),
    (
        "catalog.adapters_by_mimetype",
        lambda t: _catalog(
            t, adapters_by_mimetype={"application/x-zarr": "tiled.catalog.mimetypes:zarr_array"}
        ),
        "yes",
    ),
    ("catalog.top_level_access_tags", lambda t: _catalog(t, top_level_access_tags=["a"]), "yes"),
    ("catalog.catalog_pool_size", lambda t: _catalog(t, catalog_pool_size=3), "yes"),
    ("catalog.catalog_max_overflow", lambda t: _catalog(t, catalog_max_overflow=2), "yes"),
    ("catalog.storage_pool_size", lambda t: _catalog(t, storage_pool_size=3), "yes"),
    ("catalog.storage_max_overflow", lambda t: _catalog(t, storage_max_overflow=3), "yes"),
    ("catalog.mount_node", lambda t: _catalog(t, mount_node="/a/b"), "yes"),
    (
        "trees[0].args.cache_config",
        lambda t: _tree_catalog(t, cache_config={"uri": "memory"}),
        "yes",  # the streaming_cache section is the one used
    ),
    (
        "trees[0].args.webhook_secret_keys",
        lambda t: _tree_catalog(t, webhook_secret_keys=["k"]),
        "yes",  # the webhooks section's keys are the ones used
    ),
    (
        "trees[0].args.create_mount_nodes_if_not_exist",
        lambda t: _tree_catalog(t, create_mount_nodes_if_not_exist=True),
        "yes",
    ),
    (
        "catalog.writable_storage[1]",
        lambda t: _catalog(t, writable_storage=[str(t), f"sqlite:///{t / 'tables.db'}"]),
        "yes",  # SQL storage of appendable tables
    ),
    (
        "catalog.writable_storage[0]",
        lambda t: _catalog(t, writable_storage=[{"provider": "s3", "uri": "http://h/b"}]),
        "yes",  # a bucket (nothing is sent to it before data are written)
    ),
    (
        "catalog.writable_storage[0]",
        lambda t: _catalog(t, writable_storage=[{"provider": "azure", "uri": "http://h/b"}]),
        "refused",
    ),
    (
        "catalog.writable_storage[0]",
        lambda t: _catalog(t, writable_storage="s3://bucket/prefix"),
        "refused",
    ),
    ("media_types", lambda t: {**TREES, "media_types": {"array": {}}}, "yes"),
    ("file_extensions", lambda t: {**TREES, "file_extensions": {"t": "text/csv"}}, "yes"),
    (
        "authentication.providers",
        lambda t: {**TREES, "authentication": {"providers": [PROVIDER]}},
        "yes",
    ),
    (
        "authentication.tiled_admins",
        lambda t: {
            **TREES,
            "authentication": {
                "providers": [PROVIDER],
                "tiled_admins": [{"provider": "toy", "id": "alice"}],
            },
        },
        "yes",
    ),
    (
        "authentication.secret_keys",
        lambda t: {**TREES, "authentication": {"secret_keys": ["k"]}},
        "yes",
    ),
    (
        "authentication.allow_anonymous_access",
        lambda t: {**TREES, "authentication": {"allow_anonymous_access": True}},
        "yes",
    ),
    (
        "authentication.single_user_api_key",
        lambda t: {**TREES, "authentication": {"single_user_api_key": "abc123"}},
        "yes",
    ),
    (
        "authentication.*_max_age",
        lambda t: {
            **TREES,
            "authentication": {
                "access_token_max_age": 900,
                "refresh_token_max_age": 3600.5,
                "session_max_age": None,
            },
        },
        "yes",
    ),
    (
        "database",
        lambda t: {
            **TREES,
            "database": {
                "uri": f"sqlite:///{t}/authn.db",
                "init_if_not_exists": True,
                "pool_pre_ping": False,
                "pool_size": 3,
                "max_overflow": 1,
            },
        },
        "yes",
    ),
    (
        "access_control",
        lambda t: {
            **TREES,
            "access_control": {
                "access_policy": "tiled.access_control.access_policies:SimpleAccessPolicy",
                "args": {"access_lists": {"alice": ["A"]}, "public": ["B"]},
            },
        },
        "yes",
    ),
    (
        "access_control.access_policy: null",
        lambda t: {**TREES, "access_control": {"access_policy": None, "args": None}},
        "yes",
    ),
    (
        "object_cache",
        lambda t: {**TREES, "object_cache": {"available_bytes": 1e9, "log_level": "info"}},
        "no effect",
    ),
    ("response_bytesize_limit", lambda t: {**TREES, "response_bytesize_limit": 1000}, "yes"),
    ("exact_count_limit", lambda t: {**TREES, "exact_count_limit": 10}, "yes"),
    ("catalog_pool_size", lambda t: {**TREES, "catalog_pool_size": 4}, "yes"),
    ("catalog_max_overflow", lambda t: {**TREES, "catalog_max_overflow": 4}, "yes"),
    ("storage_pool_size", lambda t: {**TREES, "storage_pool_size": 4}, "yes"),
    ("storage_max_overflow", lambda t: {**TREES, "storage_max_overflow": 4}, "yes"),
    ("allow_origins", lambda t: {**TREES, "allow_origins": ["https://a.example"]}, "yes"),
    (
        "uvicorn",
        lambda t: {
            **TREES,
            "uvicorn": {
                "host": "0.0.0.0",
                "port": 8001,
                "workers": 1,
                "root_path": "tiled/",
                "proxy_headers": True,
                "forwarded_allow_ips": "*",
                "ssl_keyfile": "k.pem",
                "ssl_certfile": "c.pem",
                "ssl_keyfile_password": "pw",
                "ssl_version": 2,
                "ssl_cert_reqs": 0,
                "ssl_ca_certs": "ca.pem",
                "ssl_ciphers": "TLSv1",
            },
        },
        "yes",
    ),
    ("metrics", lambda t: {**TREES, "metrics": {"prometheus": False}}, "yes"),
    ("metrics.prometheus", lambda t: {**TREES, "metrics": {"prometheus": True}}, "yes"),
    ("specs", lambda t: {**TREES, "specs": [{"spec": "xdi"}]}, "yes"),
    (
        "specs[0].validator",
        lambda t: {**TREES, "specs": [{"spec": "x", "validator": f"{__name__}:accept_all"}]},
        "yes",
    ),
    ("reject_undeclared_specs", lambda t: {**TREES, "reject_undeclared_specs": True}, "yes"),
    (
        "reject_undeclared_specs: false",
        lambda t: {**TREES, "reject_undeclared_specs": False},
        "yes",
    ),
    ("expose_raw_assets", lambda t: {**TREES, "expose_raw_assets": True}, "yes"),
    ("expose_raw_assets: false", lambda t: {**TREES, "expose_raw_assets": False}, "yes"),
    ("routers", lambda t: {**TREES, "routers": ["tiled.server.api.about:router"]}, "yes"),
    ("streaming_cache", lambda t: {**TREES, "streaming_cache": {"uri": "memory"}}, "yes"),
    ("webhooks", lambda t: {**TREES, "webhooks": {"secret_keys": ["k"]}}, "yes"),
    (
        "create_mount_nodes_if_not_exist",
        lambda t: {**TREES, "create_mount_nodes_if_not_exist": True},
        "yes",
    ),
]


@pytest.mark.parametrize(("key", "document", "expected"), UPSTREAM, ids=[u[0] for u in UPSTREAM])
def test_upstream_key(tmp_path, caplog, key, document, expected):
    caplog.set_level(logging.WARNING, logger="tiled.config")
    if expected == "refused":
        with pytest.raises(ConfigError) as info:
            construct_build_app_kwargs(document(tmp_path))
        assert [line.split(": not supported")[0] for line in info.value.problems] == [key]
        assert all(f"{NOT_SUPPORTED}: " in line for line in info.value.problems)
        return
    kwargs = construct_build_app_kwargs(document(tmp_path))
    build_app(**kwargs)
    logged = [r.getMessage() for r in caplog.records if "has no effect" in r.getMessage()]
    if expected == "no effect":
        assert len(logged) == 1 and key.split(".")[-1] in logged[0], logged
    else:
        assert not logged


def test_upstream_values_keep_their_meaning(tmp_path):
    kwargs = construct_build_app_kwargs(
        {
            **_catalog(tmp_path, top_level_access_tags=["beamline"], catalog_max_overflow=2),
            "catalog_pool_size": 3,
            "authentication": {"access_token_max_age": 900, "session_max_age": None},
            "uvicorn": {"root_path": "tiled/"},
        }
    )
    tree = kwargs["tree"]
    assert tree.access_blob == {"tags": ["beamline"]}
    assert tree.catalog.pool_options == {"pool_size": 3, "max_overflow": 2}
    authentication = kwargs["authentication"]
    assert authentication.access_token_max_age.total_seconds() == 900
    assert authentication.session_max_age.days == 365  # null: the default
    assert kwargs["server_settings"]["root_path"] == "/tiled"


def test_upstream_policy_paths_on_a_live_server():
    """SimpleAccessPolicy and a scope-limited TagBasedAccessPolicy by upstream's import paths."""
    from tiled.access_control.access_policies import TagBasedAccessPolicy

    policy = "tiled.access_control.access_policies:SimpleAccessPolicy"
    kwargs = construct_build_app_kwargs(
        {
            **TREES,
            "authentication": {"allow_anonymous_access": True, "single_user_api_key": "k"},
            "access_control": {
                "access_policy": policy,
                "args": {"access_lists": {}, "public": ["A"]},
            },
        }
    )
    with serve(build_app(**kwargs)) as server:
        listing = httpx.get(f"{server.url}/api/v1/search/").json()["data"]
        assert [item["id"] for item in listing] == ["A"]
        assert httpx.get(f"{server.url}/api/v1/metadata/B").status_code == 404

    tags = {"public_tag": {"public": ["read:metadata", "read:data"]}}
    limited = TagBasedAccessPolicy(tags=tags, scopes=["read:metadata"])
    assert limited.scopes == frozenset({"read:metadata"})
    from_database = TagBasedAccessPolicy(
        provider="toy", access_tags_parser="tiled.access_control.access_tags:AccessTagsParser"
    )
    assert from_database.provider == "toy"
    with pytest.raises(ConfigError, match="tags_db: not supported"):
        TagBasedAccessPolicy(provider="toy", access_tags_parser="x:y", tags_db={"uri": "x"})


def test_dummy_authenticator_logs_anyone_in():
    kwargs = construct_build_app_kwargs(
        {
            **TREES,
            "authentication": {
                "providers": [
                    {"provider": "dev", "authenticator": "tiled.authenticators:DummyAuthenticator"}
                ],
                "secret_keys": ["0123456789abcdef0123456789abcdef"],
            },
        }
    )
    with serve(build_app(**kwargs)) as server:
        form = {"username": "anyone", "password": "anything"}
        token = httpx.post(f"{server.url}/api/v1/auth/provider/dev/token", data=form)
        assert token.status_code == 200, token.text
        headers = {"Authorization": f"Bearer {token.json()['access_token']}"}
        assert httpx.get(f"{server.url}/api/v1/metadata/A", headers=headers).is_success


# --- the reference page --------------------------------------------------------------------------


def _keys(model: type[BaseModel], prefix: str) -> set[str]:
    found = set()
    for name, field in model.model_fields.items():
        found.add(f"{prefix}{field.alias or name}")
    return found


def _all_keys() -> set[str]:
    c = config_module
    keys = {key for key in c.Config.model_fields}
    sections = {
        "authentication.": c.Authentication,
        "authentication.providers[].": c.AuthenticationProviderSpec,
        "database.": c.Database,
        "access_control.": c.AccessControl,
        "catalog.": c.CatalogConfig,
        "trees[].": c.TreeSpec,
        "uvicorn.": c.UvicornConfig,
        "metrics.": c.MetricsConfig,
        "specs[].": c.SpecDeclaration,
        "zarr.": c.ZarrConfig,
    }
    for prefix, model in sections.items():
        keys |= _keys(model, prefix)
    return keys


def test_reference_lists_every_key_and_variable():
    text = (REFERENCE / "configuration.md").read_text()
    listed = set(re.findall(r"(?<!`)`([^`\n]+)`(?!`)", text))
    missing = sorted(key for key in _all_keys() if key not in listed)
    assert not missing, f"keys missing from the configuration reference: {missing}"
    variables = {"TILED_CONFIG"} | {f"TILED_{name.upper()}" for name in LOCATIONS}
    assert not sorted(variables - listed)
    for key, _, expected in UPSTREAM:
        if expected == "refused":
            assert re.sub(r"\[\d+\]", "[]", key).split(".")[-1] in text
