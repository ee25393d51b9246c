"""Loopback is decided by `ipaddress`, not by a prefix of the host name."""

from __future__ import annotations

import pytest

from core.settings import Settings, is_loopback_host


@pytest.mark.parametrize("host", ["127.0.0.1", "127.1.2.3", "localhost", "LocalHost", "::1",
                                  "[::1]"])
def test_loopback_hosts(host: str) -> None:
    assert is_loopback_host(host)


@pytest.mark.parametrize("host", ["127.evil.example", "127.0.0.1.nip.io", "10.0.0.1", "0.0.0.0",
                                  "paper-api.alpaca.markets", "", "::ffff:8.8.8.8"])
def test_other_hosts(host: str) -> None:
    assert not is_loopback_host(host)


def test_dev_keys_are_refused_for_a_host_that_only_looks_local() -> None:
    with pytest.raises(ValueError, match="development"):
        Settings(brokerage_url="https://127.evil.example")
    assert Settings(brokerage_url="http://127.0.0.2:8765").brokerage_url
