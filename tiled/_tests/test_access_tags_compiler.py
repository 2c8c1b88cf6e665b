"""The access-tags compiler: upstream Tiled 0.2.20's ``AccessTagsCompiler``, written here.

Upstream's example definitions compiled by this package and by upstream's own (in its virtual
environment) leave the same tables, on SQLite and PostgreSQL, also after a second compilation
that drops tags; upstream's ``compile_tags.py`` script runs unchanged with this package; and
the rules (validation, auto_tags, groups, principal tags, ids kept, tags retained while
assigned to data) hold.
"""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
import sqlalchemy as sa
import yaml
from sqlalchemy.ext.asyncio import AsyncSession
from typer.testing import CliRunner

from tiled.access.tag_compiler import AccessTagsCompiler, TagCompilationError
from tiled.authn_database import connection as authn_connection
from tiled.authn_database.orm import Identity, Principal, Role
from tiled.catalog.database import async_url, create_engine, initialize_database
from tiled.catalog.orm import (
    ROOT_ID,
    access_grants,
    access_tag_owners_association,
    access_tags,
    access_tags_principals,
    node_access_tags_association,
)
from tiled.commandline.main import cli_app
from tiled.server.connection_pool import close_database_connection_pool, get_database_engine
from tiled.server.settings import DatabaseSettings

from .isolated_python import run_isolated
from .postgres import temporary_database

# compile_tags.py's scopes and groups.
SCOPES = [
    "read:metadata", "read:data", "write:metadata", "write:data", "delete:revision",
    "delete:node", "create:node", "register",
]  # fmt: skip
GROUPS = {"group_A": ["alice", "bob"], "admins": ["cara"]}
READ = {"read:data", "read:metadata"}
ADMIN = set(SCOPES)  # facility_admin: every scope of the compiler
USER_ROLE = {
    "read:metadata", "read:data", "create:node", "write:metadata", "write:data",
    "delete:revision", "delete:node",
}  # the default "user" role, narrowed to SCOPES  # fmt: skip


def group_parser(name: str) -> list[str]:
    return GROUPS[name]


# --- helpers -----------------------------------------------------------------------------------


def sqlite_uri(path: Path) -> str:
    return f"sqlite+aiosqlite:///{path}"


async def _compile(catalog: str, config, *, authn: str | None = None, **options):
    """Load, (read principals,) compile, close the pools; returns the compiler."""
    settings = DatabaseSettings(uri=catalog)
    authn_settings = DatabaseSettings(uri=authn) if authn else None
    compiler = AccessTagsCompiler(
        options.pop("scopes", SCOPES),
        config,
        settings,
        options.pop("group_parser", group_parser),
        authn_database_settings=authn_settings,
        provider="toy" if authn else None,
    )
    try:
        compiler.load_tag_config()
        if authn:
            await compiler.load_principal_tags()
        await compiler.compile()
    finally:
        await close_database_connection_pool(settings)
        if authn_settings is not None:
            await close_database_connection_pool(authn_settings)
    return compiler


def compile_here(catalog: str, config, **options) -> AccessTagsCompiler:
    return asyncio.run(_compile(catalog, config, **options))


def run_sql(uri: str, work):
    """``await work(connection)`` in one transaction on the catalog database ``uri``."""

    async def go():
        engine = create_engine(async_url(uri))
        try:
            async with engine.begin() as connection:
                return await work(connection)
        finally:
            await engine.dispose()

    return asyncio.run(go())


def contents(uri: str) -> dict:
    """The four tag tables, by names (ids under "ids")."""

    async def read(connection):
        tags = {name: (i, public) for i, name, public in await connection.execute(
            sa.select(access_tags.c.id, access_tags.c.name, access_tags.c.is_public)
        )}  # fmt: skip
        principals = dict(
            (
                await connection.execute(
                    sa.select(access_tags_principals.c.id, access_tags_principals.c.name)
                )
            ).all()
        )
        by_id = {i: name for name, (i, _) in tags.items()}
        grants = await connection.execute(sa.select(access_grants))
        owners = await connection.execute(sa.select(access_tag_owners_association))
        return {
            "public": {name: bool(public) for name, (_, public) in tags.items()},
            "principals": set(principals.values()),
            "grants": {(by_id[t], principals[p], str(s)) for t, p, s in grants},
            "owners": {(by_id[t], principals[p]) for t, p in owners},
            "ids": {name: i for name, (i, _) in tags.items()},
        }

    return run_sql(uri, read)


