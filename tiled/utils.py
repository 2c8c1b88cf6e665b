"""Small helpers shared across layers."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")


async def run_sync(function: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """Run blocking work (reading storage, computing dask graphs) on a worker thread.

    This is the one place where the async hooks hand synchronous readers to a thread, so the
    event loop keeps serving other requests meanwhile.
    """
    import anyio.to_thread

    if kwargs:
        return await anyio.to_thread.run_sync(lambda: function(*args, **kwargs))
    return await anyio.to_thread.run_sync(function, *args)


def import_object(path: str) -> Any:
    """Import ``package.module:attribute`` (or ``package.module.attribute``)."""
    import importlib

    module_name, _, attribute = path.partition(":") if ":" in path else path.rpartition(".")
    module = importlib.import_module(module_name)
    obj: Any = module
    for part in attribute.split(".") if attribute else []:
        obj = getattr(obj, part)
    return obj


# The async drivers this project runs SQL through, by the scheme a user may write.
ASYNC_SQL_DRIVERS = {
    "sqlite": "sqlite+aiosqlite",
    "postgresql": "postgresql+asyncpg",
    "postgres": "postgresql+asyncpg",
    "postgresql+psycopg2": "postgresql+asyncpg",
    "postgresql+psycopg": "postgresql+asyncpg",
}


def ensure_specified_sql_driver(uri: str | os.PathLike) -> str:
    """``uri`` with this project's async driver when it names none (``sqlite://...`` ->
    ``sqlite+aiosqlite://...``, ``postgresql://`` -> ``postgresql+asyncpg://``); a plain path
    is a SQLite file; a driver given explicitly is kept (upstream's name)."""
    text = os.fspath(uri)
    if "://" not in text:
        return f"sqlite+aiosqlite:///{text}"
    scheme, rest = text.split("://", 1)
    return f"{ASYNC_SQL_DRIVERS.get(scheme, scheme)}://{rest}"
