"""Add graph entities and links tables (upstream revision c31f6a1d7e20).

Not implemented yet: see ``tiled.catalog.migrations.refuse``.
"""

from tiled.catalog.migrations.refuse import refuse_downgrade, refuse_upgrade

revision = "c31f6a1d7e20"
down_revision = "9bc9b57294b9"
branch_labels = None
depends_on = None


def upgrade() -> None:
    refuse_upgrade(revision)


def downgrade() -> None:
    refuse_downgrade(revision)
