"""``tiled serve demo|pyobject|catalog|directory|config``: run a server in the foreground."""

from __future__ import annotations

import errno
import functools
import os
import secrets
import shutil
import socket
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import typer

from . import register as register_options
from .recipes import FACTORY, RECIPE_VARIABLE, AppRecipe, build

serve_app = typer.Typer(no_args_is_help=True, help="Run a Tiled server.")

HOST = typer.Option("127.0.0.1", "--host", help="Address to bind.")
PORT = typer.Option(8000, "--port", min=0, max=65535, help="Port to bind.")
VERBOSE = typer.Option(False, "--verbose", "-v", help="Log every request.")
WORKERS = typer.Option(
    None,
    "--workers",
    min=1,
    help="Server processes (uvicorn workers), each building the application from the same "
    "arguments (default 1).",
)


def _fail(message: str) -> None:
    typer.echo(f"Error: {message}", err=True)
    raise typer.Exit(code=1)


def _check_port(host: str, port: int) -> None:
    """Fail with a clear message when the server could not bind ``host:port``. The probe binds
    as uvicorn does (``SO_REUSEADDR``): connections of an earlier server left in TIME_WAIT do
    not keep a restarted one from its port, a listening socket does."""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as err:
            if err.errno == errno.EADDRINUSE:
                _fail(f"port {port} on {host} is already in use; choose another with --port")
            _fail(f"cannot listen on {host}:{port}: {err.strerror}")


def _run(
    app,
    host: str,
    port: int,
    verbose: bool,
    api_key: str | None,
    on_stop: Callable[[], None] | None = None,
    **uvicorn_kwargs,
) -> None:
    """Serve ``app`` until interrupted. Uvicorn's startup lines are logged (``Uvicorn running
    on http://HOST:PORT``, which upstream's tooling waits for); requests only with --verbose.
    The URL printed names the bound port, so ``--port 0`` (any free port) tells which.
    ``on_stop`` runs once the server has shut down."""

    from ..server.logging import install as redact_secrets_in_logs

    _check_port(host, port)
    uvicorn_kwargs.setdefault("log_level", "info")
    if verbose:
        uvicorn_kwargs["log_level"] = "info"
    uvicorn_kwargs.setdefault("access_log", verbose)
    config = _uvicorn_config(app, host=host, port=port, **uvicorn_kwargs)
    server = _announcing_server(config, api_key, on_stop)  # configures logging; filter after
    redact_secrets_in_logs()
    server.run()


def _run_workers(
    recipe: AppRecipe,
    workers: int,
    host: str,
    port: int,
    verbose: bool,
    api_key: str | None,
    **uvicorn_kwargs,
) -> None:
    """Serve with ``workers`` uvicorn worker processes, each building the application of
    ``recipe`` (uvicorn's supervisor restarts a worker that dies)."""

    from ..server.logging import install as redact_secrets_in_logs

    _check_port(host, port)
    uvicorn_kwargs.setdefault("log_level", "info")
    uvicorn_kwargs.setdefault("access_log", verbose)
    # The workers are new interpreters (spawned): they read the recipe from the environment.
    os.environ[RECIPE_VARIABLE] = recipe.to_json()
    config = _uvicorn_config(
        FACTORY, factory=True, host=host, port=port, workers=workers, **uvicorn_kwargs
    )
    redact_secrets_in_logs()
    socket_ = config.bind_socket()
    url = _url(host, socket_.getsockname()[1], api_key)
    typer.echo(f"\n    Tiled server is running at: {url} ({workers} workers)\n", err=True)
    _supervisor(config, socket_).run()


def _uvicorn_config(app: Any, **kwargs: Any) -> Any:
    """``uvicorn.Config``, a setting it cannot use (a logging configuration it cannot read,
    say) being one line rather than a traceback."""
    import uvicorn

    try:
        return uvicorn.Config(app, **kwargs)
    except Exception as err:
        _fail(f"uvicorn cannot use these settings: {type(err).__name__}: {_first_line(err)}")


