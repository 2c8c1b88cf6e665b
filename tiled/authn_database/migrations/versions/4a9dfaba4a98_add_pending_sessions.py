"""Add pending_sessions (device code flow).

An upstream revision older than upstream Tiled 0.2.0's head, kept so that alembic knows the
whole chain. This server does not migrate from or to it: upgrade such a database with
upstream Tiled 0.2.0 or later first.

Revision ID: 4a9dfaba4a98
Revises: 56809bcbfcb0
"""

from tiled.authn_database.migrations.unsupported import refuse

revision = "4a9dfaba4a98"
down_revision = "56809bcbfcb0"
branch_labels = None
depends_on = None


def upgrade() -> None:
    refuse("56809bcbfcb0")


def downgrade() -> None:
    refuse("4a9dfaba4a98")
