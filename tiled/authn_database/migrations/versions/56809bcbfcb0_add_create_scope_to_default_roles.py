"""Add the 'create' scope to the default roles.

An upstream revision older than upstream Tiled 0.2.0's head, kept so that alembic knows the
whole chain. This server does not migrate from or to it: upgrade such a database with
upstream Tiled 0.2.0 or later first.

Revision ID: 56809bcbfcb0
Revises: 722ff4e4fcc7
"""

from tiled.authn_database.migrations.unsupported import refuse

revision = "56809bcbfcb0"
down_revision = "722ff4e4fcc7"
branch_labels = None
depends_on = None


def upgrade() -> None:
    refuse("722ff4e4fcc7")


def downgrade() -> None:
    refuse("56809bcbfcb0")
