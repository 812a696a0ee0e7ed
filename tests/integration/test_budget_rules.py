"""The budget a client can rely on: min(its deadline, GATEWAY_BUDGET_MS), or what it asks for explicitly with
x-scoring-budget-ms (up to GATEWAY_MAX_BUDGET_MS); a malformed request for one is refused naming the key.

Triton is stalled (SIGSTOP) while events pass the filter (threshold 0), and the breakers never open, so every call
waits for the ensemble exactly as long as its budget lets it: the time an answer takes shows the budget used.
"""

from __future__ import annotations

import signal
import time
from collections.abc import AsyncIterator

import grpc
import pytest
import pytest_asyncio

from scoring.v1 import gateway_pb2, gateway_pb2_grpc, types_pb2

pytestmark = pytest.mark.integration

BUDGET_MS = 50
# Slack for a shared 2-core machine: an answer this much past its budget is still "inside the budget" for this test
# (the gateway's cut-off, the hop back to the client, scheduling); a client's 2 s deadline is far beyond it.
MARGIN_S = 0.25
_ids = iter(range(10**9))


@pytest_asyncio.fixture(scope="module")
async def stalled(artifacts, tmp_path_factory) -> AsyncIterator[gateway_pb2_grpc.GatewayStub]:
    from scoring.launcher import Ports, Stack, StackConfig

    config = StackConfig(
        artifacts=artifacts,
        ports=Ports.free(),
        env={"GATEWAY_BUDGET_MS": str(BUDGET_MS), "FILTER_THRESHOLD": "0", "GATEWAY_BREAKER_FAILURES": "1000000",
             "GATEWAY_MAX_BUDGET_MS": "1000"},
        log_dir=tmp_path_factory.mktemp("budget-logs"),
    )
    async with Stack(config) as running, grpc.aio.insecure_channel(running.gateway_address) as channel:
        stub = gateway_pb2_grpc.GatewayStub(channel)
        await stub.Score(gateway_pb2.ScoreRequest(transaction=_tx()), timeout=30)  # channel and stages warm
        running.send_signal("triton", signal.SIGSTOP)
        try:
            yield stub
        finally:
            running.send_signal("triton", signal.SIGCONT)


def _tx() -> types_pb2.Transaction:
    n = next(_ids)
    tx = types_pb2.Transaction(transaction_id=f"bud-{n}", customer_id=f"bud-C{n % 9}", terminal_id="bud-T1",
                               amount=30.0)
    tx.timestamp.FromSeconds(1_700_000_000 + n)
    return tx


async def _timed(stub, metadata=None, timeout: float = 2.0) -> tuple[types_pb2.ScoreResponse, float]:
    started = time.monotonic()
    response = await stub.Score(gateway_pb2.ScoreRequest(transaction=_tx()), timeout=timeout, metadata=metadata)
    return response, time.monotonic() - started


async def test_a_client_deadline_of_2_s_does_not_become_the_budget(stalled) -> None:
    for _ in range(3):
        response, took = await _timed(stalled, timeout=2.0)
        assert response.degraded and response.degraded_reason == "ensemble_timeout"
        assert response.stage == types_pb2.STAGE_FILTER
        assert took < BUDGET_MS / 1e3 + MARGIN_S, f"{took * 1e3:.0f} ms for a {BUDGET_MS} ms budget"


async def test_an_explicit_budget_is_waited_for(stalled) -> None:
    response, took = await _timed(stalled, metadata=(("x-scoring-budget-ms", "200"),), timeout=2.0)
    assert response.degraded_reason == "ensemble_timeout"
    # The ensemble may use up to 95% of the 200 ms: far longer than the default 50 ms, never past the 200.
    assert 0.15 <= took < 0.2 + MARGIN_S, f"{took * 1e3:.0f} ms"


async def test_a_client_deadline_shorter_than_the_budget_is_the_one_kept(stalled) -> None:
    response, took = await _timed(stalled, metadata=(("x-scoring-budget-ms", "1000"),), timeout=0.3)
    assert response.degraded_reason == "ensemble_timeout"
    assert took < 0.3


@pytest.mark.parametrize("value", ["-1", "abc", "0", "1001"])
async def test_a_malformed_or_excessive_budget_is_refused_naming_the_key(stalled, value) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await _timed(stalled, metadata=(("x-scoring-budget-ms", value),))
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "x-scoring-budget-ms" in (caught.value.details() or "")

    # A stream asking for it is refused as a whole, before any event is read. (The call writes nothing: an event
    # written while the refusal arrives can fail on the client's side as INTERNAL, a grpcio race, not ours.)
    call = stalled.ScoreStream(metadata=(("x-scoring-budget-ms", value),), timeout=5)
    assert await call.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "x-scoring-budget-ms" in (await call.details() or "")
