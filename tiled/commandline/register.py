"""``tiled register URL PATH``: register files with a running server's catalog."""

from __future__ import annotations

import logging
import re
from typing import Any

import typer

VERBOSE = typer.Option(
    False, "--verbose", "-v", help="Log details of directory traversal and file registration."
)
WATCH = typer.Option(
    False, "--watch", "-w", help="Update the catalog when files are added, removed, or changed."
)
KEEP_EXT = typer.Option(
    False,
    "--keep-ext",
    help=(
        "Name nodes by the whole file name ('measurements.csv') instead of the name without "
        "extensions ('measurements'); discouraged, as it ties clients to the storage format."
    ),
)
INCLUDE_EXT = typer.Option(
    None,
    "--include-ext",
    help="Include only files with these extensions (repeatable), e.g. --include-ext .csv",
)
EXT = typer.Option(
    None,
    "--ext",
    help="Map a file extension to a known mimetype (repeatable), spelled '.tif=image/tiff'.",
)
MIMETYPE_HOOK = typer.Option(
    None,
    "--mimetype-hook",
    help=(
        "ADVANCED: a function detect_mimetype(path, mimetype) -> mimetype deciding formats, "
        "as 'package.module:function'."
    ),
)
ADAPTER = typer.Option(
    None,
    "--adapter",
    help=(
        "ADVANCED: the adapter reading a format (repeatable), as 'mimetype=package.module:Adapter'."
    ),
)

_PAIR = re.compile(r"^\s*(\S+)\s*=\s*(\S+)\s*$")


def parse_pairs(values: list[str] | None, option: str, spelled: str) -> dict[str, str]:
    """``--ext .tif=image/tiff`` (or ``--adapter``) values as a mapping; a bad one fails."""
    pairs = {}
    for value in values or []:
        match = _PAIR.match(value)
        if match is None:
            typer.echo(f"Error: cannot read {option} {value!r}: expected {spelled}", err=True)
            raise typer.Exit(code=1)
        pairs[match.group(1)] = match.group(2)
    return pairs


def walk_settings(
    keep_ext: bool,
    include_ext: list[str] | None,
    ext: list[str] | None,
    mimetype_hook: str | None,
    adapters: list[str] | None,
) -> tuple[Any, dict[str, str]]:
    """The walk's settings from the shared options, and the configured adapters."""
    from ..client.register import Settings, identity, include_extensions

    adapters_by_mimetype = parse_pairs(adapters, "--adapter", "'mimetype=package.module:obj'")
    try:
        settings = Settings.init(
            adapters_by_mimetype=adapters_by_mimetype,
            mimetypes_by_file_ext=parse_pairs(ext, "--ext", "'.ext=mimetype'"),
            mimetype_detection_hook=mimetype_hook,
            key_from_filename=identity if keep_ext else None,
            filter=include_extensions(include_ext) if include_ext else None,
        )
    except (ImportError, AttributeError) as err:
        typer.echo(f"Error: cannot import {mimetype_hook!r}: {err}", err=True)
        raise typer.Exit(code=1) from None
    return settings, adapters_by_mimetype


def log_walk(verbose: bool) -> None:
    """Walk details (skips with their reasons, registrations) go to stderr with --verbose;
    warnings (collisions) always."""
    from ..client.register import logger

    if not any(isinstance(h, logging.StreamHandler) for h in logger.handlers):
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(message)s"))
        logger.addHandler(handler)
    logger.setLevel(logging.INFO if verbose else logging.WARNING)


def register(
    uri: str = typer.Argument(..., help="URL of the Tiled server (or of a node in it)"),
    filepath: str = typer.Argument(..., help="A file or directory to register"),
    verbose: bool = VERBOSE,
    watch: bool = WATCH,
    prefix: str = typer.Option(
        "/", help="Where in the catalog to register the files (containers made as needed)."
    ),
    keep_ext: bool = KEEP_EXT,
    include_ext: list[str] | None = INCLUDE_EXT,
    ext: list[str] | None = EXT,
    mimetype_hook: str | None = MIMETYPE_HOOK,
    adapters: list[str] | None = ADAPTER,
    api_key: str | None = typer.Option(None, "--api-key", help="The API key to register with."),
    concurrency: int = typer.Option(
        8, "--concurrency", min=1, help="Files read and registered at once."
    ),
) -> None:
    """Register a file or a directory (recursively) with a server's catalog.

    Incremental: a file whose node records its current size and modification time is not
    read again; the nodes of files that are gone are removed.
    """
    import asyncio
    from pathlib import Path

    from ..client.register import HTTPTarget, RegistrationRefused, Walker
    from ..client.register import watch as watch_tree

    settings, _ = walk_settings(keep_ext, include_ext, ext, mimetype_hook, adapters)
    log_walk(verbose)
    if not Path(filepath).exists():
        typer.echo(f"Error: no such file or directory: {filepath}", err=True)
        raise typer.Exit(code=1)
    import httpx

    # A URL naming a node (.../api/v1/metadata/a/b) registers below that node.
    address, _, query = uri.partition("?")
    server, _, node_path = address.partition("/api/v1/")
    node_path = node_path.removeprefix("metadata/").strip("/")
    full_prefix = "/".join(part.strip("/") for part in (node_path, prefix) if part.strip("/"))
    base = f"{server}?{query}" if query else server

    async def run() -> None:
        async with HTTPTarget(base, api_key, concurrency=concurrency) as target:
            walker = Walker(target, filepath, full_prefix or "/", settings, concurrency)
            if watch:
                await watch_tree(walker)
            else:
                progress = await walker.run()
                typer.echo(f"Registered {filepath}: {progress.summary()}", err=True)

    try:
        asyncio.run(run())
    except RegistrationRefused as err:
        typer.echo(f"Error: the server refused: {err}", err=True)
        raise typer.Exit(code=1) from None
    except httpx.TransportError as err:
        typer.echo(f"Error: cannot reach {server}: {err}", err=True)
        raise typer.Exit(code=1) from None
    except httpx.HTTPStatusError as err:
        typer.echo(f"Error: the server failed: {err.response.status_code}", err=True)
        raise typer.Exit(code=1) from None
    except KeyError:
        # The container to register into is not there (or the address is no Tiled server's).
        shown = f"{server}/api/v1/metadata/{full_prefix}".rstrip("/")
        typer.echo(
            f"Error: no container at {shown}: give a Tiled server's address, or the address of "
            "a container (.../api/v1/metadata/<path>), optionally with --prefix",
            err=True,
        )
        raise typer.Exit(code=1) from None
    except KeyboardInterrupt:
        raise typer.Exit(code=130) from None
