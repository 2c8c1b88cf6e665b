"""The authentication database in upstream Tiled 0.2.20's schema: creation, migrations,
startup checks, the ``tiled admin`` commands, and a database shared with upstream's server.

Tests marked ``slow`` use upstream's own ``tiled`` (the ``upstream_tiled`` environment).
"""

from __future__ import annotations

import asyncio
import shutil
import sqlite3
import subprocess
import sys
import uuid
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa
from typer.testing import CliRunner

from tiled.authn_database import migration
from tiled.authn_database.connection import AuthnDatabase, async_url, create_engine
from tiled.commandline.main import cli_app
from tiled.config import Database, parse_configs
from tiled.server.app import build_app_from_config

from . import postgres
from .live_server import serve
from .postgres import database_uri, require_postgresql
from .processes import free_port, server_process, without_pythonpath

OUR_TILED = str(Path(sys.executable).parent / "tiled")
OLD_USER_SCOPES = {
    "read:metadata",
    "read:data",
    "create",
    "write:metadata",
    "write:data",
    "apikeys",
}


# --- databases ---------------------------------------------------------------------------------


@pytest.fixture
def new_database(tmp_path):
    """Make URIs of new, empty databases of a backend; PostgreSQL ones are dropped after."""
    created = []

    def make(backend: str, name: str = "authn") -> str:
        if backend == "sqlite":
            return f"sqlite:///{tmp_path / f'{name}.db'}"
        require_postgresql()
        database = f"tiled_authn_{uuid.uuid4().hex[:12]}"
        asyncio.run(postgres.admin(f'CREATE DATABASE "{database}"'))
        created.append(database)
        return database_uri(database)

    yield make
    for database in created:
        asyncio.run(postgres.admin(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)'))


def _describe(connection) -> dict:
    """Tables, columns (type, nullability, server default), keys, indexes, enums, roles."""
    inspector = sa.inspect(connection)
    tables = {}
    for table in inspector.get_table_names():
        columns = [
            (c["name"], c["type"].compile(dialect=connection.dialect), c["nullable"], c["default"])
            for c in inspector.get_columns(table)
        ]
        foreign_keys = sorted(
            (
                fk["name"] or "",
                tuple(fk["constrained_columns"]),
                fk["referred_table"],
                tuple(fk["referred_columns"]),
                fk["options"].get("ondelete") or "",
            )
            for fk in inspector.get_foreign_keys(table)
        )
        tables[table] = {
            "columns": columns,
            "primary_key": inspector.get_pk_constraint(table)["constrained_columns"],
            "foreign_keys": foreign_keys,
            "indexes": sorted(
                (ix["name"], tuple(ix["column_names"]), bool(ix["unique"]))
                for ix in inspector.get_indexes(table)
            ),
            "unique": sorted(
                tuple(u["column_names"]) for u in inspector.get_unique_constraints(table)
            ),
        }
    enums = inspector.get_enums() if connection.dialect.name == "postgresql" else []
    roles = connection.execute(sa.text("SELECT name, description, scopes FROM roles")).all()
    return {
        "tables": tables,
        "enums": sorted((e["name"], tuple(e["labels"])) for e in enums),
        "roles": {
            name: (description, frozenset(_json(scopes))) for name, description, scopes in roles
        },
        "revision": migration.current_revision(connection),
    }


def _json(text: str):
    import json

    return json.loads(text)


def describe(uri: str) -> dict:
    async def go():
        engine = create_engine(async_url(uri))
        try:
            async with engine.connect() as connection:
                return await connection.run_sync(_describe)
        finally:
            await engine.dispose()

    return asyncio.run(go())


def execute(uri: str, statement: str, **params) -> list:
    async def go():
        engine = create_engine(async_url(uri))
        try:
            async with engine.begin() as connection:
                result = await connection.execute(sa.text(statement), params)
                return result.all() if result.returns_rows else []
        finally:
            await engine.dispose()

    return asyncio.run(go())


def admin(*args: str):
    """Our ``tiled admin ...``, in process."""
    return CliRunner().invoke(cli_app, ["admin", *args])


def upstream_admin(upstream_tiled: Path, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(upstream_tiled.parent / "tiled"), "admin", *args],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=cwd,
        env=without_pythonpath(),
    )


