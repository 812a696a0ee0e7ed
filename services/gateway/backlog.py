"""Folds that must still happen: events answered without the feature service (late, down, circuit open).

Every event changes its customer's and terminal's rolling state, whether or not the feature service could
answer in time; an event left out would skew every later feature of those entities. Folding is idempotent
(the fold script keys each event by its transaction id), so the backlog re-sends a batch until the feature
service takes it. Bounded: past `max_events`, the oldest batches are dropped and counted, never silently.

Re-sends must not push an overloaded feature service over the edge: a stage that timed out is usually busy, and
re-folding its batches at once doubles its work exactly then (a retry storm: timeouts breed re-sends that breed
timeouts). So the backlog waits while the feature stage's breaker is open, merges queued batches into one call of
up to `max_batch_events` (in their order; small, since live folds queue behind it), and after each call rests long
enough that re-sends take at most `duty` of the time. The calls are fold-only: the feature service skips the events
it has already folded (a timed-out batch usually did reach Redis) at the cost of a key lookup each. A half-open
circuit waits for one probe call; when no live batch comes to make it (traffic stopped
after an outage), the backlog sends its oldest batch as that probe, or it would wait for traffic forever.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque

import numpy as np

from scoring.scenarios.fraud.events import EventBatch
from services.gateway.breaker import CLOSED, HALF_OPEN, CircuitBreaker
from services.gateway.stages import FeatureClient, StageError

log = logging.getLogger(__name__)


class FoldBacklog:
    def __init__(
        self,
        features: FeatureClient,
        *,
        max_events: int = 200_000,
        timeout_s: float = 2.0,
        retry_s: float = 0.2,
        max_batch_events: int = 512,
        duty: float = 0.25,
    ) -> None:
        self.features = features
        self.max_batch_events = max_batch_events
        self.duty = duty
        # The feature stage's breaker (set by the cascade): no re-sends while it is open or probing.
        self.breaker: CircuitBreaker | None = None
        self.max_events = max_events
        self.timeout_s = timeout_s
        self.retry_s = retry_s
        self._batches: deque[EventBatch] = deque()
        self._events = 0
        self._wakeup = asyncio.Event()
        self._runner: asyncio.Task[None] | None = None
        self.folded = 0
        self.dropped = 0

    @property
    def pending(self) -> int:
        return self._events

    def add(self, batch: EventBatch) -> None:
        if len(batch) == 0:
            return
        self._batches.append(batch)
        self._events += len(batch)
        while self._events > self.max_events and len(self._batches) > 1:
            dropped = self._batches.popleft()
            self._events -= len(dropped)
            self.dropped += len(dropped)
            log.warning("fold backlog full: events dropped from state", extra={"events": len(dropped)})
        self._wakeup.set()

    def start(self) -> None:
        self._runner = asyncio.create_task(self._run(), name="fold-backlog")

    async def stop(self) -> None:
        if self._runner is not None:
            self._runner.cancel()
            await asyncio.gather(self._runner, return_exceptions=True)

    async def _run(self) -> None:
        while True:
            if not self._batches:
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            probe = False
            if self.breaker is not None and self.breaker.state != CLOSED:
                # Half-open and no live batch has taken the probe yet: this call is the probe.
                probe = self.breaker.state == HALF_OPEN and self.breaker.allow()
                if not probe:
                    await asyncio.sleep(self.retry_s)
                    continue
            taken = [self._batches[0]]
            size = len(taken[0])
            for queued in list(self._batches)[1:]:
                if probe or size + len(queued) > self.max_batch_events:
                    break
                taken.append(queued)
                size += len(queued)
            started = time.monotonic()
            try:
                await self.features.refold(_merge(taken), self.timeout_s)
            except StageError as exc:
                log.debug("backlog fold failed; will retry", extra={"reason": exc.reason})
                if probe and self.breaker is not None:
                    self.breaker.failure()
                await asyncio.sleep(self.retry_s)
                continue
            if probe and self.breaker is not None:
                self.breaker.success()
            for batch in taken:
                if self._batches and self._batches[0] is batch:
                    self._batches.popleft()
                    self._events -= len(batch)
            self.folded += size
            took = time.monotonic() - started
            await asyncio.sleep(took * (1.0 - self.duty) / self.duty)


def _merge(batches: list[EventBatch]) -> EventBatch:
    if len(batches) == 1:
        return batches[0]
    return EventBatch(
        transaction_id=[t for b in batches for t in b.transaction_id],
        event_time_us=np.concatenate([b.event_time_us for b in batches]),
        customer_id=[c for b in batches for c in b.customer_id],
        terminal_id=[t for b in batches for t in b.terminal_id],
        amount=np.concatenate([b.amount for b in batches]),
    )
