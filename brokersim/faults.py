"""Fault knobs, settable at start and at run time. Rates draw from a seeded generator; counts
hit the next N requests exactly, which is what deterministic tests want."""

from __future__ import annotations

import random
import threading
from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field


class Fault(StrEnum):
    ERROR = "error"  # 503 before doing anything
    GARBAGE = "garbage"  # 200 with a body that is not JSON
    ACCEPT_THEN_TIMEOUT = "accept_then_timeout"  # store the order, then stall the response


class FaultSettings(BaseModel):
    """What /admin/faults reads and writes. Every field is optional on POST."""

    model_config = ConfigDict(extra="forbid")

    latency_ms: int = Field(default=0, ge=0)
    error_rate: float = Field(default=0.0, ge=0.0, le=1.0)
    error_count: int = Field(default=0, ge=0)
    garbage_rate: float = Field(default=0.0, ge=0.0, le=1.0)
    garbage_count: int = Field(default=0, ge=0)
    accept_then_timeout_rate: float = Field(default=0.0, ge=0.0, le=1.0)
    accept_then_timeout_count: int = Field(default=0, ge=0)
    hang_ms: int = Field(default=30_000, ge=0)
    fills_paused: bool = False
    # The trade_updates websocket refuses new connections (and /admin/faults drops the open
    # ones when this turns on).
    stream_down: bool = False
    # Symbols (fnmatch patterns, e.g. "NOPX*") with no market data: latest trade/quote omit them.
    no_price: list[str] = Field(default_factory=list)


class Faults:
    """The live knobs. `draw` decides, once per request, which fault (if any) strikes."""

    def __init__(self, settings: FaultSettings, seed: int) -> None:
        self._lock = threading.Lock()
        self._settings = settings
        self._rng = random.Random(seed)

    @property
    def settings(self) -> FaultSettings:
        with self._lock:
            return self._settings

    def update(self, changes: dict[str, object]) -> FaultSettings:
        with self._lock:
            merged = {**self._settings.model_dump(), **changes}
            self._settings = FaultSettings.model_validate(merged)
            return self._settings

    def draw(self, *, order_submission: bool) -> Fault | None:
        """Errors and garbage apply to every /v2 request; accept-then-timeout only to new orders."""
        with self._lock:
            s = self._settings
            if s.error_count > 0:
                self._settings = s.model_copy(update={"error_count": s.error_count - 1})
                return Fault.ERROR
            if s.error_rate and self._rng.random() < s.error_rate:
                return Fault.ERROR
            if s.garbage_count > 0:
                self._settings = s.model_copy(update={"garbage_count": s.garbage_count - 1})
                return Fault.GARBAGE
            if s.garbage_rate and self._rng.random() < s.garbage_rate:
                return Fault.GARBAGE
            if not order_submission:
                return None
            if s.accept_then_timeout_count > 0:
                left = s.accept_then_timeout_count - 1
                self._settings = s.model_copy(update={"accept_then_timeout_count": left})
                return Fault.ACCEPT_THEN_TIMEOUT
            if s.accept_then_timeout_rate and self._rng.random() < s.accept_then_timeout_rate:
                return Fault.ACCEPT_THEN_TIMEOUT
            return None
