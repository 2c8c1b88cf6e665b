"""Convert access blobs to access tags (upstream revision 3bc110ce44e9).

Not implemented yet: see ``tiled.catalog.migrations.refuse``.
"""

from tiled.catalog.migrations.refuse import refuse_downgrade, refuse_upgrade

revision = "3bc110ce44e9"
down_revision = "de302a096358"
branch_labels = None
depends_on = None


def upgrade() -> None:
    refuse_upgrade(revision)


def downgrade() -> None:
    refuse_downgrade(revision)
