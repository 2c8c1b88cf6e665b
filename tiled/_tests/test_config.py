"""YAML configuration: parsing, ``build_app_from_config`` on a live server, and the CLI."""

from __future__ import annotations

import re
import socket
import subprocess
import sys
import textwrap
import uuid
from pathlib import Path

import httpx
import numpy
import pytest
import zarr
from fsspec.implementations.http import HTTPFileSystem

from tiled.config import (
    Authentication,
    Config,
    ConfigError,
    construct_build_app_kwargs,
    parse_configs,
    resolve_relative_path,
    validate_config,
)
from tiled.server.app import app_factory, build_app_from_config

from .live_server import serve
from .processes import running_tiled
from .test_cli import TILED, free_port


def _catalog_importable() -> bool:
    try:
        from tiled.catalog import from_uri, initialize_database  # noqa: F401
    except ImportError:
        return False
    return True


needs_catalog = pytest.mark.skipif(
    not _catalog_importable(),
    reason="tiled.catalog (from_uri, initialize_database) is not importable yet",
)


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text))
    return path


DEMO = "tiled.examples.generated:tree"
NOT_CODE = "tiled.config.sections:UNSUPPORTED"  # importable, but a dict


# --- parsing ------------------------------------------------------------------------------------


def test_single_file(tmp_path):
    path = write(
        tmp_path / "config.yml",
        """
        trees:
          - path: /demo
            tree: tiled.examples.generated:tree
        authentication:
          single_user_api_key: secret
          allow_anonymous_access: true
        allow_origins: [https://example.org]
        response_bytesize_limit: 1000
        zarr:
          codec: zstd
          chunk_budget_bytes: 1024
        uvicorn:
          host: 0.0.0.0
          port: 9000
          proxy_headers: true
        """,
    )
    config = parse_configs(path)
    assert isinstance(config, Config)
    assert config.source == path and config.directory == tmp_path
    assert [(t.path, t.tree) for t in config.trees] == [("/demo", DEMO)]
    assert config.authentication == Authentication(
        single_user_api_key="secret", allow_anonymous_access=True
    )
    assert config.zarr.codec == "zstd" and config.zarr.chunk_budget_bytes == 1024
    assert (config.uvicorn.host, config.uvicorn.port) == ("0.0.0.0", 9000)
    assert config.uvicorn.uvicorn_kwargs() == {"proxy_headers": True}
    settings = construct_build_app_kwargs(config)["server_settings"]
    assert settings["allow_origins"] == ["https://example.org"]
    assert settings["response_bytesize_limit"] == 1000
    assert settings["zarr"] == {"codec": "zstd", "chunk_budget_bytes": 1024}


def test_directory_merges_files(tmp_path):
    write(
        tmp_path / "conf" / "a.yml", f"trees: [{{path: /a, tree: '{DEMO}'}}]\nallow_origins: [x]\n"
    )
    write(
        tmp_path / "conf" / "b.yaml", f"trees: [{{path: /b, tree: '{DEMO}'}}]\nallow_origins: [y]\n"
    )
    write(tmp_path / "conf" / "c.yml", "authentication: {single_user_api_key: k}\n")
    write(tmp_path / "conf" / "notes.txt", "not: [yaml\n")  # ignored: not .yml/.yaml
    config = parse_configs(tmp_path / "conf")
    assert [t.path for t in config.trees] == ["/a", "/b"]
    assert config.allow_origins == ["x", "y"]
    assert config.authentication.single_user_api_key == "k"
    assert config.directory == tmp_path / "conf"


def test_duplicate_key_names_the_key_and_both_files(tmp_path):
    write(tmp_path / "a.yml", f"trees: [{{path: /, tree: '{DEMO}'}}]\nzarr: {{codec: zstd}}\n")
    write(tmp_path / "b.yml", "zarr: {codec: gzip}\n")
    with pytest.raises(ConfigError) as info:
        parse_configs(tmp_path)
    message = str(info.value)
    assert "'zarr'" in message and "a.yml" in message and "b.yml" in message


def test_environment_variables_are_expanded(tmp_path, monkeypatch):
    monkeypatch.setenv("TEST_TILED_KEY", "fromenv")
    monkeypatch.setenv("TEST_TILED_LIMIT", "12345")
    monkeypatch.delenv("TEST_TILED_UNSET", raising=False)
    path = write(
        tmp_path / "config.yml",
        """
        trees: [{path: /, tree: tiled.examples.generated:tree}]
        authentication:
          single_user_api_key: ${TEST_TILED_KEY}
        response_bytesize_limit: ${TEST_TILED_LIMIT}
        allow_origins: ["${TEST_TILED_UNSET:-https://default.example}", "$${LITERAL}"]
        """,
    )
    config = parse_configs(path)
    assert config.authentication.single_user_api_key == "fromenv"
    assert config.response_bytesize_limit == 12345
    assert config.allow_origins == ["https://default.example", "${LITERAL}"]

    write(path, f"trees: [{{path: /, tree: '{DEMO}'}}]\nallow_origins: ['${{TEST_TILED_UNSET}}']\n")
    with pytest.raises(ConfigError, match=r"config\.yml: allow_origins\[0\]: .*TEST_TILED_UNSET"):
        parse_configs(path)


