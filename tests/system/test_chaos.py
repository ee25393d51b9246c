"""A short seeded chaos run in CI: a few hundred signals, about a dozen faults, every invariant
(I1-I8, see tests/system/chaos.py) held, on the broker ARBITER_TEST_BROKER names. Longer runs:
`python -m tests.system.chaos --help`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.fixtures.services import TEST_BROKER
from tests.system.chaos import ChaosConfig, run_chaos

pytestmark = pytest.mark.system

SEED = 20261122


@pytest.mark.timeout(420)
def test_three_hundred_signals_through_a_dozen_faults_keep_every_invariant(
    tmp_path: Path,
) -> None:
    # ARBITER_TEST_BROKER=amqp: RabbitMQ (a private node, restarted as one of the faults).
    report = run_chaos(ChaosConfig(signals=300, faults=12, seed=SEED, workdir=tmp_path,
                                   broker=TEST_BROKER))
    print(report.format())
    (tmp_path / "chaos-report.json").write_text(json.dumps(report.to_json(), default=str))
    assert report.signals["accepted"] > 250
    assert len(report.faults) >= 10
    assert report.violations == []
