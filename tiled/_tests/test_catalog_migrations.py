"""Catalogs made by upstream Tiled 0.2.x are upgraded in place to this package's schema.

Upstream's released packages, each in a virtual environment of its own, make the catalogs:
0.2.0 (the first 0.2 release; its newest revision is ``dfbb7478c6bd``, so every revision this
package implements runs) and 0.2.16 (newest ``c31f6a1d7e20``: it already has the webhook and
graph tables, with access blobs on entities and links). On SQLite and on PostgreSQL, upstream's
server and client write an array, a table, containers with metadata and metadata revisions;
upstream's own Python API (``tiled.catalog.from_uri`` and, in 0.2.16, the graph store) adds
nodes, entities and links with access blobs (tags and an owner), which its single-user
server cannot set.

Then ``upgrade_database`` (on SQLite, through ``tiled catalog upgrade-database``) must bring
the database to the newest revision with the schema ``initialize_database`` creates, keep
every row of every table, turn the blobs into access tags, and leave a catalog this package
reads: the values, metadata, revisions and access blobs come back. The 0.2.0 catalogs are
upgraded in one go (on SQLite through ``tiled catalog upgrade-database``), the 0.2.16 ones one
revision at a time.

Reuse prepared environments between runs with ``TILED_TEST_UPSTREAM_0_2_0_PYTHON`` and
``TILED_TEST_UPSTREAM_0_2_16_PYTHON`` (the ``bin/python`` of an environment holding
``tiled[all]`` of that release).
"""

from __future__ import annotations

import asyncio
import sqlite3
import subprocess
import sys
import warnings
from contextlib import contextmanager
from pathlib import Path

import numpy
import pandas
import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from tiled.catalog import from_uri, initialize_database, upgrade_database
from tiled.catalog.database import async_url, create_engine, head_revision
from tiled.catalog.errors import MigrationRefused
from tiled.catalog.orm import metadata_obj

from .conftest import UPSTREAM_RELEASE_REQUIREMENTS, _given_python, _release_variable
from .isolated_python import isolated_python, run_isolated
from .postgres import temporary_database
from .processes import server_process, without_pythonpath

API_KEY = "secret"
HEAD = "917dbbcfc4b1"
RELEASES = {"0.2.0": "dfbb7478c6bd", "0.2.16": "c31f6a1d7e20"}  # release -> its newest revision
assert set(RELEASES) == set(UPSTREAM_RELEASE_REQUIREMENTS)  # (the environments: conftest.py)
DATA_TABLES = ("nodes", "nodes_closure", "structures", "data_sources", "assets",
               "data_source_asset_association", "revisions", "webhooks", "webhook_deliveries",
               "entities", "links", "namespaces")  # fmt: skip

MODEL_INDEXES = {
    index.name: index for table in metadata_obj.tables.values() for index in table.indexes
}

# Through upstream's server and client.
WRITE = r"""
import sys, numpy, pandas
from tiled.client import from_uri
client = from_uri(sys.argv[1], api_key=sys.argv[2])
client.write_array(numpy.arange(12.0).reshape(3, 4), key="a", metadata={"color": "red"})
group = client.create_container("g", metadata={"n": 1}, specs=["run"])
group.write_array(numpy.arange(2000, dtype="int32").reshape(20, 100), key="b")
group.write_dataframe(pandas.DataFrame({"A": [1, 2, 3], "B": [1.5, 2.5, 3.5]}), key="t")
client["a"].update_metadata({"color": "blue"})
group.update_metadata({"n": 2})
group.update_metadata({"n": 3})
client.create_container("empty")
"""

# Through upstream's Python API: what its single-user server cannot write.
BLOBS = r"""
import asyncio, sys
from tiled.catalog import from_uri

async def main(uri):
    catalog = from_uri(uri)
    await catalog.startup()
    tagged = await catalog.create_node(
        "container", {"kind": "tagged"}, key="tagged", access_blob={"tags": ["alpha", "beta"]}
    )
    await tagged.create_node(
        "container", {}, key="inner", access_blob={"tags": ["beta", "public", "beta"]}
    )
    await catalog.create_node("container", {}, key="owned", access_blob={"user": "alice"})
    await catalog.create_node("container", {}, key="untagged")
    await tagged.replace_metadata(
        metadata={"kind": "retagged"}, access_blob={"tags": ["alpha", "beta", "gamma"]}
    )
    try:
        from tiled.graph.store import GraphSQLAlchemyStore
    except ImportError:
        pass  # a release before the graph tables
    else:
        store = GraphSQLAlchemyStore(catalog.context.engine)
        ada = await store.create_entity("person", "ada", access_blob={"tags": ["alpha"]})
        sample = await store.create_entity("sample", "s1", access_blob={"user": "bob"})
        backed = await store.create_entity("dataset", "backed", node_id=tagged.node.id)
        await store.create_link(ada.id, "measured", sample.id, access_blob={"tags": ["delta"]})
        await store.create_link(sample.id, "describes", backed.id)
    await catalog.shutdown()

asyncio.run(main(sys.argv[1]))
"""


