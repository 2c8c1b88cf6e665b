"""Add write:metadata and write:data to the default roles.

An upstream revision older than upstream Tiled 0.2.0's head, kept so that alembic knows the
whole chain. This server does not migrate from or to it: upgrade such a database with
upstream Tiled 0.2.0 or later first.

Revision ID: 722ff4e4fcc7
Revises: 481830dd6c11
"""

from tiled.authn_database.migrations.unsupported import refuse

revision = "722ff4e4fcc7"
down_revision = "481830dd6c11"
branch_labels = None
depends_on = None


def upgrade() -> None:
    refuse("481830dd6c11")


def downgrade() -> None:
    refuse("722ff4e4fcc7")
