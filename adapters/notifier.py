"""Sending notifications through Apprise (Slack, Discord, Telegram, email, ntfy, Matrix, JSON
webhooks and a hundred more), translated into our errors. A URL holds secrets: it never appears
in an error or a log line, only its masked form."""

from __future__ import annotations

import logging

import apprise

from core.errors import InvalidInput, NotificationFailed
from core.notifications import Message, mask_url

# Apprise logs through its own logger; its lines can quote URLs. Ours say what happened.
logging.getLogger("apprise").setLevel(logging.CRITICAL)


class AppriseNotifier:
    def __init__(self, timeout_s: float = 10.0) -> None:
        self.timeout_s = timeout_s

    def check(self, url: str) -> None:
        """InvalidInput when Apprise does not know what to do with `url`."""
        if not apprise.Apprise().add(url):
            raise InvalidInput(f"url: Apprise does not understand {mask_url(url)}")

    def send(self, url: str, message: Message) -> None:
        """Deliver one message; NotificationFailed (retryable) when the target refused it or
        could not be reached."""
        target = apprise.Apprise(asset=apprise.AppriseAsset(async_mode=False))
        if not target.add(self._with_timeouts(url)):
            raise NotificationFailed(f"{mask_url(url)}: not a URL Apprise understands")
        with apprise.LogCapture(level=logging.WARNING) as captured:  # type: ignore[no-untyped-call]
            ok = target.notify(
                body=message.body, title=message.title, notify_type=_TYPES[message.kind]
            )
        if not ok:
            detail = _last_line(captured.getvalue()).replace(url, mask_url(url))
            raise NotificationFailed(f"{mask_url(url)}: {detail or 'delivery failed'}")

    def _with_timeouts(self, url: str) -> str:
        """Connect and read time-outs for Apprise's HTTP-based services (`cto`, `rto`)."""
        if "cto=" in url or "rto=" in url:
            return url
        joiner = "&" if "?" in url else "?"
        return f"{url}{joiner}cto={self.timeout_s:g}&rto={self.timeout_s:g}"


_TYPES = {
    "info": apprise.NotifyType.INFO,
    "success": apprise.NotifyType.SUCCESS,
    "warning": apprise.NotifyType.WARNING,
    "failure": apprise.NotifyType.FAILURE,
}


def _last_line(text: str) -> str:
    """Apprise's last complaint, without the time and level its log format puts first."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1].rsplit(" - ", 1)[-1][:300] if lines else ""