def grants_of(state: dict, tag: str) -> dict[str, set[str]]:
    out: dict[str, set[str]] = {}
    for name, principal, scope in state["grants"]:
        if name == tag:
            out.setdefault(principal, set()).add(scope)
    return out


def assign(uri: str, tag: str, node_id: int = ROOT_ID) -> None:
    async def work(connection):
        tag_id = (
            await connection.execute(sa.select(access_tags.c.id).where(access_tags.c.name == tag))
        ).scalar_one()
        await connection.execute(
            node_access_tags_association.insert().values(node_id=node_id, tag_id=tag_id)
        )

    run_sql(uri, work)


def unassign(uri: str, tag: str) -> None:
    async def work(connection):
        tag_id = sa.select(access_tags.c.id).where(access_tags.c.name == tag).scalar_subquery()
        await connection.execute(
            node_access_tags_association.delete().where(
                node_access_tags_association.c.tag_id == tag_id
            )
        )

    run_sql(uri, work)


def new_catalog(uri: str) -> str:
    asyncio.run(initialize_database(uri))
    return uri


def new_authn(uri: str) -> dict[str, str]:
    """An authentication database made by ``tiled admin initialize-database`` with principals:
    alice, bob, cara (also admin) at provider toy; dave at another provider; a service with
    the user role, one whose only role grants none of SCOPES. Returns the services' uuids."""
    plain = uri.replace("+aiosqlite", "").replace("+asyncpg", "")
    result = CliRunner().invoke(cli_app, ["admin", "initialize-database", plain])
    assert result.exit_code == 0, result.output
    services = {"worker": uuid.uuid4(), "metrics": uuid.uuid4()}

    async def fill():
        engine = authn_connection.create_engine(authn_connection.async_url(uri))
        try:
            async with AsyncSession(engine) as db:
                roles = {role.name: role for role in (await db.scalars(sa.select(Role))).all()}
                roles["metrics_only"] = Role(name="metrics_only", scopes=["metrics"])

                def user(login, *names, provider="toy"):
                    return Principal(
                        uuid=uuid.uuid4(),
                        type="user",
                        roles=[roles[n] for n in names],
                        identities=[Identity(id=login, provider=provider)],
                    )

                db.add_all(
                    [
                        user("alice", "user"),
                        user("bob", "user"),
                        user("cara", "user", "admin"),
                        user("dave", "user", provider="elsewhere"),
                        Principal(uuid=services["worker"], type="service", roles=[roles["user"]]),
                        Principal(
                            uuid=services["metrics"], type="service", roles=[roles["metrics_only"]]
                        ),
                    ]
                )
                await db.commit()
        finally:
            await engine.dispose()

    asyncio.run(fill())
    return {name: str(value) for name, value in services.items()}


# Upstream's compiler, as compile_tags.py calls it, on the databases given as arguments.
UPSTREAM_COMPILE = rf"""
import asyncio, sys
from tiled.access_control.access_tags import AccessTagsCompiler
from tiled.server.connection_pool import close_database_connection_pool
from tiled.server.settings import DatabaseSettings

SCOPES = {SCOPES!r}
GROUPS = {GROUPS!r}

def group_parser(name):
    return GROUPS[name]

async def main(catalog, authn, config):
    settings, authn_settings = DatabaseSettings(uri=catalog), DatabaseSettings(uri=authn)
    compiler = AccessTagsCompiler(
        SCOPES, config, settings, group_parser,
        authn_database_settings=authn_settings, provider="toy",
    )
    compiler.load_tag_config()
    await compiler.load_principal_tags()
    await compiler.compile()
    await close_database_connection_pool(settings)
    await close_database_connection_pool(authn_settings)

asyncio.run(main(*sys.argv[1:4]))
"""


def compile_upstream(python: Path, catalog: str, authn: str, config: Path) -> str:
    result = run_isolated(python, UPSTREAM_COMPILE, catalog, authn, str(config))
    assert result.returncode == 0, result.stderr
    return result.stderr


def example_definitions(upstream_example_configs: Path) -> Path:
    return upstream_example_configs / "access_tags" / "tag_definitions.yml"


