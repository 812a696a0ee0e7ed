"""The cascade: features, then the filter, then the Triton ensemble for the events the filter passes.

Transport-agnostic: it takes a columnar batch and a deadline and returns one outcome per event. Each stage
gets the smaller of its share of the budget and the time left; a stage that fails or is late degrades the
answer (with the reason) instead of delaying it. The decision to stop early lives here, not in Triton: an
ensemble is a fixed graph and cannot skip its heavy models on the filter's output.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np

from scoring.scenarios import registry
from services.gateway import metrics as M
from services.gateway.backlog import FoldBacklog
from services.gateway.breaker import CircuitBreaker
from services.gateway.release_paths import ShadowScorer, merge_groups
from services.gateway.stages import (
    TRITON_MIN_TIMEOUT_US,
    EnsembleClient,
    FeatureClient,
    FilterClient,
    FilterResult,
    StageError,
)

log = logging.getLogger(__name__)
if TYPE_CHECKING:  # the default scenario's types; the cascade reaches them through `edge` and `last_resort`
    from scoring.releases.store import Release
    from scoring.scenarios.fraud.events import EventBatch
    from scoring.scenarios.fraud.last_resort import LastResort
    from services.gateway.releases import ReleaseManager

T = TypeVar("T")

STAGE_FILTER = 1
STAGE_ENSEMBLE = 2
STAGE_NONE = 3
# A stage is not called with less time than this: it could not answer anyway.
MIN_STAGE_S = 0.0002
# The last link of a degraded_reason chain when the gateway's in-process fallback gave the score.
LAST_RESORT = "last_resort"


@dataclass
class BatchOutcome:
    """One entry per event of the batch."""

    score: np.ndarray
    filter_score: np.ndarray
    stage: np.ndarray
    degraded_reason: list[str]
    model_version: list[str]
    error: list[str] = field(default_factory=list)  # "" when scored
    # Seconds each stage called took (features, filter, ensemble), for the batch's trace.
    timings: dict[str, float] = field(default_factory=dict)
    # Multi-class scenarios: class probabilities [n, classes] and the class given [n] (int8).
    probs: np.ndarray | None = None
    signal: np.ndarray | None = None
    # The release that scored each event ("" without a release store).
    release: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class StageShares:
    features: float
    filter: float
    ensemble: float

    def cumulative(self) -> tuple[float, float, float]:
        return (self.features, self.features + self.filter, self.features + self.filter + self.ensemble)


# Stage failures that say the stage is down or hung, and so count towards opening its breaker.
_BREAKING = {"timeout", "unavailable"}


class Cascade:
    def __init__(
        self,
        features: FeatureClient,
        filter_client: FilterClient,
        ensemble: EnsembleClient,
        budget_s: float,
        shares: StageShares,
        *,
        breaker_failures: int = 3,
        breaker_reset_s: float = 0.25,
        breaker_min_streak_s: float = 0.0,
        unfiltered_max: int = 64,
        backlog: FoldBacklog | None = None,
        last_resort: LastResort | None = None,
        metric_prefix: str = "",
        edge: Any = None,
        releases: ReleaseManager | None = None,
    ) -> None:
        # The scenario's events as this cascade needs them (shapes; the features an event carries by itself).
        self.edge = edge if edge is not None else registry.edge(registry.DEFAULT.name)
        # Which release scores which events; None: the models the stages were started with.
        self.releases = releases
        self.shadows = ShadowScorer(self._models, lambda: self.releases.window if self.releases else None, budget_s)
        self._breaker_settings = (breaker_failures, breaker_reset_s, breaker_min_streak_s)
        self.features = features
        self.filter = filter_client
        self.ensemble = ensemble
        self.budget_s = budget_s
        self.shares = shares
        self.breakers = {
            name: CircuitBreaker(
                name, failures=breaker_failures, reset_s=breaker_reset_s, min_streak_s=breaker_min_streak_s
            )
            for name in ("features", "filter", "ensemble")
        }
        # With the filter down, at most this many events of a batch go to the ensemble (the largest amounts
        # first): the ensemble is sized for the few events the filter passes, not for all of them.
        self.unfiltered_max = unfiltered_max
        # Scores every event no stage scored in time; without it (tests of the stages alone) such events get errors.
        self.last_resort = last_resort
        # Events answered without the feature service are folded later from here.
        self.backlog = backlog
        if backlog is not None:
            backlog.breaker = self.breakers["features"]
        for name, breaker in self.breakers.items():
            M.BREAKER_STATE.labels(metric_prefix + name).set_function(functools.partial(_breaker_code, breaker))
        if backlog is not None:
            M.FOLD_BACKLOG.set_function(lambda: backlog.pending)

    async def warm_up(self, timeout_s: float = 5.0) -> dict[str, str]:
        """One call to each stage (an empty batch for the feature service: nothing is folded)."""
        empty = self.edge.empty()
        zeros = np.zeros((4, self.edge.n_features), dtype=np.float32)
        seqs = np.zeros((4, *self.edge.seq_shape), dtype=np.float32)
        calls = {
            "features": self.features.update_and_get(empty, timeout_s),
            "filter": self.filter.predict(zeros, False, timeout_s),
            "ensemble": self.ensemble.score(zeros, seqs, timeout_s),
        }
        status = {}
        for name, call in calls.items():
            try:
                await call
                status[name] = "ok"
            except StageError as exc:
                status[name] = exc.reason
                log.warning("stage not ready at start", extra={"stage": name, "reason": exc.reason})
        return status

    async def _call(
        self,
        stage: str,
        timeout_s: float,
        call: Callable[[float], Awaitable[T]],
        timings: dict[str, float] | None = None,
    ) -> T:
        """One stage call behind its breaker: an open circuit answers at once instead of waiting out a timeout.
        `stage` may name a release's own stage ("ensemble@r3"): a candidate's failures never open the champion's."""
        breaker = self.breakers.get(stage)
        if breaker is None:
            failures, reset_s, min_streak_s = self._breaker_settings
            breaker = self.breakers[stage] = CircuitBreaker(stage, failures=failures, reset_s=reset_s,
                                                            min_streak_s=min_streak_s)
        metric_stage = stage.split("@", 1)[0]
        if not breaker.allow():
            raise StageError(stage, "circuit_open", f"{breaker.failures} failures in a row; retried every "
                                                    f"{breaker.reset_s * 1e3:.0f} ms")
        started = time.perf_counter()
        opened = breaker.opened_count
        try:
            result = await call(timeout_s)
        except StageError as exc:
            if exc.kind in _BREAKING:
                breaker.failure()
            else:
                breaker.success()  # the stage answered, if only with an error: it is up
            took = time.perf_counter() - started
            M.STAGE_LATENCY.labels(metric_stage, exc.kind).observe(took)
            if timings is not None:
                timings[stage] = took
            if breaker.opened_count != opened:
                M.BREAKER_OPENED.labels(metric_stage).inc()
            raise
        except BaseException:
            breaker.abandon()
            raise
        breaker.success()
        took = time.perf_counter() - started
        M.STAGE_LATENCY.labels(metric_stage, "ok").observe(took)
        if timings is not None:
            timings[stage] = took
        return result

    def _stage_timeout(
        self, cum_share: float, budget_s: float, started: float, deadline: float, now: float | None = None
    ) -> float:
        """A stage's time: its share plus what earlier stages left of theirs, never past the event's deadline."""
        now = time.monotonic() if now is None else now
        left = deadline - now
        if left < MIN_STAGE_S:
            raise StageError("budget", "exhausted", f"{left * 1e3:.2f} ms left")
        allowed = min(left, cum_share * budget_s - (now - started))
        if allowed < MIN_STAGE_S:
            raise StageError("budget", "exhausted", f"{allowed * 1e3:.2f} ms left of the stage's share")
        return allowed

    async def score(
        self,
        batch: EventBatch,
        deadline: float,
        budget_s: float | None = None,
        features_done: Callable[[], None] | None = None,
    ) -> BatchOutcome:
        """Scores a batch whose most urgent event must be answered by `deadline` and had `budget_s` in all.

        `features_done` is called once the feature stage is over (answered, failed or skipped): the batcher
        forms the next batch then, so a feature service that folds one batch at a time gets one larger batch
        instead of a queue of small ones."""
        n = len(batch)
        budget = self.budget_s if budget_s is None else budget_s
        started = time.monotonic()
        cum = self.shares.cumulative()
        reasons = [""] * n
        timings: dict[str, float] = {}

        # 1. Features (also folds the events into the entities' state).
        self_contained = False
        try:
            # Batches are sent in the order they were formed (nothing awaits before this call), and the feature
            # service folds them in the order they arrive, so entity state sees events in order.
            timeout = self._stage_timeout(cum[0], budget, started, deadline)
            features, sequences = await self._call(
                "features", timeout, lambda t: self.features.update_and_get(batch, t), timings
            )
        except StageError as exc:
            reasons = [exc.reason] * n
            self_contained = True
            # A timeout may or may not have reached Redis; re-folding is harmless (idempotent by id).
            if self.backlog is not None:
                self.backlog.add(batch)
            features, sequences = self.edge.self_contained(batch)
        if features_done is not None:
            features_done()

        if self.releases is None:
            return await self._models(batch, features, sequences, self_contained, reasons, budget, started, deadline,
                                      timings, None)
        groups = self.releases.plan(batch.customer_id)
        champion = self.releases.champion
        on_champion: tuple[BatchOutcome, np.ndarray | None] | None
        if len(groups) == 1:
            outcome = await self._models(batch, features, sequences, self_contained, reasons, budget, started,
                                         deadline, timings, groups[0].release)
            on_champion = (outcome, None) if groups[0].release is champion else None
        else:
            # A canary: each release scores its own customers' rows, both at once, on the features of this one call.
            parts = await asyncio.gather(*(
                self._models(batch.take(g.rows), features[g.rows], sequences[g.rows], self_contained,
                             [reasons[i] for i in g.rows.tolist()], budget, started, deadline, timings, g.release)
                for g in groups if g.rows is not None
            ))
            outcome = merge_groups(n, [g.rows for g in groups if g.rows is not None], parts, timings)
            on_champion = (parts[0], groups[0].rows)
        # The shadow (and a canary's candidate) scores copies of the champion's events, for the paired comparison.
        shadow = self.releases.shadow()
        if shadow is not None and on_champion is not None:
            part, rows = on_champion
            if rows is None:
                self.shadows.submit(batch, features, sequences, self_contained, part, shadow)
            else:
                self.shadows.submit(batch.take(rows), features[rows], sequences[rows], self_contained, part, shadow)
        return outcome

    async def _models(
        self,
        batch: EventBatch,
        features: np.ndarray,
        sequences: np.ndarray,
        self_contained: bool,
        reasons: list[str],
        budget: float,
        started: float,
        deadline: float,
        timings: dict[str, float],
        release: Release | None,
    ) -> BatchOutcome:
        """The filter and the ensemble of one release (None: the models the services were started with)."""
        n = len(batch)
        cum = self.shares.cumulative()
        versions = [""] * n
        errors = [""] * n
        release_name = "" if release is None else release.name
        own = release is None or release is self._champion()
        filter_key = "filter" if own else f"filter@{release_name}"
        ensemble_key = "ensemble" if own else f"ensemble@{release_name}"
        # Without a release the stages are called as before releases existed (their own models).
        filter_kw: dict[str, Any] = {} if release is None else {"release": release_name}
        ensemble_kw: dict[str, Any] = {} if release is None else {"model": (release.triton_model,
                                                                            release.triton_version)}

        # 2. The filter.
        filtered: FilterResult | None = None
        filter_reason = ""
        try:
            timeout = self._stage_timeout(cum[1], budget, started, deadline)
            filtered = await self._call(
                filter_key, timeout,
                lambda t: self.filter.predict(features, self_contained, t, **filter_kw), timings
            )
        except StageError as exc:
            filter_reason = exc.reason

        score = np.zeros(n)
        filter_score = np.zeros(n)
        stage = np.full(n, STAGE_NONE, dtype=np.int8)
        # Events whose answer is the gateway's own last-resort score (unless the ensemble scores them after all).
        last_resort = np.zeros(n, dtype=bool)
        if filtered is not None:
            filter_score = filtered.scores.astype(np.float64)
            score[:] = filter_score
            stage[:] = STAGE_FILTER
            versions = [filtered.model_version] * n
            passed = filter_score >= filtered.threshold
        elif self.last_resort is not None:
            # No filter score in time: every event gets the in-process fallback's, and the ensemble (sized for the
            # few events a filter passes) takes the riskiest of them by that score.
            filter_score = self.last_resort.score_batch(batch)
            score[:] = filter_score
            stage[:] = STAGE_FILTER
            versions = [self.last_resort.version] * n
            last_resort[:] = True
            passed = np.zeros(n, dtype=bool)
            passed[np.argsort(-filter_score, kind="stable")[: self.unfiltered_max]] = True
        else:
            passed = np.ones(n, dtype=bool)
            if n > self.unfiltered_max:
                passed[:] = False
                passed[np.argsort(-self.edge.priority(batch), kind="stable")[: self.unfiltered_max]] = True
                for i in np.flatnonzero(~passed):
                    errors[i] = f"{filter_reason}+ensemble_capacity"

        # 3. The ensemble, only for passed events with real features: on stand-in features it would guess.
        if self_contained:
            passed[:] = False
            if filtered is None and self.last_resort is None:
                errors = [f"{reasons[0]}+{filter_reason}"] * n
        ensemble_reason = ""
        if passed.any():
            idx = np.flatnonzero(passed)
            try:
                timeout = self._stage_timeout(cum[2], budget, started, deadline)
                if timeout < TRITON_MIN_TIMEOUT_US / 1e6:
                    raise StageError("budget", "exhausted", f"{timeout * 1e3:.2f} ms left for the ensemble")
                result = await self._call(
                    ensemble_key, timeout,
                    lambda t: self.ensemble.score(features[idx], sequences[idx], t, **ensemble_kw), timings
                )
                score[idx] = np.clip(result.scores, 0.0, 1.0)
                stage[idx] = STAGE_ENSEMBLE
                last_resort[idx] = False
                for i in idx:
                    versions[i] = result.model_version
            except StageError as exc:
                ensemble_reason = exc.reason
                for i in idx:
                    if filtered is None and self.last_resort is None:
                        errors[i] = f"{filter_reason}+{exc.reason}"
                    elif filtered is not None:
                        reasons[i] = _join(reasons[i], exc.reason)
        if last_resort.any():
            for i in np.flatnonzero(last_resort):
                chain = [r for r in (reasons[i], filter_reason, ensemble_reason if passed[i] else "") if r]
                reasons[i] = "+".join([*chain, LAST_RESORT])
        if filter_reason:
            reasons = [
                _join(r, filter_reason) if not e and not lr else r
                for r, e, lr in zip(reasons, errors, last_resort, strict=True)
            ]
        return BatchOutcome(
            score=score,
            filter_score=filter_score,
            stage=stage,
            degraded_reason=reasons,
            model_version=versions,
            error=errors,
            timings=timings,
            release=[release_name] * n,
        )


    def _champion(self) -> Release | None:
        return None if self.releases is None else self.releases.champion

    def last_resort_outcome(self, batch: EventBatch, reason: str) -> BatchOutcome:
        """Every event of the batch scored by the last resort alone (an error per event where there is none)."""
        n = len(batch)
        if self.last_resort is None:
            return BatchOutcome(
                score=np.zeros(n),
                filter_score=np.zeros(n),
                stage=np.full(n, STAGE_NONE, dtype=np.int8),
                degraded_reason=[""] * n,
                model_version=[""] * n,
                error=[reason] * n,
            )
        scores = self.last_resort.score_batch(batch)
        return BatchOutcome(
            score=scores,
            filter_score=scores.copy(),
            stage=np.full(n, STAGE_FILTER, dtype=np.int8),
            degraded_reason=[f"{reason}+{LAST_RESORT}"] * n,
            model_version=[self.last_resort.version] * n,
            error=[""] * n,
            release=[self.releases.routing.champion if self.releases is not None else ""] * n,
        )


def _breaker_code(breaker: CircuitBreaker) -> float:
    return float(M.BREAKER_CODES[breaker.state])


def _join(a: str, b: str) -> str:
    return b if not a else f"{a},{b}"
