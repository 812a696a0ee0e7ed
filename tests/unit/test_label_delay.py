"""The label-arrival model: specs, bounds, and delays that depend only on (transaction id, seed)."""

from __future__ import annotations

import numpy as np
import pytest

from scoring.scenarios.fraud.label_delay import EVALUATED, REALISTIC_PARTS, US_PER_DAY, LabelDelay, parse_duration_us

pytestmark = pytest.mark.unit
IDS = np.arange(200_000, dtype=np.int64)


def test_a_fixed_delay_is_the_same_for_every_label() -> None:
    assert set(LabelDelay.parse("fixed:7d").delays_us(IDS[:100]).tolist()) == {7 * US_PER_DAY}
    assert parse_duration_us("36h") == 1.5 * US_PER_DAY and parse_duration_us("90m") == 5_400_000_000


def test_the_realistic_mix_has_its_documented_parts() -> None:
    delays = LabelDelay.parse("realistic").delays_us(IDS) / US_PER_DAY
    (w1, lo1, hi1), (w2, lo2, hi2) = REALISTIC_PARTS
    assert delays.min() >= lo1 and delays.max() <= hi2
    assert np.mean(delays <= hi1) == pytest.approx(w1, abs=0.01)
    # Uniform inside each part: the first part's median is its midpoint.
    assert np.median(delays[delays <= hi1]) == pytest.approx((lo1 + hi1) / 2, abs=0.2)
    assert np.mean(delays > lo2) == pytest.approx(w2, abs=0.01)


def test_delays_depend_on_the_id_and_seed_only() -> None:
    model = LabelDelay.parse("uniform:1d-14d")
    whole = model.delays_us(IDS)
    # A replay of a part of the data draws the same delays as training on the whole did.
    np.testing.assert_array_equal(model.delays_us(IDS[5000:6000]), whole[5000:6000])
    assert not np.array_equal(model.delays_us(IDS, seed=1), whole)
    assert whole.min() >= US_PER_DAY and whole.max() <= 14 * US_PER_DAY


@pytest.mark.parametrize("spec", ["fixed", "fixed:0d", "uniform:3d-1d", "gamma:2", "fixed:7 days", "uniform:1d"])
def test_a_bad_spec_is_refused_with_what_to_write(spec: str) -> None:
    with pytest.raises(ValueError, match="fixed|uniform|duration|at least"):
        LabelDelay.parse(spec)


def test_the_evaluated_delays_parse() -> None:
    assert [LabelDelay.parse(s).spec for s in EVALUATED] == ["fixed:7d", "fixed:8d", "realistic"]


def test_a_delay_in_days_may_be_a_numpy_number() -> None:
    from scoring.scenarios.fraud.simulator import label_arrival_us

    t = np.array([0, 10], dtype=np.int64)
    np.testing.assert_array_equal(label_arrival_us(t, t, np.float64(0.5)), t + US_PER_DAY // 2)
    np.testing.assert_array_equal(label_arrival_us(t, t, np.int64(1)), t + US_PER_DAY)
