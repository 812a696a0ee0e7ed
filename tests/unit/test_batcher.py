"""How the micro-batcher forms batches: a lone event goes at once; while a batch is at the feature stage,
later events gather into the next batch instead of queueing as many small calls."""

from __future__ import annotations

import asyncio
import time

import numpy as np

from scoring.scenarios.fraud.events import EventBatch
from scoring.scenarios.fraud.validation import Event
from services.gateway.batcher import MicroBatcher
from services.gateway.cascade import BatchOutcome


class _ScriptedCascade:
    """Records each batch; its feature stage is over when the test says so."""

    def __init__(self) -> None:
        self.batches: list[list[str]] = []
        self.release = asyncio.Event()

    async def score(self, batch: EventBatch, deadline: float, budget_s: float, features_done) -> BatchOutcome:
        self.batches.append(list(batch.transaction_id))
        await self.release.wait()
        features_done()
        n = len(batch)
        return BatchOutcome(np.zeros(n), np.zeros(n), np.ones(n, np.int8), [""] * n, ["v"] * n, [""] * n)


def _event(i: int) -> Event:
    return Event(transaction_id=f"t{i}", event_time_us=1_700_000_000_000_000 + i, customer_id="c", terminal_id="t",
                 amount=1.0)


async def _run(features_inflight: int) -> list[list[str]]:
    cascade = _ScriptedCascade()
    batcher = MicroBatcher(cascade, max_batch=256, batch_wait_us=0, max_inflight_batches=4,  # type: ignore[arg-type]
                           max_queued=100, features_inflight_batches=features_inflight)
    batcher.start()
    futures = [batcher.submit(_event(0), time.monotonic() + 1.0)]
    await asyncio.sleep(0.01)
    for i in range(1, 6):  # arriving one by one, with the loop free to form batches in between
        futures.append(batcher.submit(_event(i), time.monotonic() + 1.0))
        await asyncio.sleep(0.002)
    await asyncio.sleep(0.01)
    cascade.release.set()
    outcomes = await asyncio.wait_for(asyncio.gather(*futures), 5.0)
    assert len(outcomes) == 6 and all(o.error == "" for o in outcomes)
    await batcher.stop()
    return cascade.batches


def test_events_gather_while_a_batch_is_at_the_feature_stage() -> None:
    batches = asyncio.run(_run(features_inflight=1))
    assert batches == [["t0"], ["t1", "t2", "t3", "t4", "t5"]]


def test_more_batches_at_the_feature_stage_means_smaller_batches() -> None:
    batches = asyncio.run(_run(features_inflight=4))
    # Each free slot took the one event there was; only with all four slots taken did the rest gather.
    assert batches == [["t0"], ["t1"], ["t2"], ["t3"], ["t4", "t5"]]


class _EchoCascade:
    """Scores each event with its position in the batch's own numbering (the amount), so answers can be traced."""

    def __init__(self) -> None:
        self.batches: list[list[str]] = []
        self.shares = None

    async def score(self, batch: EventBatch, deadline: float, budget_s: float, features_done) -> BatchOutcome:
        self.batches.append(list(batch.transaction_id))
        features_done()
        n = len(batch)
        return BatchOutcome(batch.amount.copy(), np.zeros(n), np.ones(n, np.int8), [""] * n,
                            [f"v:{t}" for t in batch.transaction_id], [""] * n)


def test_groups_and_single_events_share_micro_batches_and_each_gets_its_own_rows() -> None:
    async def run() -> tuple[list[list[str]], list[float], list[list[float]]]:
        cascade = _EchoCascade()
        batcher = MicroBatcher(cascade, max_batch=4, batch_wait_us=0, max_inflight_batches=1,  # type: ignore[arg-type]
                               max_queued=100)
        deadline = time.monotonic() + 5.0
        single = batcher.submit(Event("s0", 1, "c", "t", 0.5), deadline)
        group = EventBatch([f"g{i}" for i in range(6)], np.arange(6), ["c"] * 6, ["t"] * 6, np.arange(6.0) + 10)
        from opentelemetry.trace import INVALID_SPAN

        parts = batcher.submit_group(group, deadline, INVALID_SPAN)  # 6 events with max_batch 4: two groups
        last = batcher.submit(Event("s1", 2, "c", "t", 0.25), deadline)
        batcher.start()
        outcomes = await asyncio.wait_for(asyncio.gather(*parts), 5.0)
        answers = [(await single).score, (await last).score]
        await batcher.stop()
        return cascade.batches, answers, [o.score.tolist() for o in outcomes]

    batches, answers, groups = asyncio.run(run())
    # Whole items up to max_batch: the single event and the first group (1 + 4 would pass 4) go apart.
    assert batches == [["s0"], ["g0", "g1", "g2", "g3"], ["g4", "g5", "s1"]]
    assert answers == [0.5, 0.25]
    assert groups == [[10.0, 11.0, 12.0, 13.0], [14.0, 15.0]]
