"""The periodic schedule, one dict, read by the Celery app. Intervals come from settings.

Every entry expires before its next run, so a backlog (a slow pass, a stopped worker) never
piles up; each task also takes a Redis lock per run, so two beats started by mistake do no
double work.
"""

from __future__ import annotations

from typing import Any

from celery.schedules import crontab

from core.settings import Settings
from strategy_client import routing


def _every(seconds: float, task: str) -> dict[str, Any]:
    return {"task": task, "schedule": seconds, "options": {"expires": max(seconds, 1.0)}}


def beat_schedule(settings: Settings) -> dict[str, dict[str, Any]]:
    return {
        "reconcile-open-orders": _every(settings.reconcile_interval_s, routing.RECONCILE_ORDERS),
        "recover-stalled-orders": _every(
            settings.recover_stalled_interval_s, routing.RECOVER_STALLED
        ),
        "reconcile-positions": _every(
            settings.reconcile_positions_interval_s, routing.RECONCILE_POSITIONS
        ),
        "relay-unpublished-events": _every(settings.relay_interval_s, routing.RELAY_EVENTS),
        "expire-ownership": _every(settings.expire_locks_interval_s, routing.EXPIRE_OWNERSHIP),
        "purge-old-events": _every(settings.purge_events_interval_s, routing.PURGE_EVENTS),
        "dispatch-notifications": _every(
            settings.notify_dispatch_interval_s, routing.NOTIFY_DISPATCH
        ),
        "send-notification-digests": _every(30.0, routing.NOTIFY_DIGEST),
        **_daily_report(settings),
    }


def _daily_report(settings: Settings) -> dict[str, dict[str, Any]]:
    """The daily report at ARBITER_DAILY_REPORT_AT (UTC); no entry while it is unset."""
    if not settings.daily_report_at:
        return {}
    hour, minute = settings.daily_report_at.split(":")
    return {
        "daily-report": {
            "task": routing.DAILY_REPORT,
            "schedule": crontab(hour=int(hour), minute=int(minute)),
            "options": {"expires": 3600},
        }
    }
