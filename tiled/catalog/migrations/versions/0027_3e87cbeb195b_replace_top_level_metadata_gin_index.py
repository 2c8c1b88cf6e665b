"""Replace the top-level metadata index (upstream revision 3e87cbeb195b).

The wide index ``top_level_metadata`` (parent, time_created, id, metadata, access_blob), a GIN
index on PostgreSQL, is dropped where it is left. PostgreSQL gets ``ix_nodes_metadata``, a GIN
index over ``metadata`` with ``jsonb_path_ops`` for containment filters; SQLite searches
metadata another way and gets no replacement. Downgrade is refused.
"""

from tiled.catalog.migrations.refuse import refuse_downgrade
from tiled.catalog.migrations.support import create_index, drop_indexes, is_postgresql

revision = "3e87cbeb195b"
down_revision = "0d4e1f2a3b4c"
branch_labels = None
depends_on = None


def upgrade() -> None:
    drop_indexes("top_level_metadata")
    if is_postgresql():
        create_index(
            "ix_nodes_metadata", "nodes", ["metadata"],
            postgresql_using="gin", postgresql_ops={"metadata": "jsonb_path_ops"},
        )  # fmt: skip


def downgrade() -> None:
    refuse_downgrade(revision)