def _supervisor(config: Any, socket_: socket.socket) -> Any:
    """uvicorn's supervisor of worker processes, across the uvicorn versions this supports."""
    import inspect

    import uvicorn
    from uvicorn.supervisors import Multiprocess

    if "target" in inspect.signature(Multiprocess).parameters:  # older uvicorn releases
        return Multiprocess(config, target=uvicorn.Server(config).run, sockets=[socket_])
    return Multiprocess(config, sockets=[socket_])


def _serve(
    recipe: AppRecipe,
    workers: int,
    host: str,
    port: int,
    verbose: bool,
    api_key: str | None,
    *,
    scalable: bool = False,
    where: str | None = None,
    checks: tuple[Callable[[Any, str], None], ...] = (),
    on_stop: Callable[[], None] | None = None,
    **uvicorn_kwargs,
) -> None:
    """Build the application of ``recipe`` (reporting a problem in one line), run ``checks``
    on it, and serve it: in this process, or with ``workers`` processes. ``on_stop`` runs when
    a single-process server has stopped."""
    several = workers > 1
    app = _built(recipe, scalable or several, where, several)
    for check in checks:
        check(app, f"{where}: " if where else "")
    if not several:
        _run(app, host, port, verbose, api_key, on_stop, **uvicorn_kwargs)
        return
    _refuse_what_one_process_holds(app)
    _run_workers(recipe, workers, host, port, verbose, api_key, **uvicorn_kwargs)


def _built(recipe: AppRecipe, scalable: bool, where: str | None, several: bool) -> Any:
    from ..config import ConfigError
    from ..server.authenticators import UnscalableConfig

    prefix = f"{where}: " if where else ""
    try:
        return build(recipe, scalable)
    except ConfigError as err:  # its lines name the file (or variable) and the key already
        _fail_lines(err.problems)
    except UnscalableConfig as err:
        context = "cannot serve with --workers: " if several else ""
        _fail(f"{prefix}{context}{_first_line(err)}")
    except ValueError as err:
        _fail(f"{prefix}{_first_line(err)}")


def _refuse_what_one_process_holds(app: Any) -> None:
    """Refuse trees whose data would not be shared by several processes."""
    for path, tree in _mounted_catalogs(app):
        where = "" if path == "/" else f" (mounted at {path})"
        catalog = tree.catalog
        url = catalog.url
        database = url.database or ""
        if url.get_backend_name() == "sqlite" and (
            database in ("", ":memory:") or "mode=memory" in str(url)
        ):
            _fail(
                f"the catalog{where} is an in-memory database, which each worker process would "
                "hold on its own: with --workers, serve a catalog file or a PostgreSQL database"
            )
        for storage in catalog.writable_sql_storage:
            if storage.dialect == "duckdb":
                _fail(
                    f"the catalog{where} keeps tables in DuckDB ({storage.uri}), which only one "
                    "process may open for writing: with --workers, use SQLite or PostgreSQL "
                    "storage for tables"
                )


def _announcing_server(config, api_key: str | None, on_stop: Callable[[], None] | None = None):
    """A uvicorn server that prints Tiled's URL once its socket is bound (the real port), and
    runs ``on_stop`` after its shutdown: uvicorn re-raises the signal that stopped it once it
    is done, so code after ``run()`` would not run."""
    import uvicorn

    class AnnouncingServer(uvicorn.Server):
        async def shutdown(self, sockets=None) -> None:
            await super().shutdown(sockets=sockets)
            if on_stop is not None:
                on_stop()

        async def startup(self, sockets=None) -> None:
            await super().startup(sockets=sockets)
            if self.should_exit or not self.servers:
                return  # startup failed; uvicorn has said why
            bound = self.servers[0].sockets[0].getsockname()[1]
            url = _url(self.config.host, bound, api_key)
            typer.echo(f"\n    Tiled server is running at: {url}\n", err=True)

    return AnnouncingServer(config)


def _environment():
    """The ``TILED_*`` variables (a bad value is a one-line error per variable)."""
    from ..config import ConfigError
    from ..server.settings import read_environment

    try:
        return read_environment()
    except ConfigError as err:
        _fail_lines(err.problems)


