"""The fold backlog re-sends what the feature service missed without piling onto it: merged into few calls,
in order, and not while the feature stage's breaker is open."""

from __future__ import annotations

import asyncio

import numpy as np

from scoring.scenarios.fraud.events import EventBatch
from services.gateway.backlog import FoldBacklog
from services.gateway.breaker import CircuitBreaker


class _Recording:
    """Stands in for the feature service's client: records each call's transaction ids."""

    def __init__(self) -> None:
        self.calls: list[list[str]] = []

    async def refold(self, batch: EventBatch, timeout_s: float) -> None:
        self.calls.append(list(batch.transaction_id))


def _batch(*ids: str) -> EventBatch:
    n = len(ids)
    return EventBatch(list(ids), np.arange(n, dtype=np.int64), ["c"] * n, ["t"] * n, np.ones(n))


def _opened(reset_s: float) -> CircuitBreaker:
    """The feature stage's breaker, just opened by a failure."""
    breaker = CircuitBreaker("features", failures=1, reset_s=reset_s)
    breaker.failure()
    return breaker


async def _drain(backlog: FoldBacklog, timeout_s: float = 2.0) -> None:
    for _ in range(int(timeout_s / 0.01)):
        if backlog.pending == 0:
            return
        await asyncio.sleep(0.01)


def test_queued_batches_go_back_merged_and_in_order() -> None:
    async def run() -> list[list[str]]:
        client = _Recording()
        backlog = FoldBacklog(client, max_batch_events=5, duty=0.5)  # type: ignore[arg-type]
        for ids in (("a", "b"), ("c",), ("d", "e"), ("f", "g", "h")):
            backlog.add(_batch(*ids))
        backlog.start()
        await _drain(backlog)
        await backlog.stop()
        assert backlog.folded == 8 and backlog.pending == 0
        return client.calls

    assert asyncio.run(run()) == [["a", "b", "c", "d", "e"], ["f", "g", "h"]]


def test_nothing_is_resent_while_the_feature_stage_circuit_is_open() -> None:
    async def run() -> None:
        client = _Recording()
        backlog = FoldBacklog(client, retry_s=0.01)  # type: ignore[arg-type]
        breaker = backlog.breaker = _opened(reset_s=60.0)
        backlog.add(_batch("a"))
        backlog.start()
        await asyncio.sleep(0.1)
        assert client.calls == [] and backlog.pending == 1
        breaker.success()
        await _drain(backlog)
        await backlog.stop()
        assert client.calls == [["a"]]

    asyncio.run(run())


class _Failing(_Recording):
    async def refold(self, batch: EventBatch, timeout_s: float) -> None:
        from services.gateway.stages import StageError

        self.calls.append(list(batch.transaction_id))
        raise StageError("features", "unavailable", "down")


def test_with_no_live_traffic_the_backlog_probes_a_half_open_circuit_and_drains() -> None:
    """After an outage the traffic may stop: the half-open circuit then gets no probe from live batches, and
    without one of its own the backlog would never fold what it holds."""

    async def run() -> None:
        client = _Recording()
        backlog = FoldBacklog(client, retry_s=0.01, duty=0.5)  # type: ignore[arg-type]
        breaker = backlog.breaker = _opened(reset_s=0.05)
        for ids in (("a", "b"), ("c",), ("d",)):
            backlog.add(_batch(*ids))
        backlog.start()
        await _drain(backlog)
        await backlog.stop()
        assert breaker.state == "closed" and backlog.pending == 0
        # The probe is the oldest batch alone; the rest follow merged once the circuit is closed.
        assert client.calls == [["a", "b"], ["c", "d"]]

    asyncio.run(run())


def test_a_failed_backlog_probe_opens_the_circuit_again() -> None:
    async def run() -> None:
        client = _Failing()
        backlog = FoldBacklog(client, retry_s=0.01)  # type: ignore[arg-type]
        breaker = backlog.breaker = _opened(reset_s=0.05)
        backlog.add(_batch("a"))
        backlog.start()
        for _ in range(200):
            if breaker.opened_count == 2:
                break
            await asyncio.sleep(0.01)
        await backlog.stop()
        # The probe failed and opened the circuit a second time; the batch is still held for the next probe.
        assert breaker.opened_count == 2 and client.calls[0] == ["a"] and backlog.pending == 1

    asyncio.run(run())
