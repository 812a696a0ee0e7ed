"""Folds that must still happen: events answered without the feature service (late, down, circuit open).

Every event changes its customer's and terminal's rolling state, whether or not the feature service could
answer in time; an event left out would skew every later feature of those entities. Folding is idempotent
(the fold script keys each event by its transaction id), so the backlog re-sends a batch until the feature
service takes it. Bounded: past `max_events`, the oldest batches are dropped and counted, never silently.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque

from services.feature_service.store import EventBatch
from services.gateway.stages import FeatureClient, StageError

log = logging.getLogger(__name__)


class FoldBacklog:
    def __init__(
        self, features: FeatureClient, *, max_events: int = 200_000, timeout_s: float = 2.0, retry_s: float = 0.2
    ) -> None:
        self.features = features
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
            batch = self._batches[0]
            try:
                await self.features.update_and_get(batch, self.timeout_s)
            except StageError as exc:
                log.debug("backlog fold failed; will retry", extra={"reason": exc.reason})
                await asyncio.sleep(self.retry_s)
                continue
            if self._batches and self._batches[0] is batch:
                self._batches.popleft()
                self._events -= len(batch)
            self.folded += len(batch)
