"""Add b tree index on parent id in nodes (upstream revision bf2fe0eb8ee8).

Not implemented yet: see ``tiled.catalog.migrations.refuse``.
"""

from tiled.catalog.migrations.refuse import refuse_downgrade, refuse_upgrade

revision = "bf2fe0eb8ee8"
down_revision = "85a47342e78e"
branch_labels = None
depends_on = None


def upgrade() -> None:
    refuse_upgrade(revision)


def downgrade() -> None:
    refuse_downgrade(revision)
