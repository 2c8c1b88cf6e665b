"""The ``tiled`` command line."""

from __future__ import annotations

import typer

from .._version import __version__
from .admin import admin_app
from .api_key import api_key_app
from .catalog import catalog_app
from .client import register_commands
from .register import register
from .serve import serve_app

cli_app = typer.Typer(no_args_is_help=True, add_completion=False)
cli_app.add_typer(serve_app, name="serve")
cli_app.add_typer(api_key_app, name="api_key")
cli_app.add_typer(catalog_app, name="catalog")
cli_app.add_typer(admin_app, name="admin")
cli_app.command("register")(register)
register_commands(cli_app)


def _print_version(value: bool) -> None:
    if value:
        typer.echo(__version__)
        raise typer.Exit()


@cli_app.callback()
def _root(
    version: bool = typer.Option(
        False, "--version", "-V", callback=_print_version, is_eager=True, help="Print the version."
    ),
) -> None:
    """Serve trees of scientific data over HTTP, natively and as zarr stores."""


def main() -> None:
    try:
        cli_app()
    except OSError as error:
        # A file name too long, a folder not writable...: the machine's answer, said in one
        # line (a traceback would suggest a bug of Tiled's).
        typer.echo(f"Error: {error}", err=True)
        raise SystemExit(1) from None