# --- the schema --------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_new_database_matches_upstream(backend, new_database, upstream_tiled, tmp_path):
    ours, theirs = new_database(backend, "ours"), new_database(backend, "theirs")
    assert admin("initialize-database", ours).exit_code == 0
    made = upstream_admin(upstream_tiled, "initialize-database", theirs, cwd=tmp_path)
    assert made.returncode == 0, made.stderr
    mine, upstream = describe(ours), describe(theirs)
    assert mine == upstream
    assert mine["revision"] == migration.HEAD == "0a017b76d0d0"
    assert set(mine["tables"]) == {
        "principals", "identities", "roles", "principal_role_association", "api_keys",
        "sessions", "pending_sessions", "alembic_version",
    }  # fmt: skip
    if backend == "sqlite":  # the very same DDL
        ddl = "SELECT name, sql FROM sqlite_master WHERE name NOT LIKE 'sqlite_%'"
        with (
            sqlite3.connect(tmp_path / "ours.db") as a,
            sqlite3.connect(tmp_path / "theirs.db") as b,
        ):
            assert sorted(a.execute(ddl)) == sorted(b.execute(ddl))


def test_default_roles_and_stamp(new_database):
    uri = new_database("sqlite")
    result = admin("initialize-database", uri)
    assert result.exit_code == 0, result.output
    state = describe(uri)
    assert state["revision"] == migration.HEAD
    assert state["roles"]["user"][1] == {
        "read:metadata", "read:data", "create:node", "write:metadata", "write:data",
        "delete:revision", "delete:node", "create:apikeys", "revoke:apikeys",
    }  # fmt: skip
    assert "admin:apikeys" in state["roles"]["admin"][1]
    assert "create:apikeys" not in state["roles"]["admin"][1]


# --- migrations --------------------------------------------------------------------------------


def _add_old_key(uri: str) -> None:
    """An API key as upstream 0.2.0 would have written it, with the old scope names."""
    principal = str(uuid.uuid4())
    execute(uri, "INSERT INTO principals (uuid, type) VALUES (:u, 'user')", u=principal)
    [(principal_id,)] = execute(uri, "SELECT id FROM principals WHERE uuid = :u", u=principal)
    execute(
        uri,
        "INSERT INTO api_keys (first_eight, hashed_secret, principal_id, scopes) "
        "VALUES ('0123abcd', :h, :p, :s)",
        h=b"\0" * 32,
        p=principal_id,
        s='["read:data", "create", "apikeys"]',
    )


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_downgrade_and_upgrade_in_place(backend, new_database):
    uri, fresh = new_database(backend, "migrated"), new_database(backend, "fresh")
    for target in (uri, fresh):
        assert admin("initialize-database", target).exit_code == 0
    head = describe(fresh)

    result = admin("downgrade-database", uri, "a806cc635ab2")
    assert result.exit_code == 0, result.output
    old = describe(uri)
    assert old["revision"] == "a806cc635ab2"
    assert old["roles"]["user"][1] == OLD_USER_SCOPES
    assert not {"read:webhooks", "delete:node"} & old["roles"]["admin"][1]
    [fk] = old["tables"]["pending_sessions"]["foreign_keys"]
    assert fk[-1] == ""  # no ON DELETE
    _add_old_key(uri)

    result = admin("upgrade-database", uri)
    assert result.exit_code == 0, result.output
    assert "from revision a806cc635ab2 to 0a017b76d0d0" in result.output
    assert describe(uri) == head
    [(scopes,)] = execute(uri, "SELECT scopes FROM api_keys")
    assert set(_json(scopes)) == {"read:data", "create:node", "create:apikeys", "revoke:apikeys"}

    # Step by step, too.
    assert admin("downgrade-database", uri, "d829476bc173").exit_code == 0
    assert describe(uri)["revision"] == "d829476bc173"
    assert admin("upgrade-database", uri, "2d1b550e12e0").exit_code == 0
    assert admin("upgrade-database", uri).exit_code == 0
    assert describe(uri) == head


