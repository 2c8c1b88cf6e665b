"""PostgreSQL for the tests: one place that finds it, makes throw-away databases, and decides
what its absence means.

The server is expected at ``TILED_TEST_POSTGRESQL_URI`` (default
``postgresql://postgres@127.0.0.1:5432/postgres``, trust authentication). Where none runs (a
fresh machine), the tests that need it are skipped with the reason; CI sets
``TILED_TEST_REQUIRE_POSTGRESQL=1`` so that its absence fails instead.
"""

from __future__ import annotations

import asyncio
import functools
import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

ADMIN_URI = os.environ.get(
    "TILED_TEST_POSTGRESQL_URI", "postgresql://postgres@127.0.0.1:5432/postgres"
)


async def admin(statement: str) -> None:
    """Run one statement on the administrative database."""
    import asyncpg

    connection = await asyncpg.connect(ADMIN_URI, timeout=10)
    try:
        await connection.execute(statement)
    finally:
        await connection.close()


@functools.cache
def _unreachable() -> str | None:
    try:
        asyncio.run(admin("SELECT 1"))
    except Exception as err:  # noqa: BLE001 - any failure means "no server to test against"
        return f"PostgreSQL is not reachable at {ADMIN_URI} ({type(err).__name__}: {err})"
    return None


def require_postgresql() -> None:
    """Skip the calling test without PostgreSQL (fail instead where it is required)."""
    reason = _unreachable()
    if reason is None:
        return
    if os.environ.get("TILED_TEST_REQUIRE_POSTGRESQL"):
        pytest.fail(f"{reason}; TILED_TEST_REQUIRE_POSTGRESQL is set")
    pytest.skip(reason)


def database_uri(name: str) -> str:
    return ADMIN_URI.rsplit("/", 1)[0] + "/" + name


@contextmanager
def temporary_database(prefix: str = "tiled_test") -> Iterator[str]:
    """The URI of a new, empty database, dropped afterwards."""
    require_postgresql()
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    asyncio.run(admin(f'CREATE DATABASE "{name}"'))
    try:
        yield database_uri(name)
    finally:
        asyncio.run(admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
