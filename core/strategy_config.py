"""A strategy's configuration, validated when it is written (CLI, web API), so that a bad
value is refused with its reason instead of raising inside validate or claim on every signal.

    {"ownership_lock_days": 30, "limits": {"max_order_quantity": 500}}
"""

from __future__ import annotations

from decimal import Decimal
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from core.errors import InvalidInput

# Integers must be integers (1e3 is not), decimals finite and within reason.
Count = Annotated[int, Field(strict=True, gt=0, le=1_000_000)]
Amount = Annotated[Decimal, Field(gt=0, lt=Decimal("1e12"), allow_inf_nan=False)]
MAX_LOCK_DAYS = 3650  # ten years: beyond this a lock is a typo


class StrategyLimits(BaseModel):
    """Overrides of the risk defaults (core/risk.py); absent keys keep the default."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_order_quantity: Amount | None = None
    max_order_notional: Amount | None = None
    max_open_orders: Count | None = None
    max_signals_per_minute: Count | None = None


class StrategyConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    ownership_lock_days: Annotated[float, Field(ge=0, le=MAX_LOCK_DAYS, allow_inf_nan=False)] = 0.0
    limits: StrategyLimits = StrategyLimits()

    @classmethod
    def parse(cls, raw: Any) -> StrategyConfig:
        """Validate a config; InvalidInput naming the first bad key otherwise."""
        if not isinstance(raw, dict):
            raise InvalidInput(f"strategy config must be an object, got {type(raw).__name__}")
        try:
            return cls.model_validate(raw)
        except ValidationError as exc:
            error = exc.errors()[0]
            where = ".".join(str(part) for part in error["loc"]) or "config"
            raise InvalidInput(f"strategy config {where}: {error['msg']}") from None

    def stored(self) -> dict[str, Any]:
        """The JSON kept in strategies.config (numbers as JSON numbers or strings)."""
        limits = {
            key: _json_number(value)
            for key, value in self.limits.model_dump(exclude_none=True).items()
        }
        days = float(self.ownership_lock_days)
        result: dict[str, Any] = {"ownership_lock_days": int(days) if days.is_integer() else days}
        if limits:
            result["limits"] = limits
        return result


def _json_number(value: Any) -> Any:
    """A whole Decimal as a JSON integer, a fraction as its exact string."""
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else str(value)
    return value
