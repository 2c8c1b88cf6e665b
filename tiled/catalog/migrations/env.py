"""Alembic environment of the catalog database (see :mod:`tiled.migration_environment`)."""

from tiled.catalog.database import async_url
from tiled.catalog.orm import metadata_obj
from tiled.migration_environment import run_environment

run_environment(metadata_obj, async_url, batch_on_sqlite=True)
