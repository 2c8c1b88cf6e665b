"""Add the ragged structure family (upstream revision e8956581ecd5).

PostgreSQL: the enum type ``structurefamily`` gains 'ragged', placed after 'container'.
SQLite stores the family as text: nothing to change. The new value is not used in the same
transaction, which PostgreSQL 12 and later allow. Downgrade is refused (PostgreSQL cannot
remove an enum value).
"""

from tiled.catalog.migrations.refuse import refuse_downgrade
from tiled.catalog.migrations.support import is_postgresql, run

revision = "e8956581ecd5"
down_revision = "bf2fe0eb8ee8"
branch_labels = None
depends_on = None


def upgrade() -> None:
    if is_postgresql():
        run("ALTER TYPE structurefamily ADD VALUE IF NOT EXISTS 'ragged' AFTER 'container'")


def downgrade() -> None:
    refuse_downgrade(revision)
