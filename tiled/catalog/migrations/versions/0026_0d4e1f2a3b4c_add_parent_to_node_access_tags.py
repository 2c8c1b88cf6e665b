"""Add parent to node access tags (upstream revision 0d4e1f2a3b4c).

Not implemented yet: see ``tiled.catalog.migrations.refuse``.
"""

from tiled.catalog.migrations.refuse import refuse_downgrade, refuse_upgrade

revision = "0d4e1f2a3b4c"
down_revision = "3bc110ce44e9"
branch_labels = None
depends_on = None


def upgrade() -> None:
    refuse_upgrade(revision)


def downgrade() -> None:
    refuse_downgrade(revision)
