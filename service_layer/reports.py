"""The conflict analysis report: what the conflict log, the orders, the fills and the positions
say about a period, as one JSON-able dict (money as decimal strings). Rendering it (Markdown,
HTML with charts) is arbiter/report_render.py's job.

P&L per strategy: realised as booked; unrealised from the reference price (the ticker's last
fill price); the part that arrived through ownership transfers; and an equity series (realised
P&L over time) replayed from the fills and transfers with the same arithmetic as the books.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import text
from sqlalchemy.orm import Session

from core.brokerage import Side
from core.notifications import Message
from core.positions import PositionState, apply_fill, merge
from db.engine import Database

ZERO = Decimal(0)


def _money(value: Any) -> str:
    value = Decimal(value or 0)
    return format(value.quantize(Decimal("0.01")), "f")


def _qty(value: Any) -> str:
    value = Decimal(value or 0).normalize()
    return format(value, "f")


def build_report(database: Database, since_days: float) -> dict[str, Any]:
    with database.sessions() as session, session.begin():
        since = session.scalar(
            text("SELECT now() - make_interval(secs => :s)"), {"s": since_days * 86400}
        )
        generated = session.scalar(text("SELECT now()"))
        args = {"since": since}
        replay = _replay(session)
        return {
            "generated_at": generated.isoformat(),
            "since": since.isoformat(),
            "period_days": since_days,
            "conflicts_by_strategy": _conflicts_by_strategy(session, args),
            "contested_tickers": _contested(session, args),
            "overrides": _overrides(session, args),
            "blocked": _blocked(session, args),
            "orders_by_strategy": _orders_by_strategy(session, args),
            "fills_by_strategy": _fills_by_strategy(session, args),
            "pnl": _pnl(session, replay),
            "equity": _equity(replay),
        }


def _rows(session: Session, sql: str, args: dict[str, Any]) -> list[dict[str, Any]]:
    return [dict(row._mapping) for row in session.execute(text(sql), args)]


def _conflicts_by_strategy(session: Session, args: dict[str, Any]) -> list[dict[str, Any]]:
    """Per requesting strategy: how its signals on other strategies' tickers were decided."""
    rows = _rows(
        session,
        """
        SELECT s.name AS strategy, c.resolution, count(*) AS n
        FROM conflict_logs c JOIN strategies s ON s.id = c.requesting_strategy_id
        WHERE c.created_at >= :since AND c.requesting_strategy_id <> c.owning_strategy_id
        GROUP BY 1, 2 ORDER BY 1, 2
        """,
        args,
    )
    table: dict[str, dict[str, int]] = defaultdict(
        lambda: {"blocked": 0, "priority_override": 0, "allowed": 0}
    )
    for row in rows:
        table[row["strategy"]][row["resolution"]] = int(row["n"])
    return [
        {"strategy": name, **counts, "total": sum(counts.values())}
        for name, counts in sorted(table.items())
    ]


def _contested(session: Session, args: dict[str, Any]) -> list[dict[str, Any]]:
    return [
        {**row, "conflicts": int(row["conflicts"]), "strategies": int(row["strategies"])}
        for row in _rows(
            session,
            """
            SELECT ticker, count(*) AS conflicts,
                   count(DISTINCT requesting_strategy_id) + 1 AS strategies,
                   count(*) FILTER (WHERE resolution = 'blocked') AS blocked,
                   count(*) FILTER (WHERE resolution = 'priority_override') AS overrides
            FROM conflict_logs
            WHERE created_at >= :since AND requesting_strategy_id <> owning_strategy_id
            GROUP BY ticker ORDER BY count(*) DESC, ticker LIMIT 10
            """,
            args,
        )
    ]


