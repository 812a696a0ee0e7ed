"""The compose target against a real Docker engine: kill -9 one stage of a running compose stack mid-stream.

Runs only where a Docker engine answers and the compose project is up (`docker compose up` in deploy/compose/);
the development machine and CI of this project have no engine, so there it is skipped. The target's logic is
tested against a fake Docker SDK in tests/unit/test_chaos_report.py.
"""

from __future__ import annotations

import os

import pytest

from scoring.chaos.experiment import Timing, run_experiment
from scoring.chaos.faults import parse_fault
from scoring.chaos.targets import ComposeTarget, FaultNotSupported, engine_available

pytestmark = pytest.mark.chaos

PROJECT = os.environ.get("SCORING_COMPOSE_PROJECT", "scoring-graph")
GATEWAY = os.environ.get("SCORING_COMPOSE_GATEWAY", "127.0.0.1:50051")


@pytest.fixture(scope="module")
def compose_target() -> ComposeTarget:
    if not engine_available():
        pytest.skip("no Docker engine reachable (the compose target needs one)")
    target = ComposeTarget(PROJECT, GATEWAY)
    try:
        target.instance("gateway")
    except FaultNotSupported:
        pytest.skip(f"compose project {PROJECT!r} is not running (docker compose up in deploy/compose/)")
    return target


async def test_compose_stage_killed_mid_stream_loses_nothing_and_heals(compose_target, artifacts) -> None:
    from scoring.bench import EventSource
    from scoring.chaos.client import TransactionSource

    source = TransactionSource(EventSource.from_artifacts(artifacts, warm_days=0))
    report = await run_experiment(compose_target, parse_fault("kill:filter_model"), source,
                                  Timing(rate=100, before_s=2, after_s=5, back_timeout_s=180))
    assert report.lost == 0 and report.duplicated == 0 and report.answered == report.sent
    assert report.recover_s is not None