# A second generation of upstream's example: data_B and data_C dropped (data_B is assigned to
# the root node meanwhile), data_D no longer public, data_E new, the owners changed.
SECOND = {
    "roles": {"facility_user": {"scopes": ["read:data", "read:metadata"]}},
    "tags": {
        "data_A": {"groups": [{"name": "group_A", "role": "facility_user"}]},
        "data_D": {"users": [{"name": "bob", "scopes": ["read:metadata"]}]},
        "data_E": {"users": [{"name": "erin", "role": "facility_user"}],
                   "auto_tags": [{"name": "public"}]},
        "user:alice": {"users": [{"name": "bob", "scopes": ["read:metadata"]}]},
    },
    "tag_owners": {"data_A": {"groups": [{"name": "admins"}]}},
}  # fmt: skip


# --- the same tables as upstream's compiler ----------------------------------------------------


@pytest.fixture(params=["sqlite", "postgresql"])
def backend_uris(request, tmp_path):
    """(our catalog, upstream's catalog, authentication database) on one back end."""
    if request.param == "sqlite":
        yield tuple(sqlite_uri(tmp_path / f"{n}.db") for n in ("ours", "theirs", "authn"))
        return
    with (
        temporary_database("tiled_tags_ours") as ours,
        temporary_database("tiled_tags_theirs") as theirs,
        temporary_database("tiled_tags_authn") as authn,
    ):
        yield tuple(
            u.replace("postgresql://", "postgresql+asyncpg://", 1) for u in (ours, theirs, authn)
        )


@pytest.mark.slow
def test_same_tables_as_upstream(backend_uris, upstream_tiled, upstream_example_configs, tmp_path):
    ours, theirs, authn = backend_uris
    for catalog in (ours, theirs):
        new_catalog(catalog)
    services = new_authn(authn)
    definitions = example_definitions(upstream_example_configs)

    compile_here(ours, definitions, authn=authn)
    compile_upstream(upstream_tiled, theirs, authn, definitions)
    mine, upstream = contents(ours), contents(theirs)
    for key in ("public", "principals", "grants", "owners"):
        assert mine[key] == upstream[key], key
    # What both agree on is what the example means.
    assert grants_of(mine, "data_A") == {"alice": READ, "bob": READ, "cara": ADMIN}
    assert mine["public"]["data_D"] and mine["public"]["public"]
    assert grants_of(mine, "user:alice") == {"alice": USER_ROLE}
    assert grants_of(mine, "user:cara") == {"cara": ADMIN}  # user + admin roles
    assert "user:dave" not in mine["public"]  # another provider's login
    worker = services["worker"]
    assert grants_of(mine, f"service:{worker}") == grants_of(mine, f"user:{worker}")
    assert grants_of(mine, f"service:{worker}") == {worker: USER_ROLE}
    assert grants_of(mine, f"service:{services['metrics']}") == {}  # a tag, without grants
    assert not mine["public"][f"service:{services['metrics']}"]

    # The next generation: tags dropped (one of them still assigned to data), others changed.
    for catalog in (ours, theirs):
        assign(catalog, "data_B")
    second = tmp_path / "second.yml"
    second.write_text(yaml.safe_dump(SECOND))
    with pytest.warns(UserWarning, match="data_B"):
        compile_here(ours, second, authn=authn)
    stderr = compile_upstream(upstream_tiled, theirs, authn, second)
    assert "data_B" in stderr  # upstream warns too
    after, upstream_after = contents(ours), contents(theirs)
    for key in ("public", "principals", "grants", "owners"):
        assert after[key] == upstream_after[key], key
    assert after["ids"]["data_A"] == mine["ids"]["data_A"]
    assert after["ids"]["data_B"] == mine["ids"]["data_B"]
    assert "data_C" not in after["public"] and "data_admin" not in after["public"]
    assert grants_of(after, "data_B") == {} and not after["public"]["data_B"]
    assert grants_of(after, "user:alice") == {"alice": USER_ROLE, "bob": {"read:metadata"}}
    assert after["owners"] == {("data_A", "cara")}


# --- upstream's compile_tags.py, unchanged ----------------------------------------------------


