"""Add node_id index in data_sources table (upstream revision 7809873ea2c7).

A revision from before upstream 0.2.0: databases this old are upgraded with upstream's
own `tiled catalog upgrade-database` (any 0.2.x release) first; see
``tiled.catalog.migrations.refuse``.
"""

from tiled.catalog.migrations.refuse import refuse_downgrade, refuse_upgrade

revision = "7809873ea2c7"
down_revision = "9331ed94d6ac"
branch_labels = None
depends_on = None


def upgrade() -> None:
    refuse_upgrade(revision)


def downgrade() -> None:
    refuse_downgrade(revision)
