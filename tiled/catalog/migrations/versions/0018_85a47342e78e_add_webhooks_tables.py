"""Add webhooks tables (upstream revision 85a47342e78e).

Not implemented yet: see ``tiled.catalog.migrations.refuse``.
"""

from tiled.catalog.migrations.refuse import refuse_downgrade, refuse_upgrade

revision = "85a47342e78e"
down_revision = "4cf6011a8db5"
branch_labels = None
depends_on = None


def upgrade() -> None:
    refuse_upgrade(revision)


def downgrade() -> None:
    refuse_downgrade(revision)
