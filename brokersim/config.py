"""The simulator's settings: one pydantic object built at start-up from CLI options and the
environment (prefix ARBITER_BROKERSIM_; keys from ARBITER_BROKERAGE_KEY / _SECRET)."""

from __future__ import annotations

from pathlib import Path

from pydantic import AliasChoices, Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from core.settings import DEV_BROKERAGE_KEY, DEV_BROKERAGE_SECRET


class SimConfig(BaseSettings):
    """How the simulator serves, stores, prices and fills. Fault knobs start from here too."""

    model_config = SettingsConfigDict(env_prefix="ARBITER_BROKERSIM_", extra="ignore")

    host: str = "127.0.0.1"
    port: int = Field(default=8765, ge=0, le=65535)
    data_dir: Path = Path(".arbiter/brokersim")
    api_key: str = Field(
        default=DEV_BROKERAGE_KEY,
        validation_alias=AliasChoices("ARBITER_BROKERAGE_KEY", "api_key"),
    )
    api_secret: str = Field(
        default=DEV_BROKERAGE_SECRET,
        validation_alias=AliasChoices("ARBITER_BROKERAGE_SECRET", "api_secret"),
    )

    # Prices and fills.
    seed: int = 42
    tick_ms: int = Field(default=20, gt=0, description="engine loop period")
    fill_latency_ms: int = Field(default=0, ge=0, description="0: fill inside POST /v2/orders")
    partial_slices: int = Field(default=1, ge=1, le=1000)
    reject_rate: float = Field(default=0.0, ge=0.0, le=1.0)
    day_length_s: float = Field(default=23_400.0, gt=0, description="day orders expire after")
    initial_cash: str = "1000000"

    # Fault knobs at start; change them at run time through /admin/faults.
    latency_ms: int = Field(default=0, ge=0)
    error_rate: float = Field(default=0.0, ge=0.0, le=1.0)
    accept_then_timeout_rate: float = Field(default=0.0, ge=0.0, le=1.0)
    garbage_rate: float = Field(default=0.0, ge=0.0, le=1.0)
    hang_ms: int = Field(default=30_000, ge=0, description="how long accept-then-timeout stalls")
    no_price: str = Field(default="", description="comma-separated symbol patterns with no data")
