"""Add register to the admin role.

An upstream revision older than upstream Tiled 0.2.0's head, kept so that alembic knows the
whole chain. This server does not migrate from or to it: upgrade such a database with
upstream Tiled 0.2.0 or later first.

Revision ID: 13024b8a6b74
Revises: 769180ce732e
"""

from tiled.authn_database.migrations.unsupported import refuse

revision = "13024b8a6b74"
down_revision = "769180ce732e"
branch_labels = None
depends_on = None


def upgrade() -> None:
    refuse("769180ce732e")


def downgrade() -> None:
    refuse("13024b8a6b74")
