"""The cascade's last resort: with no stage in time, every event still gets a calibrated score and a reason chain;
with the filter in time, the filter's score is always the one used."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from scoring.scenarios.fraud import features as F
from scoring.scenarios.fraud.events import EventBatch
from scoring.scenarios.fraud.last_resort import LastResort
from services.gateway.cascade import STAGE_ENSEMBLE, STAGE_FILTER, Cascade, StageShares
from services.gateway.stages import EnsembleResult, FilterResult, StageError

pytestmark = pytest.mark.unit
N = 6


@pytest.fixture(scope="module")
def fallback_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real fallback model, trained and exported by the filter's own code on a few rows."""
    from scoring.scenarios.fraud.filter_train import export_filter, train_filter

    rng = np.random.default_rng(3)
    x = rng.normal(size=(400, len(F.FEATURE_NAMES))).astype(np.float32)
    y = (x[:, 0] + 0.3 * rng.normal(size=400) > 1.0).astype(int)
    out = tmp_path_factory.mktemp("filter")
    main, fallback = train_filter(x, y)
    calibration = {"main": (1.0, 0.0), "fallback": (0.8, -0.5)}
    export_filter(main, fallback, out, threshold=0.5, version="7", calibration=calibration)
    return out


class Stage:
    """A stage that answers with `result`, or fails with `error`."""

    def __init__(self, result: object = None, error: StageError | None = None) -> None:
        self.result, self.error, self.calls = result, error, 0

    async def _answer(self) -> object:
        self.calls += 1
        if self.error is not None:
            raise self.error
        return self.result

    async def update_and_get(self, batch: EventBatch, timeout_s: float) -> object:
        return await self._answer()

    async def predict(self, features: np.ndarray, self_contained: bool, timeout_s: float) -> object:
        return await self._answer()

    async def score(self, features: np.ndarray, sequences: np.ndarray, timeout_s: float) -> object:
        result = await self._answer()
        assert isinstance(result, EnsembleResult)
        return EnsembleResult(result.scores[: len(features)], result.model_version)


def _batch() -> EventBatch:
    return EventBatch(
        transaction_id=[f"t{i}" for i in range(N)],
        event_time_us=np.full(N, 1_700_000_000_000_000, np.int64),
        customer_id=["c"] * N,
        terminal_id=["m"] * N,
        amount=np.array([5.0, 900.0, 20.0, 1500.0, 1.0, 60.0]),
    )


FEATURES_OK = (np.zeros((N, len(F.FEATURE_NAMES)), np.float32), np.zeros((N, F.SEQ_LEN, len(F.SEQ_FEATURE_NAMES)),
                                                                         np.float32))
ENSEMBLE_OK = EnsembleResult(np.full(N, 0.9), "fraud_ensemble:1")
TIMEOUT = {name: StageError(name, "timeout") for name in ("features", "filter", "ensemble")}


def _cascade(features: Stage, filt: Stage, ensemble: Stage, fallback_dir: Path | None, unfiltered_max: int = 2):
    return Cascade(
        features, filt, ensemble, 1.0, StageShares(0.4, 0.3, 0.25),  # type: ignore[arg-type]
        unfiltered_max=unfiltered_max, last_resort=LastResort(fallback_dir) if fallback_dir else None,
    )


async def test_features_and_filter_late_every_event_gets_the_last_resort_with_the_chain(fallback_dir) -> None:
    cascade = _cascade(Stage(error=TIMEOUT["features"]), Stage(error=TIMEOUT["filter"]), Stage(ENSEMBLE_OK),
                       fallback_dir)
    outcome = await cascade.score(_batch(), deadline=1e12)
    assert outcome.error == [""] * N
    assert outcome.degraded_reason == ["features_timeout+filter_timeout+last_resort"] * N
    assert outcome.model_version == ["filter_fallback:7"] * N
    assert (outcome.stage == STAGE_FILTER).all()
    expected = LastResort(fallback_dir).score(_batch().amount, _batch().event_time_us)
    np.testing.assert_allclose(outcome.score, expected)
    assert np.isfinite(outcome.score).all() and ((outcome.score >= 0) & (outcome.score <= 1)).all()


