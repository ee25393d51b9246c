"""Notification tasks, on the `notifications` queue of their own: a slow or dead target holds
up only the notifier worker, never a signal. Thin: each calls one function of
service_layer/notifications.py."""

from __future__ import annotations

import logging
import random
from typing import Any

from celery import Task, shared_task

from core.errors import NotificationFailed
from service_layer import notifications
from strategy_client import routing
from tasks.crashpoints import crash_point
from tasks.runtime import runtime

log = logging.getLogger(__name__)

DAILY_REPORT_KEY = "arbiter:daily-report:"


def _sending_after_s() -> float:
    """A `sending` delivery older than this was left by a dead attempt."""
    return runtime().settings.notify_timeout_s * 3 + 5


@shared_task(name=routing.NOTIFY_DISPATCH)
def dispatch() -> dict[str, Any]:
    rt = runtime()
    s = rt.settings
    result = notifications.dispatch(
        rt.database,
        [url.strip() for url in s.notify_urls.split(",") if url.strip()],
        digest_after=s.notify_digest_after,
        # Longer than the longest retry backoff: a pending row this old lost its task.
        pending_after_s=_backoff_s(s.notify_max_retries) + 60,
        sending_after_s=_sending_after_s(),
    )
    for delivery_id in [*result.new, *result.lost]:
        deliver.delay(delivery_id)
    if result.held:
        log.info("notifications: %d held for the next digest", result.held)
    return {"new": len(result.new), "held": result.held, "resent": len(result.lost)}


def _backoff_s(retries: int) -> float:
    return float(min(2 ** (retries + 1), 300))


@shared_task(name=routing.NOTIFY_DELIVER, bind=True, max_retries=None)
def deliver(self: Task, delivery_id: int) -> str:
    if isinstance(delivery_id, bool) or not isinstance(delivery_id, int):
        log.warning("notification: ignoring a malformed delivery id %r", delivery_id)
        return "skipped"
    rt = runtime()
    last = self.request.retries >= rt.settings.notify_max_retries
    try:
        return notifications.deliver(
            rt.database,
            rt.notifier,
            delivery_id,
            last_attempt=last,
            sending_after_s=_sending_after_s(),
            before_send=lambda: crash_point("notify_before_send"),
        )
    except NotificationFailed as exc:
        countdown = _backoff_s(self.request.retries) * random.uniform(0.5, 1.0)
        raise self.retry(exc=exc, countdown=countdown) from None


@shared_task(name=routing.NOTIFY_DIGEST)
def send_digests() -> int:
    rt = runtime()
    return notifications.send_digests(rt.database, rt.notifier)


@shared_task(name=routing.DAILY_REPORT)
def daily_report() -> int:
    """Once a day (the first beat to claim the date sends it)."""
    from datetime import UTC, datetime

    from service_layer.reports import build_report, report_message

    rt = runtime()
    today = datetime.now(UTC).date().isoformat()
    if not rt.redis.set(DAILY_REPORT_KEY + today, "1", nx=True, ex=2 * 86400):
        return 0
    report = build_report(rt.database, since_days=1)
    return notifications.send_report(rt.database, rt.notifier, report_message(report))