def test_relative_paths_resolve_from_the_working_directory(tmp_path, monkeypatch):
    # As upstream: the same file means the same paths whichever server reads it.
    directory = tmp_path / "cwd"
    directory.mkdir()
    monkeypatch.chdir(directory)  # not where the config is
    path = write(
        tmp_path / "deploy" / "config.yml",
        """
        catalog:
          uri: ./catalog.db
          writable_storage: data
          readable_storage: [/absolute/files, "file://localhost/x"]
        database:
          uri: sqlite:///auth.db
        """,
    )
    config = parse_configs(path)
    assert config.catalog.uri == str(directory / "catalog.db")
    assert config.catalog.writable_storage == [str(directory / "data")]
    assert config.catalog.readable_storage == ["/absolute/files", "file://localhost/x"]
    assert config.database.uri == f"sqlite:///{directory / 'auth.db'}"
    assert resolve_relative_path("sqlite:////abs.db", directory) == "sqlite:////abs.db"
    assert resolve_relative_path("sqlite:///:memory:", directory) == "sqlite:///:memory:"
    assert resolve_relative_path("postgresql://u@h/db", directory) == "postgresql://u@h/db"
    assert (
        resolve_relative_path("duckdb:///data.duckdb?x=1", directory)
        == f"duckdb:///{directory / 'data.duckdb'}?x=1"
    )