def _overrides(session: Session, args: dict[str, Any]) -> list[dict[str, Any]]:
    """Each priority override with the position it moved (from the transfer's event)."""
    rows = _rows(
        session,
        """
        SELECT c.created_at, c.ticker, r.name AS to_strategy, w.name AS from_strategy,
               c.requesting_priority, c.owning_priority, c.reasoning, c.order_id,
               (SELECT e.payload ->> 'position_moved' FROM events e
                 WHERE e.type = 'ownership_transferred' AND e.order_id = c.order_id
                 ORDER BY e.seq LIMIT 1) AS position_moved
        FROM conflict_logs c
        JOIN strategies r ON r.id = c.requesting_strategy_id
        JOIN strategies w ON w.id = c.owning_strategy_id
        WHERE c.created_at >= :since AND c.resolution = 'priority_override'
        ORDER BY c.id DESC LIMIT 200
        """,
        args,
    )
    for row in rows:
        row["created_at"] = row["created_at"].isoformat()
        row["position_moved"] = _qty(row["position_moved"])
    return rows


def _blocked(session: Session, args: dict[str, Any]) -> list[dict[str, Any]]:
    rows = _rows(
        session,
        """
        SELECT c.created_at, c.ticker, r.name AS strategy, w.name AS owner,
               c.requesting_priority, c.owning_priority, o.side, o.quantity, c.reasoning,
               c.order_id
        FROM conflict_logs c
        JOIN strategies r ON r.id = c.requesting_strategy_id
        JOIN strategies w ON w.id = c.owning_strategy_id
        LEFT JOIN orders o ON o.id = c.order_id
        WHERE c.created_at >= :since AND c.resolution = 'blocked'
        ORDER BY c.id DESC LIMIT 200
        """,
        args,
    )
    for row in rows:
        row["created_at"] = row["created_at"].isoformat()
        row["quantity"] = _qty(row["quantity"])
    return rows


def _orders_by_strategy(session: Session, args: dict[str, Any]) -> list[dict[str, Any]]:
    rows = _rows(
        session,
        """
        SELECT strategy_name AS strategy, state, count(*) AS n FROM orders
        WHERE created_at >= :since GROUP BY 1, 2 ORDER BY 1, 2
        """,
        args,
    )
    table: dict[str, dict[str, int]] = defaultdict(dict)
    for row in rows:
        table[row["strategy"]][row["state"]] = int(row["n"])
    return [
        {"strategy": name, "states": states, "total": sum(states.values())}
        for name, states in sorted(table.items())
    ]


def _fills_by_strategy(session: Session, args: dict[str, Any]) -> list[dict[str, Any]]:
    rows = _rows(
        session,
        """
        SELECT o.strategy_name AS strategy, count(*) AS fills, sum(f.quantity) AS quantity,
               sum(f.quantity * f.price) AS notional
        FROM fills f JOIN orders o ON o.id = f.order_id
        WHERE f.created_at >= :since GROUP BY 1 ORDER BY 1
        """,
        args,
    )
    return [
        {
            "strategy": row["strategy"],
            "fills": int(row["fills"]),
            "quantity": _qty(row["quantity"]),
            "notional": _money(row["notional"]),
        }
        for row in rows
    ]


def _reference_prices(session: Session) -> dict[str, Decimal]:
    """Each ticker's last fill price: the reference for unrealised P&L."""
    return {
        row.ticker: Decimal(row.price)
        for row in session.execute(
            text(
                """
                SELECT DISTINCT ON (o.ticker) o.ticker, f.price
                FROM fills f JOIN orders o ON o.id = f.order_id
                ORDER BY o.ticker, f.id DESC
                """
            )
        )
    }


@dataclass
class _Replay:
    books: dict[tuple[str, str], PositionState]
    transferred_in: dict[str, dict[str, Decimal]]
    series: dict[str, list[tuple[datetime, Decimal]]]


