"""The cascade for multi-class scenarios (market ticks: down, flat, up), beside fraud's `cascade.Cascade`.

The same three stages, budget shares and breakers (it is a `Cascade`, sharing its stage calls); what the scenario
decides comes from its `Serving` (built by `scoring.scenarios.registry`): the feature request of a batch, the fold
statuses that refuse an event or flag it, the features an event carries by itself, the last resort, the class that
means "nothing to do". Per event:
- a fold status that refuses (a stale sequence) answers INVALID_ARGUMENT naming the field; one that flags (a
  sequence gap) scores and names it in `degraded_reason`;
- the filter's class probabilities; an event whose pass score (the probability of a move) is under its threshold
  is answered with the filter's probabilities and the idle class;
- the others get the ensemble's probabilities and class; when the ensemble is late or down they keep the filter's
  probabilities with the idle class (no action on a degraded answer) and say why.
`score` is the probability of the class given, `filter_score` the filter's pass score.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, Protocol

import numpy as np

from scoring.v1 import features_pb2
from services.gateway.cascade import (
    LAST_RESORT,
    STAGE_ENSEMBLE,
    STAGE_FILTER,
    STAGE_NONE,
    BatchOutcome,
    Cascade,
    _join,
)
from services.gateway.stages import TRITON_MIN_TIMEOUT_US, FilterResult, StageError

# The prefix of an error that is the client's (a refused fold status): the servicer answers INVALID_ARGUMENT.
INVALID = "invalid_argument"


class Serving(Protocol):
    """What the gateway needs of a multi-class scenario."""

    name: str
    classes: int
    n_features: int
    seq_shape: tuple[int, int]
    idle_class: int
    last_resort_version: str

    def feature_request(self, batch: Any) -> features_pb2.FeatureRequest: ...
    def self_contained(self, batch: Any) -> np.ndarray: ...
    def last_resort(self, batch: Any) -> np.ndarray: ...
    def pass_score(self, probs: np.ndarray) -> np.ndarray: ...
    def fold_verdicts(self, batch: Any, status: np.ndarray) -> tuple[dict[int, str], dict[int, str]]:
        """(row -> 'field: message' refused, row -> reason flagged)."""
        ...
    def empty(self) -> Any: ...


class ClassCascade(Cascade):
    def __init__(self, serving: Serving, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, metric_prefix=f"{serving.name}_", **kwargs)
        self.serving = serving

    async def warm_up(self, timeout_s: float = 5.0) -> dict[str, str]:
        sv = self.serving
        zeros = np.zeros((4, sv.n_features), dtype=np.float32)
        seqs = np.zeros((4, *sv.seq_shape), dtype=np.float32)
        calls = {
            "features": self.features.fold_other(sv.feature_request(sv.empty()), sv.n_features, timeout_s),
            "filter": self.filter.predict(zeros, False, timeout_s, sv.name),
            "ensemble": self.ensemble.score(zeros, seqs, timeout_s),
        }
        status = {}
        for name, call in calls.items():
            try:
                await call
                status[name] = "ok"
            except StageError as exc:
                status[name] = exc.reason
        return status

    async def score(
        self,
        batch: Any,
        deadline: float,
        budget_s: float | None = None,
        features_done: Callable[[], None] | None = None,
    ) -> BatchOutcome:
        sv = self.serving
        n = len(batch)
        budget = self.budget_s if budget_s is None else budget_s
        started = time.monotonic()
        cum = self.shares.cumulative()
        reasons = [""] * n
        errors = [""] * n
        timings: dict[str, float] = {}

        self_contained = False
        request = sv.feature_request(batch)
        try:
            timeout = self._stage_timeout(cum[0], budget, started, deadline)
            features, sequences, status = await self._call(
                "features", timeout, lambda t: self.features.fold_other(request, sv.n_features, t), timings
            )
            refused, flagged = sv.fold_verdicts(batch, status)
            for i, message in refused.items():
                errors[i] = f"{INVALID}:{message}"
            for i, reason in flagged.items():
                reasons[i] = reason
        except StageError as exc:
            reasons = [exc.reason] * n
            self_contained = True
            if exc.kind in ("exhausted", "circuit_open") and n:  # not sent: sent now, nobody waiting for it
                self.features.fold_late(request)
            features = sv.self_contained(batch)
            sequences = np.zeros((n, *sv.seq_shape), dtype=np.float32)
        if features_done is not None:
            features_done()

        filtered: FilterResult | None = None
        filter_reason = ""
        try:
            timeout = self._stage_timeout(cum[1], budget, started, deadline)
            filtered = await self._call(
                "filter", timeout, lambda t: self.filter.predict(features, self_contained, t, sv.name), timings
            )
            if filtered.probs is None:
                raise StageError("filter", "invalid", "no class probabilities")
        except StageError as exc:
            filter_reason = exc.reason
            filtered = None

        signal = np.full(n, sv.idle_class, dtype=np.int8)
        stage = np.full(n, STAGE_FILTER, dtype=np.int8)
        if filtered is not None:
            probs = filtered.probs.astype(np.float64)  # type: ignore[union-attr]
            pass_score = filtered.scores.astype(np.float64)
            versions = [filtered.model_version] * n
            passed = pass_score >= filtered.threshold
        else:
            probs = sv.last_resort(batch)
            pass_score = sv.pass_score(probs)
            versions = [sv.last_resort_version] * n
            passed = np.zeros(n, dtype=bool)
            passed[np.argsort(-pass_score, kind="stable")[: self.unfiltered_max]] = True
        refused_rows = np.asarray([bool(e) for e in errors])
        passed &= ~refused_rows
        if self_contained:
            passed[:] = False

        ensemble_reason = ""
        if passed.any():
            idx = np.flatnonzero(passed)
            try:
                timeout = self._stage_timeout(cum[2], budget, started, deadline)
                if timeout < TRITON_MIN_TIMEOUT_US / 1e6:
                    raise StageError("budget", "exhausted", f"{timeout * 1e3:.2f} ms left for the ensemble")
                result = await self._call(
                    "ensemble", timeout, lambda t: self.ensemble.score(features[idx], sequences[idx], t), timings
                )
                probs[idx] = result.probs
                signal[idx] = result.signal  # type: ignore[assignment]
                stage[idx] = STAGE_ENSEMBLE
                for i in idx:
                    versions[i] = result.model_version
            except StageError as exc:
                ensemble_reason = exc.reason
                if filtered is not None:
                    for i in idx:
                        reasons[i] = _join(reasons[i], exc.reason)
        if filtered is None:
            # The last resort answered: the whole chain, as fraud's cascade names it ("features_timeout+
            # filter_timeout+last_resort"); an event the ensemble then scored names what it lacked.
            for i in range(n):
                if stage[i] == STAGE_ENSEMBLE:
                    reasons[i] = _join(reasons[i], filter_reason)
                    continue
                chain = [r for r in (reasons[i], filter_reason, ensemble_reason if passed[i] else "") if r]
                reasons[i] = "+".join([*chain, LAST_RESORT])
                versions[i] = sv.last_resort_version
        score = probs[np.arange(n), signal.astype(np.int64)]
        for i in np.flatnonzero(refused_rows):
            stage[i] = STAGE_NONE
        return BatchOutcome(
            score=score,
            filter_score=pass_score,
            stage=stage,
            degraded_reason=reasons,
            model_version=versions,
            error=errors,
            timings=timings,
            probs=probs,
            signal=signal,
        )

    def last_resort_outcome(self, batch: Any, reason: str) -> BatchOutcome:
        sv = self.serving
        n = len(batch)
        probs = sv.last_resort(batch)
        signal = np.full(n, sv.idle_class, dtype=np.int8)
        return BatchOutcome(
            score=probs[np.arange(n), signal.astype(np.int64)],
            filter_score=sv.pass_score(probs),
            stage=np.full(n, STAGE_FILTER, dtype=np.int8),
            degraded_reason=[f"{reason}+{LAST_RESORT}"] * n,
            model_version=[sv.last_resort_version] * n,
            error=[""] * n,
            probs=probs,
            signal=signal,
        )