async def test_filter_late_the_riskiest_by_the_last_resort_go_to_the_ensemble(fallback_dir) -> None:
    ensemble = Stage(ENSEMBLE_OK)
    cascade = _cascade(Stage(FEATURES_OK), Stage(error=TIMEOUT["filter"]), ensemble, fallback_dir)
    outcome = await cascade.score(_batch(), deadline=1e12)
    assert outcome.error == [""] * N
    by_ensemble = np.flatnonzero(outcome.stage == STAGE_ENSEMBLE)
    local = LastResort(fallback_dir).score(_batch().amount, _batch().event_time_us)
    assert set(by_ensemble) == set(np.argsort(-local, kind="stable")[:2])
    for i in range(N):
        if i in by_ensemble:
            assert (outcome.degraded_reason[i], outcome.model_version[i]) == ("filter_timeout", "fraud_ensemble:1")
        else:
            assert outcome.degraded_reason[i] == "filter_timeout+last_resort"
            assert outcome.model_version[i] == "filter_fallback:7"


async def test_filter_and_ensemble_late_name_both_before_the_last_resort(fallback_dir) -> None:
    cascade = _cascade(Stage(FEATURES_OK), Stage(error=TIMEOUT["filter"]), Stage(error=TIMEOUT["ensemble"]),
                       fallback_dir)
    outcome = await cascade.score(_batch(), deadline=1e12)
    reasons = sorted(set(outcome.degraded_reason))
    assert reasons == ["filter_timeout+ensemble_timeout+last_resort", "filter_timeout+last_resort"]
    assert outcome.error == [""] * N


async def test_a_filter_in_time_is_always_preferred_to_the_last_resort(fallback_dir) -> None:
    filtered = FilterResult(np.linspace(0.0, 0.2, N, dtype=np.float32), threshold=0.15, model_version="filter:7")
    cascade = _cascade(Stage(FEATURES_OK), Stage(filtered), Stage(ENSEMBLE_OK), fallback_dir)
    outcome = await cascade.score(_batch(), deadline=1e12)
    assert "filter_fallback:7" not in outcome.model_version
    assert not any("last_resort" in r for r in outcome.degraded_reason)
    cleared = outcome.stage == STAGE_FILTER
    np.testing.assert_allclose(outcome.score[cleared], filtered.scores[cleared], rtol=1e-6)


async def test_no_time_left_at_all_is_still_a_score(fallback_dir) -> None:
    cascade = _cascade(Stage(FEATURES_OK), Stage(FEATURES_OK), Stage(ENSEMBLE_OK), fallback_dir)
    outcome = await cascade.score(_batch(), deadline=0.0)  # the deadline passed long ago
    assert outcome.error == [""] * N
    assert outcome.degraded_reason == ["budget_exhausted+budget_exhausted+last_resort"] * N


async def test_without_a_last_resort_no_stage_in_time_is_an_error(fallback_dir) -> None:
    cascade = _cascade(Stage(error=TIMEOUT["features"]), Stage(error=TIMEOUT["filter"]), Stage(ENSEMBLE_OK), None)
    outcome = await cascade.score(_batch(), deadline=1e12)
    assert outcome.error == ["features_timeout+filter_timeout"] * N


def test_the_last_resort_alone_scores_a_batch_the_cascade_failed_on(fallback_dir) -> None:
    cascade = _cascade(Stage(), Stage(), Stage(), fallback_dir)
    outcome = cascade.last_resort_outcome(_batch(), "internal_KeyError")
    assert outcome.error == [""] * N and outcome.degraded_reason == ["internal_KeyError+last_resort"] * N
