"""Where the trade_updates websocket is: derived from the brokerage URL unless set."""

from __future__ import annotations

import pytest

from core.settings import Settings


@pytest.mark.parametrize(
    ("brokerage_url", "stream_url"),
    [
        ("http://127.0.0.1:8765", "ws://127.0.0.1:8765/stream"),
        ("http://127.0.0.1:8765/", "ws://127.0.0.1:8765/stream"),
        ("https://paper-api.alpaca.markets", "wss://paper-api.alpaca.markets/stream"),
        ("https://paper-api.alpaca.markets/v2", "wss://paper-api.alpaca.markets/stream"),
    ],
)
def test_the_stream_url_follows_the_brokerage_url(brokerage_url: str, stream_url: str) -> None:
    settings = Settings(brokerage_url=brokerage_url, brokerage_key="k" * 8,
                        brokerage_secret="s" * 8)
    assert settings.trade_stream_url == stream_url


def test_a_configured_stream_url_wins() -> None:
    settings = Settings(brokerage_stream_url="ws://10.0.0.5:9000/stream")
    assert settings.trade_stream_url == "ws://10.0.0.5:9000/stream"
