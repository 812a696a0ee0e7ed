"""Session fixtures: models trained once on a reduced simulation, and the real local stack started once."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
import pytest_asyncio

from scoring.scenarios.fraud.pipeline import TrainConfig, artifacts_current, train
from scoring.scenarios.fraud.simulator import SimulationConfig
from scoring.scenarios.market import pipeline as market

ROOT = Path(__file__).resolve().parent.parent
# Small enough to train in seconds, large enough for every period of the time split and some frauds.
TEST_SIMULATION = SimulationConfig(n_customers=600, n_terminals=1200, n_days=75, seed=7)
TEST_TRAIN = TrainConfig(simulation=TEST_SIMULATION, lstm_epochs=3, gbt_trees=150)
TEST_MARKET = market.MarketTrainConfig(n_symbols=30, ticks_per_symbol=3000, gbt_trees=60, lstm_epochs=2)


@pytest.fixture(scope="session")
def artifacts() -> Path:
    """Trained models for the reduced simulation; reused between runs while the code that makes them is the same."""
    out = Path(os.environ.get("SCORING_TEST_ARTIFACTS", ROOT / "artifacts" / "test"))
    if not artifacts_current(out, TEST_TRAIN):
        train(out, TEST_TRAIN)
    if not market.artifacts_current(out, TEST_MARKET):
        market.train(out, TEST_MARKET)
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


@pytest_asyncio.fixture(scope="session")
async def cluster_feature_service(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[str]:
    """A feature service on a real local Redis Cluster of three masters (the same redis-server binary as the
    stack's Redis); yields its gRPC address."""
    import asyncio
    import sys

    from scoring.launcher import (
        Child,
        create_redis_cluster,
        free_cluster_ports,
        free_port,
        grpc_serving,
        redis_ready,
        redis_server_binary,
    )

    logs = tmp_path_factory.mktemp("cluster-logs")
    ports = free_cluster_ports()
    children = [
        Child(f"redis-{i}", [redis_server_binary(), "--port", str(p), "--bind", "127.0.0.1", "--save", "",
                             "--appendonly", "no", "--cluster-enabled", "yes",
                             "--cluster-config-file", str(logs / f"nodes-{p}.conf")],
              dict(os.environ), logs / f"redis-{i}.log")
        for i, p in enumerate(ports)
    ]
    address = f"127.0.0.1:{free_port()}"
    env = {**os.environ, "FEATURES_PORT": address.rsplit(":", 1)[1], "FEATURES_METRICS_PORT": str(free_port()),
           "FEATURES_REDIS_URL": f"redis+cluster://127.0.0.1:{ports[0]}", "OTEL_SDK_DISABLED": "true"}
    service = Child("feature_service", [sys.executable, "-m", "services.feature_service"], env,
                    logs / "feature_service.log")
    try:
        for child in children:
            child.start()
        for p in ports:
            while not await redis_ready(f"redis://127.0.0.1:{p}/0"):
                await asyncio.sleep(0.05)
        await create_redis_cluster(ports)
        service.start()
        for _ in range(600):
            if await grpc_serving(address):
                break
            assert service.alive(), service.log_tail()
            await asyncio.sleep(0.1)
        else:
            raise AssertionError(f"feature service on the cluster not serving:\n{service.log_tail()}")
        yield address
    finally:
        for child in [service, *children]:
            if child.alive():
                assert child.process is not None
                child.process.terminate()
                child.process.wait(10)


@pytest.fixture(params=["redis", "redis-cluster"])
def feature_address(request: pytest.FixtureRequest) -> str:
    """The feature service on a single Redis (the stack's) and on a three-master Redis Cluster."""
    if request.param == "redis":
        return str(request.getfixturevalue("stack").addresses["feature_service"])
    return str(request.getfixturevalue("cluster_feature_service"))
