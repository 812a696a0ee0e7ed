"""The cascade's release paths: a canary's row groups merged into one outcome, and the shadow's copy of a batch.

A canary splits a batch by customer after its one feature call; each release scores its rows and `merge_groups`
puts the answers back in the batch's order. A shadow (or a canary's candidate, on the champion's rows) scores a
copy of the champion's rows after their answers are out: `ShadowScorer` runs it as a task nobody waits for, at most
SHADOW_INFLIGHT_MAX at once, and adds the pairs where both releases gave their full cascade's score to the
comparison window (`scoring.releases.compare.PairedWindow`).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import numpy as np

from services.gateway import metrics as M

if TYPE_CHECKING:
    from scoring.releases.compare import PairedWindow
    from scoring.releases.store import Release
    from scoring.scenarios.fraud.events import EventBatch
    from services.gateway.cascade import BatchOutcome

log = logging.getLogger(__name__)
# Shadow batches scored at once, at most: past it a batch is not shadowed (and counted), so that a slow shadow
# never piles work on the stages the answers need.
SHADOW_INFLIGHT_MAX = 4


class ShadowScorer:
    def __init__(
        self, models: Callable[..., Awaitable[BatchOutcome]], window: Callable[[], PairedWindow | None],
        budget_s: float,
    ) -> None:
        # The cascade's filter-and-ensemble of one release, and where the pairs go.
        self.models = models
        self.window = window
        self.budget_s = budget_s
        self._inflight: set[asyncio.Future[Any]] = set()

    def submit(
        self, batch: EventBatch, features: np.ndarray, sequences: np.ndarray, self_contained: bool,
        outcome: BatchOutcome, release: Release,
    ) -> None:
        """Scores a copy of the batch with the shadow release after the answers are out; nobody waits for it."""
        window = self.window()
        if window is None:
            return
        if self_contained:
            return  # no features: the shadow would be compared on stand-ins
        if len(self._inflight) >= SHADOW_INFLIGHT_MAX:
            window.skipped += 1
            M.SHADOW_BATCHES.labels("skipped").inc()
            return
        ids = list(batch.transaction_id)
        primary = outcome.score.copy()
        ok = np.array([not e for e in outcome.error], dtype=bool)

        async def run() -> None:
            now = time.monotonic()
            shadowed = await self.models(batch, features, sequences, False, [""] * len(batch), self.budget_s, now,
                                         now + self.budget_s, {}, release)
            # Only pairs where both releases gave their full cascade's score: a degraded answer compares stages,
            # not releases.
            both = ok & np.array([not r and not e for r, e in zip(shadowed.degraded_reason, shadowed.error,
                                                                  strict=True)], dtype=bool)
            both &= np.array([not r for r in outcome.degraded_reason], dtype=bool)
            if not both.all():
                window.failed += 1
                M.SHADOW_BATCHES.labels("degraded").inc()
            else:
                M.SHADOW_BATCHES.labels("scored").inc()
            rows = np.flatnonzero(both)
            window.add([ids[i] for i in rows.tolist()], primary[rows], shadowed.score[rows])

        task = asyncio.ensure_future(run())
        self._inflight.add(task)

        def done(f: asyncio.Future[None]) -> None:
            self._inflight.discard(f)
            if not f.cancelled() and f.exception() is not None:
                window.failed += 1
                M.SHADOW_BATCHES.labels("failed").inc()
                log.warning("shadow batch failed", extra={"error": repr(f.exception())})

        task.add_done_callback(done)


def merge_groups(n: int, rows: list[np.ndarray], parts: list[BatchOutcome], timings: dict[str, float]) -> BatchOutcome:
    """One outcome of n events from the outcomes of disjoint row groups."""
    from services.gateway.cascade import STAGE_NONE, BatchOutcome

    score, filter_score = np.zeros(n), np.zeros(n)
    stage = np.full(n, STAGE_NONE, dtype=np.int8)
    reasons, versions, errors, releases = [""] * n, [""] * n, [""] * n, [""] * n
    for idx, part in zip(rows, parts, strict=True):
        score[idx], filter_score[idx], stage[idx] = part.score, part.filter_score, part.stage
        for j, i in enumerate(idx.tolist()):
            reasons[i], versions[i] = part.degraded_reason[j], part.model_version[j]
            errors[i], releases[i] = part.error[j], part.release[j]
    return BatchOutcome(score=score, filter_score=filter_score, stage=stage, degraded_reason=reasons,
                        model_version=versions, error=errors, timings=timings, release=releases)


