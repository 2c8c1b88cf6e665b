"""Add properties to data sources (upstream revision 4cf6011a8db5).

Not implemented yet: see ``tiled.catalog.migrations.refuse``.
"""

from tiled.catalog.migrations.refuse import refuse_downgrade, refuse_upgrade

revision = "4cf6011a8db5"
down_revision = "a86a48befff6"
branch_labels = None
depends_on = None


def upgrade() -> None:
    refuse_upgrade(revision)


def downgrade() -> None:
    refuse_downgrade(revision)
