"""Rename the table of access grants (upstream revision 917dbbcfc4b1).

``access_tag_principal_scopes_association`` becomes ``access_grants``; its primary key, its
two foreign keys and its index take the matching names (``access_grants_pkey``,
``fk_access_grants_access_tag``, ``fk_access_grants_principal``,
``ix_access_grants_principal_scope``). PostgreSQL renames them in place. SQLite keeps
constraint names inside the table's definition and cannot rename them, so the table is made
anew under its new name and the rows are copied (no other table refers to it).
Downgrade is refused.
"""

import sqlalchemy as sa
from alembic import op

from tiled.catalog.migrations.refuse import refuse_downgrade
from tiled.catalog.migrations.support import is_postgresql, run, table_names

revision = "917dbbcfc4b1"
down_revision = "3e87cbeb195b"
branch_labels = None
depends_on = None

OLD = "access_tag_principal_scopes_association"
NEW = "access_grants"
SCOPES = (
    "read:metadata", "read:data", "write:metadata", "write:data", "delete:revision",
    "delete:node", "create:node", "register", "metrics", "create:apikeys", "revoke:apikeys",
    "admin:apikeys", "read:principals", "write:principals", "read:webhooks", "write:webhooks",
)  # fmt: skip


def _rebuild_on_sqlite() -> None:
    op.create_table(
        NEW,
        sa.Column("tag_id", sa.Integer, nullable=False),
        sa.Column("principal_id", sa.Integer, nullable=False),
        sa.Column("scope", sa.Enum(*SCOPES, name="scope_name"), nullable=False),
        sa.PrimaryKeyConstraint("tag_id", "principal_id", "scope", name=f"{NEW}_pkey"),
        sa.ForeignKeyConstraint(["tag_id"], ["access_tags.id"], ondelete="CASCADE",
                                name=f"fk_{NEW}_access_tag"),
        sa.ForeignKeyConstraint(["principal_id"], ["access_tags_principals.id"],
                                ondelete="CASCADE", name=f"fk_{NEW}_principal"),
    )  # fmt: skip
    run(
        f"INSERT INTO {NEW} (tag_id, principal_id, scope) "
        f"SELECT tag_id, principal_id, scope FROM {OLD}"
    )
    op.drop_table(OLD)
    op.create_index(f"ix_{NEW}_principal_scope", NEW, ["principal_id", "scope", "tag_id"])


def upgrade() -> None:
    if OLD not in table_names():
        return  # made by models that already call it access_grants
    if not is_postgresql():
        _rebuild_on_sqlite()
        return
    op.rename_table(OLD, NEW)
    names = [(f"{OLD}_pkey", f"{NEW}_pkey")]
    names += [(f"fk_{OLD}_{end}", f"fk_{NEW}_{end}") for end in ("access_tag", "principal")]
    for old_name, new_name in names:
        run(f"ALTER TABLE {NEW} RENAME CONSTRAINT {old_name} TO {new_name}")
    run(f"ALTER INDEX ix_{OLD}_principal_scope RENAME TO ix_{NEW}_principal_scope")


def downgrade() -> None:
    refuse_downgrade(revision)
