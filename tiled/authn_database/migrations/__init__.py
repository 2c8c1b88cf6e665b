"""Alembic migrations of the authentication database (upstream Tiled's revision chain)."""
