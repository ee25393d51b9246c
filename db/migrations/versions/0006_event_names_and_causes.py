"""The stop-loss event's wire name is position_stop_loss_triggered.

Revision ID: 0006
Revises: 0001
"""

from __future__ import annotations

from alembic import op

revision = "0006"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        "UPDATE events SET type = 'position_stop_loss_triggered' "
        "WHERE type = 'stop_loss_triggered'"
    )


def downgrade() -> None:
    op.execute(
        "UPDATE events SET type = 'stop_loss_triggered' "
        "WHERE type = 'position_stop_loss_triggered'"
    )