def test_postgresql_schema_option(new_database):
    uri = new_database("postgresql")
    schema = ["--schema", "authn"]
    assert admin("initialize-database", uri, *schema).exit_code == 0
    [(where,)] = execute(
        uri, "SELECT table_schema FROM information_schema.tables WHERE table_name = 'roles'"
    )
    assert where == "authn"
    assert admin("upgrade-database", uri).exit_code == 1  # not in the default schema
    assert admin("downgrade-database", uri, "a806cc635ab2", *schema).exit_code == 0
    with pytest.raises(migration.DatabaseUpgradeNeeded):
        asyncio.run(AuthnDatabase(Database(uri=uri, schema="authn")).startup())
    assert admin("upgrade-database", uri, *schema).exit_code == 0
    asyncio.run(open_and_close(AuthnDatabase(Database(uri=uri, schema="authn"))))


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_upgrade_a_database_upstream_downgraded(backend, new_database, upstream_tiled, tmp_path):
    """An upstream 0.2.20 database taken back by upstream to 0.2.0's head, then upgraded
    here, equals one upgraded by upstream and a new one."""
    ours, theirs, fresh = (new_database(backend, name) for name in ("ours", "theirs", "fresh"))
    for uri in (ours, theirs, fresh):
        made = upstream_admin(upstream_tiled, "initialize-database", uri, cwd=tmp_path)
        assert made.returncode == 0, made.stderr
    for uri in (ours, theirs):
        down = upstream_admin(
            upstream_tiled, "downgrade-database", uri, "a806cc635ab2", cwd=tmp_path
        )
        assert down.returncode == 0, down.stderr
        assert describe(uri)["revision"] == "a806cc635ab2"
    result = admin("upgrade-database", ours)
    assert result.exit_code == 0, result.output
    up = upstream_admin(upstream_tiled, "upgrade-database", theirs, cwd=tmp_path)
    assert up.returncode == 0, up.stderr
    assert describe(ours) == describe(theirs) == describe(fresh)
    # And upstream takes ours back down.
    down = upstream_admin(upstream_tiled, "downgrade-database", ours, "a806cc635ab2", cwd=tmp_path)
    assert down.returncode == 0, down.stderr


# --- startup -----------------------------------------------------------------------------------


async def open_and_close(database: AuthnDatabase) -> None:
    await database.startup()
    await database.shutdown()


def test_startup_refuses_a_database_behind_head(new_database):
    uri = new_database("sqlite")
    assert admin("initialize-database", uri).exit_code == 0
    assert admin("downgrade-database", uri, "a806cc635ab2").exit_code == 0
    database = AuthnDatabase(Database(uri=uri, init_if_not_exists=True))
    with pytest.raises(migration.DatabaseUpgradeNeeded) as caught:
        asyncio.run(database.startup())
    message = str(caught.value)
    assert "revision a806cc635ab2" in message
    assert "tiled admin upgrade-database sqlite+aiosqlite:///" in message
    assert database.engine is None  # nothing left open
    assert describe(uri)["revision"] == "a806cc635ab2"  # and nothing changed


def test_startup_refuses_unknown_and_ancient_revisions(new_database):
    uri = new_database("sqlite")
    assert admin("initialize-database", uri).exit_code == 0
    execute(uri, "UPDATE alembic_version SET version_num = '0c705a02954c'")
    with pytest.raises(migration.UnsupportedRevision, match="upstream Tiled 0.2.0"):
        asyncio.run(AuthnDatabase(Database(uri=uri)).startup())
    execute(uri, "UPDATE alembic_version SET version_num = 'ffffffffffff'")
    with pytest.raises(migration.UnrecognizedDatabase, match="newer version of Tiled"):
        asyncio.run(AuthnDatabase(Database(uri=uri)).startup())


def test_startup_opens_a_database_at_head_without_a_step(new_database):
    uri = new_database("sqlite")
    assert admin("initialize-database", uri).exit_code == 0
    before = describe(uri)
    asyncio.run(open_and_close(AuthnDatabase(Database(uri=uri))))
    assert describe(uri) == before


def test_startup_creates_only_with_init_if_not_exists(new_database, tmp_path):
    uri = new_database("sqlite")
    with pytest.raises(migration.UninitializedDatabase, match="tiled admin initialize-database"):
        asyncio.run(AuthnDatabase(Database(uri=uri)).startup())
    assert not (tmp_path / "authn.db").exists()
    asyncio.run(open_and_close(AuthnDatabase(Database(uri=uri, init_if_not_exists=True))))
    assert describe(uri)["revision"] == migration.HEAD


