"""Give the user and admin roles the deletion scopes delete:revision and delete:node.

Revision ID: 27e069ba3bf5
Revises: a806cc635ab2
"""

from alembic import op

from tiled.authn_database.migrations.scopes import adding, edit_roles, removing

revision = "27e069ba3bf5"
down_revision = "a806cc635ab2"
branch_labels = None
depends_on = None

ROLES = ("user", "admin")
SCOPES = ("delete:revision", "delete:node")


def upgrade() -> None:
    edit_roles(op.get_bind(), ROLES, adding(SCOPES))


def downgrade() -> None:
    edit_roles(op.get_bind(), ROLES, removing(SCOPES))
