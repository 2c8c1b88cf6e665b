"""Mechanics shared by the migration scripts: which database, what exists, SQLite rebuilds.

Every revision spells out its own tables, triggers and data conversions, so that what it
creates stays what that revision created whatever the models become later. Only
schema-neutral helpers live here.

A revision runs on a database made in one of two ways: by the revisions before it (ours or
upstream's), or by upstream's ``create_all`` of the release whose newest revision was the one
before it. The two differ in details (an index one of them lacks, a constraint left behind),
so the revisions test for what is there instead of assuming it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence

import sqlalchemy as sa
from alembic import op


def connection() -> sa.Connection:
    return op.get_bind()


def is_postgresql() -> bool:
    return connection().dialect.name == "postgresql"


def is_sqlite() -> bool:
    return connection().dialect.name == "sqlite"


def run(*statements: str) -> None:
    """Execute static SQL statements one at a time (asyncpg takes one per call)."""
    for statement in statements:
        connection().exec_driver_sql(statement)


def scalar(statement: str, **parameters) -> object:
    return connection().execute(sa.text(statement), parameters).scalar()


def table_names() -> set[str]:
    return set(sa.inspect(connection()).get_table_names())


def column_names(table: str) -> set[str]:
    return {column["name"] for column in sa.inspect(connection()).get_columns(table)}


def index_names(table: str) -> set[str]:
    return {index["name"] for index in sa.inspect(connection()).get_indexes(table)}


def trigger_names() -> set[str]:
    if is_postgresql():
        query = "SELECT tgname FROM pg_trigger WHERE NOT tgisinternal"
    else:
        query = "SELECT name FROM sqlite_master WHERE type = 'trigger'"
    return {row[0] for row in connection().exec_driver_sql(query)}


def create_index(name: str, table: str, columns: Sequence[str], **options) -> None:
    """Create an index unless one of that name is there (a release's models may have it)."""
    op.create_index(name, table, list(columns), if_not_exists=True, **options)


def drop_indexes(*names: str) -> None:
    run(*(f'DROP INDEX IF EXISTS "{name}"' for name in names))


def drop_triggers(triggers: Iterable[tuple[str, str]], functions: Iterable[str] = ()) -> None:
    """Drop (trigger, table) pairs and, on PostgreSQL, the trigger functions, if present."""
    for name, table in triggers:
        suffix = f' ON "{table}"' if is_postgresql() else ""
        run(f'DROP TRIGGER IF EXISTS "{name}"{suffix}')
    if is_postgresql():
        run(*(f'DROP FUNCTION IF EXISTS "{name}"()' for name in functions))


def plpgsql_function(name: str, body: str) -> str:
    """``CREATE OR REPLACE FUNCTION name() RETURNS trigger`` around a PL/pgSQL body."""
    return (
        f"CREATE OR REPLACE FUNCTION {name}() RETURNS trigger LANGUAGE plpgsql AS $$\n"
        f"BEGIN\n{body}\nEND;\n$$"
    )


def analyze(*tables: str) -> None:
    """Refresh PostgreSQL's planner statistics of tables this revision filled in bulk."""
    if is_postgresql():
        run(*(f'ANALYZE "{table}"' for table in tables))


def sqlite_rebuild(table: str, create: Callable[[], None], children: Sequence[str] = ()) -> None:
    """Recreate a SQLite table from a new definition, keeping its rows.

    SQLite changes neither a declared column type nor a table constraint in place. The rows
    are set aside in a temporary table, the table is dropped and ``create()`` makes it (and
    its indexes) again, then the rows go back. ``children`` are the tables whose foreign keys
    cascade from this one: dropping it empties them when foreign keys are enforced, so their
    rows are set aside and put back too. No table is renamed, because renaming rewrites the
    triggers of other tables that name it.
    """
    db = connection()
    kept = [table, *children]
    columns = {name: sorted(column_names(name)) for name in kept}
    for name in kept:
        db.exec_driver_sql(f'CREATE TEMP TABLE "keep_{name}" AS SELECT * FROM "{name}"')
    db.exec_driver_sql(f'DROP TABLE "{table}"')
    create()
    columns[table] = sorted(set(columns[table]) & column_names(table))
    for name in kept:
        names = ", ".join(f'"{column}"' for column in columns[name])
        if name != table:
            db.exec_driver_sql(f'DELETE FROM "{name}"')
        db.exec_driver_sql(f'INSERT INTO "{name}" ({names}) SELECT {names} FROM temp."keep_{name}"')
        db.exec_driver_sql(f'DROP TABLE temp."keep_{name}"')