# --- databases -----------------------------------------------------------------------------------


def _postgres_database():
    return temporary_database("tiled_migrations")


def _upstream_server(python: Path, uri: str, directory: Path):
    """Upstream's ``tiled serve catalog --init`` on a free port; yields its URL once it answers."""
    command = [python.parent / "tiled", "serve", "catalog", uri, "--init",
               "-w", directory / "data", "--api-key", API_KEY]  # fmt: skip
    return server_process(command, directory, env=without_pythonpath())


def _run_upstream(python: Path, script: str, *args: str) -> None:
    result = run_isolated(python, script, *args)
    assert result.returncode == 0, result.stderr


@contextmanager
def _database(backend: str, directory: Path):
    """An empty database on ``backend``, as a URI both upstream and this package accept."""
    if backend == "sqlite":
        yield f"sqlite:///{directory / 'catalog.db'}"
    else:
        with _postgres_database() as uri:
            yield uri


def _inspect(uri: str, read):
    """Run ``read(connection)`` on a (synchronous facade of a) connection to ``uri``."""

    async def go():
        engine = create_engine(async_url(uri))
        try:
            async with engine.connect() as connection:
                return await connection.run_sync(read)
        finally:
            await engine.dispose()

    return asyncio.run(go())


# --- what a database holds ---------------------------------------------------------------------


def _revision(connection) -> str | None:
    return MigrationContext.configure(connection).get_current_revision()


def _rows(connection) -> dict[str, list[dict]]:
    present = set(sa.inspect(connection).get_table_names())
    metadata = sa.MetaData()
    metadata.reflect(connection, only=[name for name in DATA_TABLES if name in present])
    return {
        name: [dict(row) for row in connection.execute(sa.select(table)).mappings()]
        for name, table in metadata.tables.items()
    }


def _tags(connection) -> dict:
    """Tags per node path, entity name and link predicate; the public tag names."""
    nodes = {row.id: (row.parent, row.key) for row in connection.execute(sa.text(
        "SELECT id, parent, key FROM nodes"))}  # fmt: skip

    def path(node_id):
        parent, key = nodes[node_id]
        return "" if parent is None else f"{path(parent)}/{key}"

    found = {}
    for owner, singular, label in (
        ("nodes", "node", "id"), ("entities", "entity", "name"), ("links", "link", "predicate"),
    ):  # fmt: skip
        rows = connection.execute(sa.text(
            f"SELECT owner.{label} AS label, tag.name AS tag FROM {owner} AS owner "
            f"LEFT JOIN {singular}_access_tags_association AS a ON a.{singular}_id = owner.id "
            "LEFT JOIN access_tags AS tag ON tag.id = a.tag_id"))  # fmt: skip
        table = found.setdefault(owner, {})
        for row in rows:
            key = (path(row.label) or "/") if owner == "nodes" else row.label
            table[key] = sorted([*table.get(key, []), *([row.tag] if row.tag else [])])
    found["public"] = sorted(row.name for row in connection.execute(sa.text(
        "SELECT name FROM access_tags WHERE is_public")))  # fmt: skip
    found["all"] = sorted(row.name for row in connection.execute(sa.text(
        "SELECT name FROM access_tags")))  # fmt: skip
    found["parents"] = [tuple(row) for row in connection.execute(sa.text(
        "SELECT a.parent_id, n.parent FROM node_access_tags_association AS a "
        "JOIN nodes AS n ON n.id = a.node_id"))]  # fmt: skip
    return found


def _schema(connection) -> dict:
    """Tables (columns, keys, unique constraints, indexes) and triggers, by name."""
    inspector = sa.inspect(connection)
    names = [name for name in inspector.get_table_names()
             if not name.startswith("metadata_fts5") and name != "alembic_version"]  # fmt: skip
    schema = {}
    for name in sorted(names):
        primary_key = sorted(inspector.get_pk_constraint(name)["constrained_columns"])
        schema[name] = {
            "columns": sorted(
                (c["name"], str(c["type"].compile(dialect=connection.dialect)), c["nullable"])
                for c in inspector.get_columns(name)
            ),
            "primary key": primary_key,
            "foreign keys": sorted(
                (
                    tuple(k["constrained_columns"]),
                    k["referred_table"],
                    tuple(k["referred_columns"]),
                    (k["options"].get("ondelete") or "").upper(),
                )
                for k in inspector.get_foreign_keys(name)
            ),  # fmt: skip
            # A unique constraint repeating the primary key is redundant; upstream's models
            # declare one on structures.id, which SQLite keeps and PostgreSQL folds away.
            "unique": sorted(
                sorted(u["column_names"])
                for u in inspector.get_unique_constraints(name)
                if sorted(u["column_names"]) != primary_key
            ),  # fmt: skip
            "indexes": sorted(
                (i["name"], repr(i["column_names"]), bool(i["unique"]))
                for i in inspector.get_indexes(name)
            ),
        }
    if connection.dialect.name == "postgresql":
        query = "SELECT tgname FROM pg_trigger WHERE NOT tgisinternal"
    else:
        query = "SELECT name FROM sqlite_master WHERE type = 'trigger'"
    schema["triggers"] = sorted(row[0] for row in connection.exec_driver_sql(query))
    return schema


