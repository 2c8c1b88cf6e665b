"""Add table to structurefamily enum (upstream revision 83889e049ddc).

A revision from before upstream 0.2.0: databases this old are upgraded with upstream's
own `tiled catalog upgrade-database` (any 0.2.x release) first; see
``tiled.catalog.migrations.refuse``.
"""

from tiled.catalog.migrations.refuse import refuse_downgrade, refuse_upgrade

revision = "83889e049ddc"
down_revision = "6825c778aa3c"
branch_labels = None
depends_on = None


def upgrade() -> None:
    refuse_upgrade(revision)


def downgrade() -> None:
    refuse_downgrade(revision)