def test_serve_refuses_a_database_behind_head(new_database, tmp_path):
    uri = new_database("sqlite")
    assert admin("initialize-database", uri).exit_code == 0
    assert admin("downgrade-database", uri, "a806cc635ab2").exit_code == 0
    config = write_config(tmp_path, uri)
    result = subprocess.run(
        [OUR_TILED, "serve", "config", str(config), "--port", str(free_port())],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 1
    assert "tiled admin upgrade-database" in result.stderr
    assert "Traceback" not in result.stderr


# --- the command line --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "args, message",
    [
        (["upgrade-database", "foo://bar"], "Unsupported database URI"),
        (["upgrade-database", "{tmp}/missing.db"], "no database at"),
        (["upgrade-database", "{db}", "notarevision"], "Unknown revision 'notarevision'"),
        (["downgrade-database", "{db}", "0c705a02954c"], "predates upstream Tiled 0.2.0"),
        (["downgrade-database", "{db}", "base"], "Unknown revision 'base'"),
        (["upgrade-database", "{db}", "a806cc635ab2"], "use `tiled admin downgrade-database"),
        (["initialize-database", "{db}"], "already initialized"),
        (["initialize-database", "{tmp}/no/such/dir/a.db"], "directory does not exist"),
        (["initialize-database", "sqlite://"], "in-memory"),
        (["upgrade-database", "postgresql://nobody@127.0.0.1:1/none"], "Error: postgresql"),
    ],
)
def test_bad_input_is_one_clear_error(args, message, new_database, tmp_path):
    db = new_database("sqlite")
    assert admin("initialize-database", db).exit_code == 0
    args = [arg.format(tmp=tmp_path, db=db) for arg in args]
    result = admin(*args)
    assert result.exit_code == 1, result.output
    assert message in result.output
    assert isinstance(result.exception, SystemExit)  # no traceback
    assert not (tmp_path / "missing.db").exists()


