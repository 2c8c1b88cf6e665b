"""Alembic environment of the catalog database.

The catalog's functions hand alembic an open (synchronous facade of an async) connection in
``config.attributes["connection"]``; the ``alembic`` command line, with only a URL, gets its
own async engine here.
"""

from __future__ import annotations

import asyncio

from alembic import context
from sqlalchemy.ext.asyncio import create_async_engine

from tiled.catalog.database import async_url
from tiled.catalog.orm import metadata_obj

config = context.config


def _run(connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=metadata_obj,
        render_as_batch=connection.dialect.name == "sqlite",  # SQLite cannot ALTER much
    )
    with context.begin_transaction():
        context.run_migrations()


async def _run_with_own_engine() -> None:
    engine = create_async_engine(async_url(config.get_main_option("sqlalchemy.url")))
    try:
        async with engine.begin() as connection:
            await connection.run_sync(_run)
    finally:
        await engine.dispose()


def run_migrations_offline() -> None:
    context.configure(
        url=config.get_main_option("sqlalchemy.url"),
        target_metadata=metadata_obj,
        literal_binds=True,
    )
    with context.begin_transaction():
        context.run_migrations()


if context.is_offline_mode():
    run_migrations_offline()
elif config.attributes.get("connection") is not None:
    _run(config.attributes["connection"])
else:
    asyncio.run(_run_with_own_engine())
