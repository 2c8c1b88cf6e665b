"""The one alembic environment shared by the catalog and the authentication databases.

Their functions hand alembic an open synchronous connection (the sync facade of an async one)
in ``config.attributes["connection"]``; run from the ``alembic`` command line with only
``sqlalchemy.url``, the environment opens an async engine of its own.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from sqlalchemy import MetaData


def run_environment(
    target_metadata: MetaData, async_url: Callable[[str], Any], *, batch_on_sqlite: bool = False
) -> None:
    """Run the migrations of the current alembic context (called from an ``env.py``)."""
    from alembic import context
    from sqlalchemy.ext.asyncio import create_async_engine

    config = context.config

    def run(connection: Any) -> None:
        batch = batch_on_sqlite and connection.dialect.name == "sqlite"  # SQLite cannot ALTER much
        context.configure(
            connection=connection, target_metadata=target_metadata, render_as_batch=batch
        )
        with context.begin_transaction():
            context.run_migrations()

    async def run_with_own_engine() -> None:
        engine = create_async_engine(async_url(config.get_main_option("sqlalchemy.url")))
        try:
            async with engine.begin() as connection:
                await connection.run_sync(run)
        finally:
            await engine.dispose()

    if context.is_offline_mode():
        context.configure(
            url=config.get_main_option("sqlalchemy.url"),
            target_metadata=target_metadata,
            literal_binds=True,
        )
        with context.begin_transaction():
            context.run_migrations()
    elif config.attributes.get("connection") is not None:
        run(config.attributes["connection"])
    else:
        asyncio.run(run_with_own_engine())
