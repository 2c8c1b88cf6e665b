"""Downloading a node's raw assets (``raw_export``): what goes where, and the transfers.

Each file is fetched from ``/asset/bytes`` and written to a temporary file next to its
destination, renamed into place once complete: an interrupted export leaves no truncated file
that looks whole. Paths given by the server (manifest entries, file names) are checked to stay
inside the destination.
"""

from __future__ import annotations

import io
import os
import re
import tempfile
from collections.abc import MutableMapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from .utils import handle_error, retry_context

# ``attachment; filename="name"``, as the server names a downloaded asset file.
DISPOSITION = re.compile(r'^attachment; ?filename="(.*)"$')
CHUNK_BYTES = 1 << 20


@dataclass(frozen=True)
class Transfer:
    """One file to fetch: its query parameters, and where it goes (``name`` None: the file
    name the server gives, inside ``folder``)."""

    params: dict[str, Any]
    folder: tuple[str, ...]
    name: str | None = None


def _safe_parts(relative: str) -> tuple[str, ...]:
    """The parts of a server-given relative path, refusing any that would leave the
    destination."""
    path = PurePosixPath(relative)
    if path.is_absolute() or ".." in path.parts or not path.parts:
        raise ValueError(f"The server named an unsafe path for an asset file: {relative!r}")
    return path.parts


def export_plan(
    source: Any, manifests: dict[int, list[str] | None], destination: Any
) -> list[Transfer]:
    """The files of the data source's assets and where each one lands."""
    several = len(source.assets) > 1
    plan = []
    for asset in source.assets:
        folder = (str(asset.id),) if several else ()
        if asset.is_directory:
            for relative in manifests.get(asset.id) or []:
                *inner, name = _safe_parts(relative)
                params = {"id": asset.id, "relative_path": relative}
                plan.append(Transfer(params, (*folder, *inner), name))
        else:
            plan.append(Transfer({"id": asset.id}, folder))
    return plan


def _file_name(response: Any) -> str:
    match = DISPOSITION.match(response.headers.get("content-disposition", ""))
    name = match.group(1) if match else ""
    (name,) = _safe_parts(PurePosixPath(name).name or "asset")
    return name


def _fetch(node: Any, transfer: Transfer, destination: Any, compression: bool) -> Any:
    """Fetch one file (retrying what may succeed again); returns its path or mapping key."""
    context = node.context
    url = context.url(f"asset/bytes/{node._path}")
    headers = {} if compression else {"Accept-Encoding": "identity"}
    for attempt in retry_context(context):
        with attempt:
            with context.throttle():
                with context.http_client.stream(
                    "GET", url, params=transfer.params, headers=headers
                ) as response:
                    handle_error(response)
                    name = transfer.name or _file_name(response)
                    if isinstance(destination, MutableMapping):
                        key = "/".join((*transfer.folder, name))
                        buffer = io.BytesIO()
                        for chunk in response.iter_bytes(CHUNK_BYTES):
                            buffer.write(chunk)
                        buffer.seek(0)
                        destination[key] = buffer
                        return key
                    return _write(Path(destination, *transfer.folder, name), response)
    raise AssertionError("unreachable: retry_context raises when it gives up")


def _write(target: Path, response: Any) -> Path:
    target.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.")
    try:
        with os.fdopen(handle, "wb") as file:
            for chunk in response.iter_bytes(CHUNK_BYTES):
                file.write(chunk)
        os.replace(temporary, target)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return target


def fetch_all(
    node: Any, plan: list[Transfer], destination: Any, max_workers: int, compression: bool
) -> list[Any]:
    """Run the transfers (in parallel over the network; one at a time for an app served in
    this process); return their paths or keys in plan order."""
    if not isinstance(destination, MutableMapping):
        destination = Path(destination if destination is not None else Path.cwd())
    workers = 1 if getattr(node.context, "app", None) is not None else max(1, max_workers)
    if workers == 1 or len(plan) <= 1:
        return [_fetch(node, transfer, destination, compression) for transfer in plan]
    with ThreadPoolExecutor(workers) as pool:
        futures = [pool.submit(_fetch, node, t, destination, compression) for t in plan]
        return [future.result() for future in futures]


__all__ = ["Transfer", "export_plan", "fetch_all"]