@pytest.mark.slow
def test_upstream_compile_tags_script_runs_here(upstream_example_configs, tmp_path):
    configs = tmp_path / "example_configs"
    shutil.copytree(upstream_example_configs, configs)
    script = configs / "access_tags" / "compile_tags.py"
    catalog, authn = configs / "catalog" / "catalog.db", configs / "authn.db"
    assert not catalog.exists() and not authn.exists()

    def run() -> subprocess.CompletedProcess:
        result = subprocess.run(
            [sys.executable, str(script)], capture_output=True, text=True, cwd=tmp_path,
            timeout=120,
        )  # fmt: skip
        assert result.returncode == 0, result.stderr
        return result

    first = run()
    assert "No principal tags were generated" in first.stderr
    assert not authn.exists()  # only ever read, never created
    state = contents(sqlite_uri(catalog))
    assert grants_of(state, "data_A") == {"alice": READ, "bob": READ, "cara": ADMIN}
    for tag in ("data_B", "data_C", "data_D", "data_admin"):
        assert grants_of(state, tag)["cara"] == ADMIN
    assert grants_of(state, "data_B")["alice"] == READ
    assert grants_of(state, "data_C")["bob"] == READ
    assert state["public"] == {
        "public": True, "data_A": False, "data_B": False, "data_C": False, "data_D": True,
        "data_admin": False,
    }  # fmt: skip
    assert state["owners"] == {("data_admin", "cara")}

    # Once the server has recorded logins, the next run adds a principal tag per principal.
    new_authn(sqlite_uri(authn))
    second = run()
    assert "No principal tags" not in second.stderr
    state = contents(sqlite_uri(catalog))
    assert grants_of(state, "user:alice") == {"alice": USER_ROLE}
    assert grants_of(state, "data_A") == {"alice": READ, "bob": READ, "cara": ADMIN}


# --- the rules ---------------------------------------------------------------------------------


@pytest.fixture
def catalog(tmp_path) -> str:
    """A catalog database made by this project."""
    return new_catalog(sqlite_uri(tmp_path / "catalog.db"))


EXAMPLE = {
    "roles": {
        "facility_user": {"scopes": ["read:data", "read:metadata"]},
        "facility_admin": {"scopes": SCOPES},
    },
    "tags": {
        "data_A": {"groups": [{"name": "group_A", "role": "facility_user"}],
                   "auto_tags": [{"name": "data_admin"}]},
        "data_B": {"users": [{"name": "alice", "scopes": ["read:data", "read:metadata"]}],
                   "auto_tags": [{"name": "data_admin"}]},
        "data_C": {"users": [{"name": "bob", "role": "facility_user"}],
                   "auto_tags": [{"name": "data_admin"}]},
        "data_D": {"auto_tags": [{"name": "data_admin"}, {"name": "public"}]},
        "data_admin": {"users": [{"name": "cara", "role": "facility_admin"}]},
    },
    "tag_owners": {"data_admin": {"users": [{"name": "cara"}]}},
}  # fmt: skip


def with_tags(**tags) -> dict:
    return {**EXAMPLE, "tags": {**EXAMPLE["tags"], **tags}}


def test_example_from_a_dict(catalog):
    compiler = compile_here(catalog, EXAMPLE)
    state = contents(catalog)
    assert grants_of(state, "data_A") == {"alice": READ, "bob": READ, "cara": ADMIN}
    assert grants_of(state, "public") == {}
    assert {tag for tag, public in state["public"].items() if public} == {"public", "data_D"}
    assert state["principals"] == {"alice", "bob", "cara"}
    assert compiler.compiled_public == {"public", "data_D"}
    assert compiler.compiled_tag_owners == {"data_admin": {"cara"}}


def test_into_a_database_that_does_not_exist_yet(tmp_path):
    uri = sqlite_uri(tmp_path / "new.db")
    compile_here(uri, EXAMPLE)
    state = contents(uri)
    assert grants_of(state, "data_C") == {"bob": READ, "cara": ADMIN}
    assert state["owners"] == {("data_admin", "cara")}


def test_catalog_initialized_after_compiling(tmp_path):
    uri = sqlite_uri(tmp_path / "new.db")
    compile_here(uri, EXAMPLE)
    asyncio.run(initialize_database(uri))
    assert grants_of(contents(uri), "data_A")["alice"] == READ


def test_recompiling_keeps_ids(catalog):
    compile_here(catalog, EXAMPLE)
    before = contents(catalog)["ids"]
    changed = with_tags(data_F={"users": [{"name": "frank", "scopes": ["read:data"]}]})
    changed["tags"] = dict(reversed(changed["tags"].items()))
    compile_here(catalog, changed)
    after = contents(catalog)
    assert {name: after["ids"][name] for name in before} == before
    assert grants_of(after, "data_F") == {"frank": {"read:data"}}


