"""Alembic environment of the authentication database (see :mod:`tiled.migration_environment`)."""

from tiled.authn_database.connection import async_url
from tiled.authn_database.orm import Base
from tiled.migration_environment import run_environment

run_environment(Base.metadata, async_url)
