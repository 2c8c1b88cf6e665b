"""Add properties to data sources (upstream revision 4cf6011a8db5).

``data_sources.properties``: JSON (JSONB on PostgreSQL), nullable, for what describes a data
source beyond its structure (chunking, for instance). Existing data sources get NULL, which
reads as no properties. (Upstream's script declares the column NOT NULL with a default of
``{}`` while upstream's models, and so a database made by a release, have it nullable; this
follows the models.)

Downgrade is refused.
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

from tiled.catalog.migrations.refuse import refuse_downgrade
from tiled.catalog.migrations.support import column_names

revision = "4cf6011a8db5"
down_revision = "a86a48befff6"
branch_labels = None
depends_on = None


def upgrade() -> None:
    if "properties" not in column_names("data_sources"):
        json = sa.JSON().with_variant(JSONB(), "postgresql")
        op.add_column("data_sources", sa.Column("properties", json, nullable=True))


def downgrade() -> None:
    refuse_downgrade(revision)