def test_relative_import_paths(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", list(sys.path))
    module = f"cfg_trees_{uuid.uuid4().hex[:8]}"
    directory = tmp_path / "deploy"
    source = """
        import numpy
        from tiled.adapters.array import ArrayAdapter
        from tiled.adapters.mapping import MapAdapter

        def make(n):
            return MapAdapter({"x": ArrayAdapter.from_array(numpy.arange(n))})
        """
    write(directory / f"{module}.py", source)
    write(directory / "lib" / "trees.py", source)
    path = write(
        directory / "config.yml",
        f"""
        trees:
          - {{path: /by_module, tree: "{module}:make", args: {{n: 3}}}}
          - {{path: /by_file, tree: "./lib/trees.py:make", args: {{n: 4}}}}
        """,
    )
    tree = construct_build_app_kwargs(parse_configs(path))["tree"]
    assert tree["by_module"]["x"].read().tolist() == [0, 1, 2]
    assert tree["by_file"]["x"].read().tolist() == [0, 1, 2, 3]


def test_unknown_keys_one_line_per_problem(tmp_path):
    path = write(
        tmp_path / "config.yml",
        """
        trees: [{path: /, tree: tiled.examples.generated:tree, colour: red}]
        authentication: {single_user_api_key: k, allow_anonymus_access: true}
        streaming_cache: {uri: memory, colour: red}
        unknown_thing: 1
        zarr: {codec: nope}
        """,
    )
    with pytest.raises(ConfigError) as info:
        parse_configs(path)
    problems = info.value.problems
    assert len(problems) == 5, problems
    assert all(line.startswith(f"{path}: ") for line in problems)
    text = "\n".join(problems)
    assert "trees[0]: unknown key 'colour'" in text
    assert "allow_anonymus_access" in text
    assert "streaming_cache: unknown key 'colour'" in text
    assert "unknown key 'unknown_thing'" in text
    assert "zarr.codec: unknown codec 'nope'" in text


async def _async_factory():
    pass


@pytest.mark.parametrize(
    ("document", "message"),
    [
        (
            {"trees": [{"path": "/", "tree": DEMO}], "catalog": {"uri": "x.db"}},
            "mutually exclusive",
        ),
        ({"authentication": {}}, "needs 'trees' or 'catalog'"),
        ({"trees": []}, "'trees' is empty"),
        (
            {"trees": [{"path": "/a", "tree": DEMO}, {"path": "/a/b/", "tree": DEMO}]},
            "may not nest: '/a' contains '/a/b'",
        ),
        ({"trees": [{"path": "/", "tree": DEMO}, {"path": "/b", "tree": DEMO}]}, "may not nest"),
        ({"trees": [{"path": "/a", "tree": DEMO}, {"path": "/a", "tree": DEMO}]}, "appears twice"),
        ({"trees": [{"path": "/a/../b", "tree": DEMO}]}, "may not contain '.' or '..'"),
        ({"trees": [{"path": "/", "tree": "catalog"}]}, "needs args.uri"),
        ({"trees": [{"path": "/", "tree": "nothing"}]}, "neither 'catalog' nor an import path"),
        ({"trees": [{"path": "/", "tree": "no.such.module:tree"}]}, "cannot import"),
        ({"trees": [{"path": "/", "tree": DEMO, "args": {"x": 1}}]}, "not callable"),
        ({"trees": [{"path": "/", "tree": _async_factory}]}, "returned a coroutine"),
        ({"trees": [{"path": "/", "tree": "tiled.queries:Key"}]}, "could not call"),
        (
            {
                "trees": [{"path": "/", "tree": DEMO}],
                "access_control": {"access_policy": "tiled.access.policies:Nope"},
            },
            "access_control.access_policy: cannot import",
        ),
        (
            {
                "trees": [{"path": "/", "tree": DEMO}],
                "authentication": {"single_user_api_key": "a b"},
            },
            "alphanumeric",
        ),
        (
            {"trees": [{"path": "/", "tree": DEMO}], "media_types": {"array": {"t/x": NOT_CODE}}},
            f"media_types.array.t/x: {NOT_CODE!r} is not a function",
        ),
        ({"trees": [{"path": "/", "tree": DEMO}], "routers": [NOT_CODE]}, "not an APIRouter"),
        (
            {"trees": [{"path": "/", "tree": DEMO}], "access_control": {"access_policy": NOT_CODE}},
            "access_control.access_policy: 'tiled.config.sections:UNSUPPORTED' gave a dict object",
        ),
        (
            {
                "trees": [{"path": "/", "tree": DEMO}],
                "authentication": {"providers": [{"provider": "p", "authenticator": NOT_CODE}]},
            },
            "authentication.providers[0] (p): 'tiled.config.sections:UNSUPPORTED' is not an authenticator",
        ),
        (
            {"trees": [{"path": "/", "tree": "tiled.config:parse_configs", "args": {"x": 1}}]},
            "trees[0] (/): could not call 'tiled.config:parse_configs'",
        ),
    ],
)
def test_invalid_configurations(document, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        build_app_from_config(document)


@pytest.mark.parametrize(
    ("name", "text", "message"),
    [
        ("bad.yml", "trees: [\n", "invalid YAML"),
        ("list.yml", "- 1\n- 2\n", "must be a mapping"),
        ("missing.yml", None, "no such configuration file"),
    ],
)
def test_unreadable_configurations(tmp_path, name, text, message):
    if text is not None:
        write(tmp_path / name, text)
    with pytest.raises(ConfigError, match=message):
        parse_configs(tmp_path / name)


def test_empty_directory(tmp_path):
    with pytest.raises(ConfigError, match="no .yml or .yaml files"):
        parse_configs(tmp_path)


def test_sources_explicit_then_environment_then_file(monkeypatch):
    # As upstream: a TILED_* variable overrides the file; an explicit argument overrides both.
    base = {"trees": [{"path": "/", "tree": DEMO}]}
    file = {
        **base,
        "authentication": {"single_user_api_key": "filekey"},
        "allow_origins": ["https://file.example"],
        "response_bytesize_limit": 5,
    }
    kwargs = construct_build_app_kwargs(file)
    assert kwargs["authentication"].single_user_api_key == "filekey"
    assert kwargs["server_settings"]["allow_origins"] == ["https://file.example"]
    assert kwargs["server_settings"]["response_bytesize_limit"] == 5

    monkeypatch.setenv("TILED_SINGLE_USER_API_KEY", "envkey")
    monkeypatch.setenv("TILED_ALLOW_ORIGINS", '["https://a.example"]')
    monkeypatch.setenv("TILED_RESPONSE_BYTESIZE_LIMIT", "77")
    monkeypatch.setenv("TILED_ACCESS_TOKEN_MAX_AGE", "60")
    for document in (base, file):
        kwargs = construct_build_app_kwargs(document)
        assert kwargs["authentication"].single_user_api_key == "envkey"
        assert kwargs["authentication"].access_token_max_age.total_seconds() == 60
        assert kwargs["server_settings"]["allow_origins"] == ["https://a.example"]
        assert kwargs["server_settings"]["response_bytesize_limit"] == 77
    explicit = validate_config(file, overrides={"authentication": {"single_user_api_key": "cli"}})
    assert explicit.authentication.single_user_api_key == "cli"
    assert explicit.with_overrides(api_key="again").authentication.single_user_api_key == "again"


def test_environment_reaches_build_app_directly(monkeypatch):
    from tiled.adapters.mapping import MapAdapter
    from tiled.server.app import build_app

    monkeypatch.setenv("TILED_SINGLE_USER_API_KEY", "envkey")
    monkeypatch.setenv("TILED_RESPONSE_BYTESIZE_LIMIT", "1234")
    monkeypatch.setenv("TILED_DATABASE_URI", "sqlite:///ignored-in-single-user-mode.db")
    app = build_app(MapAdapter({}))
    assert app.state.tiled.authenticator.api_key == "envkey"
    assert app.state.tiled.settings.response_bytesize_limit == 1234
    explicit = build_app(
        MapAdapter({}),
        authentication={"single_user_api_key": "given"},
        server_settings={"response_bytesize_limit": 10},
    )
    assert explicit.state.tiled.authenticator.api_key == "given"
    assert explicit.state.tiled.settings.response_bytesize_limit == 10


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("TILED_RESPONSE_BYTESIZE_LIMIT", "lots", "TILED_RESPONSE_BYTESIZE_LIMIT: "),
        ("TILED_ALLOW_ANONYMOUS_ACCESS", "perhaps", "TILED_ALLOW_ANONYMOUS_ACCESS: "),
        ("TILED_SECRET_KEYS", "[not json", "TILED_SECRET_KEYS: must be a JSON list"),
        ("TILED_SINGLE_USER_API_KEY", "a b", "TILED_SINGLE_USER_API_KEY: "),
        ("TILED_STREAMING_CACHE_URI", "http://x", "TILED_STREAMING_CACHE_URI: "),
    ],
)
def test_bad_environment_variables_are_named(monkeypatch, name, value, message):
    monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError, match=re.escape(message)):
        construct_build_app_kwargs({"trees": [{"path": "/", "tree": DEMO}]})


