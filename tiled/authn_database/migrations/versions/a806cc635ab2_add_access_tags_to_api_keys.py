"""Add api_keys.access_tags: the head of upstream Tiled 0.2.0.

The oldest revision this server migrates from (and down to). The step that leads to it, from
0c705a02954c, is upstream's and is refused here, as are the older ones: upgrade such a
database with upstream Tiled 0.2.0 or later first.

Revision ID: a806cc635ab2
Revises: 0c705a02954c
"""

from tiled.authn_database.migrations.unsupported import refuse

revision = "a806cc635ab2"
down_revision = "0c705a02954c"
branch_labels = None
depends_on = None


def upgrade() -> None:
    refuse("0c705a02954c")


def downgrade() -> None:
    refuse("a806cc635ab2")
