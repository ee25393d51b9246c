"""Beat tasks: reconciliation with the brokerage, recovery of stalled orders, the event relay
and ownership housekeeping. Each run holds a Redis lock so that two beats, or a slow run and
the next, never overlap."""

from __future__ import annotations

import logging

from celery import shared_task

from tasks import routing
from tasks.runtime import runtime

log = logging.getLogger(__name__)


@shared_task(name=routing.RELAY_EVENTS)
def relay_events() -> int:
    from tasks.events import relay_unpublished

    rt = runtime()
    return relay_unpublished(rt.database, rt.publisher)
