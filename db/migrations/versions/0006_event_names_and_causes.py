"""The stop-loss event's wire name is position_stop_loss_triggered; every audit row records the
cause of its transition (core.states.TransitionCause); ticker ownership loses `is_primary`
(always true: one owner per ticker, enforced by a unique index on live rows).

Revision ID: 0006
Revises: 0004
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0004"
branch_labels = None
depends_on = None

# Rows written before causes were recorded: the cause inferred from the writer and the move.
_BACKFILL = """
UPDATE order_transitions SET cause = CASE
    WHEN reason LIKE 'correction:%' THEN 'correction'
    WHEN reason LIKE 'replacement of order %' THEN 'replacement'
    WHEN reason LIKE '% leg of order %' THEN 'brokerage_report'
    WHEN to_state = 'CANCELLED' AND reason LIKE 'cancelled by % before submission'
        THEN 'cancel_request'
    WHEN to_state = 'SIGNAL_RECEIVED' OR actor = 'arbiter.intake' THEN 'signal_intake'
    WHEN actor = 'arbiter.validate' THEN 'validation'
    WHEN actor = 'arbiter.check_conflict' THEN 'conflict_check'
    WHEN reason LIKE 'kill switch%' OR (actor = 'cli' AND to_state = 'CANCELLED'
                                       AND reason NOT LIKE 'manual review:%') THEN 'kill_switch'
    WHEN reason LIKE 'manual review:%' THEN 'operator'
    WHEN to_state = 'FAILED' AND actor <> 'arbiter.submit' THEN 'reconciliation'
    WHEN actor IN ('arbiter.submit', 'arbiter.reconcile_orders', 'arbiter.startup_recovery',
                   'cli.reconcile', 'arbiter.trade_stream', 'arbiter.cancel',
                   'arbiter.replace') THEN 'brokerage_report'
    ELSE 'operator'
END
"""


def _one_owner_index(name: str, where: str) -> None:
    """At most one live owner per ticker, enforced by the database."""
    op.create_index(
        name, "ticker_ownership", ["ticker"], unique=True, postgresql_where=sa.text(where)
    )


def upgrade() -> None:
    op.execute(
        "UPDATE events SET type = 'position_stop_loss_triggered' "
        "WHERE type = 'stop_loss_triggered'"
    )
    op.add_column("order_transitions", sa.Column("cause", sa.String(length=32), nullable=True))
    op.execute(_BACKFILL)
    op.alter_column("order_transitions", "cause", nullable=False)
    op.drop_index("uq_ticker_ownership_one_primary", table_name="ticker_ownership")
    op.drop_column("ticker_ownership", "is_primary")
    _one_owner_index("uq_ticker_ownership_one_owner", "released_at IS NULL")


def downgrade() -> None:
    op.drop_index("uq_ticker_ownership_one_owner", table_name="ticker_ownership")
    op.add_column(
        "ticker_ownership",
        sa.Column("is_primary", sa.Boolean(), server_default=sa.text("true"), nullable=False),
    )
    _one_owner_index("uq_ticker_ownership_one_primary", "is_primary AND released_at IS NULL")
    op.drop_column("order_transitions", "cause")
    # Stop-loss rows keep position_stop_loss_triggered: 0004's code writes that name too.