def _url(host: str, port: int, api_key: str | None) -> str:
    shown = "localhost" if host in ("127.0.0.1", "0.0.0.0", "::") else host
    base = f"http://{shown}:{port}"
    return f"{base}?api_key={api_key}" if api_key else base


@serve_app.command("demo")
def serve_demo(
    host: str = HOST, port: int = PORT, verbose: bool = VERBOSE, workers: int | None = WORKERS
) -> None:
    """Serve the demo tree with anonymous read access."""
    # Every worker must hold the same key; it is not shown (the demo is read-only).
    key, _ = _single_user_key(None)
    _serve(AppRecipe("demo", {"api_key": key}), workers or 1, host, port, verbose, None)


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
    scalable: bool = typer.Option(
        False, "--scalable", help="Check that the tree works with several server processes."
    ),
    log_config: str | None = typer.Option(
        None, "--log-config", help="A uvicorn logging configuration file (.json, .yaml or .ini)."
    ),
    log_timestamps: bool = typer.Option(
        False, "--log-timestamps/--no-log-timestamps", help="Include timestamps in log output."
    ),
    verbose: bool = VERBOSE,
    workers: int | None = WORKERS,
) -> None:
    """Serve a tree (an adapter) importable from Python. With --workers, each worker imports
    it: what the object holds in memory (and writes to it) stays in that worker."""
    from ..utils import import_object

    if ":" not in object_path:
        _fail(f"{object_path!r} is not of the form package.module:attribute")
    try:
        import_object(object_path)
    except (ImportError, AttributeError) as err:
        _fail(f"could not import {object_path!r}: {err}")
    logging = _log_config(log_config, log_timestamps)
    key, shown = _single_user_key(api_key)
    arguments = {"object_path": object_path, "api_key": key, "public": public}
    _serve(
        AppRecipe("pyobject", arguments), workers or 1, host, port, verbose, shown,
        scalable=scalable, **logging,
    )  # fmt: skip


PUBLIC = typer.Option(False, "--public", help="Allow anonymous read access.")
API_KEY = typer.Option(
    None,
    "--api-key",
    help="The single-user API key (default: $TILED_SINGLE_USER_API_KEY or random).",
)
SCALABLE = typer.Option(
    False, "--scalable", help="Check that the configuration works with several server processes."
)
LOG_CONFIG = typer.Option(
    None, "--log-config", help="A uvicorn logging configuration file (.json, .yaml or .ini)."
)
LOG_TIMESTAMPS = typer.Option(
    False, "--log-timestamps/--no-log-timestamps", help="Include timestamps in log output."
)


def _log_config(value: Any, timestamps: bool, key: str = "--log-config") -> dict[str, Any]:
    """uvicorn's ``log_config`` argument (as a dict of keyword arguments, empty for uvicorn's
    default): ``value`` a file (checked here) or a dict, with timestamps in front of the
    messages of the formatters ``default`` and ``access`` if asked, as upstream."""
    if value is None and not timestamps:
        return {}
    if isinstance(value, str | Path):
        file = Path(value).expanduser()
        if not file.is_file():
            _fail(f"{key}: no such logging configuration file {str(value)!r}")
    if not timestamps:
        return {"log_config": str(value) if isinstance(value, Path) else value}
    import copy

    from uvicorn.config import LOGGING_CONFIG

    if value is None:
        config = copy.deepcopy(LOGGING_CONFIG)
    elif isinstance(value, dict):
        config = copy.deepcopy(value)
    else:
        config = _read_log_config(Path(value).expanduser(), key)
    try:
        for name in ("access", "default"):
            formatter = config["formatters"][name]
            field = "fmt" if "fmt" in formatter else "format"  # uvicorn's or logging's
            formatter[field] = "[%(asctime)s.%(msecs)03dZ] " + formatter[field]
            formatter.setdefault("datefmt", "%Y-%m-%dT%H:%M:%S")
    except (KeyError, TypeError):
        _fail(
            f"{key}: --log-timestamps needs a logging configuration with the formatters "
            "'access' and 'default' (as uvicorn's own), each with a 'format'"
        )
    return {"log_config": config}


