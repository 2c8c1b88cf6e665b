"""Add composite structure family (upstream revision 45a702586b2a).

A revision from before upstream 0.2.0: databases this old are upgraded with upstream's
own `tiled catalog upgrade-database` (any 0.2.x release) first; see
``tiled.catalog.migrations.refuse``.
"""

from tiled.catalog.migrations.refuse import refuse_downgrade, refuse_upgrade

revision = "45a702586b2a"
down_revision = "ed3a4223a600"
branch_labels = None
depends_on = None


def upgrade() -> None:
    refuse_upgrade(revision)


def downgrade() -> None:
    refuse_downgrade(revision)
