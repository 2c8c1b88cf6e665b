"""Add the bytes structure family (upstream revision b93c79d197f4).

PostgreSQL: the enum type ``structurefamily`` gains 'bytes', placed after 'awkward'. SQLite
stores the family as text: nothing to change. Downgrade is refused (PostgreSQL cannot remove
an enum value).
"""

from tiled.catalog.migrations.refuse import refuse_downgrade
from tiled.catalog.migrations.support import is_postgresql, run

revision = "b93c79d197f4"
down_revision = "e8956581ecd5"
branch_labels = None
depends_on = None


def upgrade() -> None:
    if is_postgresql():
        run("ALTER TYPE structurefamily ADD VALUE IF NOT EXISTS 'bytes' AFTER 'awkward'")


def downgrade() -> None:
    refuse_downgrade(revision)