def _read_log_config(file: Path, key: str) -> Any:
    import json

    import yaml

    try:
        text = file.read_text()
        if file.suffix == ".json":
            return json.loads(text)
        if file.suffix in (".yml", ".yaml"):
            return yaml.safe_load(text)
    except (OSError, UnicodeDecodeError, ValueError, yaml.YAMLError) as err:
        _fail(f"{key}: cannot read {str(file)!r}: {_first_line(err)}")
    _fail(f"{key}: --log-timestamps needs a .json or .yaml logging configuration, not {file.name}")


def _fail_lines(problems: list[str]) -> None:
    for problem in problems:
        typer.echo(f"Error: {problem}", err=True)
    raise typer.Exit(code=1)


def _first_line(err: BaseException) -> str:
    text = str(err).strip() or type(err).__name__
    return text.splitlines()[0]


def _single_user_key(api_key: str | None) -> tuple[str, str | None]:
    """The key to use, and the key to show in the URL (None when given with --api-key)."""
    key = api_key or _environment().single_user_api_key or secrets.token_hex(32)
    if not key.isalnum() or not key.isascii():
        source = "--api-key" if api_key else "TILED_SINGLE_USER_API_KEY"
        _fail(f"{source} must be letters and digits only")
    return key, None if api_key else key


def _mounted_catalogs(app) -> list:
    try:
        from ..catalog import CatalogRootAdapter
    except ImportError:
        return []
    from ..config.build import served_trees

    served = served_trees(app.state.tiled.root_tree)
    return [
        ("/" + "/".join(path), tree)
        for path, tree in served
        if isinstance(tree, CatalogRootAdapter)
    ]


def _check_catalogs(app, prefix: str = "") -> None:
    """Open each catalog once before serving, so a missing or unreadable database is one line
    here rather than a traceback from the server's startup."""
    import asyncio

    catalogs = _mounted_catalogs(app)

    async def open_and_close(tree) -> None:
        try:
            for task in tree.startup_tasks:
                await task()
        finally:
            for task in tree.shutdown_tasks:
                await task()

    for path, tree in catalogs:
        where = "" if path == "/" else f" (mounted at {path})"
        _check_sqlite_file(getattr(tree, "catalog", None), where, prefix)
        try:
            asyncio.run(open_and_close(tree))
        except Exception as err:
            url = _display_url(getattr(getattr(tree, "catalog", None), "url", None))
            _fail(f"{prefix}cannot open the catalog{where}{url}: {_first_line(err)}")


def _display_url(url: Any) -> str:
    """`` at URL`` (the password hidden), or nothing."""
    try:
        return f" at {url.render_as_string(hide_password=True)}" if url is not None else ""
    except Exception:
        return ""


def _check_authentication_database(app, prefix: str = "") -> None:
    """Open the authentication database once before serving, so that one behind the newest
    revision (or missing) is a message here rather than a traceback from the server's startup."""
    import asyncio

    from ..authn_database.migration import AuthnDatabaseError
    from ..server.authenticators import MultiUserAuthenticator

    authenticator = app.state.tiled.authenticator
    if not isinstance(authenticator, MultiUserAuthenticator) or authenticator.database.in_memory:
        return
    database = authenticator.database

    async def open_and_close() -> None:
        try:
            await database.startup()
        finally:
            await database.shutdown()

    try:
        asyncio.run(open_and_close())
    except AuthnDatabaseError as err:
        _fail(f"{prefix}database: {' '.join(str(err).split())}")  # one line, command included
    except Exception as err:
        _fail(
            f"{prefix}database: cannot open the authentication database "
            f"{database.display_url}: {_first_line(err)}"
        )


def _check_sqlite_file(catalog, where: str, prefix: str = "") -> None:
    # Opening a missing SQLite file would create an empty one; refuse before that happens.
    from ..catalog.database import sqlite_file_problem

    url = getattr(catalog, "url", None)
    if url is None:
        return
    problem = sqlite_file_problem(url)  # before the driver (see there)
    if problem is not None:
        _fail(f"{prefix}cannot open the catalog{where}{_display_url(url)}: {problem}")
    if getattr(catalog, "init_if_not_exists", True):
        return
    database = url.database or ""
    if url.get_backend_name() == "sqlite" and database not in ("", ":memory:"):
        if not database.startswith("file:") and not Path(database).exists():
            _fail(
                f"{prefix}no catalog database at {database}{where}: create one with "
                f"`tiled catalog init {database}`, or set init_if_not_exists"
            )


