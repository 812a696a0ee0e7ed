"""Online counting: the raw aggregates of `scenarios.fraud.features` from the per-entity state that the fold returns.

The fold (terminal.lua, customer.lua) keeps Redis's work per event small and fixed; the window arithmetic is done
here, over arrays, for the whole batch. What is counted must equal `features.compute_raw_offline` for events
processed in time order: the parity test compares the two.
"""

from __future__ import annotations

from typing import Final

import numpy as np

from scoring.scenarios.fraud import features as F

# Buckets per terminal (terminal.lua): more than the longest window, plus the current bucket.
RING_SLOTS: Final = 160
RING_DTYPE: Final = np.dtype([("bucket", "<i4"), ("count", "<i4"), ("labelled", "<i4"), ("frauds", "<i4")])
EMPTY_RING: Final = np.array([(-1, 0, 0, 0)] * RING_SLOTS, dtype=RING_DTYPE)
# A customer's log record (customer.lua): event time (us), amount, terminal risk then, 8-byte id hash.
RECORD_DTYPE: Final = np.dtype([("time", "<f8"), ("amount", "<f8"), ("risk", "<f8"), ("id_hash", "V8")])
# Buckets back from an event's bucket H that its terminal windows cover: H - 1 (newest) .. the longest window.
_TERMINAL_LAGS: Final = 1 + np.arange(max(F.TERMINAL_WINDOW_BUCKETS))
assert RING_SLOTS > _TERMINAL_LAGS[-1]


def parse_rings(rings: list[bytes]) -> np.ndarray:
    """Ring strings as terminal.lua returns them ('' for a terminal without state) -> [k, RING_SLOTS] records."""
    out = np.empty((len(rings), RING_SLOTS), dtype=RING_DTYPE)
    for k, ring in enumerate(rings):
        out[k] = np.frombuffer(ring, dtype=RING_DTYPE) if ring else EMPTY_RING
    return out


def terminal_raw(bucket: np.ndarray, ring_of: np.ndarray, rings: np.ndarray) -> np.ndarray:
    """[n, TERMINAL_RAW_FIELDS * N_TERMINAL_WINDOWS] (transactions, labelled, frauds) per terminal window for
    events in `bucket` (time // TERMINAL_BUCKET_US), whose terminals' rings are rings[ring_of]."""
    buckets = bucket[:, None] - _TERMINAL_LAGS[None, :]
    entries = rings[ring_of[:, None], buckets % RING_SLOTS]
    valid = entries["bucket"] == buckets
    fields = ("count", "labelled", "frauds")
    sums = [np.where(valid, entries[f], 0).cumsum(axis=1) for f in fields]
    out = np.empty((len(bucket), F.TERMINAL_RAW_FIELDS * F.N_TERMINAL_WINDOWS))
    for k, b in enumerate(F.TERMINAL_WINDOW_BUCKETS):
        for f in range(F.TERMINAL_RAW_FIELDS):
            out[:, F.TERMINAL_RAW_FIELDS * k + f] = sums[f][:, b - 1]
    return out


def customer_raw(
    time_us: np.ndarray, log_of: np.ndarray, visible: np.ndarray, logs: list[bytes]
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Customer windows and recent-event sequences from the customers' logs.

    Event i sees the first visible[i] records of logs[log_of[i]] (its own record and those folded before it).
    Returns (raw [n, 2 * N_WINDOWS] (count, sum) per window, seq_raw [n, SEQ_LEN + 1, 3] newest first,
    seq_count [n]), as `features.compute_raw_offline` lays them out.
    """
    parsed = [np.frombuffer(log, dtype=RECORD_DTYPE) for log in logs]
    width = max(F.SEQ_LEN + 1, max((len(p) for p in parsed), default=0))
    table = np.zeros((len(parsed), width, 3))
    for k, p in enumerate(parsed):
        table[k, : len(p), 0], table[k, : len(p), 1], table[k, : len(p), 2] = p["time"], p["amount"], p["risk"]
    rows = table[log_of]  # [n, width, 3]
    t, amount = rows[..., 0], rows[..., 1]
    now = time_us.astype(np.float64)[:, None]
    seen = (np.arange(width)[None, :] < visible[:, None]) & (t <= now)
    raw = np.empty((len(time_us), 2 * F.N_WINDOWS))
    for k, w in enumerate(F.WINDOWS_DAYS):
        inside = seen & (t > now - w * F.US_PER_DAY)
        raw[:, 2 * k] = inside.sum(axis=1)
        raw[:, 2 * k + 1] = np.where(inside, amount, 0.0).sum(axis=1)
    # The newest SEQ_LEN + 1 records inside the horizon, newest (latest folded) first.
    in_horizon = seen & (t > now - F.HORIZON_US)
    position = np.where(in_horizon, -np.arange(width)[None, :], 1)
    pick = np.argsort(position, axis=1, kind="stable")[:, : F.SEQ_LEN + 1]
    seq_raw = np.take_along_axis(rows, pick[:, :, None], axis=1)
    seq_count = np.minimum(in_horizon.sum(axis=1), F.SEQ_LEN + 1)
    seq_raw[np.arange(F.SEQ_LEN + 1)[None, :] >= seq_count[:, None]] = 0.0
    return raw, seq_raw, seq_count
