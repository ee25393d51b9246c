"""A small Server-Sent Events reader for tests and the bench (httpx, blocking)."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx


@dataclass(frozen=True)
class SseEvent:
    id: str | None
    event: str
    data: dict[str, Any]


def parse(lines: Iterator[str]) -> Iterator[SseEvent]:
    event_id: str | None = None
    name = "message"
    data: list[str] = []
    for line in lines:
        if line == "":
            if data:
                yield SseEvent(event_id, name, json.loads("\n".join(data)))
            event_id, name, data = None, "message", []
        elif line.startswith(":"):
            continue
        else:
            field, _, value = line.partition(":")
            value = value.removeprefix(" ")
            if field == "id":
                event_id = value
            elif field == "event":
                name = value
            elif field == "data":
                data.append(value)


def take(response: httpx.Response, count: int, timeout: float = 20.0) -> list[SseEvent]:
    """The next `count` events of an open stream (fails after `timeout` seconds)."""
    deadline = time.monotonic() + timeout
    got: list[SseEvent] = []
    events = response.extensions.get("sse")
    if events is None:  # one parser per response: its lines can be read only once
        events = response.extensions["sse"] = parse(response.iter_lines())
    for event in events:
        if event.event == "message":
            got.append(event)
        if len(got) == count:
            return got
        if time.monotonic() > deadline:
            break
    raise AssertionError(f"got {len(got)} of {count} events: {got}")
