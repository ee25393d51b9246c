"""Settings from the environment (prefix ARBITER_), built once at start-up and handed in."""

from __future__ import annotations

import ipaddress
import re
from decimal import Decimal
from functools import lru_cache
from pathlib import Path
from urllib.parse import urlparse

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

# Development credentials that the bundled brokerage simulator accepts out of the box.
DEV_BROKERAGE_KEY = "arbiter-dev-key"
DEV_BROKERAGE_SECRET = "arbiter-dev-secret"
DEV_BROKERAGE_URL = "http://127.0.0.1:8765"


DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"


def is_loopback_host(host: str) -> bool:
    """True for `localhost` and any loopback address (127.0.0.0/8, ::1), by `ipaddress`; a name
    that merely starts with "127." (`127.evil.example`) is not one."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="ARBITER_", extra="ignore")

    # Infrastructure. Empty URLs mean "embedded": `arbiter up` starts Postgres and Redis locally.
    database_url: str | None = None
    redis_url: str | None = None
    # The Celery broker: empty means the Redis above; `amqp://` selects RabbitMQ (Redis stays
    # the event bus, lock and lease store).
    broker_url: str | None = None
    data_dir: Path = Path(".arbiter")
    event_channel_prefix: str = "arbiter.events"

    # Brokerage (Alpaca Trading API v2 or the bundled simulator).
    brokerage_url: str = DEV_BROKERAGE_URL
    brokerage_key: str = DEV_BROKERAGE_KEY
    brokerage_secret: str = DEV_BROKERAGE_SECRET
    brokerage_timeout_s: float = Field(default=5.0, gt=0)
    # Market data for reference prices (latest trade, else quote mid); empty: the brokerage
    # URL (the simulator serves both). Alpaca's own is https://data.alpaca.markets.
    market_data_url: str | None = None
    reference_price_ttl_s: float = Field(default=5.0, ge=0)
    # The trade_updates websocket; empty: derived from brokerage_url (http -> ws, + /stream).
    brokerage_stream_url: str | None = None
    stream_lease_ttl_s: float = Field(default=5.0, gt=0)  # a dead consumer's standby waits this

    # Pre-trade risk defaults; a strategy's config may override each one.
    max_order_quantity: Decimal = Decimal("10000")
    max_order_notional: Decimal = Decimal("250000")
    max_open_orders_per_strategy: int = 500
    max_signals_per_minute: int = 600

    # Intake bounds, checked before anything is written (README "Bounds under a flood"): per
    # strategy, and for everything that names no known, authenticated strategy together.
    intake_max_per_minute: int = Field(default=1200, gt=0)
    intake_max_untrusted_per_minute: int = Field(default=60, gt=0)
    # A signed signal older than this (by the database's clock) is refused as stale.
    signal_max_age_s: float = Field(default=3600.0, gt=0)
    # A lost signal resent this often and still not recorded goes to review (a dead letter).
    pending_max_resends: int = Field(default=5, gt=0)

    # Celery.
    task_time_limit_s: int = Field(default=120, gt=0)
    visibility_timeout_s: int = Field(default=3600, gt=0)
    submit_max_retries: int = Field(default=5, ge=0)
    task_events: bool = False  # Celery task events from the start (Flower enables them itself)

    # Beat schedule and recovery.
    reconcile_interval_s: float = 5.0
    recover_stalled_interval_s: float = 15.0
    reconcile_positions_interval_s: float = 60.0
    relay_interval_s: float = 2.0
    relay_min_age_s: float = 2.0  # younger unpublished events are still being marked
    expire_locks_interval_s: float = 60.0
    stalled_after_s: float = 30.0
    never_received_grace_s: float = 60.0
    event_retention_days: int = Field(default=90, ge=0)  # 0 keeps the history forever
    purge_events_interval_s: float = Field(default=3600.0, gt=0)

    # Notifications (Apprise URLs hold secrets: never logged, shown masked).
    notify_urls: str = ""  # comma separated: default rules for the important event types
    notify_dispatch_interval_s: float = Field(default=2.0, gt=0)
    notify_digest_after: int = Field(default=5, ge=1)  # per rule per minute, then one digest
    notify_max_retries: int = Field(default=5, ge=0)
    notify_timeout_s: float = Field(default=10.0, gt=0)
    daily_report_at: str | None = None  # "HH:MM" UTC; off when unset

    # Operations.
    log_json: bool = False
    log_level: str = "INFO"
    flower_user: str | None = None
    flower_password: str | None = None

    # The web API and dashboard (`arbiter web`). Loopback unless told otherwise.
    web_host: str = "127.0.0.1"
    web_port: int = Field(default=8000, ge=1, le=65535)
    web_cors_origins: list[str] = Field(default_factory=list)  # none: no CORS at all
    web_secure_cookies: bool = False  # set behind HTTPS: the session cookie gets `Secure`
    web_session_hours: float = Field(default=12.0, gt=0)

    @property
    def trade_stream_url(self) -> str:
        """The trade_updates websocket: ARBITER_BROKERAGE_STREAM_URL, else the brokerage URL
        with ws(s):// and /stream (as Alpaca's paper-api.alpaca.markets/stream)."""
        if self.brokerage_stream_url:
            return self.brokerage_stream_url
        parts = urlparse(self.brokerage_url.rstrip("/"))
        scheme = "wss" if parts.scheme == "https" else "ws"
        path = parts.path.removesuffix("/v2")
        return parts._replace(scheme=scheme, path=f"{path}/stream").geturl()

    @field_validator("daily_report_at")
    @classmethod
    def _hh_mm(cls, value: str | None) -> str | None:
        if value in (None, ""):
            return None
        if not re.fullmatch(r"([01]\d|2[0-3]):[0-5]\d", value):
            raise ValueError("ARBITER_DAILY_REPORT_AT must be HH:MM (UTC), e.g. 21:30")
        return value

    @model_validator(mode="after")
    def _no_dev_keys_off_loopback(self) -> Settings:
        host = urlparse(self.brokerage_url).hostname or ""
        local = is_loopback_host(host)
        dev_keys = DEV_BROKERAGE_KEY in (self.brokerage_key, self.brokerage_secret) or (
            DEV_BROKERAGE_SECRET in (self.brokerage_key, self.brokerage_secret)
        )
        if dev_keys and not local:
            raise ValueError(
                "ARBITER_BROKERAGE_KEY / ARBITER_BROKERAGE_SECRET are the simulator's development "
                f"defaults but ARBITER_BROKERAGE_URL points at {host}: set real keys"
            )
        return self

    @model_validator(mode="after")
    def _consistent(self) -> Settings:
        """Settings that only make sense together, refused at start-up with the reason."""
        backoff_max = retry_backoff_max_s(self.visibility_timeout_s)
        if self.visibility_timeout_s <= self.task_time_limit_s + backoff_max:
            raise ValueError(
                f"ARBITER_VISIBILITY_TIMEOUT_S ({self.visibility_timeout_s}) must exceed "
                f"ARBITER_TASK_TIME_LIMIT_S ({self.task_time_limit_s}) plus the longest retry "
                f"backoff ({backoff_max} s), or a running or retrying task is delivered twice"
            )
        # Each attempt refreshes last_submit_at (by the database's clock) and a retry looks
        # the order up before it POSTs, so one attempt is what the grace must outlast: its
        # POST (up to the brokerage timeout) and the brokerage still working on a request the
        # client gave up on (as long again).
        attempt_s = 2 * self.brokerage_timeout_s
        if self.never_received_grace_s <= attempt_s:
            raise ValueError(
                f"ARBITER_NEVER_RECEIVED_GRACE_S ({self.never_received_grace_s}) must exceed "
                f"twice ARBITER_BROKERAGE_TIMEOUT_S ({self.brokerage_timeout_s}), or an order "
                "whose submission is still on its way is failed as never received"
            )
        return self


def retry_backoff_max_s(visibility_timeout_s: int) -> int:
    """The longest backoff between task retries (tasks/pipeline.py), kept far below the
    visibility timeout so that a retry is never also redelivered."""
    return max(1, min(30, visibility_timeout_s // 3))


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