def _local_path(value: str) -> str:
    """Plain paths are made absolute (against the working directory); URIs are left alone."""
    return value if "://" in value else str(Path(value).expanduser().absolute())


@serve_app.command("catalog")
def serve_catalog(
    database: str | None = typer.Argument(
        None, help="The catalog database: a SQLite file path or a sqlite:/// or postgresql:// URI."
    ),
    init: bool = typer.Option(False, "--init", help="Create the catalog if it does not exist."),
    temp: bool = typer.Option(
        False, "--temp", help="Serve a new, writable catalog in a temporary directory."
    ),
    write: list[str] | None = typer.Option(
        None,
        "--write",
        "-w",
        help="Writable storage: a directory for new data (repeatable; the first is used).",
    ),
    read: list[str] | None = typer.Option(
        None,
        "--read",
        "-r",
        help="Readable storage: a directory whose files may be registered (repeatable).",
    ),
    public: bool = PUBLIC,
    api_key: str | None = API_KEY,
    cache: str | None = typer.Option(
        None,
        "--cache",
        help="The streaming cache of live updates: 'memory' or redis://HOST:PORT "
        "(with --temp: memory unless given).",
    ),
    cache_data_ttl: int | None = typer.Option(
        None, "--cache-data-ttl", help="With --cache: seconds an update is kept for replay."
    ),
    cache_seq_ttl: int | None = typer.Option(
        None,
        "--cache-seq-ttl",
        help="With --cache: seconds a node's sequence counter outlives its last update.",
    ),
    host: str = HOST,
    port: int = PORT,
    scalable: bool = SCALABLE,
    log_config: str | None = LOG_CONFIG,
    log_timestamps: bool = LOG_TIMESTAMPS,
    verbose: bool = VERBOSE,
    workers: int | None = WORKERS,
) -> None:
    """Serve a SQL catalog (read-only unless --write or --temp)."""
    from ..catalog.storage import local_tabular_storage
    from ..config import ConfigError, validate_config
    from ..storage import is_sql_uri

    logging = _log_config(log_config, log_timestamps)
    writable = [_local_path(item) for item in write or []]
    if temp and database:
        _fail("pass a DATABASE or --temp, not both")
    if temp and (workers or 1) > 1:
        _fail(
            "--temp makes a throw-away catalog for one server process; with --workers, create "
            "a catalog (`tiled catalog init catalog.db`) and serve it: "
            "`tiled serve catalog catalog.db --write DIR --workers N`"
        )
    if temp and cache is None:
        cache = "memory"  # as upstream: a throw-away catalog streams from this process
    if cache == "memory" and (workers or 1) > 1:
        _fail("--cache memory keeps live updates in one server process: with --workers, "
              "use a Redis server (--cache redis://HOST:PORT)")  # fmt: skip
    if temp:
        directory = Path(tempfile.mkdtemp(prefix="tiled-catalog-"))
        uri = f"sqlite:///{directory / 'catalog.db'}"
        writable.insert(0, str(directory / "data"))
        if not any(is_sql_uri(item) for item in writable):
            writable.append(local_tabular_storage(directory, "data"))  # appendable tables
        init = True
        typer.echo(f"Using a temporary catalog in {directory}", err=True)
    elif database:
        uri = database
        if "://" not in database:
            path = Path(database).expanduser().absolute()
            if not path.exists() and not init:
                _fail(
                    f"no catalog database at {path}: create one with "
                    f"`tiled catalog init {database}`, or pass --init"
                )
            uri = f"sqlite:///{path}"
    else:
        _fail("pass a DATABASE (a file path or URI), or --temp for a throw-away catalog")
    key, shown = _single_user_key(api_key)
    document = {
        "catalog": {
            "uri": uri,
            "writable_storage": writable,
            "readable_storage": [_local_path(item) for item in read or []],
            "init_if_not_exists": init,
        },
    }
    if cache is not None:  # without --cache upstream ignores the TTLs too
        ttls = {"data_ttl": cache_data_ttl, "seq_ttl": cache_seq_ttl}
        document["streaming_cache"] = {
            "uri": cache,
            **{name: value for name, value in ttls.items() if value is not None},
        }
    given = {"single_user_api_key": key, "allow_anonymous_access": public or None}
    overrides = {"authentication": given}
    # The catalog is the command's arguments: the TILED_CATALOG_* variables are for the
    # catalog section of configuration files (upstream's command does not read them either).
    recipe_arguments = {"document": document, "overrides": overrides, "catalog_variables": False}
    try:
        validate_config(document, overrides=overrides, catalog_variables=False)
    except ConfigError as err:
        _fail_lines(err.problems)
    recipe = AppRecipe("config-document", recipe_arguments)
    # A throw-away catalog goes with its server (--temp serves one process).
    remove = functools.partial(shutil.rmtree, directory, ignore_errors=True) if temp else None
    try:
        _serve(
            recipe, workers or 1, host, port, verbose, shown, scalable=scalable,
            checks=(_check_catalogs,), on_stop=remove, **logging,
        )  # fmt: skip
    finally:
        if remove is not None:  # also when serving failed
            remove()


