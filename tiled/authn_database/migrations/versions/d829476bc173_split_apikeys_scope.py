"""Split scopes: 'create' becomes 'create:node'; 'apikeys' becomes 'create:apikeys' and
'revoke:apikeys'. In the user and admin roles and in every API key.

Downgrading maps them back ('create:apikeys' and 'revoke:apikeys' both to 'apikeys').

Revision ID: d829476bc173
Revises: 27e069ba3bf5
"""

from alembic import op

from tiled.authn_database.migrations.scopes import edit_api_keys, edit_roles, replacing

revision = "d829476bc173"
down_revision = "27e069ba3bf5"
branch_labels = None
depends_on = None

ROLES = ("user", "admin")
SPLIT = {"create": ["create:node"], "apikeys": ["revoke:apikeys", "create:apikeys"]}
JOINED = {"create:node": ["create"], "revoke:apikeys": ["apikeys"], "create:apikeys": ["apikeys"]}


def upgrade() -> None:
    connection = op.get_bind()
    edit_roles(connection, ROLES, replacing(SPLIT))
    edit_api_keys(connection, replacing(SPLIT))


def downgrade() -> None:
    connection = op.get_bind()
    edit_roles(connection, ROLES, replacing(JOINED))
    edit_api_keys(connection, replacing(JOINED))
