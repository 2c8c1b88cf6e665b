"""Add webhooks tables (upstream revision 85a47342e78e).

- ``webhooks``: a URL notified of events on a node and its descendants (id, node_id
  cascading from nodes, url, secret, events JSON, active default true, timestamps), indexed by
  node_id;
- ``webhook_deliveries``: each delivery attempt (webhook_id cascading from webhooks, event id
  and type, payload JSON, status code, attempts default 0, delivered_at, outcome default
  'pending', error detail, timestamps), indexed by webhook_id and by event_id.

Tables already there (made by a release's models) are left as they are. Downgrade is refused.
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

from tiled.catalog.migrations.refuse import refuse_downgrade
from tiled.catalog.migrations.support import create_index, table_names

revision = "85a47342e78e"
down_revision = "4cf6011a8db5"
branch_labels = None
depends_on = None

JSON = sa.JSON().with_variant(JSONB(), "postgresql")


def _timestamps() -> list[sa.Column]:
    return [
        sa.Column(name, sa.DateTime(timezone=False), server_default=sa.func.now())
        for name in ("time_created", "time_updated")
    ]


def upgrade() -> None:
    existing = table_names()
    if "webhooks" not in existing:
        op.create_table(
            "webhooks",
            sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
            sa.Column(
                "node_id", sa.Integer, sa.ForeignKey("nodes.id", ondelete="CASCADE"),
                nullable=False,
            ),
            sa.Column("url", sa.Unicode(2048), nullable=False),
            sa.Column("secret", sa.Unicode(512), nullable=True),
            sa.Column("events", JSON, nullable=True),
            sa.Column("active", sa.Boolean, nullable=False, server_default=sa.text("true")),
            *_timestamps(),
        )  # fmt: skip
    if "webhook_deliveries" not in existing:
        op.create_table(
            "webhook_deliveries",
            sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
            sa.Column(
                "webhook_id", sa.Integer, sa.ForeignKey("webhooks.id", ondelete="CASCADE"),
                nullable=False,
            ),
            sa.Column("event_id", sa.Unicode(128), nullable=False),
            sa.Column("event_type", sa.Unicode(128), nullable=False),
            sa.Column("payload", JSON, nullable=False),
            sa.Column("status_code", sa.Integer, nullable=True),
            sa.Column("attempts", sa.Integer, nullable=False, server_default=sa.text("0")),
            sa.Column("delivered_at", sa.DateTime(timezone=False), nullable=True),
            sa.Column(
                "outcome", sa.Unicode(16), nullable=False, server_default=sa.text("'pending'")
            ),
            sa.Column("error_detail", sa.Unicode(4096), nullable=True),
            *_timestamps(),
        )  # fmt: skip
    create_index("ix_webhooks_node_id", "webhooks", ["node_id"])
    create_index("ix_webhook_deliveries_webhook_id", "webhook_deliveries", ["webhook_id"])
    create_index("ix_webhook_deliveries_event_id", "webhook_deliveries", ["event_id"])


def downgrade() -> None:
    refuse_downgrade(revision)