def test_recompile_in_one_process(catalog):
    """clear_raw_tags, load anew, recompile: the tables follow the new definitions."""

    async def go():
        settings = DatabaseSettings(uri=catalog)
        compiler = AccessTagsCompiler(SCOPES, EXAMPLE, settings, group_parser)
        try:
            compiler.load_tag_config()
            await compiler.compile()
            first = await asyncio.to_thread(contents, catalog)
            compiler.clear_raw_tags()
            compiler.tag_config = {
                "tags": {"data_B": EXAMPLE["tags"]["data_B"] | {"auto_tags": []}}
            }
            compiler.load_tag_config()
            await compiler.recompile()
            return first, await asyncio.to_thread(contents, catalog)
        finally:
            await close_database_connection_pool(settings)

    first, second = asyncio.run(go())
    assert set(second["public"]) == {"public", "data_B"}
    assert second["ids"]["data_B"] == first["ids"]["data_B"]
    assert second["grants"] == {
        ("data_B", "alice", "read:data"),
        ("data_B", "alice", "read:metadata"),
    }
    assert second["principals"] == {"alice"} and second["owners"] == set()


def test_dropped_tag_still_assigned_is_retained(catalog):
    compile_here(catalog, EXAMPLE)
    first = contents(catalog)
    assign(catalog, "data_B")
    assign(catalog, "data_D")
    dropped = {
        **EXAMPLE,
        "tags": {k: v for k, v in EXAMPLE["tags"].items() if k in ("data_A", "data_admin")},
    }
    with pytest.warns(UserWarning, match=r"\['data_B', 'data_D'\]"):
        compile_here(catalog, dropped)
    state = contents(catalog)
    assert "data_C" not in state["ids"]  # not assigned: deleted
    for tag in ("data_B", "data_D"):
        assert state["ids"][tag] == first["ids"][tag]
        assert state["public"][tag] is False
        assert grants_of(state, tag) == {}

    compile_here(catalog, EXAMPLE)  # defined again: the same row, its grants back
    state = contents(catalog)
    assert state["ids"]["data_B"] == first["ids"]["data_B"] and state["public"]["data_D"]
    assert grants_of(state, "data_B") == {"alice": READ, "cara": ADMIN}

    unassign(catalog, "data_B")
    unassign(catalog, "data_D")
    compile_here(catalog, dropped)
    assert set(contents(catalog)["ids"]) == {"public", "data_A", "data_admin"}


def test_principals_no_longer_named_are_removed(catalog):
    compile_here(catalog, EXAMPLE)
    compile_here(catalog, {"tags": {"solo": {"users": [{"name": "bob", "scopes": ["read:data"]}]}}})
    state = contents(catalog)
    assert state["principals"] == {"bob"}
    assert state["grants"] == {("solo", "bob", "read:data")}
    assert state["owners"] == set()


@pytest.mark.parametrize(
    "tags, match",
    [
        ({"a": {"auto_tags": [{"name": "b"}]}, "b": {"auto_tags": [{"name": "a"}]}}, "cycle: a -> b -> a"),
        ({"a": {"auto_tags": [{"name": "a"}]}}, "cycle: a -> a"),
        ({"a": {"auto_tags": [{"name": "nowhere"}]}}, "'nowhere' is not defined"),
        ({"a": {"users": [{"name": "x", "role": "facility_user", "scopes": ["read:data"]}]}}, "exactly one"),
        ({"a": {"users": [{"name": "x"}]}}, "exactly one"),
        ({"a": {"groups": [{"name": "group_A"}]}}, "exactly one"),
        ({"a": {"users": [{"name": "x", "role": "nobody"}]}}, "'nobody', which is not defined"),
        ({"a": {"users": [{"name": "x", "scopes": []}]}}, "must not be empty"),
        ({"a": {"users": [{"name": "x", "scopes": ["metrics"]}]}}, r"\['metrics'\]"),
        ({"a": {"groups": [{"name": "group_A", "scopes": ["bogus"]}]}}, r"\['bogus'\]"),
        ({"a": {"users": [{"name": 1234, "scopes": ["read:data"]}]}}, "non-empty string"),
    ],
)  # fmt: skip
def test_bad_tag_definitions(tmp_path, tags, match):
    uri = sqlite_uri(tmp_path / "catalog.db")
    with pytest.raises(TagCompilationError, match=match) as caught:
        compile_here(uri, {**EXAMPLE, "tags": tags})
    assert isinstance(caught.value, RuntimeError) and isinstance(caught.value, ValueError)
    assert str(caught.value).startswith("Tag compilation failed at tag: a")
    assert not (tmp_path / "catalog.db").exists()  # nothing written