@serve_app.command("directory")
def serve_directory(
    directory: str = typer.Argument(..., help="A directory to serve"),
    verbose: bool = typer.Option(
        False, "--verbose", "-v", help="Log every request, and the details of the walk."
    ),
    watch: bool = typer.Option(
        False, "--watch", "-w", help="Update the catalog when files are added, removed, or changed."
    ),
    public: bool = PUBLIC,
    api_key: str | None = API_KEY,
    keep_ext: bool = register_options.KEEP_EXT,
    include_ext: list[str] | None = register_options.INCLUDE_EXT,
    ext: list[str] | None = register_options.EXT,
    mimetype_hook: str | None = register_options.MIMETYPE_HOOK,
    adapters: list[str] | None = register_options.ADAPTER,
    walkers: list[str] | None = typer.Option(
        None, "--walker", help="Upstream's custom directory walkers: not supported by this server."
    ),
    host: str = HOST,
    port: int = PORT,
    log_config: str | None = LOG_CONFIG,
    log_timestamps: bool = LOG_TIMESTAMPS,
    workers: int | None = WORKERS,
) -> None:
    """Serve the files of a directory (indexed into a temporary catalog while serving; with
    several --workers, indexed once before serving)."""
    from ..catalog.directory import directory_tree
    from ..server.app import build_app

    if walkers:
        _fail(
            "--walker: not supported by this server: files are grouped by the built-in walker; "
            "use --adapter MIMETYPE=package.module:function and --mimetype-hook instead"
        )
    logging = _log_config(log_config, log_timestamps)
    path = Path(directory).expanduser().absolute()
    if not path.is_dir():
        _fail(f"{directory} is not a directory")
    if watch and (workers or 1) > 1:
        _fail(
            "--watch keeps the index of one server process current; with --workers the "
            "directory is indexed once, before serving: leave out --watch or --workers"
        )
    settings, adapters_by_mimetype = register_options.walk_settings(
        keep_ext, include_ext, ext, mimetype_hook, adapters
    )
    register_options.log_walk(verbose)
    key, shown = _single_user_key(api_key)

    def report(message: str) -> None:
        typer.echo(message, err=True)

    if (workers or 1) > 1:
        _serve_indexed_directory(
            path, settings, adapters_by_mimetype, report, workers, host, port, verbose,
            api_key=key, shown=shown, public=public, **logging,
        )  # fmt: skip
        return
    tree, database = directory_tree(
        path, settings, follow=watch, adapters_by_mimetype=adapters_by_mimetype, report=report
    )
    typer.echo(f"Indexing {path} into a temporary catalog at {database}", err=True)
    app = build_app(
        tree,
        authentication={"single_user_api_key": key, "allow_anonymous_access": public or None},
    )
    _run(app, host, port, verbose, shown, **logging)


