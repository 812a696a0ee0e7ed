"""The multi-class cascade (market ticks) with stages that answer, fail or refuse: every tick gets class
probabilities, a signal and the reason chain; a stale tick is refused, a gap is flagged."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from scoring.scenarios.market import features as MF
from scoring.scenarios.market.labels import FLAT, UP
from scoring.scenarios.market.online import TickBatch
from scoring.scenarios.market.serving import MarketServing
from services.gateway.cascade import STAGE_ENSEMBLE, STAGE_FILTER, STAGE_NONE, StageShares
from services.gateway.class_cascade import INVALID, ClassCascade
from services.gateway.stages import EnsembleResult, FilterResult, StageError

pytestmark = pytest.mark.unit
N = 4


@pytest.fixture(scope="module")
def serving(tmp_path_factory: pytest.TempPathFactory) -> MarketServing:
    out = tmp_path_factory.mktemp("market-filter")
    cols = MF.self_contained_columns()
    fallback = {"coef": np.eye(3, len(cols)).tolist(), "intercept": [0.0, 2.0, 0.0], "tau": 0.3}
    (out / "filter.json").write_text(json.dumps({"scenario": "market", "version": "9", "threshold": 0.5,
                                                 "fallback_features": cols, "fallback": fallback,
                                                 "feature_names": list(MF.FEATURE_NAMES)}))
    return MarketServing(Path(out))


class Stage:
    def __init__(self, result: object = None, error: StageError | None = None) -> None:
        self.result, self.error = result, error

    async def _answer(self) -> object:
        if self.error is not None:
            raise self.error
        return self.result

    async def fold_other(self, request: object, n_features: int, timeout_s: float) -> object:
        return await self._answer()

    def fold_late(self, request: object) -> bool:
        self.late = [*getattr(self, "late", []), request]
        return True

    async def predict(self, features: np.ndarray, self_contained: bool, timeout_s: float, scenario: str) -> object:
        assert scenario == "market"
        return await self._answer()

    async def score(self, features: np.ndarray, sequences: np.ndarray, timeout_s: float) -> object:
        result = await self._answer()
        assert isinstance(result, EnsembleResult) and result.probs is not None and result.signal is not None
        n = len(features)
        return EnsembleResult(result.scores[:n], result.model_version, result.probs[:n], result.signal[:n])


def _batch() -> TickBatch:
    raw = np.zeros((len(MF.RAW_FIELDS), N))
    raw[MF.RAW["sequence"]] = np.arange(1, N + 1)
    raw[MF.RAW["bid_price"]], raw[MF.RAW["ask_price"]] = 10.0, 10.01
    raw[MF.RAW["bid_size"]], raw[MF.RAW["ask_size"]] = 100.0, 50.0
    return TickBatch([f"t{i}" for i in range(N)], ["S"] * N, raw)


def _features(status: list[int]) -> Stage:
    return Stage((np.zeros((N, len(MF.FEATURE_NAMES)), np.float32),
                  np.zeros((N, MF.SEQ_LEN, len(MF.SEQ_FEATURE_NAMES)), np.float32), np.asarray(status, np.int8)))


def _filter(move: list[float]) -> Stage:
    probs = np.array([[m / 2, 1 - m, m / 2] for m in move], np.float32)
    return Stage(FilterResult(np.asarray(move, np.float32), 0.5, "market_filter:9", probs))


ENSEMBLE = Stage(EnsembleResult(np.full(N, 0.7), "market_ensemble:1", np.tile([0.1, 0.2, 0.7], (N, 1)),
                                np.full(N, UP, np.int8)))


def _cascade(serving: MarketServing, features: Stage, filt: Stage, ensemble: Stage) -> ClassCascade:
    return ClassCascade(serving, features, filt, ensemble, 1.0, StageShares(0.4, 0.3, 0.25))  # type: ignore[arg-type]


async def test_the_filter_clears_the_ensemble_decides_a_stale_tick_is_refused_and_a_gap_flagged(serving) -> None:
    status = [MF.FOLDED, MF.GAP, MF.STALE, MF.FOLDED]
    out = await _cascade(serving, _features(status), _filter([0.1, 0.9, 0.9, 0.2]), ENSEMBLE).score(
        _batch(), deadline=1e12)
    assert out.stage.tolist() == [STAGE_FILTER, STAGE_ENSEMBLE, STAGE_NONE, STAGE_FILTER]
    assert out.signal.tolist()[:2] == [FLAT, UP] and out.signal[3] == FLAT
    assert out.error[2].startswith(f"{INVALID}:tick.sequence:") and not any(out.error[i] for i in (0, 1, 3))
    assert out.degraded_reason[1] == "sequence_gap"
    np.testing.assert_allclose(out.score[1], 0.7)
    np.testing.assert_allclose(out.score[0], 0.9)  # the filter's p_flat for a cleared tick


async def test_with_the_ensemble_down_a_passed_tick_keeps_the_filter_probabilities_and_signals_flat(serving) -> None:
    down = Stage(error=StageError("ensemble", "unavailable"))
    out = await _cascade(serving, _features([0] * N), _filter([0.9] * N), down).score(_batch(), deadline=1e12)
    assert (out.signal == FLAT).all() and (out.stage == STAGE_FILTER).all()
    assert out.degraded_reason == ["ensemble_unavailable"] * N


async def test_with_features_and_filter_down_the_last_resort_answers_with_the_chain(serving) -> None:
    features = Stage(error=StageError("features", "timeout"))
    filt = Stage(error=StageError("filter", "unavailable"))
    out = await _cascade(serving, features, filt, ENSEMBLE).score(_batch(), deadline=1e12)
    assert out.degraded_reason == ["features_timeout+filter_unavailable+last_resort"] * N
    assert out.model_version == ["market_last_resort:9"] * N
    np.testing.assert_allclose(out.probs.sum(axis=1), 1.0)
    assert not any(out.error)


async def test_ticks_left_no_time_for_features_are_still_folded_in_order_and_timed_out_ones_not_twice(
    serving,
) -> None:
    """A tick that got no features (its budget gone, or the breaker open) is sent to the feature service anyway,
    unawaited, before the next batch's fold: its symbol's ring must not miss it (the next tick would be a false
    gap). A timed-out fold was sent already and is not sent again."""
    features = _features([0] * N)
    cascade = _cascade(serving, features, _filter([0.1] * N), ENSEMBLE)
    out = await cascade.score(_batch(), deadline=0.0)  # past: no time for any stage
    assert out.degraded_reason[0].startswith("budget_exhausted")
    assert len(features.late) == 1 and list(features.late[0].ticks.tick_id) == _batch().tick_id

    timed_out = Stage(error=StageError("features", "timeout"))
    await _cascade(serving, timed_out, _filter([0.1] * N), ENSEMBLE).score(_batch(), deadline=1e12)
    assert not getattr(timed_out, "late", [])