def _differences_from_models(connection) -> list:
    context = MigrationContext.configure(connection, opts={"compare_type": True})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # expression indexes are not compared
        differences = compare_metadata(context, metadata_obj)
    return [d for d in differences if not _other_dialect_only(d, connection.dialect.name)]


def _other_dialect_only(difference, dialect: str) -> bool:
    if "metadata_fts5" in str(difference):
        return True  # SQLite's full-text tables are not in the models
    if not (isinstance(difference, tuple) and difference[0] == "add_index"):
        return False
    condition = MODEL_INDEXES[difference[1].name]._ddl_if
    return condition is not None and condition.dialect not in (None, dialect)


def _fresh_schema(backend: str, directory: Path) -> dict:
    with _database(backend, directory) as uri:
        asyncio.run(initialize_database(uri))
        return _inspect(uri, _schema)


# --- fixtures ------------------------------------------------------------------------------------


@pytest.fixture(scope="session", params=list(RELEASES))
def upstream_release(request) -> tuple[str, Path]:
    """(version, python) of an environment with upstream's ``tiled[all]`` of that release
    (``TILED_TEST_UPSTREAM_0_2_0_PYTHON`` and so on name ones to reuse between runs)."""
    version = request.param
    given = _given_python(_release_variable(version))
    if given:
        return version, given
    return version, isolated_python(*UPSTREAM_RELEASE_REQUIREMENTS[version])


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def backend(request) -> str:
    return request.param


@pytest.fixture(scope="module")
def fresh_schema(backend, tmp_path_factory) -> dict:
    return _fresh_schema(backend, tmp_path_factory.mktemp("fresh"))


@pytest.fixture(scope="module")
def upgraded(upstream_release, backend, tmp_path_factory):
    """A catalog made by the release, upgraded: its URI, storage and snapshots of both states."""
    version, python = upstream_release
    directory = tmp_path_factory.mktemp(f"catalog_{version.replace('.', '_')}_{backend}")
    with _database(backend, directory) as uri:
        with _upstream_server(python, uri, directory) as url:
            _run_upstream(python, WRITE, url, API_KEY)
        _run_upstream(python, BLOBS, uri)
        revision, before = _inspect(uri, lambda c: (_revision(c), _rows(c)))
        assert revision == RELEASES[version]
        _upgrade(uri, one_step_at_a_time=version != "0.2.0", command_line=backend == "sqlite")
        yield {"version": version, "uri": uri, "storage": directory / "data", "before": before}


def _upgrade(uri: str, one_step_at_a_time: bool, command_line: bool) -> None:
    """Upgrade to the head: in one go (through the command line or the function) or revision
    by revision, each in a transaction of its own starting from what the one before left."""
    if one_step_at_a_time:
        while _inspect(uri, _revision) != HEAD:
            asyncio.run(upgrade_database(uri, "+1"))
    elif command_line:
        ours = Path(sys.executable).parent / "tiled"
        subprocess.run([ours, "catalog", "upgrade-database", uri], check=True)
    else:
        asyncio.run(upgrade_database(uri))


# --- the upgrade ---------------------------------------------------------------------------------


@pytest.mark.slow
def test_upgrade_reaches_the_head_with_the_models_schema(upgraded, fresh_schema):
    revision, differences, schema = _inspect(
        upgraded["uri"], lambda c: (_revision(c), _differences_from_models(c), _schema(c))
    )
    assert revision == HEAD == head_revision()
    assert differences == []
    assert schema == fresh_schema


@pytest.mark.slow
def test_upgrade_keeps_every_row(upgraded):
    before, after = upgraded["before"], _inspect(upgraded["uri"], _rows)
    for table, rows in before.items():
        common = set(after[table][0] if after[table] else ()) & set(rows[0] if rows else ())
        common.discard("access_blob")

        def keep(records, columns=common):
            return sorted(
                repr(sorted((k, v) for k, v in r.items() if k in columns)) for r in records
            )

        assert keep(after[table]) == keep(rows), table
    assert {row["key"] for row in after["nodes"]} >= {"", "a", "g", "b", "t", "empty", "tagged"}
    assert len(after["revisions"]) == 4  # a: 1, g: 2, tagged: 1
    assert len(after["data_sources"]) == 3
    if upgraded["version"] != "0.2.0":
        assert len(after["entities"]) == 3 and len(after["links"]) == 2