def _serve_indexed_directory(
    path: Path,
    settings: Any,
    adapters_by_mimetype: dict[str, str],
    report: Callable[[str], None],
    workers: int,
    host: str,
    port: int,
    verbose: bool,
    *,
    api_key: str,
    shown: str | None,
    public: bool,
    **uvicorn_kwargs: Any,
) -> None:
    """Index ``path`` once, here, then serve the index with ``workers`` processes; the index
    is removed when the server stops."""
    from ..catalog.directory import index_directory

    report(f"Indexing {path} into a temporary catalog before serving (--workers)")
    try:
        database = index_directory(
            path, settings, adapters_by_mimetype=adapters_by_mimetype, report=report
        )
    except Exception as err:
        _fail(f"cannot index {path}: {_first_line(err)}")
    report(f"Serving the index at {database}")
    arguments = {
        "database": str(database), "directory": str(path),
        "adapters_by_mimetype": adapters_by_mimetype, "api_key": api_key, "public": public,
    }  # fmt: skip
    try:
        _serve(
            AppRecipe("directory-index", arguments), workers, host, port, verbose, shown,
            **uvicorn_kwargs,
        )  # fmt: skip
    finally:
        shutil.rmtree(database.parent, ignore_errors=True)


@serve_app.command("config")
def serve_config(
    config_path: str | None = typer.Argument(
        None,
        help="A YAML file, or a directory of them (default: $TILED_CONFIG or ./config.yml).",
    ),
    public: bool = PUBLIC,
    api_key: str | None = API_KEY,
    host: str | None = typer.Option(
        None, "--host", help="Address to bind (overrides uvicorn.host; default 127.0.0.1)."
    ),
    port: int | None = typer.Option(
        None,
        "--port",
        min=0,
        max=65535,
        help="Port to bind (overrides uvicorn.port; default 8000).",
    ),
    scalable: bool = SCALABLE,
    log_config: str | None = typer.Option(
        None,
        "--log-config",
        help="A uvicorn logging configuration file (overrides uvicorn.log_config).",
    ),
    log_timestamps: bool = LOG_TIMESTAMPS,
    verbose: bool = VERBOSE,
    workers: int | None = typer.Option(
        None,
        "--workers",
        min=1,
        help="Server processes (uvicorn workers), each building the application from the "
        "configuration (overrides uvicorn.workers; default 1).",
    ),
) -> None:
    """Serve what a configuration file describes (see the configuration how-to)."""
    import inspect

    import uvicorn

    from ..config import ConfigError, parse_configs

    environment = _environment()
    path = config_path or environment.config or "config.yml"
    try:
        config = parse_configs(path)
    except ConfigError as err:
        _fail_lines(err.problems)
    shown = key = None
    if config.authentication.providers:
        if api_key is not None:
            _fail("--api-key is for single-user servers; this configuration has login providers")
    else:
        # --api-key, else TILED_SINGLE_USER_API_KEY, else the file, else random. Keys from the
        # environment or made up here are printed; keys the user wrote are not.
        configured = config.authentication.single_user_api_key
        if configured and api_key is None:
            key = configured
            shown = key if key == environment.single_user_api_key else None
        else:
            key, shown = _single_user_key(api_key)
    server = config.uvicorn
    extra = server.uvicorn_kwargs()
    accepted = set(inspect.signature(uvicorn.Config).parameters) - {"app", "host", "port"}
    unknown = sorted(set(extra) - accepted)
    if unknown:
        _fail(f"{path}: uvicorn does not accept the setting(s) {unknown}")
    if log_config is not None:
        extra.update(_log_config(log_config, log_timestamps))
    else:
        label = f"{path}: uvicorn.log_config"
        extra.update(_log_config(extra.pop("log_config", None), log_timestamps, label))
    host = host or server.host or "127.0.0.1"
    port = port if port is not None else (server.port if server.port is not None else 8000)
    # The overrides decided here (the key above all) go to every worker with the path.
    recipe = AppRecipe("config-file", {"path": str(path), "public": public, "api_key": key})
    _serve(
        recipe, workers or server.workers or 1, host, port, verbose, shown, scalable=scalable,
        where=path, checks=(_check_catalogs, _check_authentication_database), **extra,
    )  # fmt: skip
