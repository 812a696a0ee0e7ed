"""The offline feature definitions on hand-made examples whose answers can be worked out by hand."""

from __future__ import annotations

import numpy as np
import pytest

from scoring import features as F

pytestmark = pytest.mark.unit
DAY = F.US_PER_DAY
T0 = 1_530_403_200_000_000  # 2018-07-01 00:00 UTC, a Sunday


def col(name: str) -> int:
    return F.FEATURE_NAMES.index(name)


def compute(times, customers, terminals, amounts, frauds):
    raw, seq_raw, seq_count = F.compute_raw_offline(
        np.array(times, dtype=np.int64), np.array(customers), np.array(terminals),
        np.array(amounts, dtype=float), np.array(frauds, dtype=float),
    )
    t = np.array(times, dtype=np.int64)
    return F.derive_features(np.array(amounts, float), t, raw), F.derive_sequences(t, seq_raw, seq_count)


def test_customer_windows_include_the_event_and_drop_what_is_older_than_the_window() -> None:
    times = [T0, T0 + DAY // 2, T0 + 2 * DAY, T0 + 40 * DAY]
    feats, _ = compute(times, [1, 1, 1, 1], [9, 9, 9, 9], [10.0, 20.0, 60.0, 5.0], [0, 0, 0, 0])
    assert feats[1, col("customer_nb_tx_1day")] == 2
    assert feats[1, col("customer_avg_amount_1day")] == pytest.approx(15.0)
    assert feats[2, col("customer_nb_tx_1day")] == 1
    assert feats[2, col("customer_nb_tx_7day")] == 3
    assert feats[2, col("customer_avg_amount_7day")] == pytest.approx(30.0)
    assert feats[3, col("customer_nb_tx_30day")] == 1


def test_terminal_risk_uses_only_the_delayed_period() -> None:
    # Two frauds on terminal 5 on day 0; a transaction 3 days later cannot know them, one 8 days later can.
    times = [T0, T0 + 1, T0 + 3 * DAY, T0 + 8 * DAY]
    feats, _ = compute(times, [1, 2, 3, 4], [5, 5, 5, 5], [1.0, 1.0, 1.0, 1.0], [1, 1, 0, 0])
    assert feats[2, col("terminal_nb_tx_7day")] == 0
    assert feats[2, col("terminal_risk_7day")] == 0
    assert feats[3, col("terminal_nb_tx_7day")] == 2
    assert feats[3, col("terminal_risk_7day")] == 1.0
    # Whole 6-hour buckets: the 1-day window of an event at 8 days 00:00 is the 4 buckets of day 0.
    assert feats[3, col("terminal_nb_tx_1day")] == 2


def test_terminal_windows_are_whole_6_hour_buckets_ending_before_the_delay() -> None:
    H = DAY // 4
    # Day 0's event at 01:00 is in bucket 0. At 7 days + 5 h (bucket 28) its label may not be in yet (it arrives
    # 7 days after the transaction, at 7 days + 1 h): the bucket counts from bucket 29 (7 days + 6 h) on.
    hour = 3600 * 10**6
    times = [T0 + hour, T0 + 7 * DAY + 5 * hour, T0 + 7 * DAY + H, T0 + 8 * DAY + H - 1, T0 + 8 * DAY + H]
    feats, _ = compute(times, [1, 2, 3, 4, 5], [5, 5, 5, 5, 5], [1.0] * 5, [1, 0, 0, 0, 0])
    assert feats[1, col("terminal_nb_tx_30day")] == 0
    assert feats[2, col("terminal_nb_tx_1day")] == 1 and feats[2, col("terminal_risk_1day")] == 1.0
    # The 1-day window is 4 buckets: at 8 days + 6 h - 1 us (bucket 32) it is buckets 0..3; one us later, 1..4.
    assert feats[3, col("terminal_nb_tx_1day")] == 1
    assert feats[4, col("terminal_nb_tx_1day")] == 0 and feats[4, col("terminal_nb_tx_7day")] == 1


def test_flags_follow_utc_weekday_and_hour() -> None:
    monday_noon, sunday_3am = T0 + DAY + 12 * 3600 * 10**6, T0 + 3 * 3600 * 10**6
    feats, _ = compute([sunday_3am, monday_noon], [1, 1], [1, 1], [1.0, 1.0], [0, 0])
    assert feats[0, col("tx_during_weekend")] == 1 and feats[0, col("tx_during_night")] == 1
    assert feats[1, col("tx_during_weekend")] == 0 and feats[1, col("tx_during_night")] == 0


def test_sequence_is_oldest_first_zero_padded_and_limited_to_the_horizon() -> None:
    times = [T0, T0 + 35 * DAY, T0 + 35 * DAY + 3600 * 10**6]
    _, seqs = compute(times, [1, 1, 1], [1, 1, 1], [10.0, 20.0, 30.0], [0, 0, 0])
    last = seqs[2]
    present = F.SEQ_FEATURE_NAMES.index("present")
    assert last[:, present].tolist() == [0.0] * (F.SEQ_LEN - 2) + [1.0, 1.0]
    assert last[-1, 0] == pytest.approx(np.log1p(30.0))
    assert last[-1, 1] == pytest.approx(np.log1p(1.0))  # one hour after the previous event
    assert last[-2, 1] == 0.0  # its previous event is beyond the 30-day horizon
