"""GET /metrics: Prometheus text format, behind a `read` token.

Collected at scrape time: from Postgres (orders by state, signals accepted and rejected,
conflicts by resolution, open review items, outbox backlog and event lag, kill switch) and
from what the workers keep in Redis (reconciliation passes and mismatches, brokerage call
errors; see tasks/metrics.py), plus this process's open event streams. A registry per app,
so several apps in one process never clash. deploy/grafana/arbiter.json charts them.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import redis
from fastapi import APIRouter, Request
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector
from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError
from starlette.concurrency import run_in_threadpool

from core.states import OrderState
from tasks.metrics import BROKERAGE_ERRORS_KEY, RECONCILE_KEY
from web.auth import ReadAccess
from web.runtime import WebRuntime, runtime_of

router = APIRouter(tags=["metrics"])

_ORDERS = text("SELECT state, count(*) FROM orders GROUP BY state")
# A signal is accepted once it passed the risk rules and the conflict check (ORDER_PENDING),
# rejected when it was refused before reaching the brokerage.
_SIGNALS = text(
    "SELECT count(*) FILTER (WHERE to_state = 'ORDER_PENDING'),"
    " count(*) FILTER (WHERE to_state = 'REJECTED'"
    "                  AND from_state IN ('SIGNAL_RECEIVED', 'VALIDATING'))"
    " FROM order_transitions WHERE to_state IN ('ORDER_PENDING', 'REJECTED')"
)
_CONFLICTS = text("SELECT resolution, count(*) FROM conflict_logs GROUP BY resolution")
_REVIEW = text("SELECT count(*) FROM review_items WHERE resolved_at IS NULL")
_OUTBOX = text(
    "SELECT count(*), coalesce(extract(epoch FROM now() - min(occurred_at)), 0)"
    " FROM events WHERE published_at IS NULL"
)
_MISMATCH_EVENTS = text("SELECT count(*) FROM events WHERE type = 'reconciliation_mismatch'")
_KILL_SWITCH = text(
    "SELECT coalesce((value->>'on')::boolean, false) FROM system_flags WHERE key = 'kill_switch'"
)


class ArbiterCollector(Collector):
    def __init__(self, rt: WebRuntime, streams: Any) -> None:
        self.rt = rt
        self.streams = streams  # callable: open event-stream clients in this process

    def collect(self) -> Iterator[Any]:
        up = GaugeMetricFamily("arbiter_up", "1 when the component answered this scrape",
                               labels=["component"])  # fmt: skip
        try:
            yield from self._postgres()
            up.add_metric(["postgres"], 1)
        except SQLAlchemyError:
            up.add_metric(["postgres"], 0)
        try:
            yield from self._redis()
            up.add_metric(["redis"], 1)
        except redis.RedisError:
            up.add_metric(["redis"], 0)
        yield up
        clients = GaugeMetricFamily(
            "arbiter_event_stream_clients", "Open /api/v1/events/stream connections in this process"
        )
        clients.add_metric([], self.streams())
        yield clients

    def _postgres(self) -> Iterator[Any]:
        with self.rt.database.engine.connect() as conn:
            counts: dict[str, int] = dict(conn.execute(_ORDERS).tuples().all())
            accepted, rejected = conn.execute(_SIGNALS).one()
            conflicts: dict[str, int] = dict(conn.execute(_CONFLICTS).tuples().all())
            review = conn.execute(_REVIEW).scalar_one()
            backlog, lag = conn.execute(_OUTBOX).one()
            mismatch_events = conn.execute(_MISMATCH_EVENTS).scalar_one()
            kill = conn.execute(_KILL_SWITCH).scalar()
        orders = GaugeMetricFamily("arbiter_orders", "Orders by state", labels=["state"])
        for state in OrderState:
            orders.add_metric([state.value], counts.get(state.value, 0))
        yield orders
        signals = CounterMetricFamily("arbiter_signals", "Signals by outcome before the "
                                      "brokerage", labels=["outcome"])  # fmt: skip
        signals.add_metric(["accepted"], accepted or 0)
        signals.add_metric(["rejected"], rejected or 0)
        yield signals
        by_resolution = CounterMetricFamily("arbiter_conflicts", "Conflict decisions",
                                            labels=["resolution"])  # fmt: skip
        for resolution in ("allowed", "blocked", "priority_override"):
            by_resolution.add_metric([resolution], conflicts.get(resolution, 0))
        yield by_resolution
        yield GaugeMetricFamily("arbiter_review_items_open", "Open manual-review items",
                                value=review)  # fmt: skip
        yield GaugeMetricFamily("arbiter_outbox_backlog", "Events not yet published to Redis",
                                value=backlog)  # fmt: skip
        yield GaugeMetricFamily("arbiter_event_lag_seconds", "Age of the oldest unpublished "
                                "event (0 when none is owed)", value=float(lag or 0))  # fmt: skip
        yield GaugeMetricFamily("arbiter_reconciliation_mismatch_events",
                                "reconciliation_mismatch events in the history",
                                value=mismatch_events)  # fmt: skip
        yield GaugeMetricFamily("arbiter_kill_switch_on", "1 while the kill switch is on",
                                value=1 if kill else 0)  # fmt: skip

    def _redis(self) -> Iterator[Any]:
        reconcile = _decoded(self.rt.redis.hgetall(RECONCILE_KEY))
        errors = _decoded(self.rt.redis.hgetall(BROKERAGE_ERRORS_KEY))

        def number(name: str) -> float:
            try:
                return float(reconcile.get(name, 0))
            except ValueError:
                return 0.0

        passes = CounterMetricFamily("arbiter_reconciliation_passes",
                                     "Order reconciliation passes")  # fmt: skip
        passes.add_metric([], number("passes"))
        yield passes
        duration = CounterMetricFamily("arbiter_reconciliation_duration_seconds",
                                       "Time spent in order reconciliation passes")  # fmt: skip
        duration.add_metric([], number("duration_sum_s"))
        yield duration
        yield GaugeMetricFamily("arbiter_reconciliation_last_duration_seconds",
                                "Duration of the last order reconciliation pass",
                                value=number("last_duration_s"))  # fmt: skip
        yield GaugeMetricFamily("arbiter_reconciliation_last_pass_timestamp_seconds",
                                "When the last order reconciliation pass ended (Unix time)",
                                value=number("last_finished_at"))  # fmt: skip
        mismatches = CounterMetricFamily(
            "arbiter_reconciliation_mismatches", "Position mismatches found against the brokerage"
        )
        mismatches.add_metric([], number("position_mismatches"))
        yield mismatches
        flagged = CounterMetricFamily(
            "arbiter_reconciliation_flagged", "Orders reconciliation flagged for manual review"
        )
        flagged.add_metric([], number("flagged"))
        yield flagged
        brokerage = CounterMetricFamily("arbiter_brokerage_errors", "Failed brokerage calls",
                                        labels=["method", "error"])  # fmt: skip
        for key, value in sorted(errors.items()):
            method, _, error = key.partition("|")
            try:
                brokerage.add_metric([method, error], float(value))
            except ValueError:
                continue
        yield brokerage


def _decoded(raw: dict[Any, Any]) -> dict[str, str]:
    return {(k.decode() if isinstance(k, bytes) else str(k)):
            (v.decode() if isinstance(v, bytes) else str(v)) for k, v in raw.items()}  # fmt: skip


def registry_of(request: Request) -> CollectorRegistry:
    app = request.app
    registry: CollectorRegistry | None = getattr(app.state, "metrics_registry", None)
    if registry is None:
        registry = CollectorRegistry(auto_describe=False)

        def streams() -> int:
            fanout = getattr(app.state, "event_stream", None)
            return int(fanout.clients) if fanout is not None else 0

        registry.register(ArbiterCollector(runtime_of(request), streams))
        app.state.metrics_registry = registry
    return registry


@router.get("/metrics", summary="Prometheus metrics (read token)",
            responses={200: {"content": {"text/plain": {}}}})  # fmt: skip
async def metrics(request: Request, _: ReadAccess) -> Response:
    body = await run_in_threadpool(generate_latest, registry_of(request))
    return Response(body, media_type=CONTENT_TYPE_LATEST)
