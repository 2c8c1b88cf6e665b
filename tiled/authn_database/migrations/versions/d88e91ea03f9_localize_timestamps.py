"""Make every timestamp time-zone aware (PostgreSQL).

An upstream revision older than upstream Tiled 0.2.0's head, kept so that alembic knows the
whole chain. This server does not migrate from or to it: upgrade such a database with
upstream Tiled 0.2.0 or later first.

Revision ID: d88e91ea03f9
Revises: 13024b8a6b74
"""

from tiled.authn_database.migrations.unsupported import refuse

revision = "d88e91ea03f9"
down_revision = "13024b8a6b74"
branch_labels = None
depends_on = None


def upgrade() -> None:
    refuse("13024b8a6b74")


def downgrade() -> None:
    refuse("d88e91ea03f9")
