"""Restore the server default of time_created (PostgreSQL).

An upstream revision older than upstream Tiled 0.2.0's head, kept so that alembic knows the
whole chain. This server does not migrate from or to it: upgrade such a database with
upstream Tiled 0.2.0 or later first.

Revision ID: 0c705a02954c
Revises: d88e91ea03f9
"""

from tiled.authn_database.migrations.unsupported import refuse

revision = "0c705a02954c"
down_revision = "d88e91ea03f9"
branch_labels = None
depends_on = None


def upgrade() -> None:
    refuse("d88e91ea03f9")


def downgrade() -> None:
    refuse("0c705a02954c")