@pytest.mark.parametrize(
    "config, match",
    [
        ({"roles": {"r": {"scopes": []}}, "tags": {}}, "Role 'r'"),
        ({"roles": {"r": {}}, "tags": {}}, "Role 'r'"),
        ({"roles": {"r": {"scopes": ["read:data", "admin:apikeys"]}}, "tags": {}}, "admin:apikeys"),
        ({"tags": {}, "tag_owners": {"user:alice": {"users": [{"name": "alice"}]}}}, "principal tag"),
        ({"tags": {}, "tag_owners": {"Service:x": {"users": [{"name": "alice"}]}}}, "principal tag"),
        ({"tags": {"public": {}}}, "cannot be redefined"),
        ({"tags": {"Public": {"users": [{"name": "x", "scopes": ["read:data"]}]}}}, "cannot be redefined"),
        ({"roles": {}}, "'tags'"),
    ],
)  # fmt: skip
def test_bad_configurations(tmp_path, config, match):
    with pytest.raises(ValueError, match=match):
        compile_here(sqlite_uri(tmp_path / "catalog.db"), config)
    assert not (tmp_path / "catalog.db").exists()


def chain(length: int) -> dict:
    """t0 auto-tags t1, ... up to t<length>: ``length`` levels of auto_tags."""
    tags = {f"t{i}": {"auto_tags": [{"name": f"t{i + 1}"}]} for i in range(length)}
    tags[f"t{length}"] = {"users": [{"name": "x", "scopes": ["read:data"]}]}
    return tags


@pytest.mark.parametrize("reverse", [False, True])
def test_auto_tags_nest_at_most_five_levels(tmp_path, reverse):
    uri = sqlite_uri(tmp_path / "catalog.db")
    order = reversed if reverse else list  # the order of definition does not matter
    compile_here(uri, {"tags": dict(order(list(chain(5).items())))})
    assert grants_of(contents(uri), "t0") == {"x": {"read:data"}}
    with pytest.raises(TagCompilationError, match="deeper than 5"):
        compile_here(uri, {"tags": dict(order(list(chain(6).items())))})


def test_public_through_auto_tags(catalog):
    tags = {
        "open": {"auto_tags": [{"name": "PUBLIC"}]},
        "via_open": {"auto_tags": [{"name": "open"}]},
        "closed": {"users": [{"name": "x", "scopes": ["read:data"]}]},
    }
    compile_here(catalog, {"tags": tags})
    assert contents(catalog)["public"] == {
        "public": True, "open": True, "via_open": True, "closed": False
    }  # fmt: skip


def test_unknown_group_warns_and_is_skipped(catalog):
    config = with_tags(
        data_G={"groups": [{"name": "nope", "role": "facility_user"},
                           {"name": "admins", "scopes": ["read:data"]}]},
    )  # fmt: skip
    config["tag_owners"] = {"data_G": {"groups": [{"name": "nope"}, {"name": "group_A"}]}}
    with pytest.warns(UserWarning, match="'nope' does not exist"):
        compile_here(catalog, config)
    state = contents(catalog)
    assert grants_of(state, "data_G") == {"cara": {"read:data"}}
    assert {owner for tag, owner in state["owners"] if tag == "data_G"} == {"alice", "bob"}


def test_tag_config_file_missing(tmp_path):
    with pytest.raises(ValueError, match="does not exist"):
        compile_here(sqlite_uri(tmp_path / "catalog.db"), tmp_path / "nope.yml")


def test_constructor_checks():
    settings = DatabaseSettings(uri="sqlite+aiosqlite:///:memory:")
    with pytest.raises(ValueError, match="bogus"):
        AccessTagsCompiler(["read:data", "bogus"], EXAMPLE, settings, group_parser)
    with pytest.raises(ValueError, match="together"):
        AccessTagsCompiler(SCOPES, EXAMPLE, settings, group_parser, provider="toy")
    with pytest.raises(ValueError, match="together"):
        AccessTagsCompiler(
            SCOPES, EXAMPLE, settings, group_parser, authn_database_settings=settings
        )
    asyncio.run(close_database_connection_pool(settings))


