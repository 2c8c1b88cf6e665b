"""``tiled serve demo`` and ``tiled serve pyobject``."""

from __future__ import annotations

import errno
import os
import secrets
import socket

import typer

serve_app = typer.Typer(no_args_is_help=True, help="Run a Tiled server.")

HOST = typer.Option("127.0.0.1", "--host", help="Address to bind.")
PORT = typer.Option(8000, "--port", help="Port to bind.")
VERBOSE = typer.Option(False, "--verbose", "-v", help="Log every request.")


def _fail(message: str) -> None:
    typer.echo(f"Error: {message}", err=True)
    raise typer.Exit(code=1)


def _check_port(host: str, port: int) -> None:
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
        try:
            probe.bind((host, port))
        except OSError as err:
            if err.errno == errno.EADDRINUSE:
                _fail(f"port {port} on {host} is already in use; choose another with --port")
            _fail(f"cannot listen on {host}:{port}: {err.strerror}")


def _run(app, host: str, port: int, verbose: bool, url: str) -> None:
    import uvicorn

    _check_port(host, port)
    typer.echo(f"\n    Tiled server is running at: {url}\n", err=True)
    from ..server.logging import install as redact_secrets_in_logs

    config = uvicorn.Config(app, host=host, port=port, log_level="info" if verbose else "warning")
    server = uvicorn.Server(config)  # configures logging; the filter goes on afterwards
    redact_secrets_in_logs()
    server.run()


def _url(host: str, port: int, api_key: str | None) -> str:
    shown = "localhost" if host in ("127.0.0.1", "0.0.0.0", "::") else host
    base = f"http://{shown}:{port}"
    return f"{base}?api_key={api_key}" if api_key else base


@serve_app.command("demo")
def serve_demo(host: str = HOST, port: int = PORT, verbose: bool = VERBOSE) -> None:
    """Serve the demo tree with anonymous read access."""
    from ..examples.generated import tree
    from ..server.app import build_app

    app = build_app(tree, authentication={"allow_anonymous_access": True})
    _run(app, host, port, verbose, _url(host, port, None))


@serve_app.command("pyobject")
def serve_pyobject(
    object_path: str = typer.Argument(..., help="Object to serve, as package.module:attribute"),
    public: bool = typer.Option(False, "--public", help="Allow anonymous read access."),
    api_key: str | None = typer.Option(
        None,
        "--api-key",
        help="The single-user API key (default: $TILED_SINGLE_USER_API_KEY or random).",
    ),
    host: str = HOST,
    port: int = PORT,
    verbose: bool = VERBOSE,
) -> None:
    """Serve a tree (an adapter) importable from Python."""
    from ..server.app import build_app
    from ..utils import import_object

    if ":" not in object_path:
        _fail(f"{object_path!r} is not of the form package.module:attribute")
    try:
        tree = import_object(object_path)
    except (ImportError, AttributeError) as err:
        _fail(f"could not import {object_path!r}: {err}")
    key = api_key or os.environ.get("TILED_SINGLE_USER_API_KEY") or secrets.token_hex(32)
    app = build_app(
        tree, authentication={"single_user_api_key": key, "allow_anonymous_access": public}
    )
    _run(app, host, port, verbose, _url(host, port, None if api_key else key))
