"""SQLAlchemy 2.0 models: the order store, its audit trail, ownership, positions and the outbox."""

from __future__ import annotations

import uuid
from datetime import datetime
from decimal import Decimal
from typing import Annotated, Any

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    DateTime,
    ForeignKey,
    Index,
    MetaData,
    Numeric,
    String,
    Text,
    UniqueConstraint,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import ARRAY, JSONB, UUID
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

# Stable constraint names keep Alembic migrations reproducible.
NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

BigId = Annotated[int, mapped_column(BigInteger, primary_key=True, autoincrement=True)]
Quantity = Annotated[Decimal, mapped_column(Numeric(24, 9))]
Price = Annotated[Decimal, mapped_column(Numeric(24, 9))]
Timestamp = Annotated[datetime, mapped_column(server_default=func.now())]
Json = Annotated[dict[str, Any], mapped_column(JSONB, server_default=text("'{}'::jsonb"))]


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map = {datetime: DateTime(timezone=True)}


class Strategy(Base):
    __tablename__ = "strategies"
    __table_args__ = (CheckConstraint("horizon IN ('short', 'medium', 'long')", name="horizon"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    display_name: Mapped[str] = mapped_column(String(128))
    priority: Mapped[int]
    horizon: Mapped[str] = mapped_column(String(8))
    active: Mapped[bool] = mapped_column(server_default=text("true"))
    config: Mapped[Json]
    created_at: Mapped[Timestamp]
    updated_at: Mapped[Timestamp]


class Order(Base):
    __tablename__ = "orders"
    __table_args__ = (
        UniqueConstraint("strategy_name", "signal_id", name="uq_orders_strategy_signal"),
        CheckConstraint("quantity > 0", name="quantity_positive"),
        CheckConstraint(
            "state IN ('IDLE', 'SIGNAL_RECEIVED', 'VALIDATING', 'ORDER_PENDING', 'ORDER_SENT', "
            "'PARTIAL_FILLED', 'FULLY_FILLED', 'CANCELLED', 'REJECTED', 'FAILED')",
            name="state",
        ),
        CheckConstraint("filled_quantity >= 0", name="filled_not_negative"),
        Index("ix_orders_state", "state"),
        Index("ix_orders_strategy_state", "strategy_id", "state"),
        Index("ix_orders_ticker", "ticker", "id"),
        Index("ix_orders_strategy_created", "strategy_name", "created_at"),
        Index(
            "ix_orders_needs_review",
            "id",
            postgresql_where=text("needs_manual_review"),
        ),
    )

    id: Mapped[BigId]
    client_order_id: Mapped[str] = mapped_column(String(128), unique=True)
    brokerage_order_id: Mapped[str | None] = mapped_column(String(64), unique=True)
    # A signal from an unknown strategy is still recorded (REJECTED), hence the name column.
    strategy_id: Mapped[int | None] = mapped_column(ForeignKey("strategies.id"))
    strategy_name: Mapped[str] = mapped_column(String(64))
    signal_id: Mapped[str] = mapped_column(String(128))
    # Empty only on a malformed signal, which is recorded REJECTED with its raw payload.
    ticker: Mapped[str | None] = mapped_column(String(16))
    side: Mapped[str | None] = mapped_column(String(4))
    quantity: Mapped[Decimal | None] = mapped_column(Numeric(24, 9))
    order_type: Mapped[str] = mapped_column(String(8), server_default="market")
    limit_price: Mapped[Decimal | None] = mapped_column(Numeric(24, 9))
    time_in_force: Mapped[str] = mapped_column(String(8), server_default="day")
    state: Mapped[str] = mapped_column(String(20))
    filled_quantity: Mapped[Quantity] = mapped_column(server_default="0")
    avg_fill_price: Mapped[Decimal | None] = mapped_column(Numeric(24, 9))
    order_metadata: Mapped[Json]
    needs_manual_review: Mapped[bool] = mapped_column(server_default=text("false"))
    reason: Mapped[str | None] = mapped_column(Text)
    conflict_check_passed: Mapped[bool | None]
    conflict_reasoning: Mapped[str | None] = mapped_column(Text)
    submit_attempts: Mapped[int] = mapped_column(server_default="0")
    last_submit_at: Mapped[datetime | None]
    created_at: Mapped[Timestamp]
    updated_at: Mapped[Timestamp]
    version: Mapped[int] = mapped_column(server_default="1")

    __mapper_args__ = {"version_id_col": version}


class OrderTransition(Base):
    """The audit trail: one row per state change, written with the change."""

    __tablename__ = "order_transitions"

    id: Mapped[BigId]
    order_id: Mapped[int] = mapped_column(ForeignKey("orders.id"), index=True)
    from_state: Mapped[str] = mapped_column(String(20))
    to_state: Mapped[str] = mapped_column(String(20))
    reason: Mapped[str | None] = mapped_column(Text)
    actor: Mapped[str] = mapped_column(String(128))
    # core.states.TransitionCause: why the order moved (behaviour keys on this, not on actor).
    cause: Mapped[str] = mapped_column(String(32))
    created_at: Mapped[datetime] = mapped_column(server_default=func.clock_timestamp())


class TickerOwnership(Base):
    """Who owns a ticker. Released rows stay as history; at most one live owner per ticker."""

    __tablename__ = "ticker_ownership"
    __table_args__ = (
        Index(
            "uq_ticker_ownership_one_owner",
            "ticker",
            unique=True,
            postgresql_where=text("released_at IS NULL"),
        ),
        Index("ix_ticker_ownership_strategy", "strategy_id"),
    )

    id: Mapped[BigId]
    ticker: Mapped[str] = mapped_column(String(16))
    strategy_id: Mapped[int] = mapped_column(ForeignKey("strategies.id"))
    locked_until: Mapped[datetime | None]
    acquired_at: Mapped[datetime] = mapped_column(server_default=func.clock_timestamp())
    acquired_by_order_id: Mapped[int | None] = mapped_column(ForeignKey("orders.id"))
    released_at: Mapped[datetime | None]
    release_reason: Mapped[str | None] = mapped_column(Text)

    strategy: Mapped[Strategy] = relationship(lazy="joined")


class ConflictLog(Base):
    __tablename__ = "conflict_logs"
    __table_args__ = (
        CheckConstraint("length(trim(reasoning)) > 0", name="reasoning_not_empty"),
        CheckConstraint(
            "resolution IN ('allowed', 'blocked', 'priority_override')", name="resolution"
        ),
        Index("ix_conflict_logs_ticker", "ticker"),
    )

    id: Mapped[BigId]
    order_id: Mapped[int | None] = mapped_column(ForeignKey("orders.id"))
    ticker: Mapped[str] = mapped_column(String(16))
    requesting_strategy_id: Mapped[int] = mapped_column(ForeignKey("strategies.id"))
    owning_strategy_id: Mapped[int] = mapped_column(ForeignKey("strategies.id"))
    requesting_priority: Mapped[int]
    owning_priority: Mapped[int]
    action: Mapped[str] = mapped_column(String(4))
    resolution: Mapped[str] = mapped_column(String(20))
    reasoning: Mapped[str] = mapped_column(Text)
    created_at: Mapped[Timestamp]

    requesting_strategy: Mapped[Strategy] = relationship(
        foreign_keys=[requesting_strategy_id], lazy="joined"
    )
    owning_strategy: Mapped[Strategy] = relationship(
        foreign_keys=[owning_strategy_id], lazy="joined"
    )


class Position(Base):
    __tablename__ = "positions"
    __table_args__ = (
        UniqueConstraint("strategy_id", "ticker", name="uq_positions_strategy_ticker"),
    )

    id: Mapped[BigId]
    strategy_id: Mapped[int] = mapped_column(ForeignKey("strategies.id"))
    ticker: Mapped[str] = mapped_column(String(16))
    quantity: Mapped[Quantity] = mapped_column(server_default="0")
    avg_cost: Mapped[Price] = mapped_column(server_default="0")
    realized_pnl: Mapped[Price] = mapped_column(server_default="0")
    created_at: Mapped[Timestamp]
    updated_at: Mapped[Timestamp]

    strategy: Mapped[Strategy] = relationship(lazy="joined")


class Fill(Base):
    """A fill applied to an order and a position. `fill_key` makes applying it idempotent."""

    __tablename__ = "fills"

    id: Mapped[BigId]
    order_id: Mapped[int] = mapped_column(ForeignKey("orders.id"), index=True)
    fill_key: Mapped[str] = mapped_column(String(160), unique=True)
    quantity: Mapped[Quantity]
    price: Mapped[Price]
    filled_at: Mapped[datetime | None]
    created_at: Mapped[Timestamp]


class EventRecord(Base):
    """Outbox and durable history in one: written in the transaction of the change it
    describes, published after commit; `published_at` empty means the relay still owes it."""

    __tablename__ = "events"
    __table_args__ = (
        Index("ix_events_unpublished", "seq", postgresql_where=text("published_at IS NULL")),
        Index("ix_events_type_seq", "type", "seq"),
        Index("ix_events_order_seq", "order_id", "seq"),
        Index("ix_events_strategy_seq", "strategy", "seq"),
        Index("ix_events_ticker_seq", "ticker", "seq"),
        Index("ix_events_occurred_at", "occurred_at"),
    )

    seq: Mapped[BigId]
    id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), unique=True)
    type: Mapped[str] = mapped_column(String(40))
    occurred_at: Mapped[datetime]
    source: Mapped[str] = mapped_column(String(64))
    order_id: Mapped[int | None] = mapped_column(BigInteger)
    client_order_id: Mapped[str | None] = mapped_column(String(128))
    strategy: Mapped[str | None] = mapped_column(String(64))
    ticker: Mapped[str | None] = mapped_column(String(16))
    payload: Mapped[Json]
    schema_version: Mapped[int]
    published_at: Mapped[datetime | None]


