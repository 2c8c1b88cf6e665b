"""Add write:principals to the admin role.

An upstream revision older than upstream Tiled 0.2.0's head, kept so that alembic knows the
whole chain. This server does not migrate from or to it: upgrade such a database with
upstream Tiled 0.2.0 or later first.

Revision ID: 769180ce732e
Revises: c7bd2573716d
"""

from tiled.authn_database.migrations.unsupported import refuse

revision = "769180ce732e"
down_revision = "c7bd2573716d"
branch_labels = None
depends_on = None


def upgrade() -> None:
    refuse("c7bd2573716d")


def downgrade() -> None:
    refuse("769180ce732e")