@pytest.mark.slow
def test_access_blobs_become_tags(upgraded):
    tags = _inspect(upgraded["uri"], _tags)
    assert tags["nodes"] == {
        "/": ["public"],  # the root's empty blob: upstream's policy made it public
        "/a": [], "/empty": [], "/g": [], "/g/b": [], "/g/t": [], "/untagged": [],
        "/tagged": ["alpha", "beta", "gamma"],
        "/tagged/inner": ["beta", "public"],
        "/owned": ["user:alice"],
    }  # fmt: skip
    assert tags["public"] == ["public"]
    assert all(parent_id == parent for parent_id, parent in tags["parents"])
    if upgraded["version"] == "0.2.0":
        assert tags["all"] == ["alpha", "beta", "gamma", "public", "user:alice"]
        return
    assert tags["entities"] == {"ada": ["alpha"], "s1": ["user:bob"], "backed": []}
    assert tags["links"] == {"measured": ["delta"], "describes": []}
    assert tags["all"] == ["alpha", "beta", "delta", "gamma", "public", "user:alice", "user:bob"]


@pytest.mark.slow
async def test_this_package_reads_the_upgraded_catalog(upgraded):
    root = from_uri(upgraded["uri"], writable_storage=upgraded["storage"])
    try:
        array = await root.lookup_adapter(["a"])
        assert array.read().tolist() == numpy.arange(12.0).reshape(3, 4).tolist()
        assert array.metadata() == {"color": "blue"}
        revisions, count = await array.revisions()
        assert count == 1 and revisions[0]["attributes"]["metadata"] == {"color": "red"}
        block = (await root.lookup_adapter(["g", "b"])).read()
        assert block.tolist() == numpy.arange(2000, dtype="int32").reshape(20, 100).tolist()
        expected = pandas.DataFrame({"A": [1, 2, 3], "B": [1.5, 2.5, 3.5]})
        pandas.testing.assert_frame_equal((await root.lookup_adapter(["g", "t"])).read(), expected)
        group = await root.lookup_adapter(["g"])
        assert group.metadata() == {"n": 3}
        assert (await root.lookup_adapter(["owned"])).access_blob == {"user": "alice"}
        tagged = await root.lookup_adapter(["tagged"])
        assert tagged.access_blob == {"tags": ["alpha", "beta", "gamma"]}
        assert tagged.metadata() == {"kind": "retagged"}
        # It writes too (and leaves the catalog as it found it for the other tests).
        after = await root.create_node(key="after", structure_family="container", metadata={})
        assert "after" in await root.keys_range()
        await after.delete()
        assert "after" not in await root.keys_range()
    finally:
        await root.shutdown()


@pytest.mark.slow
def test_upgrading_again_changes_nothing(upgraded):
    def state(connection):
        return _revision(connection), _schema(connection), _rows(connection)

    first = _inspect(upgraded["uri"], state)
    asyncio.run(upgrade_database(upgraded["uri"]))
    assert _inspect(upgraded["uri"], state) == first


# --- a database at the head ----------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["sqlite", "postgresql"])
def test_a_database_at_the_head_opens_with_no_step(kind, tmp_path):
    def state(connection):
        return _revision(connection), _schema(connection)

    async def write_and_read(uri):
        root = from_uri(uri, writable_storage=tmp_path / "data")
        try:
            await root.create_node(key="x", structure_family="container", metadata={"v": 1})
            return (await root.lookup_adapter(["x"])).metadata()
        finally:
            await root.shutdown()

    with _database(kind, tmp_path) as uri:
        asyncio.run(initialize_database(uri))
        before = _inspect(uri, state)
        asyncio.run(upgrade_database(uri))  # nothing to do
        assert _inspect(uri, state) == before
        assert before[0] == HEAD
        assert asyncio.run(write_and_read(uri)) == {"v": 1}


def test_a_database_older_than_upstream_0_2_0_is_refused(tmp_path):
    uri = f"sqlite:///{tmp_path / 'old.db'}"
    asyncio.run(initialize_database(uri))
    with sqlite3.connect(tmp_path / "old.db") as connection:  # as if stamped by upstream 0.1
        connection.execute("UPDATE alembic_version SET version_num = 'a963a6c32a0c'")
    with pytest.raises(MigrationRefused, match="0.2.0"):
        asyncio.run(upgrade_database(uri))
    assert _inspect(uri, _revision) == "a963a6c32a0c"