class ReviewItem(Base):
    """Something Arbiter could not settle on its own: a human decides."""

    __tablename__ = "review_items"
    __table_args__ = (
        Index("ix_review_items_open", "id", postgresql_where=text("resolved_at IS NULL")),
    )

    id: Mapped[BigId]
    kind: Mapped[str] = mapped_column(String(20))
    order_id: Mapped[int | None] = mapped_column(ForeignKey("orders.id"))
    ticker: Mapped[str | None] = mapped_column(String(16))
    reason: Mapped[str] = mapped_column(Text)
    details: Mapped[Json]
    created_at: Mapped[Timestamp]
    resolved_at: Mapped[datetime | None]
    resolution_note: Mapped[str | None] = mapped_column(Text)


class SystemFlag(Base):
    """Operator switches whose source of truth is Postgres (the kill switch)."""

    __tablename__ = "system_flags"

    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[Json]
    updated_at: Mapped[Timestamp]


class NotificationRule(Base):
    """Which events go to which Apprise URL. `origin` is `operator` for rules added by hand and
    `env` for the defaults that ARBITER_NOTIFY_URLS gives while no operator rule exists."""

    __tablename__ = "notification_rules"

    id: Mapped[BigId]
    event_types: Mapped[list[str]] = mapped_column(ARRAY(String(40)))
    strategy: Mapped[str | None] = mapped_column(String(64))
    ticker: Mapped[str | None] = mapped_column(String(16))
    url: Mapped[str] = mapped_column(Text)  # holds secrets: never logged, shown masked
    origin: Mapped[str] = mapped_column(String(16), server_default=text("'operator'"))
    created_at: Mapped[Timestamp]


