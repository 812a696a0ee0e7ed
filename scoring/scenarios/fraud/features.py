"""The feature definitions of the scoring graph: one module, two executions.

Offline, `compute_offline` runs over a whole frame of transactions (training, evaluation). Online, the feature
service folds each micro-batch into compact per-entity state in Redis and counts the *raw aggregates* of every
event from it (window counts and sums, the customer's recent events; `scoring/scenarios/fraud/aggregates.py`);
`derive_features` and `derive_sequences` below turn raw aggregates into model inputs on both sides, so the only
code that differs between training and serving is how the aggregates are counted, and the parity test compares
exactly that.

Definitions (after the baseline of Le Borgne et al., *Reproducible ML for Credit Card Fraud Detection*, ch. 3):
- customer windows (t - w, t], current event included: number of transactions and mean amount, w in 1/7/30 d;
- terminal windows of whole 6-hour UTC buckets by transaction age: for an event in bucket H, the 4w buckets
  H - 4w .. H - 1, w in 8/14/37 d (the handbook's 1/7/30-day windows reaching back over its 7-day label delay). Per
  window: the number of transactions, the number whose label has arrived by the event's time, and the fraud risk
  over those (frauds among the labelled / labelled, 0 when none). Labels arrive late and not on a fixed day
  (`fraud.label_delay`), so every label-based figure is point-in-time: offline it counts exactly the labels that
  had arrived at the event's time, online the labels the feature service has received. The labelled count tells
  the models how much of a window's risk is known yet. Buckets keep a terminal's state at a fixed size whatever
  its traffic (issue 14);
- flags: weekend (UTC Saturday or Sunday) and night (UTC hour <= 6);
- the customer's last SEQ_LEN events within the 30-day horizon, oldest first, for the sequence model; each step
  carries its terminal's 14-day risk as it was at that event's time.
Events are processed in (event time, arrival) order; ties keep arrival order on both sides. A label arriving at
the same microsecond as a transaction is known to it.
"""

from __future__ import annotations

from typing import Final

import numpy as np

from scoring.common.schema import FeatureSchema

US_PER_DAY: Final = 86_400_000_000
WINDOWS_DAYS: Final = (1, 7, 30)
TERMINAL_WINDOWS_DAYS: Final = (8, 14, 37)
# The handbook's label delay: the gaps between training, validation and test periods (fraud.pipeline.Split).
LABEL_DELAY_DAYS: Final = 7
SEQ_LEN: Final = 8
# Which terminal window's risk each sequence step carries (14 days).
SEQ_RISK_WINDOW_INDEX: Final = 1
HORIZON_DAYS: Final = max(WINDOWS_DAYS)
# Terminal windows count whole buckets of this many per UTC day.
TERMINAL_BUCKETS_PER_DAY: Final = 4
TERMINAL_BUCKET_US: Final = US_PER_DAY // TERMINAL_BUCKETS_PER_DAY
TERMINAL_WINDOW_BUCKETS: Final = tuple(w * TERMINAL_BUCKETS_PER_DAY for w in TERMINAL_WINDOWS_DAYS)
HORIZON_US: Final = HORIZON_DAYS * US_PER_DAY

FEATURE_NAMES: Final[tuple[str, ...]] = (
    "tx_amount",
    "tx_during_weekend",
    "tx_during_night",
    *[f"customer_{kind}_{w}day" for w in WINDOWS_DAYS for kind in ("nb_tx", "avg_amount")],
    *[f"terminal_{kind}_{w}day" for w in TERMINAL_WINDOWS_DAYS for kind in ("nb_tx", "nb_labelled", "risk")],
)
# Features the event carries by itself: what the filter falls back on when the feature service is down.
SELF_CONTAINED_FEATURES: Final = ("tx_amount", "tx_during_weekend", "tx_during_night")
SEQ_FEATURE_NAMES: Final[tuple[str, ...]] = (
    "log_amount",
    "log_hours_since_prev",
    "terminal_risk_14day",
    "tx_during_night",
    "present",
)
# What a release pins (scoring.common.schema): bump FEATURE_DEFINITION_VERSION when a definition changes.
FEATURE_DEFINITION_VERSION: Final = 1
SCHEMA: Final = FeatureSchema("fraud", FEATURE_DEFINITION_VERSION, FEATURE_NAMES, SEQ_FEATURE_NAMES, SEQ_LEN)