def test_several_trees_carry_their_tasks_and_routers_to_the_root():
    from fastapi import APIRouter

    from tiled.adapters.mapping import MapAdapter

    async def task():
        pass

    first, second = MapAdapter({}), MapAdapter({})
    first.startup_tasks.append(task)
    second.background_tasks.append(task)
    router = APIRouter()
    second.include_routers.append(router)
    kwargs = construct_build_app_kwargs(
        {"trees": [{"path": "/x/one", "tree": first}, {"path": "/two", "tree": second}]}
    )
    root = kwargs["tree"]
    assert root["x"]["one"] is first and root["two"] is second
    assert kwargs["tasks"] == {"startup": [task], "background": [task], "shutdown": []}
    assert kwargs["include_routers"] == [router]
    single = construct_build_app_kwargs({"trees": [{"path": "/", "tree": first}]})
    assert single["tree"] is first and single["tasks"] is None  # build_app collects them itself


def test_app_factory_reads_tiled_config(tmp_path, monkeypatch):
    write(tmp_path / "config.yml", f"trees: [{{path: /demo, tree: '{DEMO}'}}]\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("TILED_CONFIG", raising=False)
    assert app_factory().state.root_tree["demo"] is not None
    other = write(tmp_path / "elsewhere" / "c.yml", f"trees: [{{path: /other, tree: '{DEMO}'}}]\n")
    monkeypatch.setenv("TILED_CONFIG", str(other))
    assert list(app_factory().state.root_tree) == ["other"]


# --- build_app_from_config on a live server ------------------------------------------------------

ROUTES_MODULE = """
from fastapi import APIRouter

router = APIRouter()


@router.get("/hello")
async def hello():
    return {"hello": "world"}
"""

TREES_MODULE = """
import numpy
from tiled.adapters.array import ArrayAdapter
from tiled.adapters.mapping import MapAdapter


def make(n):
    return MapAdapter({"x": ArrayAdapter.from_array(numpy.arange(n))})


def as_text(data, metadata):
    return ",".join(str(v) for v in data.ravel()).encode()
"""


@pytest.fixture(scope="module")
def configured_server(tmp_path_factory):
    directory = tmp_path_factory.mktemp("configured")
    write(directory / "routes.py", ROUTES_MODULE)
    write(directory / "trees.py", TREES_MODULE)
    write(
        directory / "10-trees.yml",
        """
        trees:
          - path: /demo
            tree: tiled.examples.generated:tree
          - path: /private/data
            tree: ./trees.py:make
            args: {n: 1000}
        routers: ["./routes.py:router"]
        media_types:
          array:
            text/x-comma-list: ./trees.py:as_text
        """,
    )
    write(
        directory / "20-security.yml",
        """
        authentication:
          providers:
            - provider: toy
              authenticator: tiled.authenticators:DictionaryAuthenticator
              args:
                users_to_passwords: {alice: alicepw, bob: bobpw}
          secret_keys: [a-secret-for-tests-that-is-long-enough-for-hs256]
          allow_anonymous_access: true
        access_control:
          access_policy: tiled.access.policies:SimpleAccessPolicy
          args:
            access_lists: {alice: [demo, private], bob: [demo]}
            public: [demo]
        """,
    )
    write(
        directory / "30-zarr.yml",
        """
        zarr:
          codec: zstd
          chunk_budget_bytes: 1024
        zarr_cache_control: max-age=60
        response_bytesize_limit: 4000
        """,
    )
    app = build_app_from_config(parse_configs(directory))
    with serve(app) as server:

        def bearer(user: str) -> dict:
            form = {"username": user, "password": f"{user}pw"}
            response = httpx.post(f"{server.url}/api/v1/auth/provider/toy/token", data=form)
            assert response.status_code == 200, response.text
            return {"Authorization": f"Bearer {response.json()['access_token']}"}

        yield server, {"anonymous": {}, "alice": bearer("alice"), "bob": bearer("bob")}


@pytest.mark.parametrize("who", ["anonymous", "bob", "alice"])
def test_policy_hides_private_on_api_and_zarr(configured_server, who):
    server, headers = configured_server
    expected = 200 if who == "alice" else 404
    for path in (
        "/api/v1/metadata/private",
        "/api/v1/metadata/private/data/x",
        "/zarr/v3/private/zarr.json",
        "/zarr/v3/private/data/x/zarr.json",
        "/zarr/v2/private/data/x/.zarray",
    ):
        response = httpx.get(server.url + path, headers=headers[who])
        assert response.status_code == expected, (path, response.text)
    assert httpx.get(
        f"{server.url}/api/v1/metadata/demo/scalars/pi", headers=headers[who]
    ).is_success
    listing = httpx.get(f"{server.url}/api/v1/search/", headers=headers[who]).json()
    assert sorted(item["id"] for item in listing["data"]) == (
        ["demo", "private"] if who == "alice" else ["demo"]
    )


def test_zarr_settings_and_zarr_python(configured_server):
    server, headers = configured_server
    response = httpx.get(f"{server.url}/zarr/v3/private/data/x/zarr.json", headers=headers["alice"])
    document = response.json()
    assert document["chunk_grid"]["configuration"]["chunk_shape"] == [125]  # 1024-byte budget
    assert document["codecs"][-1]["name"] == "zstd"
    assert response.headers["cache-control"] == "max-age=60"
    fs = HTTPFileSystem(client_kwargs={"headers": headers["alice"]})
    array = zarr.open(fs.get_mapper(f"{server.url}/zarr/v3/private/data/x"), mode="r")
    numpy.testing.assert_array_equal(array[...], numpy.arange(1000))


def test_bytesize_limit_routers_and_media_types(configured_server):
    server, headers = configured_server
    alice = headers["alice"]
    too_big = httpx.get(f"{server.url}/api/v1/array/full/private/data/x", headers=alice)
    assert too_big.status_code == 400
    sliced = httpx.get(
        f"{server.url}/api/v1/array/full/private/data/x",
        params={"slice": "0:4", "format": "text/x-comma-list"},
        headers=alice,
    )
    assert sliced.status_code == 200 and sliced.content == b"0,1,2,3"
    for prefix in ("/api/v1", "/custom"):
        assert httpx.get(f"{server.url}{prefix}/hello").json() == {"hello": "world"}


@needs_catalog
def test_catalog_tree_next_to_other_trees(tmp_path, monkeypatch):
    # The catalog's startup and shutdown tasks must run although it is not the root.
    monkeypatch.chdir(tmp_path)
    path = write(
        tmp_path / "config.yml",
        """
        trees:
          - path: /demo
            tree: tiled.examples.generated:tree
          - path: /stored
            tree: catalog
            args:
              uri: ./catalog.db
              writable_storage: ./data
              init_if_not_exists: true
        authentication: {single_user_api_key: secret}
        """,
    )
    headers = {"Authorization": "Apikey secret"}
    with serve(build_app_from_config(parse_configs(path))) as server:
        api = f"{server.url}/api/v1"
        created = httpx.post(
            f"{api}/metadata/stored",
            json={"id": "c", "structure_family": "container", "metadata": {"n": 1}},
            headers=headers,
        )
        assert created.status_code == 200, created.text
        node = httpx.get(f"{api}/metadata/stored/c", headers=headers).json()
        assert node["data"]["attributes"]["metadata"] == {"n": 1}
    assert (tmp_path / "catalog.db").exists() and (tmp_path / "data").is_dir()


# --- the command line ---------------------------------------------------------------------------


def run_cli(*args: str, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([*TILED, *args], capture_output=True, text=True, timeout=120, **kwargs)


def assert_one_line_error(result: subprocess.CompletedProcess, *fragments: str) -> str:
    assert result.returncode == 1, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]


def test_cli_missing_config(tmp_path):
    result = run_cli("serve", "config", str(tmp_path / "nope.yml"))
    assert_one_line_error(result, "nope.yml", "no such configuration file")


def test_cli_default_config_path(tmp_path):
    # No argument: $TILED_CONFIG, else ./config.yml.
    result = run_cli("serve", "config", cwd=tmp_path, env=_env(TILED_CONFIG=None))
    assert_one_line_error(result, "config.yml")


def test_cli_invalid_yaml(tmp_path):
    path = write(tmp_path / "config.yml", "trees: [\n")
    assert_one_line_error(run_cli("serve", "config", str(path)), "invalid YAML", "line 2")


def test_cli_validation_errors_one_line_each(tmp_path):
    path = write(tmp_path / "config.yml", "trees: [{path: /a/../b, tree: x}]\nwhat: 1\n")
    result = run_cli("serve", "config", str(path))
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 3 and all(line.startswith(f"Error: {path}: ") for line in lines), lines


@pytest.mark.parametrize(
    ("files", "fragments"),
    [
        ({"mod.py": "raise RuntimeError('broken at import')\n"}, ["cannot import", "RuntimeError"]),
        ({"mod.py": "def make():\n    return 1 / 0\n"}, ["could not call", "ZeroDivisionError"]),
        ({"mod.py": "def make(:\n"}, ["cannot import", "SyntaxError"]),
    ],
)
def test_cli_broken_tree_module_is_one_line(tmp_path, files, fragments):
    for name, text in files.items():
        write(tmp_path / name, text)
    path = write(tmp_path / "config.yml", "trees: [{path: /, tree: './mod.py:make'}]\n")
    line = assert_one_line_error(run_cli("serve", "config", str(path)), *fragments)
    assert line.startswith(f"Error: {path}: trees[0] (/): ")


def test_cli_bad_environment_variable_is_one_line(tmp_path):
    path = write(tmp_path / "config.yml", f"trees: [{{path: /, tree: '{DEMO}'}}]\n")
    result = run_cli("serve", "config", str(path), env=_env(TILED_EXACT_COUNT_LIMIT="many"))
    assert_one_line_error(result, "environment variable TILED_EXACT_COUNT_LIMIT")


def test_cli_bad_import_path(tmp_path):
    path = write(tmp_path / "config.yml", "trees: [{path: /, tree: 'no.such.module:tree'}]\n")
    assert_one_line_error(run_cli("serve", "config", str(path)), "cannot import", "no.such.module")


def test_cli_busy_port(tmp_path):
    path = write(tmp_path / "config.yml", f"trees: [{{path: /, tree: '{DEMO}'}}]\n")
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = run_cli("serve", "config", str(path), "--port", str(port))
    assert_one_line_error(result, f"port {port}", "already in use")


def test_cli_serve_catalog_argument_errors(tmp_path):
    assert_one_line_error(run_cli("serve", "catalog"), "--temp")
    assert_one_line_error(run_cli("serve", "catalog", "x.db", "--temp"), "not both")
    missing = tmp_path / "missing.db"
    assert_one_line_error(run_cli("serve", "catalog", str(missing)), "tiled catalog init")
    assert not missing.exists()


@needs_catalog
def test_cli_catalog_init(tmp_path):
    database = tmp_path / "catalog.db"
    first = run_cli("catalog", "init", str(database))
    assert first.returncode == 0, first.stderr
    assert database.exists()
    assert_one_line_error(run_cli("catalog", "init", str(database)), "already holds a catalog")
    assert run_cli("catalog", "init", str(database), "--if-not-exists").returncode == 0
    upgraded = run_cli("catalog", "upgrade-database", str(database))
    assert upgraded.returncode == 0, upgraded.stderr
    assert_one_line_error(
        run_cli("catalog", "upgrade-database", str(database), "nosuchrevision"), "nosuchrevision"
    )
    # The default database is ./catalog.db: the one made above, then a new one elsewhere.
    assert_one_line_error(run_cli("catalog", "init", cwd=tmp_path), "already holds a catalog")
    other = tmp_path / "other"
    other.mkdir()
    assert run_cli("catalog", "init", cwd=other).returncode == 0
    assert (other / "catalog.db").exists()


@needs_catalog
def test_cli_serve_config_with_uninitialized_catalog(tmp_path):
    path = write(tmp_path / "config.yml", "catalog: {uri: ./none.db}\n")
    assert_one_line_error(run_cli("serve", "config", str(path)), "no catalog database")
    assert not (tmp_path / "none.db").exists()


def _env(**changes):
    import os

    env = dict(os.environ)
    env.pop("TILED_SINGLE_USER_API_KEY", None)
    for key, value in changes.items():
        if value is None:
            env.pop(key, None)
        else:
            env[key] = value
    return env


running = running_tiled


@pytest.mark.slow
def test_cli_serve_config(tmp_path):
    unused, port = free_port(), free_port()
    path = write(
        tmp_path / "config.yml",
        f"""
        trees:
          - {{path: /demo, tree: {DEMO}}}
          - {{path: /again/demo, tree: {DEMO}}}
        uvicorn: {{host: 127.0.0.1, port: {unused}}}
        zarr: {{codec: gzip}}
        """,
    )
    with running("serve", "config", str(path), "--port", str(port), env=_env()) as (url, _):
        key = re.search(r"api_key=([0-9a-f]{64})", url).group(1)  # random, so printed
        assert url.startswith(f"http://localhost:{port}?")
        base = f"http://127.0.0.1:{port}"
        assert httpx.get(f"{base}/api/v1/metadata/demo/scalars/pi").status_code == 401
        headers = {"Authorization": f"Apikey {key}"}
        assert httpx.get(
            f"{base}/api/v1/metadata/again/demo/scalars/pi", headers=headers
        ).is_success
        image = httpx.get(
            f"{base}/zarr/v3/demo/nested/images/tiny_image/zarr.json", headers=headers
        )
        assert image.json()["codecs"][-1]["name"] == "gzip"

    # A key in the file (or --api-key) is not printed; --public opens reading to anyone.
    write(
        path,
        f"trees: [{{path: /, tree: {DEMO}}}]\nauthentication: {{single_user_api_key: filekey}}\n",
    )
    port = free_port()
    with running("serve", "config", str(path), "--port", str(port), "--public", env=_env()) as (
        url,
        _,
    ):
        assert url == f"http://localhost:{port}"
        base = f"http://127.0.0.1:{port}/api/v1/metadata/scalars/pi"
        assert httpx.get(base).status_code == 200
        assert httpx.get(base, headers={"Authorization": "Apikey filekey"}).status_code == 200
        assert httpx.get(base, headers={"Authorization": "Apikey wrong"}).status_code == 401


def _create_array(api: str, headers: dict, parent: str, key: str, array: numpy.ndarray) -> None:
    structure = {
        "data_type": {"endianness": "little", "kind": array.dtype.kind, "itemsize": array.itemsize},
        "chunks": [[n] for n in array.shape],
        "shape": list(array.shape),
        "dims": None,
        "resizable": False,
    }
    body = {
        "id": key,
        "structure_family": "array",
        "metadata": {"kind": "ramp"},
        "data_sources": [
            {"structure_family": "array", "structure": structure, "mimetype": "application/x-zarr"}
        ],
    }
    created = httpx.post(f"{api}/metadata/{parent}", json=body, headers=headers)
    assert created.status_code == 200, created.text
    path = f"{parent}/{key}" if parent else key
    written = httpx.put(
        f"{api}/array/full/{path}",
        content=array.tobytes(),
        headers={**headers, "Content-Type": "application/octet-stream"},
    )
    assert written.status_code == 200, written.text


@needs_catalog
@pytest.mark.slow
def test_cli_serve_catalog_temp_public(tmp_path):
    port = free_port()
    env = _env(TMPDIR=str(tmp_path))
    with running("serve", "catalog", "--temp", "--public", "--port", str(port), env=env) as (
        url,
        banner,
    ):
        assert str(tmp_path) in banner  # the throw-away directory is named
        key = re.search(r"api_key=([0-9a-f]{64})", url).group(1)
        headers = {"Authorization": f"Apikey {key}"}
        base = f"http://127.0.0.1:{port}"
        api = f"{base}/api/v1"
        container = {"id": "run1", "structure_family": "container", "metadata": {"sample": "A"}}
        # Public means read-only for anonymous requests.
        assert httpx.post(f"{api}/metadata/", json=container).status_code == 401
        assert httpx.post(f"{api}/metadata/", json=container, headers=headers).status_code == 200
        ramp = numpy.arange(24, dtype="<f8").reshape(4, 6)
        _create_array(api, headers, "run1", "ramp", ramp)

        # Read back anonymously through the native API and through zarr v3 and v2.
        node = httpx.get(f"{api}/metadata/run1").json()["data"]["attributes"]
        assert node["metadata"] == {"sample": "A"}
        data = httpx.get(f"{api}/array/full/run1/ramp")
        numpy.testing.assert_array_equal(numpy.frombuffer(data.content, "<f8").reshape(4, 6), ramp)
        fs = HTTPFileSystem()
        for zarr_format in (3, 2):
            group = zarr.open_group(fs.get_mapper(f"{base}/zarr/v{zarr_format}/run1"), mode="r")
            numpy.testing.assert_array_equal(group["ramp"][...], ramp)
            assert group["ramp"].attrs["kind"] == "ramp"
        storage = list(tmp_path.glob("tiled-catalog-*"))
        assert len(storage) == 1 and (storage[0] / "catalog.db").exists()
        assert (storage[0] / "data").is_dir()
    assert not storage[0].exists()  # removed when the server stopped


@needs_catalog
@pytest.mark.slow
def test_cli_catalog_init_then_serve_persists(tmp_path):
    database, data = tmp_path / "catalog.db", tmp_path / "data"
    assert run_cli("catalog", "init", str(database)).returncode == 0
    ramp = numpy.arange(10, dtype="<i8")
    headers = {"Authorization": "Apikey secret"}
    args = ["serve", "catalog", str(database), "-w", str(data), "--api-key", "secret"]

    port = free_port()
    with running(*args, "--port", str(port), env=_env()) as (url, _):
        assert url == f"http://localhost:{port}"  # the key was given: not printed
        api = f"http://127.0.0.1:{port}/api/v1"
        assert httpx.get(f"{api}/metadata/").status_code == 401
        _create_array(api, headers, "", "ramp", ramp)

    port = free_port()
    with running(*args, "--port", str(port), env=_env()) as _:
        api = f"http://127.0.0.1:{port}/api/v1"
        data_response = httpx.get(f"{api}/array/full/ramp", headers=headers)
        numpy.testing.assert_array_equal(numpy.frombuffer(data_response.content, "<i8"), ramp)

    # Without --write the same catalog is served read-only.
    port = free_port()
    with running("serve", "catalog", str(database), "--port", str(port), env=_env()) as (url, _):
        key = re.search(r"api_key=([0-9a-f]{64})", url).group(1)
        api = f"http://127.0.0.1:{port}/api/v1"
        with pytest.raises(AssertionError, match="no writable storage"):
            _create_array(api, {"Authorization": f"Apikey {key}"}, "", "more", ramp)
        assert httpx.get(f"{api}/array/full/ramp", params={"api_key": key}).status_code == 200


def test_catalog_variables_override_a_catalog_section_only(monkeypatch, tmp_path):
    """Upstream reads TILED_CATALOG_<KEY> into the catalog section (over the file's values);
    a configuration of trees gets no catalog from them."""
    monkeypatch.setenv("TILED_CATALOG_URI", f"sqlite:///{tmp_path / 'env.db'}")
    monkeypatch.setenv("TILED_CATALOG_INIT_IF_NOT_EXISTS", "true")
    monkeypatch.setenv("TILED_CATALOG_METADATA", '{"from": "environment"}')
    monkeypatch.setenv("TILED_CATALOG_WRITABLE_STORAGE", str(tmp_path / "env-data"))
    monkeypatch.setenv("TILED_CATALOG_MOUNT_NODE", '["a", "b"]')
    monkeypatch.setenv("TILED_CATALOG_CATALOG_POOL_SIZE", "4")
    file = {"catalog": {"uri": f"sqlite:///{tmp_path / 'file.db'}", "metadata": {"from": "file"}}}
    tree = construct_build_app_kwargs(file)["tree"]
    assert tree.catalog.url.database == str(tmp_path / "env.db")
    assert tree.metadata() == {"from": "environment"}
    assert tree.catalog.writable_storage == [tmp_path / "env-data"]
    assert tree.mount_path == ("a", "b")
    assert tree.catalog.pool_options["pool_size"] == 4
    trees = construct_build_app_kwargs({"trees": [{"path": "/", "tree": DEMO}]})
    assert not hasattr(trees["tree"], "catalog")


@pytest.mark.parametrize(
    ("name", "value"),
    [("TILED_CATALOG_METADATA", "{not json"), ("TILED_CATALOG_CATALOG_POOL_SIZE", "many")],
)
def test_bad_catalog_variables_are_named(monkeypatch, tmp_path, name, value):
    monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError, match=re.escape(f"environment variable {name}: ")):
        construct_build_app_kwargs({"catalog": {"uri": f"sqlite:///{tmp_path / 'c.db'}"}})


def test_serve_catalog_does_not_read_catalog_variables(tmp_path):
    """As upstream's command: its catalog is its arguments (a mount_node meant for a
    configuration file would make it fail)."""
    import os
    import subprocess
    import sys

    environment = {
        **os.environ,
        "TILED_CATALOG_URI": f"sqlite:///{tmp_path / 'env.db'}",
        "TILED_CATALOG_MOUNT_NODE": "/nowhere",
    }
    command = [sys.executable, "-m", "tiled", "serve", "catalog", str(tmp_path / "cli.db")]
    server = subprocess.Popen(
        [*command, "--init", "--port", "0"], env=environment, stderr=subprocess.PIPE, text=True,
        stdin=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        for line in server.stderr:
            if "Uvicorn running" in line or "Error" in line:
                break
    finally:
        server.terminate()
        server.wait(timeout=60)
    assert (tmp_path / "cli.db").exists()
    assert not (tmp_path / "env.db").exists()