class NotificationDelivery(Base):
    """One (rule, event) to deliver: the unique pair makes delivery at-least-once without
    duplicates. `held` rows wait for the rule's next digest."""

    __tablename__ = "notification_deliveries"
    __table_args__ = (
        UniqueConstraint("rule_id", "event_id", name="uq_notification_deliveries_rule_event"),
        CheckConstraint(
            "status IN ('pending', 'sending', 'sent', 'failed', 'held')", name="status"
        ),
        Index("ix_notification_deliveries_status", "status", "id"),
        Index("ix_notification_deliveries_rule_created", "rule_id", "created_at"),
    )

    id: Mapped[BigId]
    rule_id: Mapped[int] = mapped_column(
        ForeignKey("notification_rules.id", ondelete="CASCADE")
    )
    event_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True))
    event_type: Mapped[str] = mapped_column(String(40))
    status: Mapped[str] = mapped_column(String(10), server_default=text("'pending'"))
    attempts: Mapped[int] = mapped_column(server_default=text("0"))
    last_error: Mapped[str | None] = mapped_column(Text)
    title: Mapped[str] = mapped_column(Text)
    body: Mapped[str] = mapped_column(Text)
    kind: Mapped[str] = mapped_column(String(10), server_default=text("'info'"))
    in_digest: Mapped[bool] = mapped_column(server_default=text("false"))
    created_at: Mapped[Timestamp]
    updated_at: Mapped[Timestamp]
    sent_at: Mapped[datetime | None]


class ApiToken(Base):
    """A web API token. Only the SHA-256 of the token is kept; the token is shown once."""

    __tablename__ = "api_tokens"
    __table_args__ = (
        CheckConstraint("scope IN ('read', 'trade', 'admin')", name="scope"),
        Index(
            "uq_api_tokens_live_name",
            "name",
            unique=True,
            postgresql_where=text("revoked_at IS NULL"),
        ),
    )

    id: Mapped[BigId]
    name: Mapped[str] = mapped_column(String(64))
    scope: Mapped[str] = mapped_column(String(8))
    # A trade token may be bound to one strategy: it may then send only that strategy's signals.
    strategy: Mapped[str | None] = mapped_column(String(64))
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[Timestamp]
    last_used_at: Mapped[datetime | None]
    revoked_at: Mapped[datetime | None]


class WebSession(Base):
    """A dashboard sign-in: the cookie holds a random id whose SHA-256 is the key here."""

    __tablename__ = "web_sessions"

    id_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    token_id: Mapped[int] = mapped_column(ForeignKey("api_tokens.id"), index=True)
    csrf_token: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[Timestamp]
    expires_at: Mapped[datetime]

    token: Mapped[ApiToken] = relationship(lazy="joined")
