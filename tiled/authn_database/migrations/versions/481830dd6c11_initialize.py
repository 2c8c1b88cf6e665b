"""Initialize: principals, identities, roles, API keys, sessions.

An upstream revision older than upstream Tiled 0.2.0's head, kept so that alembic knows the
whole chain. This server does not migrate from or to it: upgrade such a database with
upstream Tiled 0.2.0 or later first.

Revision ID: 481830dd6c11
Revises: (none)
"""

from tiled.authn_database.migrations.unsupported import refuse

revision = "481830dd6c11"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    raise RuntimeError(
        "An empty authentication database is created from the ORM, not by migrations: "
        "use `tiled admin initialize-database URI`."
    )


def downgrade() -> None:
    refuse("481830dd6c11")
