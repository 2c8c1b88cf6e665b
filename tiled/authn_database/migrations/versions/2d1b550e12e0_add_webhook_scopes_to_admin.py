"""Give the admin role the scopes read:webhooks and write:webhooks.

Revision ID: 2d1b550e12e0
Revises: d829476bc173
"""

from alembic import op

from tiled.authn_database.migrations.scopes import adding, edit_roles, removing

revision = "2d1b550e12e0"
down_revision = "d829476bc173"
branch_labels = None
depends_on = None

SCOPES = ("read:webhooks", "write:webhooks")


def upgrade() -> None:
    edit_roles(op.get_bind(), ["admin"], adding(SCOPES))


def downgrade() -> None:
    edit_roles(op.get_bind(), ["admin"], removing(SCOPES))