N_WINDOWS: Final = len(WINDOWS_DAYS)
N_TERMINAL_WINDOWS: Final = len(TERMINAL_WINDOWS_DAYS)
# Raw aggregates per terminal window: transactions, labelled transactions, frauds among the labelled.
TERMINAL_RAW_FIELDS: Final = 3
# Raw aggregate columns, as the online counting returns them, per event.
RAW_COLUMNS: Final[tuple[str, ...]] = (
    *[f"customer_{k}_{w}" for w in WINDOWS_DAYS for k in ("count", "sum")],
    *[f"terminal_{k}_{w}" for w in TERMINAL_WINDOWS_DAYS for k in ("count", "labelled", "frauds")],
)
# Per sequence entry: event time (us), amount, terminal risk at that event's time.
SEQ_RAW_FIELDS: Final = 3


def event_flags(time_us: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Weekend and night flags from UTC event time in microseconds."""
    days = time_us // US_PER_DAY
    weekday = (days + 3) % 7  # 1970-01-01 was a Thursday; Monday = 0
    hour = (time_us // 3_600_000_000) % 24
    return (weekday >= 5).astype(np.float64), (hour <= 6).astype(np.float64)


def self_contained_features(amount: np.ndarray, time_us: np.ndarray) -> np.ndarray:
    """The full feature matrix with only what the event carries filled in (aggregates 0)."""
    out = np.zeros((len(amount), len(FEATURE_NAMES)), dtype=np.float32)
    weekend, night = event_flags(time_us)
    out[:, 0], out[:, 1], out[:, 2] = amount, weekend, night
    return out


def terminal_risk(labelled: np.ndarray, frauds: np.ndarray) -> np.ndarray:
    """Frauds among the labelled transactions of a window; 0 when none is labelled yet."""
    return np.divide(frauds, labelled, out=np.zeros_like(frauds, dtype=np.float64), where=labelled > 0)


def sequence_risk(raw: np.ndarray) -> np.ndarray:
    """The terminal risk that a customer's sequence step carries, from an event's raw aggregates."""
    base = 2 * N_WINDOWS + TERMINAL_RAW_FIELDS * SEQ_RISK_WINDOW_INDEX
    return terminal_risk(raw[:, base + 1], raw[:, base + 2])


def derive_features(amount: np.ndarray, time_us: np.ndarray, raw: np.ndarray) -> np.ndarray:
    """[n, len(RAW_COLUMNS)] raw aggregates -> [n, len(FEATURE_NAMES)] float32 features."""
    n = len(amount)
    out = np.empty((n, len(FEATURE_NAMES)), dtype=np.float64)
    weekend, night = event_flags(time_us)
    out[:, 0], out[:, 1], out[:, 2] = amount, weekend, night
    col = 3
    for k in range(N_WINDOWS):
        count, total = raw[:, 2 * k], raw[:, 2 * k + 1]
        out[:, col] = count
        out[:, col + 1] = np.divide(total, count, out=np.zeros(n), where=count > 0)
        col += 2
    base = 2 * N_WINDOWS
    for k in range(N_TERMINAL_WINDOWS):
        count, labelled, frauds = (raw[:, base + TERMINAL_RAW_FIELDS * k + f] for f in range(TERMINAL_RAW_FIELDS))
        out[:, col], out[:, col + 1], out[:, col + 2] = count, labelled, terminal_risk(labelled, frauds)
        col += 3
    return out.astype(np.float32)


def derive_sequences(time_us: np.ndarray, seq_raw: np.ndarray, seq_count: np.ndarray) -> np.ndarray:
    """Recent events -> [n, SEQ_LEN, len(SEQ_FEATURE_NAMES)] float32, oldest first, zero-padded in front.

    seq_raw is [n, SEQ_LEN + 1, SEQ_RAW_FIELDS], newest first (entry 0 is the event itself); the extra entry
    gives the oldest step its time since the previous event. seq_count says how many entries are real.
    """
    n = len(time_us)
    ts, amount, risk = seq_raw[:, :, 0], seq_raw[:, :, 1], seq_raw[:, :, 2]
    present = np.arange(SEQ_LEN + 1)[None, :] < seq_count[:, None]
    gap_hours = np.zeros((n, SEQ_LEN))
    has_prev = present[:, 1:]
    gap_hours[has_prev] = (ts[:, :-1][has_prev] - ts[:, 1:][has_prev]) / 3_600_000_000
    steps = present[:, :SEQ_LEN]
    _, night = event_flags(ts[:, :SEQ_LEN].astype(np.int64))
    newest_first = np.stack(
        [
            np.log1p(np.maximum(amount[:, :SEQ_LEN], 0.0)),
            np.log1p(np.maximum(gap_hours, 0.0)),
            risk[:, :SEQ_LEN],
            night,
            np.ones((n, SEQ_LEN)),
        ],
        axis=-1,
    )
    newest_first[~steps] = 0.0
    return newest_first[:, ::-1, :].astype(np.float32)


def _pair_keys(major: np.ndarray, minor: np.ndarray) -> np.ndarray:
    """int64 keys ordered as the pairs (major, minor), from dense ranks so they cannot overflow: at most n * 2n for
    n pairs, where (rank, microseconds) would pass 2**63 at about 270,000 customers over a year."""
    _, major_rank = np.unique(major, return_inverse=True)
    _, minor_rank = np.unique(minor, return_inverse=True)
    return major_rank.astype(np.int64) * (int(minor_rank.max(initial=0)) + 1) + minor_rank


def _window_starts(group: np.ndarray, time_us: np.ndarray, widths_us: list[int]) -> tuple[np.ndarray, list[np.ndarray]]:
    """Stable order by (group, time), and for each width w the position in that order of the first event of the
    same group with time > t - w, per event in that order."""
    order = np.lexsort((time_us, group))
    g, t = group[order], time_us[order]
    # Keys over the events' times and every window's lower bound together, so that both rank alike.
    bounds = [t - w for w in widths_us]
    keys = _pair_keys(np.concatenate([g] * (1 + len(bounds))), np.concatenate([t, *bounds]))
    own, below = keys[: len(t)], keys[len(t) :].reshape(len(bounds), len(t))
    return order, [np.searchsorted(own, below[k], side="right") for k in range(len(bounds))]


def compute_raw_offline(
    time_us: np.ndarray,
    customer: np.ndarray,
    terminal: np.ndarray,
    amount: np.ndarray,
    fraud: np.ndarray,
    label_arrival_us: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The raw aggregates that the online counting would return, for every event of a time-ordered frame whose
    labels arrive at `label_arrival_us` (each at least 1 us after its transaction).

    Returns (raw [n, len(RAW_COLUMNS)], seq_raw [n, SEQ_LEN+1, SEQ_RAW_FIELDS], seq_count [n]).
    """
    n = len(time_us)
    time_us = np.asarray(time_us, dtype=np.int64)
    amount = np.asarray(amount, dtype=np.float64)
    fraud = np.asarray(fraud, dtype=np.float64)
    if n > 1 and bool(np.any(np.diff(time_us) < 0)):
        raise ValueError("compute_raw_offline needs events in time order")
    raw = np.zeros((n, len(RAW_COLUMNS)))

    widths = [w * US_PER_DAY for w in WINDOWS_DAYS] + [HORIZON_US]
    c_order, starts = _window_starts(np.asarray(customer), time_us, widths)
    c_amount = amount[c_order]
    c_cum = np.concatenate([[0.0], np.cumsum(c_amount)])
    positions = np.arange(n)
    for k in range(len(WINDOWS_DAYS)):
        start = starts[k]
        raw[c_order, 2 * k] = positions - start + 1
        raw[c_order, 2 * k + 1] = c_cum[positions + 1] - c_cum[start]

    if n:
        raw[:, 2 * N_WINDOWS :] = _terminal_raw_offline(
            time_us, np.asarray(terminal), fraud, np.asarray(label_arrival_us, dtype=np.int64)
        )

    # Sequences: the customer's events within the horizon, newest first, the event itself included.
    risk = sequence_risk(raw)
    horizon_start = starts[-1]
    back = positions[:, None] - np.arange(SEQ_LEN + 1)[None, :]
    valid = back >= horizon_start[:, None]
    back = np.where(valid, back, 0)
    src = c_order[back]
    seq_sorted = np.stack([time_us[src], amount[src], risk[src]], axis=-1).astype(np.float64)
    seq_sorted[~valid] = 0.0
    seq_raw = np.zeros_like(seq_sorted)
    seq_raw[c_order] = seq_sorted
    seq_count = np.zeros(n, dtype=np.int64)
    seq_count[c_order] = valid.sum(axis=1)
    return raw, seq_raw, seq_count


def _terminal_raw_offline(
    time_us: np.ndarray, terminal: np.ndarray, fraud: np.ndarray, arrival_us: np.ndarray
) -> np.ndarray:
    """[n, TERMINAL_RAW_FIELDS * N_TERMINAL_WINDOWS]: per terminal window, the transactions, the labelled ones and
    the frauds among them, counting only the labels that had arrived at each event's time.

    A sweep over the events' buckets: the labels that arrived before bucket H are folded into per-(terminal,
    bucket) totals, whose prefix sums give every window of the events in H; labels arriving inside H at or before
    an event's time are added from a prefix sum over that (terminal, bucket)'s labels in arrival order."""
    n = len(time_us)
    bucket = time_us // TERMINAL_BUCKET_US
    b0 = int(bucket.min())
    arrival_bucket = arrival_us // TERMINAL_BUCKET_US
    # Room below each terminal's first bucket for the longest window, so no window reaches another terminal's keys.
    n_buckets = int(max(int(bucket.max()), int(arrival_bucket.max())) - b0) + 1 + max(TERMINAL_WINDOW_BUCKETS)
    _, t_rank = np.unique(terminal, return_inverse=True)
    key = t_rank.astype(np.int64) * n_buckets + (bucket - b0)  # (terminal, bucket) of each transaction
    keys, key_index = np.unique(key, return_inverse=True)
    # Each event's windows are ranges of `keys`: [lo_w, hi) with hi just before its own bucket.
    hi = np.searchsorted(keys, key, side="left")
    lo = [np.searchsorted(keys, key - b, side="left") for b in TERMINAL_WINDOW_BUCKETS]
    out = np.zeros((n, TERMINAL_RAW_FIELDS * N_TERMINAL_WINDOWS))
    tx_cum = np.concatenate([[0], np.cumsum(np.bincount(key_index, minlength=len(keys)))])
    for k in range(N_TERMINAL_WINDOWS):
        out[:, TERMINAL_RAW_FIELDS * k] = tx_cum[hi] - tx_cum[lo[k]]

    labelled = np.zeros(len(keys))
    frauds = np.zeros(len(keys))
    by_arrival = np.argsort(arrival_bucket, kind="stable")
    arrived_sorted = arrival_bucket[by_arrival]
    event_buckets, first = np.unique(bucket, return_index=True)  # events are in time order
    bounds = np.append(first, n)
    applied = 0
    for h, e0, e1 in zip(event_buckets.tolist(), bounds[:-1].tolist(), bounds[1:].tolist(), strict=True):
        upto = int(np.searchsorted(arrived_sorted, h, side="left"))
        if upto > applied:
            rows = by_arrival[applied:upto]
            labelled += np.bincount(key_index[rows], minlength=len(keys))
            frauds += np.bincount(key_index[rows], weights=fraud[rows], minlength=len(keys))
            applied = upto
            lab_cum = np.concatenate([[0.0], np.cumsum(labelled)])
            fr_cum = np.concatenate([[0.0], np.cumsum(frauds)])
        if applied == 0:
            continue
        e = slice(e0, e1)
        for k in range(N_TERMINAL_WINDOWS):
            out[e, TERMINAL_RAW_FIELDS * k + 1] = lab_cum[hi[e]] - lab_cum[lo[k][e]]
            out[e, TERMINAL_RAW_FIELDS * k + 2] = fr_cum[hi[e]] - fr_cum[lo[k][e]]

    # Labels that arrive in an event's own bucket, at or before its time: for each event, the labels of its terminal
    # delivered in its bucket, ordered by arrival, counted up to its time with a prefix sum per window.
    arriving_in = t_rank.astype(np.int64) * n_buckets + (arrival_bucket - b0)  # (terminal, bucket of arrival)
    pairs = _pair_keys(np.concatenate([arriving_in, key, key]),
                      np.concatenate([arrival_us, time_us, np.full(n, np.iinfo(np.int64).min)]))
    label_keys, event_keys, group_first = pairs[:n], pairs[n : 2 * n], pairs[2 * n :]
    by_key = np.argsort(label_keys, kind="stable")
    sorted_keys = label_keys[by_key]
    arrived = np.searchsorted(sorted_keys, event_keys, side="right")  # labels of the group arrived by the event's time
    group_start = np.searchsorted(sorted_keys, group_first, side="left")  # the group's first label
    age = (arrival_bucket - bucket)[by_key]  # buckets between a label's transaction and the bucket it arrives in
    for k, b in enumerate(TERMINAL_WINDOW_BUCKETS):
        inside = ((age >= 1) & (age <= b)).astype(np.float64)
        labelled_cum = np.concatenate([[0.0], np.cumsum(inside)])
        fraud_cum = np.concatenate([[0.0], np.cumsum(inside * fraud[by_key])])
        out[:, TERMINAL_RAW_FIELDS * k + 1] += labelled_cum[arrived] - labelled_cum[group_start]
        out[:, TERMINAL_RAW_FIELDS * k + 2] += fraud_cum[arrived] - fraud_cum[group_start]
    return out


def compute_offline(frame: object, label_arrival_us: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Features and sequences for a simulator frame (columns TX_DATETIME, CUSTOMER_ID, TERMINAL_ID, TX_AMOUNT,
    TX_FRAUD), in the frame's row order, which must be the processing order (time, then transaction id), with each
    row's label arriving at `label_arrival_us` (`scoring.scenarios.fraud.simulator.label_arrival_us`)."""
    import pandas as pd

    assert isinstance(frame, pd.DataFrame)
    time_us = frame_time_us(frame)
    raw, seq_raw, seq_count = compute_raw_offline(
        time_us,
        frame["CUSTOMER_ID"].to_numpy(),
        frame["TERMINAL_ID"].to_numpy(),
        frame["TX_AMOUNT"].to_numpy(),
        frame["TX_FRAUD"].to_numpy(),
        label_arrival_us,
    )
    amount = frame["TX_AMOUNT"].to_numpy(dtype=np.float64)
    return derive_features(amount, time_us, raw), derive_sequences(time_us, seq_raw, seq_count)


def frame_time_us(frame: object) -> np.ndarray:
    """TX_DATETIME (naive, meaning UTC) as int64 microseconds since the Unix epoch."""
    import pandas as pd

    assert isinstance(frame, pd.DataFrame)
    return frame["TX_DATETIME"].to_numpy().astype("datetime64[us]").astype(np.int64)
