"""The demo's four strategy processes and the seeded plan of signals they send.

Each default strategy runs in its own process and talks to Arbiter only through
`SignalClient(redis_url).submit_signal(...)`, as a user's strategy would. The plan is a pure
function of (number of signals, seed, run id):

- setup (sent first, settled before anything else): long_term buys NVDA and AAPL, trading
  buys TSLA, so the three conflict scenarios below find the owners they need;
- a steady stream over ten tickers: each strategy buys and trims its home tickers and now and
  then buys a ticker that a higher-priority strategy owns (a conflict: blocked);
- the three scenarios, early in the stream: trading sells 10 NVDA (blocked: long_term owns it,
  locked), long_term buys 100 TSLA (priority override), long_term sells 50 AAPL (its own).
"""

from __future__ import annotations

import random
import sys
import time
from dataclasses import asdict, dataclass
from multiprocessing.queues import Queue
from multiprocessing.synchronize import Event
from typing import Any

STRATEGIES = ("long_term", "dividend", "trading", "aggressive")
SCENARIO_TICKERS = ("NVDA", "TSLA", "AAPL")
HOME = {
    "long_term": ("MSFT", "GOOGL"),
    "dividend": ("KO", "JPM"),
    "trading": ("AMD", "META"),
    "aggressive": ("AMZN",),
}
TICKERS = (*SCENARIO_TICKERS, *(t for home in HOME.values() for t in home))
MIN_SIGNALS = 6


@dataclass(frozen=True)
class PlannedSignal:
    strategy: str
    signal_id: str
    ticker: str
    side: str
    quantity: int
    phase: str  # "setup" or "stream"
    scenario: str | None = None  # "blocked", "override", "own": the three conflict scenarios


SCENARIOS = (
    # (strategy, ticker, side, quantity, scenario, position in the strategy's stream)
    ("trading", "NVDA", "sell", 10, "blocked", 2),
    ("long_term", "TSLA", "buy", 100, "override", 2),
    ("long_term", "AAPL", "sell", 50, "own", 5),
)
SETUP = (("long_term", "NVDA", 20), ("long_term", "AAPL", 100), ("trading", "TSLA", 10))


def plan(total: int, seed: int, run_id: str) -> dict[str, list[PlannedSignal]]:
    """Exactly `total` signals (at least MIN_SIGNALS), per strategy, in sending order."""
    if total < MIN_SIGNALS:
        raise ValueError(f"the demo needs at least {MIN_SIGNALS} signals")
    plans: dict[str, list[PlannedSignal]] = {name: [] for name in STRATEGIES}
    for strategy, ticker, quantity in SETUP:
        plans[strategy].append(PlannedSignal(strategy, f"{run_id}-setup-{ticker.lower()}",
                                             ticker, "buy", quantity, "setup"))  # fmt: skip
    stream_total = total - len(SETUP) - len(SCENARIOS)
    for index, strategy in enumerate(STRATEGIES):
        count = stream_total // len(STRATEGIES) + (index < stream_total % len(STRATEGIES))
        stream = _stream(strategy, count, random.Random(seed * 31 + index), run_id)
        for owner, ticker, side, quantity, scenario, at in SCENARIOS:
            if owner == strategy:
                signal = PlannedSignal(strategy, f"{run_id}-scenario-{scenario}", ticker, side,
                                       quantity, "stream", scenario)  # fmt: skip
                stream.insert(min(at, len(stream)), signal)
        plans[strategy].extend(stream)
    return plans


def _stream(strategy: str, count: int, rng: random.Random, run_id: str) -> list[PlannedSignal]:
    """Buys of home tickers, trims of what was bought (at most half, a while later), and
    from the sixth signal on, an occasional buy of another strategy's home ticker."""
    home = HOME[strategy]
    # Only tickers of higher-priority owners: these buys are blocked, the override is left to
    # the TSLA scenario (an override would move a whole stream's ticker to another strategy).
    rank = STRATEGIES.index(strategy)
    others = [t for name in STRATEGIES[:rank] for t in HOME[name]]
    held: dict[str, int] = {}
    result = []
    for i in range(count):
        roll = rng.random()
        sellable = [t for t, q in held.items() if q >= 2]
        if i >= 5 and others and roll < 0.08:
            ticker, side, quantity = rng.choice(others), "buy", rng.randint(1, 10)
        elif i >= 5 and roll < 0.35 and sellable:
            ticker = rng.choice(sellable)
            side, quantity = "sell", rng.randint(1, held[ticker] // 2)
            held[ticker] -= quantity
        else:
            ticker, side, quantity = rng.choice(home), "buy", rng.randint(2, 20)
            held[ticker] = held.get(ticker, 0) + quantity
        result.append(PlannedSignal(strategy, f"{run_id}-{strategy}-{i:04d}", ticker, side,
                                    quantity, "stream"))  # fmt: skip
    return result


def run_strategy(
    strategy: str,
    redis_url: str,
    signals: list[dict[str, Any]],
    go: Event,
    progress: Queue[tuple[str, str, str | None]],
    pause_s: float,
    key: str,
) -> None:
    """Process body: send the setup signals, wait for `go`, then stream the rest at a steady
    pace. Reports ("sent", strategy, client_order_id), ("setup-done", ...), ("done", ...)."""
    sys.stdout = sys.stderr  # the parent's stdout may carry --json output
    from strategy_client.client import SignalClient

    client = SignalClient(redis_url, keys=key)
    try:
        planned = [PlannedSignal(**s) for s in signals]
        for signal in (s for s in planned if s.phase == "setup"):
            progress.put(("sent", strategy, _send(client, signal)))
        progress.put(("setup-done", strategy, None))
        if not go.wait(timeout=120):
            return
        for signal in (s for s in planned if s.phase == "stream"):
            progress.put(("sent", strategy, _send(client, signal)))
            time.sleep(pause_s)
    finally:
        progress.put(("done", strategy, None))
        client.close()


def _send(client: Any, signal: PlannedSignal) -> str:
    return str(client.submit_signal(signal.strategy, signal.ticker, signal.side, signal.quantity,
                                    signal_id=signal.signal_id))


def as_messages(signals: list[PlannedSignal]) -> list[dict[str, Any]]:
    return [asdict(s) for s in signals]