def test_admin_commands_exit_cleanly_in_a_real_process(tmp_path):
    result = subprocess.run(
        [OUR_TILED, "admin", "upgrade-database", str(tmp_path / "x.db"), "nope"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 1
    assert result.stderr.startswith("Error: ") and "Traceback" not in result.stderr


def test_check_config(tmp_path):
    good = write_config(tmp_path, f"sqlite:///{tmp_path / 'a.db'}")
    result = admin("check-config", str(good))
    assert result.exit_code == 0, result.output
    assert "no errors" in result.output
    bad = tmp_path / "bad.yml"
    bad.write_text("authentication:\n  no_such_setting: 1\n")
    result = admin("check-config", str(bad))
    assert result.exit_code == 1 and "no_such_setting" in result.output
    unimportable = tmp_path / "unimportable.yml"
    unimportable.write_text("trees:\n  - path: /\n    tree: no_such_module_xyz:tree\n")
    result = admin("check-config", str(unimportable))
    assert result.exit_code == 1 and "no_such_module_xyz" in result.output
    result = admin("check-config", str(tmp_path / "missing.yml"))
    assert result.exit_code == 1 and isinstance(result.exception, SystemExit)


# --- one database, two servers -----------------------------------------------------------------

CONFIG = """\
authentication:
  providers:
    - provider: toy
      authenticator: tiled.authenticators:DictionaryAuthenticator
      args:
        users_to_passwords:
          alice: secret1
  secret_keys: ["0123456789abcdef0123456789abcdef"]
database:
  uri: {uri}
  init_if_not_exists: true
trees:
  - path: /
    tree: {module}:tree
"""
TREE = """\
import numpy
from tiled.adapters.array import ArrayAdapter
from tiled.adapters.mapping import MapAdapter

tree = MapAdapter({"x": ArrayAdapter.from_array(numpy.arange(3))})
"""


def write_config(directory: Path, uri: str) -> Path:
    module = f"authn_tree_{uuid.uuid4().hex[:8]}"
    (directory / f"{module}.py").write_text(TREE)
    path = directory / "config.yml"
    path.write_text(CONFIG.format(uri=uri, module=module))
    return path


def upstream_server(upstream_tiled: Path, config: Path):
    """Upstream's ``tiled serve config`` in a process of its own; yields its base URL."""
    command = [upstream_tiled.parent / "tiled", "serve", "config", config]
    return server_process(command, config.parent, env=without_pythonpath())


def login(client: httpx.Client) -> dict:
    form = {"username": "alice", "password": "secret1"}
    response = client.post("/auth/provider/toy/token", data=form)
    assert response.status_code == 200, response.text
    return response.json()


def create_key(client: httpx.Client, tokens: dict, **params) -> dict:
    headers = {"Authorization": f"Bearer {tokens['access_token']}"}
    body = {"expires_in": None, "scopes": None, **params}  # upstream wants both fields
    response = client.post("/auth/apikey", json=body, headers=headers)
    assert response.status_code == 200, response.text
    return response.json()


def whoami(client: httpx.Client, secret: str) -> httpx.Response:
    return client.get("/auth/whoami", headers={"Authorization": f"Apikey {secret}"})


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_a_database_shared_with_upstream(backend, new_database, upstream_tiled, tmp_path):
    """Upstream makes the database, a user and API keys; this server, on the same database
    and configuration, honours them (and upstream honours what this server adds)."""
    config = write_config(tmp_path, new_database(backend))
    with upstream_server(upstream_tiled, config) as upstream:
        with httpx.Client(base_url=f"{upstream}/api/v1", timeout=30) as client:
            tokens = login(client)
            inherit = create_key(client, tokens, note="from upstream")
            narrow = create_key(client, tokens, scopes=["read:metadata"], expires_in=3600)
            me = whoami(client, inherit["secret"]).json()
    principal = uuid.UUID(me["uuid"])
    assert principal.hex == tokens["principal"]

    app = build_app_from_config(parse_configs(config))
    with serve(app) as live, httpx.Client(base_url=f"{live.url}/api/v1", timeout=30) as client:
        # Upstream's keys: same principal, same scopes, same notes.
        mine = whoami(client, inherit["secret"])
        assert mine.status_code == 200, mine.text
        assert uuid.UUID(mine.json()["uuid"]) == principal
        notes = {k["first_eight"]: k["note"] for k in mine.json()["api_keys"]}
        assert notes == {inherit["first_eight"]: "from upstream", narrow["first_eight"]: None}
        assert client.get("/metadata/x", headers=_apikey(inherit)).status_code == 200
        assert client.get("/metadata/x", headers=_apikey(narrow)).status_code == 200
        # Credentials without the route's scope: 401, as upstream answers.
        assert client.get("/array/full/x", headers=_apikey(narrow)).status_code == 401
        # Upstream's session: its refresh token works here.
        refreshed = client.post(
            "/auth/session/refresh", json={"refresh_token": tokens["refresh_token"]}
        )
        assert refreshed.status_code == 200, refreshed.text
        # A password login finds the same principal.
        ours = login(client)
        assert uuid.UUID(ours["principal"]) == principal
        added = create_key(client, ours, note="from this server")

    with upstream_server(upstream_tiled, config) as upstream:
        with httpx.Client(base_url=f"{upstream}/api/v1", timeout=30) as client:
            back = whoami(client, added["secret"])
            assert back.status_code == 200, back.text
            assert uuid.UUID(back.json()["uuid"]) == principal
            assert client.get("/metadata/x", headers=_apikey(added)).status_code == 200
            login(client)
    assert describe(parse_configs(config).database.uri)["revision"] == migration.HEAD


def _apikey(key: dict) -> dict:
    return {"Authorization": f"Apikey {key['secret']}"}


def test_sqlite_copy_survives_a_round_trip(new_database, tmp_path):
    """Our own server on a database it made, restarted: keys, sessions and principals stay."""
    uri = new_database("sqlite")
    config = write_config(tmp_path, uri)
    with serve(build_app_from_config(parse_configs(config))) as live:
        with httpx.Client(base_url=f"{live.url}/api/v1", timeout=30) as client:
            tokens = login(client)
            key = create_key(
                client, tokens, note="kept", access_tags=["a"], expires_in=600,
                scopes=["read:metadata"],
            )  # fmt: skip
    shutil.copy(tmp_path / "authn.db", tmp_path / "copy.db")
    with serve(build_app_from_config(parse_configs(config))) as live:
        with httpx.Client(base_url=f"{live.url}/api/v1", timeout=30) as client:
            me = whoami(client, key["secret"]).json()
            # As upstream: whoami gives the dashed form, the tokens the hex form.
            assert uuid.UUID(me["uuid"]).hex == tokens["principal"]
            assert me["uuid"] == str(uuid.UUID(me["uuid"]))
            [listed] = me["api_keys"]
            assert listed["note"] == "kept" and listed["access_tags"] == ["a"]
            assert listed["expiration_time"].endswith("+00:00")
            [session] = me["sessions"]
            refreshed = client.post(
                "/auth/session/refresh", json={"refresh_token": tokens["refresh_token"]}
            )
            assert refreshed.status_code == 200
            assert str(uuid.UUID(session["uuid"])) == session["uuid"]
    with sqlite3.connect(tmp_path / "copy.db") as db:
        [(stored_uuid, kind)] = db.execute("SELECT uuid, type FROM principals").fetchall()
    assert stored_uuid == str(uuid.UUID(tokens["principal"])) and kind == "user"
