"""The offline feature definitions on hand-made examples whose answers can be worked out by hand."""

from __future__ import annotations

import numpy as np
import pytest

from scoring.scenarios.fraud import features as F

pytestmark = pytest.mark.unit
DAY = F.US_PER_DAY
T0 = 1_530_403_200_000_000  # 2018-07-01 00:00 UTC, a Sunday


def col(name: str) -> int:
    return F.FEATURE_NAMES.index(name)


def compute(times, customers, terminals, amounts, frauds, delays=None):
    """`delays`: each label's delay after its transaction (us); by default 7 days."""
    t = np.array(times, dtype=np.int64)
    arrival = t + (np.array(delays, dtype=np.int64) if delays is not None else 7 * DAY)
    raw, seq_raw, seq_count = F.compute_raw_offline(
        t, np.array(customers), np.array(terminals),
        np.array(amounts, dtype=float), np.array(frauds, dtype=float), arrival,
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


def test_terminal_risk_counts_only_the_labels_arrived_by_the_event() -> None:
    # Two frauds on terminal 5 on day 0, labelled 7 days later; a transaction 3 days later sees both transactions
    # but neither label, one 8 days later both.
    times = [T0, T0 + 1, T0 + 3 * DAY, T0 + 8 * DAY]
    feats, _ = compute(times, [1, 2, 3, 4], [5, 5, 5, 5], [1.0, 1.0, 1.0, 1.0], [1, 1, 0, 0])
    assert feats[2, col("terminal_nb_tx_8day")] == 2
    assert feats[2, col("terminal_nb_labelled_8day")] == 0
    assert feats[2, col("terminal_risk_8day")] == 0
    assert feats[3, col("terminal_nb_tx_8day")] == 3
    assert feats[3, col("terminal_nb_labelled_8day")] == 2
    assert feats[3, col("terminal_risk_8day")] == pytest.approx(1.0)


def test_a_late_label_is_not_known_before_it_arrives_and_the_risk_is_over_the_labelled() -> None:
    hour = 3600 * 10**6
    # Terminal 5: a fraud labelled after 1 day, a genuine one labelled after 20 days, then events at days 2, 21
    # (20 days + 3 h after the second transaction: its label has arrived 3 hours before).
    times = [T0, T0 + hour, T0 + 2 * DAY, T0 + 20 * DAY + 4 * hour]
    delays = [DAY, 20 * DAY, DAY, DAY]
    feats, seqs = compute(times, [1, 2, 3, 4], [5, 5, 5, 5], [1.0] * 4, [1, 0, 0, 0], delays)
    assert feats[2, col("terminal_nb_labelled_14day")] == 1 and feats[2, col("terminal_risk_14day")] == 1.0
    assert feats[3, col("terminal_nb_labelled_37day")] == 3
    assert feats[3, col("terminal_risk_37day")] == pytest.approx(1 / 3)
    # The sequence step carries the 14-day risk the event saw when it happened.
    risk = F.SEQ_FEATURE_NAMES.index("terminal_risk_14day")
    assert seqs[2, -1, risk] == 1.0


def test_a_label_arriving_inside_the_events_bucket_counts_from_its_arrival() -> None:
    hour = 3600 * 10**6
    # Day 0 01:00 fraud on terminal 5, labelled 3 days + 1 h later (day 3 02:00, bucket 12); events of terminal 5
    # at day 3 01:00 (before the label), 02:00 (same microsecond: the label comes first) and 03:00.
    times = [T0 + hour, T0 + 3 * DAY + hour, T0 + 3 * DAY + 2 * hour, T0 + 3 * DAY + 3 * hour]
    feats, _ = compute(times, [1, 2, 3, 4], [5, 5, 5, 5], [1.0] * 4, [1, 0, 0, 0], [3 * DAY + hour, DAY, DAY, DAY])
    assert [feats[i, col("terminal_nb_labelled_8day")] for i in (1, 2, 3)] == [0, 1, 1]


def test_terminal_windows_are_whole_6_hour_buckets_before_the_events_own() -> None:
    H = DAY // 4
    hour = 3600 * 10**6
    # Bucket 0 holds the event at 01:00. The 8-day window is 32 buckets: at 8 days + 6 h - 1 us (bucket 32) it is
    # buckets 0..31; one us later (bucket 33), 1..32. An event in bucket 0 itself does not count its bucket.
    times = [T0 + hour, T0 + 2 * hour, T0 + 8 * DAY + H - 1, T0 + 8 * DAY + H]
    feats, _ = compute(times, [1, 2, 3, 4], [5, 5, 5, 5], [1.0] * 4, [1, 0, 0, 0])
    assert feats[1, col("terminal_nb_tx_8day")] == 0
    assert feats[2, col("terminal_nb_tx_8day")] == 2 and feats[2, col("terminal_risk_8day")] == 0.5
    # One us later, bucket 0's two transactions are out of the 8-day window, the one in bucket 32 in it.
    assert feats[3, col("terminal_nb_tx_8day")] == 1 and feats[3, col("terminal_nb_tx_14day")] == 3


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


def test_a_terminals_windows_never_reach_another_terminals_transactions() -> None:
    # Terminal 1's busy day 0, then terminal 2's first event a day later: a data span shorter than the longest
    # window must not let terminal 2's windows count terminal 1's buckets.
    times = [T0 + i for i in range(5)] + [T0 + DAY]
    feats, _ = compute(times, [1] * 6, [1] * 5 + [2], [1.0] * 6, [0] * 6)
    assert feats[5, col("terminal_nb_tx_37day")] == 0


def test_many_customers_over_a_long_span_keep_exact_windows() -> None:
    # 300,000 customers over 400 days: (customer rank) x (microseconds) would pass 2**63; each customer buys twice,
    # a day and a half apart, so its 1-day window holds one event and its 7-day window two.
    n = 300_000
    first = T0 + np.arange(n, dtype=np.int64) * (400 * DAY // n)
    times = np.concatenate([first, first + 3 * DAY // 2])
    order = np.argsort(times, kind="stable")
    customers = np.concatenate([np.arange(n), np.arange(n)])[order]
    feats, _ = compute(times[order], customers, np.zeros(2 * n, dtype=int), np.ones(2 * n), np.zeros(2 * n))
    second = order >= n
    assert (feats[:, col("customer_nb_tx_1day")] == 1).all()
    week = feats[:, col("customer_nb_tx_7day")]
    assert (week[second] == 2).all() and (week[~second] == 1).all()
