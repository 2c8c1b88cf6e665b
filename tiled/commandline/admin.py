"""``tiled admin``: the authentication database and the configuration, as upstream names them.

- ``initialize-database URI``: create the tables and default roles, stamped at the newest
  revision;
- ``upgrade-database URI [REVISION]`` / ``downgrade-database URI REVISION``: migrate in place
  (upstream's alembic revisions, from upstream 0.2.0's head onward);
- ``check-config [CONFIG]``: parse and build a configuration, report OK or what is wrong.

URIs are ``sqlite:///path.db``, a bare path (a SQLite file) or ``postgresql://...``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

import typer

admin_app = typer.Typer(
    no_args_is_help=True, help="Manage the authentication database; check configurations."
)

SCHEMA = typer.Option(
    None,
    "--schema",
    help="PostgreSQL only: the schema holding the tables (config: database.schema).",
)


def _fail(message: str) -> None:
    typer.echo(f"Error: {message}", err=True)
    raise typer.Exit(code=1)


def _first_line(err: BaseException) -> str:
    text = str(err).strip() or type(err).__name__
    return text.splitlines()[0]


def _message(err: BaseException) -> str:
    """Our own errors in full (they say what to do); others by their first line."""
    from ..authn_database.migration import AuthnDatabaseError

    return str(err).strip() if isinstance(err, AuthnDatabaseError) else _first_line(err)


def _url(uri: str):
    from ..authn_database.connection import async_url, is_memory

    try:
        url = async_url(uri)
    except ValueError as err:
        _fail(str(err))
    if is_memory(url):
        _fail("an in-memory database vanishes when this command ends; give a file or a server")
    return url


def _run(uri: str, schema: str | None, work: Callable[[Any], Any], create: bool = False) -> Any:
    """Run ``work(sync_connection)`` in one transaction on the database at ``uri``."""
    from sqlalchemy import text

    from ..authn_database.connection import create_engine, sqlite_file_missing
    from ..config import Database

    url = _url(uri)
    shown = url.render_as_string(hide_password=True)
    if sqlite_file_missing(url):
        if not create:
            _fail(
                f"no database at {url.database}: create one with `tiled admin initialize-database`"
            )
        if not Path(url.database).parent.is_dir():
            _fail(f"cannot create {url.database}: its directory does not exist")

    async def go():
        engine = create_engine(url, Database(schema=schema))
        try:
            async with engine.begin() as connection:
                if schema and create and engine.dialect.name == "postgresql":
                    await connection.execute(text(f'CREATE SCHEMA IF NOT EXISTS "{schema}"'))
                return await connection.run_sync(work)
        finally:
            await engine.dispose()

    try:
        return shown, asyncio.run(go())
    except typer.Exit:
        raise
    except Exception as err:  # noqa: BLE001 - one line for the operator, no traceback
        _fail(f"{shown}: {_message(err)}")


@admin_app.command("initialize-database")
def initialize_database(
    database_uri: str = typer.Argument(..., help="sqlite:///path.db, a path, or postgresql://..."),
    schema: str | None = SCHEMA,
) -> None:
    """Create the authentication database: tables, default roles, newest revision stamp."""
    from ..authn_database import migration

    def work(connection):
        if migration.current_revision(connection) is not None:
            return False
        if migration.has_authn_tables(connection):
            raise migration.UnrecognizedDatabase(
                "it has authentication tables but no revision stamp; not initializing it"
            )
        migration.initialize(connection)
        return True

    shown, created = _run(database_uri, schema, work, create=True)
    if not created:
        _fail(f"the database {shown} is already initialized")
    typer.echo(f"Initialized {shown} at revision {migration.HEAD}.", err=True)


@admin_app.command("upgrade-database")
def upgrade_database(
    database_uri: str = typer.Argument(..., help="sqlite:///path.db, a path, or postgresql://..."),
    revision: str | None = typer.Argument(
        None, help="The revision to upgrade to (default: the newest)."
    ),
    schema: str | None = SCHEMA,
) -> None:
    """Upgrade the authentication database in place (back it up first)."""
    from ..authn_database import migration

    shown, (before, after) = _run(
        database_uri, schema, lambda c: migration.upgrade(c, revision or "head")
    )
    if before == after:
        typer.echo(f"{shown} is already at revision {after}.", err=True)
    else:
        typer.echo(f"Upgraded {shown} from revision {before} to {after}.", err=True)


@admin_app.command("downgrade-database")
def downgrade_database(
    database_uri: str = typer.Argument(..., help="sqlite:///path.db, a path, or postgresql://..."),
    revision: str = typer.Argument(..., help="The revision to downgrade to."),
    schema: str | None = SCHEMA,
) -> None:
    """Downgrade the authentication database in place, e.g. for an older Tiled."""
    from ..authn_database import migration

    shown, (before, after) = _run(database_uri, schema, lambda c: migration.downgrade(c, revision))
    if before == after:
        typer.echo(f"{shown} is already at revision {after}.", err=True)
    else:
        typer.echo(f"Downgraded {shown} from revision {before} to {after}.", err=True)


@admin_app.command("check-config")
def check_config(
    config_path: str | None = typer.Argument(
        None,
        help="A YAML file or a directory of them (default: $TILED_CONFIG, else ./config.yml).",
    ),
) -> None:
    """Check a configuration: parse it and build what it describes, without serving."""
    from ..config import ConfigError, construct_build_app_kwargs, parse_configs
    from ..server.settings import read_environment

    try:
        path = config_path or read_environment().config or "config.yml"
        config = parse_configs(path)
        construct_build_app_kwargs(config, source_filepath=path)
    except ConfigError as err:
        for problem in err.problems:
            typer.echo(f"Error: {problem}", err=True)
        raise typer.Exit(code=1) from None
    except Exception as err:  # noqa: BLE001 - whatever the configuration breaks, say it
        _fail(f"{path}: {_first_line(err)}")
    typer.echo(f"{path}: no errors found in the configuration.")
