"""Add a b-tree index on (parent, id) in nodes (upstream revision bf2fe0eb8ee8).

``ix_nodes_parent_id`` serves paging through a container's children in id order.
Downgrade is refused.
"""

from tiled.catalog.migrations.refuse import refuse_downgrade
from tiled.catalog.migrations.support import create_index

revision = "bf2fe0eb8ee8"
down_revision = "85a47342e78e"
branch_labels = None
depends_on = None


def upgrade() -> None:
    create_index("ix_nodes_parent_id", "nodes", ["parent", "id"])


def downgrade() -> None:
    refuse_downgrade(revision)