# --- principal tags ----------------------------------------------------------------------------


def test_principal_tags_merge_with_config(catalog, tmp_path):
    authn = sqlite_uri(tmp_path / "authn.db")
    services = new_authn(authn)
    config = with_tags(
        **{
            "user:alice": {"users": [{"name": "bob", "scopes": ["read:metadata"]}]},
            "user:bob": {"users": [{"name": "bob", "scopes": ["register"]}]},
            "data_P": {"auto_tags": [{"name": "user:cara"}]},
        }
    )
    compile_here(catalog, config, authn=authn)
    state = contents(catalog)
    assert grants_of(state, "user:alice") == {"alice": USER_ROLE, "bob": {"read:metadata"}}
    assert grants_of(state, "user:bob") == {"bob": USER_ROLE | {"register"}}
    assert grants_of(state, "data_P") == {"cara": ADMIN}
    metrics = services["metrics"]
    assert {f"service:{metrics}", f"user:{metrics}"} <= set(state["public"])
    assert metrics not in state["principals"]  # its roles grant nothing here


def test_principal_without_roles_gets_a_tag(catalog, tmp_path):
    authn = sqlite_uri(tmp_path / "authn.db")
    new_authn(authn)

    async def add():
        engine = authn_connection.create_engine(authn_connection.async_url(authn))
        try:
            async with AsyncSession(engine) as db:
                db.add(
                    Principal(
                        uuid=uuid.uuid4(), type="user", roles=[],
                        identities=[Identity(id="nobody", provider="toy")],
                    )
                )  # fmt: skip
                await db.commit()
        finally:
            await engine.dispose()

    asyncio.run(add())
    compile_here(catalog, EXAMPLE, authn=authn)
    state = contents(catalog)
    assert "user:nobody" in state["public"] and grants_of(state, "user:nobody") == {}


def test_missing_authn_file_is_not_created(catalog, tmp_path):
    missing = tmp_path / "authn.db"
    with pytest.warns(UserWarning, match="does not exist"):
        compile_here(catalog, EXAMPLE, authn=sqlite_uri(missing))
    assert not missing.exists()
    assert grants_of(contents(catalog), "data_C") == {"bob": READ, "cara": ADMIN}


def test_uninitialized_authn_database(catalog, tmp_path):
    empty = tmp_path / "authn.db"
    empty.touch()
    with pytest.warns(UserWarning, match="not initialized"):
        compile_here(catalog, EXAMPLE, authn=sqlite_uri(empty))
    assert not any(name.startswith("user:") for name in contents(catalog)["public"])


def test_unreachable_authn_database(catalog):
    unreachable = "postgresql+asyncpg://nobody@127.0.0.1:9/nothing"
    with pytest.warns(UserWarning, match="could not be read"):
        compile_here(catalog, EXAMPLE, authn=unreachable)
    assert grants_of(contents(catalog), "data_A")["alice"] == READ


def test_load_principal_tags_needs_an_authn_database(tmp_path):
    settings = DatabaseSettings(uri=sqlite_uri(tmp_path / "catalog.db"))
    compiler = AccessTagsCompiler(SCOPES, EXAMPLE, settings, group_parser)
    with pytest.raises(RuntimeError, match="authn_database_settings"):
        asyncio.run(compiler.load_principal_tags())
    asyncio.run(close_database_connection_pool(settings))


# --- the connection pool -----------------------------------------------------------------------


def test_one_engine_per_settings(tmp_path):
    settings = DatabaseSettings(uri=sqlite_uri(tmp_path / "a.db"))
    same = DatabaseSettings(uri=sqlite_uri(tmp_path / "a.db"))
    other = DatabaseSettings(uri=sqlite_uri(tmp_path / "a.db"), pool_size=7)
    engine = get_database_engine(settings)
    assert get_database_engine(same) is engine
    assert get_database_engine(other) is not engine
    assert get_database_engine(DatabaseSettings()) is None
    for each in (settings, other):
        asyncio.run(close_database_connection_pool(each))
    assert get_database_engine(settings) is not engine  # closed, then made anew
    asyncio.run(close_database_connection_pool(settings))
    asyncio.run(close_database_connection_pool(settings))  # closing twice is harmless
