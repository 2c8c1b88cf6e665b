"""``tiled catalog init|upgrade-database|serve``: manage SQL catalog databases."""

from __future__ import annotations

import asyncio
import inspect
from pathlib import Path
from typing import Any

import typer

from .serve import _fail, _first_line, serve_catalog

catalog_app = typer.Typer(no_args_is_help=True, help="Create, migrate and serve SQL catalogs.")


def _uri(database: str) -> str:
    """A plain path is a SQLite file."""
    if "://" in database:
        return database
    return f"sqlite:///{Path(database).expanduser().absolute()}"


def _wait(result: Any) -> Any:
    return asyncio.run(result) if inspect.isawaitable(result) else result


async def _holds_catalog(uri: str) -> bool:
    """Whether the database already has a catalog schema (alembic marks it with a table)."""
    from sqlalchemy import inspect as inspect_database
    from sqlalchemy.ext.asyncio import create_async_engine

    from ..catalog import async_url

    engine = create_async_engine(async_url(uri))
    try:
        async with engine.connect() as connection:
            names = await connection.run_sync(lambda sync: inspect_database(sync).get_table_names())
    finally:
        await engine.dispose()
    return "alembic_version" in names


@catalog_app.command("init")
def init(
    database: str = typer.Argument(
        "catalog.db", help="A SQLite file path, or a sqlite:/// or postgresql:// URI."
    ),
    if_not_exists: bool = typer.Option(
        False, "--if-not-exists", help="Succeed without change if the catalog already exists."
    ),
) -> None:
    """Create a catalog database: its tables, stamped with the newest schema revision."""
    # Here, not at the top: the catalog package is heavy, and every command would import it.
    from ..catalog import initialize_database
    from ..catalog.database import sqlite_file_problem

    uri = _uri(database)
    problem = sqlite_file_problem(uri)
    if problem is not None:
        _fail(problem)
    if "://" not in database:
        path = Path(database).expanduser().absolute()
        if not path.parent.is_dir():
            _fail(f"cannot create {path}: the directory {path.parent} does not exist")
        exists = path.exists()
    else:
        exists = True
    try:
        if exists and _wait(_holds_catalog(uri)):
            if if_not_exists:
                typer.echo(f"{database} already holds a catalog; nothing to do", err=True)
                return
            _fail(
                f"{database} already holds a catalog (pass --if-not-exists to accept that; "
                "`tiled catalog upgrade-database` migrates an old one)"
            )
        _wait(initialize_database(uri))
    except typer.Exit:
        raise
    except Exception as err:
        _fail(f"cannot initialize a catalog in {database}: {_first_line(err)}")
    typer.echo(f"Initialized a catalog database at {database}", err=True)


@catalog_app.command("upgrade-database")
def upgrade(
    uri: str = typer.Argument(..., help="The catalog database (path or URI)."),
    revision: str = typer.Argument("head", help="The schema revision to reach."),
) -> None:
    """Migrate a catalog database to a newer schema revision (default: the newest)."""
    from ..catalog import upgrade_database
    from ..catalog.database import sqlite_file_problem

    problem = sqlite_file_problem(_uri(uri))
    if problem is not None:
        _fail(problem)
    if "://" not in uri and not Path(uri).expanduser().exists():
        _fail(f"no catalog database at {uri}")
    try:
        _wait(upgrade_database(_uri(uri), revision))
    except Exception as err:
        _fail(f"cannot upgrade {uri} to {revision!r}: {_first_line(err)}")
    typer.echo(f"Upgraded {uri} to revision {revision!r}", err=True)


catalog_app.command("serve", help="Serve a SQL catalog (same as `tiled serve catalog`).")(
    serve_catalog
)
