"""Session fixtures: models trained once on a reduced simulation, and the real local stack started once."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
import pytest_asyncio

from scoring.pipeline import TrainConfig, artifacts_current, train
from scoring.simulator import SimulationConfig

ROOT = Path(__file__).resolve().parent.parent
# Small enough to train in seconds, large enough for every period of the time split and some frauds.
TEST_SIMULATION = SimulationConfig(n_customers=600, n_terminals=1200, n_days=75, seed=7)
TEST_TRAIN = TrainConfig(simulation=TEST_SIMULATION, lstm_epochs=3, gbt_trees=150)


@pytest.fixture(scope="session")
def artifacts() -> Path:
    """Trained models for the reduced simulation; reused between runs while the code that makes them is the same."""
    out = Path(os.environ.get("SCORING_TEST_ARTIFACTS", ROOT / "artifacts" / "test"))
    if not artifacts_current(out, TEST_TRAIN):
        train(out, TEST_TRAIN)
    return out


@pytest_asyncio.fixture(scope="session")
async def stack(artifacts: Path, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[object]:
    from scoring.launcher import Ports, Stack, StackConfig

    config = StackConfig(
        artifacts=artifacts,
        ports=Ports.free(),
        # A generous budget: these tests check behaviour, not timing, on a shared 2-core machine.
        env={"GATEWAY_BUDGET_MS": "3000"},
        log_dir=tmp_path_factory.mktemp("stack-logs"),
    )
    async with Stack(config) as running:
        yield running


@pytest_asyncio.fixture(scope="session")
async def gateway(stack: object) -> AsyncIterator[object]:
    from scoring.v1 import gateway_pb2_grpc

    async with grpc.aio.insecure_channel(stack.gateway_address) as channel:  # type: ignore[attr-defined]
        yield gateway_pb2_grpc.GatewayStub(channel)
