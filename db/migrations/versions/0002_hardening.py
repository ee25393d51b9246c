"""hardening: a signing key per strategy, an index for the untrusted intake bucket

Revision ID: 0002
Revises: 0003
Create Date: 2026-11-29 19:20:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0003"
branch_labels: Sequence[str] | None = None
depends_on: Sequence[str] | None = None

# 64 hex digits from two random UUIDs (gen_random_uuid draws on pg_strong_random: 244 bits).
NEW_KEY = (
    "replace(gen_random_uuid()::text, '-', '') || replace(gen_random_uuid()::text, '-', '')"
)


def upgrade() -> None:
    op.add_column(
        "strategies",
        sa.Column("signing_key", sa.String(128), server_default=sa.text(NEW_KEY), nullable=False),
    )
    op.create_index(
        "ix_orders_untrusted_created",
        "orders",
        ["created_at"],
        postgresql_where=sa.text("strategy_id IS NULL"),
    )


def downgrade() -> None:
    op.drop_index("ix_orders_untrusted_created", table_name="orders")
    op.drop_column("strategies", "signing_key")