def _replay(session: Session) -> _Replay:
    """Fills and transfers in the order they happened, booked with the position arithmetic
    of core/positions.py: a transfer moves the whole position, as the books do."""
    steps = session.execute(
        text(
            """
            SELECT 'fill' AS kind, f.created_at AS at, f.id AS seq, o.strategy_name AS strategy,
                   o.ticker, o.side, f.quantity, f.price, NULL AS to_strategy
            FROM fills f JOIN orders o ON o.id = f.order_id
            UNION ALL
            SELECT 'transfer', e.occurred_at, e.seq,
                   coalesce(e.payload ->> 'from_strategy_name', e.payload ->> 'from_strategy'),
                   e.ticker, NULL, NULL, NULL, e.strategy
            FROM events e WHERE e.type = 'ownership_transferred'
            ORDER BY 2, 1, 3
            """
        )
    ).all()
    books: dict[tuple[str, str], PositionState] = defaultdict(PositionState)
    transferred: dict[str, dict[str, Decimal]] = defaultdict(
        lambda: {"quantity": ZERO, "cost": ZERO}
    )
    series: dict[str, list[tuple[datetime, Decimal]]] = defaultdict(list)
    realised: dict[str, Decimal] = defaultdict(lambda: ZERO)
    for step in steps:
        if step.kind == "fill":
            key = (step.strategy, step.ticker)
            before = books[key]
            books[key] = apply_fill(
                before, Side(step.side), Decimal(step.quantity), Decimal(step.price)
            )
            gained = books[key].realized_pnl - before.realized_pnl
            if gained:
                realised[step.strategy] += gained
                series[step.strategy].append((step.at, realised[step.strategy]))
        elif step.strategy and step.to_strategy and step.strategy != step.to_strategy:
            moved = books.pop((step.strategy, step.ticker), PositionState())
            books[(step.strategy, step.ticker)] = PositionState(
                realized_pnl=moved.realized_pnl
            )
            target = (step.to_strategy, step.ticker)
            books[target] = merge(books[target], moved)
            transferred[step.to_strategy]["quantity"] += moved.quantity
            transferred[step.to_strategy]["cost"] += moved.quantity * moved.avg_cost
    return _Replay(dict(books), dict(transferred), dict(series))


def _pnl(session: Session, replay: _Replay) -> list[dict[str, Any]]:
    prices = _reference_prices(session)
    per: dict[str, dict[str, Decimal]] = defaultdict(
        lambda: {"realised": ZERO, "unrealised": ZERO, "position_value": ZERO}
    )
    for row in session.execute(
        text(
            """
            SELECT s.name AS strategy, p.ticker, p.quantity, p.avg_cost, p.realized_pnl
            FROM positions p JOIN strategies s ON s.id = p.strategy_id
            """
        )
    ):
        book = per[row.strategy]
        book["realised"] += Decimal(row.realized_pnl)
        price = prices.get(row.ticker)
        if price is not None and row.quantity:
            book["unrealised"] += Decimal(row.quantity) * (price - Decimal(row.avg_cost))
            book["position_value"] += Decimal(row.quantity) * price
    names = sorted(set(per) | set(replay.transferred_in))
    return [
        {
            "strategy": name,
            "realised": _money(per[name]["realised"]),
            "unrealised": _money(per[name]["unrealised"]),
            "total": _money(per[name]["realised"] + per[name]["unrealised"]),
            "position_value": _money(per[name]["position_value"]),
            "transferred_in_quantity": _qty(replay.transferred_in.get(name, {}).get("quantity")),
            "transferred_in_cost": _money(replay.transferred_in.get(name, {}).get("cost")),
        }
        for name in names
    ]


def _equity(replay: _Replay) -> dict[str, list[dict[str, str]]]:
    """Realised P&L over time per strategy, one point per fill that realised something."""
    return {
        name: [{"at": at.isoformat(), "realised": _money(value)} for at, value in points]
        for name, points in sorted(replay.series.items())
    }


def report_message(report: dict[str, Any]) -> Message:
    """The report in a few lines, for a notification."""
    lines = [f"Arbiter report since {report['since'][:16].replace('T', ' ')} UTC"]
    for row in report["conflicts_by_strategy"]:
        lines.append(
            f"- {row['strategy']}: {row['blocked']} blocked, "
            f"{row['priority_override']} overrides"
        )
    if report["contested_tickers"]:
        top = ", ".join(
            f"{t['ticker']} ({t['conflicts']})" for t in report["contested_tickers"][:5]
        )
        lines.append(f"Most contested: {top}")
    for row in report["pnl"]:
        lines.append(
            f"- {row['strategy']} P&L: realised {row['realised']}, "
            f"unrealised {row['unrealised']}"
        )
    return Message("Arbiter: daily report", "\n".join(lines))
