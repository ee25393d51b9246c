"""order control: order types and classes, legs, replacements, cancel requests, protection

Revision ID: 0004
Revises: 0002
Create Date: 2026-11-29 19:10:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0002"
branch_labels: Sequence[str] | None = None
depends_on: Sequence[str] | None = None


def upgrade() -> None:
    op.alter_column("orders", "order_type", type_=sa.String(length=16), existing_nullable=False)
    op.add_column("orders", sa.Column("stop_price", sa.Numeric(24, 9), nullable=True))
    op.add_column("orders", sa.Column("trail_price", sa.Numeric(24, 9), nullable=True))
    op.add_column("orders", sa.Column("trail_percent", sa.Numeric(12, 6), nullable=True))
    op.add_column(
        "orders",
        sa.Column("order_class", sa.String(length=8), server_default="simple", nullable=False),
    )
    op.add_column("orders", sa.Column("parent_order_id", sa.BigInteger(), nullable=True))
    op.add_column("orders", sa.Column("leg_role", sa.String(length=16), nullable=True))
    op.add_column("orders", sa.Column("replaces_order_id", sa.BigInteger(), nullable=True))
    op.add_column(
        "orders",
        sa.Column("protective", sa.Boolean(), server_default=sa.text("false"), nullable=False),
    )
    op.add_column(
        "orders", sa.Column("cancel_requested_at", sa.DateTime(timezone=True), nullable=True)
    )
    op.add_column(
        "orders", sa.Column("cancel_requested_by", sa.String(length=128), nullable=True)
    )
    op.create_foreign_key(
        op.f("fk_orders_parent_order_id_orders"), "orders", "orders", ["parent_order_id"], ["id"]
    )
    op.create_foreign_key(
        op.f("fk_orders_replaces_order_id_orders"),
        "orders",
        "orders",
        ["replaces_order_id"],
        ["id"],
    )
    op.create_index(op.f("ix_orders_parent_order_id"), "orders", ["parent_order_id"])
    op.create_index(op.f("ix_orders_replaces_order_id"), "orders", ["replaces_order_id"])


def downgrade() -> None:
    op.drop_index(op.f("ix_orders_replaces_order_id"), table_name="orders")
    op.drop_index(op.f("ix_orders_parent_order_id"), table_name="orders")
    op.drop_constraint(op.f("fk_orders_replaces_order_id_orders"), "orders", type_="foreignkey")
    op.drop_constraint(op.f("fk_orders_parent_order_id_orders"), "orders", type_="foreignkey")
    for column in (
        "cancel_requested_by",
        "cancel_requested_at",
        "protective",
        "replaces_order_id",
        "leg_role",
        "parent_order_id",
        "order_class",
        "trail_percent",
        "trail_price",
        "stop_price",
    ):
        op.drop_column("orders", column)
    op.alter_column("orders", "order_type", type_=sa.String(length=8), existing_nullable=False)
