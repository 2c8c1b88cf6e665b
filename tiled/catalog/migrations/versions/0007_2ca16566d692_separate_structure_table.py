"""Separate structure table (upstream revision 2ca16566d692).

A revision from before upstream 0.2.0: databases this old are upgraded with upstream's
own `tiled catalog upgrade-database` (any 0.2.x release) first; see
``tiled.catalog.migrations.refuse``.
"""

from tiled.catalog.migrations.refuse import refuse_downgrade, refuse_upgrade

revision = "2ca16566d692"
down_revision = "1cd99c02d0c7"
branch_labels = None
depends_on = None


def upgrade() -> None:
    refuse_upgrade(revision)


def downgrade() -> None:
    refuse_downgrade(revision)
