"""Demote composite (upstream revision dfbb7478c6bd).

A revision from before upstream 0.2.0: databases this old are upgraded with upstream's
own `tiled catalog upgrade-database` (any 0.2.x release) first; see
``tiled.catalog.migrations.refuse``.
"""

from tiled.catalog.migrations.refuse import refuse_downgrade, refuse_upgrade

revision = "dfbb7478c6bd"
down_revision = "a963a6c32a0c"
branch_labels = None
depends_on = None


def upgrade() -> None:
    refuse_upgrade(revision)


def downgrade() -> None:
    refuse_downgrade(revision)
