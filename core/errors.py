"""Arbiter's errors, sorted by what the operator (or the caller) must do about them.

ArbiterError
├── InvalidInput            bad data from a caller: clear message, nothing written
│   ├── InvalidSignal       a malformed signal, naming the offending field
│   └── OrderNotOpen        cancel/replace of an order that is final (names its state)
├── InvalidTransition       a move the table forbids (bug or stale actor): nothing written
├── TransientError          the world hiccupped: retry with backoff
│   ├── BrokerageUnavailable        timeout, connection refused, 5xx, 429
│   └── NotificationFailed          a notification target refused or was unreachable
├── Rejected                a normal outcome, recorded on the order
│   └── BrokerageRejected           the brokerage refused the order (reason attached)
│       └── DuplicateClientOrderId  the brokerage already holds this client_order_id
└── OperationalError        stop and alert a human
    ├── BrokerageAuthError          bad credentials, account blocked
    └── BrokerageProtocolError      the brokerage answered something we cannot read
"""

from __future__ import annotations


class ArbiterError(Exception):
    """Root of every error Arbiter raises on purpose."""


class InvalidInput(ArbiterError, ValueError):
    """Caller supplied bad data. Nothing was written."""


class OrderNotOpen(InvalidInput):
    """Cancel or replace asked of an order that can no longer change (its state named)."""

    def __init__(self, order_ref: str, state: str, action: str = "cancel") -> None:
        super().__init__(f"cannot {action} order {order_ref}: it is {state}")
        self.order_ref = order_ref
        self.state = state


class InvalidSignal(InvalidInput):
    """A signal failed its shape check; `field` names the culprit."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


class InvalidTransition(ArbiterError):
    """A state move outside the transition table."""

    def __init__(self, from_state: object, to_state: object) -> None:
        source = getattr(from_state, "value", from_state)
        target = getattr(to_state, "value", to_state)
        super().__init__(f"{source} -> {target}")
        self.from_state = from_state
        self.to_state = to_state


class TransientError(ArbiterError):
    """Worth retrying with backoff."""


class BrokerageUnavailable(TransientError):
    """Timeout, connection error, 5xx or rate limit: the order's fate is unknown."""


class NotificationFailed(TransientError):
    """A notification could not be delivered (the message names the target masked)."""


class Rejected(ArbiterError):
    """A normal, recorded refusal."""


class BrokerageRejected(Rejected):
    """The brokerage refused the order."""

    def __init__(self, reason: str, status_code: int | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.status_code = status_code


class DuplicateClientOrderId(BrokerageRejected):
    """The brokerage already has an order with this client_order_id: look it up instead."""


class OperationalError(ArbiterError):
    """Needs a human: stop and alert."""


class BrokerageAuthError(OperationalError):
    """Credentials refused or account blocked."""


class BrokerageProtocolError(OperationalError):
    """The brokerage answered with something that does not parse."""
