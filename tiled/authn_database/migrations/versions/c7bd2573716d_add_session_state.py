"""Add sessions.state.

An upstream revision older than upstream Tiled 0.2.0's head, kept so that alembic knows the
whole chain. This server does not migrate from or to it: upgrade such a database with
upstream Tiled 0.2.0 or later first.

Revision ID: c7bd2573716d
Revises: 4a9dfaba4a98
"""

from tiled.authn_database.migrations.unsupported import refuse

revision = "c7bd2573716d"
down_revision = "4a9dfaba4a98"
branch_labels = None
depends_on = None


def upgrade() -> None:
    refuse("4a9dfaba4a98")


def downgrade() -> None:
    refuse("c7bd2573716d")
