"""Alembic environment of the authentication database.

:mod:`tiled.authn_database.migration` hands alembic an open synchronous connection (the sync
facade of an async one) in ``config.attributes["connection"]``; run from the ``alembic``
command line with only ``sqlalchemy.url``, this opens an async engine of its own.
"""

from __future__ import annotations

import asyncio

from alembic import context
from sqlalchemy.ext.asyncio import create_async_engine

from tiled.authn_database.connection import async_url
from tiled.authn_database.orm import Base

config = context.config


def _run(connection) -> None:
    context.configure(connection=connection, target_metadata=Base.metadata)
    with context.begin_transaction():
        context.run_migrations()


async def _run_with_own_engine() -> None:
    engine = create_async_engine(async_url(config.get_main_option("sqlalchemy.url")))
    try:
        async with engine.begin() as connection:
            await connection.run_sync(_run)
    finally:
        await engine.dispose()


if context.is_offline_mode():
    context.configure(
        url=config.get_main_option("sqlalchemy.url"),
        target_metadata=Base.metadata,
        literal_binds=True,
    )
    with context.begin_transaction():
        context.run_migrations()
elif config.attributes.get("connection") is not None:
    _run(config.attributes["connection"])
else:
    asyncio.run(_run_with_own_engine())
