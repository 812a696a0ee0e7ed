"""Features of the market-ticks scenario: one definition, run offline over a frame and online by the feature service.

Every feature of a tick is a function of its symbol's *window*: the last `WINDOW` ticks folded for the symbol up to
and including this one, since the symbol's last sequence gap (a gap restarts the window: nothing that needs the
previous tick spans it). `from_windows` computes them from a window tensor; offline, `windows_offline` cuts the
windows out of a frame, and online the feature service reads them from the per-symbol ring it keeps in Redis. The
two executions share this module's arithmetic, so they agree to float32 rounding by construction, and the parity
test checks it through the running service.

Per tick (a row of the window) the raw fields are those of the feed: time, book at the touch, last trade. From
consecutive ticks come the step quantities: the order-flow imbalance contribution e_n of Cont, Kukanov and Stoikov
(2014), the mid change, the signed trade volume and the time step. The aggregates (`FEATURE_NAMES`) sum or compare
them over tick windows and time windows (a time window is cut at the ring's length: it is `min(window, WINDOW
ticks)`, offline and online alike). The sequence (`SEQ_FEATURE_NAMES`, the LSTM's input) is the last `SEQ_LEN`
steps, zeros before the window starts. Prices are in ticks of `TICK_SIZE` and order flow in units of the current
depth, so features mean the same across symbols of different price and size.
"""

from __future__ import annotations

from typing import Final

import numpy as np
import pandas as pd

from scoring.common.schema import FeatureSchema

TICK_SIZE: Final = 0.01
# Ticks a window holds (the online ring's length): the longest tick window plus the step before it.
WINDOW: Final = 32
SEQ_LEN: Final = 16
# The raw fields of a tick, in the order of the window tensor's last axis (and of a ring record online).
RAW_FIELDS: Final = ("time_us", "sequence", "bid_price", "bid_size", "ask_price", "ask_size", "last_price",
                     "last_size", "last_side")
RAW = {name: i for i, name in enumerate(RAW_FIELDS)}
TICK_WINDOWS: Final = (5, 10, 30)
TIME_WINDOWS_S: Final = (1.0, 5.0)
RETURN_HORIZONS: Final = (1, 5, 10, 30)
VOL_WINDOWS: Final = (10, 30)
SIGN_WINDOWS: Final = (10, 30)

FEATURE_NAMES: Final = (
    *(f"ofi_{k}t" for k in TICK_WINDOWS),
    *(f"ofi_{w:g}s" for w in TIME_WINDOWS_S),
    "queue_imbalance",
    "microprice_minus_mid",
    "spread_ticks",
    *(f"realised_vol_{k}t" for k in VOL_WINDOWS),
    *(f"trade_sign_imbalance_{k}t" for k in SIGN_WINDOWS),
    *(f"mid_return_{k}t" for k in RETURN_HORIZONS),
    "log_dt_prev_s",
    "trades_30t",
    "window_ticks",
)
SEQ_FEATURE_NAMES: Final = ("ofi_step", "mid_change", "signed_volume", "queue_imbalance", "spread_ticks",
                            "microprice_minus_mid", "log_dt_s")
# What a release pins (scoring.common.schema): bump FEATURE_DEFINITION_VERSION when a definition changes.
FEATURE_DEFINITION_VERSION: Final = 1
SCHEMA: Final = FeatureSchema("market", FEATURE_DEFINITION_VERSION, FEATURE_NAMES, SEQ_FEATURE_NAMES, SEQ_LEN)
# The features a tick carries by itself: what the gateway can still use when the feature service is down.
SELF_CONTAINED: Final = ("queue_imbalance", "microprice_minus_mid", "spread_ticks")
SIDE_BUY, SIDE_SELL = 1, 2
_COL = {name: i for i, name in enumerate(FEATURE_NAMES)}


def from_windows(windows: np.ndarray, valid: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Features and sequences of n ticks from their windows.

    windows: float64 [len(RAW_FIELDS), n, WINDOW], field-major (every operation then runs over a dense [n, WINDOW]
    block), the tick itself in the last column, older ticks before it; valid: bool [n, WINDOW], False for columns
    before the window's start (their values are ignored). The last column of every window is valid. Returns
    float32 [n, len(FEATURE_NAMES)] and [n, SEQ_LEN, len(SEQ_FEATURE_NAMES)].
    """
    w = windows
    n = w.shape[1]
    t, pb, qb, pa, qa = w[RAW["time_us"]], w[RAW["bid_price"]], w[RAW["bid_size"]], w[RAW["ask_price"]], w[
        RAW["ask_size"]]
    depth = qb + qa
    safe_depth = np.maximum(depth, 1.0)
    mid_ticks = (pb + pa) * (0.5 / TICK_SIZE)
    qi = qb / safe_depth
    micro_ticks = ((pa * qb + pb * qa) / safe_depth) / TICK_SIZE - mid_ticks
    spread = (pa - pb) / TICK_SIZE
    # Steps: row j against row j-1 (both valid), for j = 1..WINDOW-1.
    step = valid[:, 1:] & valid[:, :-1]
    up_b, down_b = pb[:, 1:] >= pb[:, :-1], pb[:, 1:] <= pb[:, :-1]
    up_a, down_a = pa[:, 1:] >= pa[:, :-1], pa[:, 1:] <= pa[:, :-1]
    e = up_b * qb[:, 1:] - down_b * qb[:, :-1] - down_a * qa[:, 1:] + up_a * qa[:, :-1]
    e *= step
    dmid = (mid_ticks[:, 1:] - mid_ticks[:, :-1]) * step
    dt_s = (t[:, 1:] - t[:, :-1]) * (step / 1e6)
    side = w[RAW["last_side"]][:, 1:]
    size = w[RAW["last_size"]][:, 1:] * valid[:, 1:]
    sign = ((side == SIDE_BUY) * 1.0 - (side == SIDE_SELL) * 1.0) * valid[:, 1:]
    signed = sign * size

    depth_now = safe_depth[:, -1]
    out = np.empty((n, len(FEATURE_NAMES)), np.float64)
    col = 0
    for k in TICK_WINDOWS:
        out[:, col] = e[:, -k:].sum(axis=1) / depth_now
        col += 1
    age_s = (t[:, -1:] - t[:, 1:]) / 1e6
    for span_s in TIME_WINDOWS_S:
        out[:, col] = (e * (age_s < span_s)).sum(axis=1) / depth_now
        col += 1
    out[:, col], out[:, col + 1], out[:, col + 2] = qi[:, -1], micro_ticks[:, -1], spread[:, -1]
    col += 3
    for k in VOL_WINDOWS:
        out[:, col] = np.sqrt((dmid[:, -k:] ** 2).sum(axis=1))
        col += 1
    for k in SIGN_WINDOWS:
        volume = np.abs(signed[:, -k:]).sum(axis=1)
        out[:, col] = signed[:, -k:].sum(axis=1) / np.maximum(volume, 1e-12)
        col += 1
    for k in RETURN_HORIZONS:
        out[:, col] = dmid[:, -k:].sum(axis=1)
        col += 1
    out[:, col] = np.log1p(dt_s[:, -1])
    out[:, col + 1] = (sign[:, -30:] != 0).sum(axis=1)
    out[:, col + 2] = valid.sum(axis=1)
    assert col + 3 == len(FEATURE_NAMES)

    last = slice(-SEQ_LEN, None)
    d = safe_depth[:, 1:][:, last]
    keep = valid[:, last]
    seq = np.empty((n, SEQ_LEN, len(SEQ_FEATURE_NAMES)), np.float32)
    seq[..., 0] = e[:, last] / d
    seq[..., 1] = dmid[:, last]
    seq[..., 2] = signed[:, last] / d
    seq[..., 3] = (qi[:, 1:][:, last] - 0.5) * keep
    seq[..., 4] = spread[:, 1:][:, last] * keep
    seq[..., 5] = micro_ticks[:, 1:][:, last] * keep
    seq[..., 6] = np.log1p(dt_s[:, last])
    return out.astype(np.float32), seq


def self_contained_features(windows_last: np.ndarray) -> np.ndarray:
    """The feature vector with only the tick's own fields filled in (float64 [n, len(RAW_FIELDS)] -> float32
    [n, len(FEATURE_NAMES)]): what the filter's fallback and the gateway's last resort read.

    Exactly what `from_windows` gives a window holding this tick alone (a unit test holds them equal), computed
    directly: this runs on the gateway's event loop when the feature service is late, and a 32-tick window of
    zeros through every aggregate cost the gateway more than the answers it was saving."""
    r = windows_last
    pb, qb, pa, qa = r[:, RAW["bid_price"]], r[:, RAW["bid_size"]], r[:, RAW["ask_price"]], r[:, RAW["ask_size"]]
    safe_depth = np.maximum(qb + qa, 1.0)
    mid_ticks = (pb + pa) * (0.5 / TICK_SIZE)
    out = np.zeros((len(r), len(FEATURE_NAMES)), np.float64)
    out[:, _COL["queue_imbalance"]] = qb / safe_depth
    out[:, _COL["microprice_minus_mid"]] = ((pa * qb + pb * qa) / safe_depth) / TICK_SIZE - mid_ticks
    out[:, _COL["spread_ticks"]] = (pa - pb) / TICK_SIZE
    side = r[:, RAW["last_side"]]
    sign = (side == SIDE_BUY) * 1.0 - (side == SIDE_SELL) * 1.0
    signed = sign * r[:, RAW["last_size"]]
    for k in SIGN_WINDOWS:
        out[:, _COL[f"trade_sign_imbalance_{k}t"]] = signed / np.maximum(np.abs(signed), 1e-12)
    out[:, _COL["trades_30t"]] = sign != 0
    out[:, _COL["window_ticks"]] = 1.0
    return out.astype(np.float32)


def self_contained_by_window(windows_last: np.ndarray) -> np.ndarray:
    """`self_contained_features` through `from_windows` (a window of the tick alone): the definition it must equal."""
    n = windows_last.shape[0]
    w = np.zeros((len(RAW_FIELDS), n, WINDOW))
    w[:, :, -1] = windows_last.T
    valid = np.zeros((n, WINDOW), dtype=bool)
    valid[:, -1] = True
    features, _ = from_windows(w, valid)
    return features


def self_contained_columns() -> list[int]:
    return [FEATURE_NAMES.index(name) for name in SELF_CONTAINED]


# --- offline ---------------------------------------------------------------------------------------------------

FOLDED, GAP, DUPLICATE, STALE = 0, 1, 2, 3  # what folding a tick did (the feature service answers the same)
STATUS_NAMES: Final = ("folded", "gap", "duplicate", "stale")


def fold_status(frame: pd.DataFrame) -> np.ndarray:
    """Per row of a feed in arrival order, what the feature service does with it: FOLDED; GAP (folded, its
    sequence skips ahead: the window restarts); DUPLICATE (this symbol and sequence were folded already: answered
    as the first); STALE (older than the symbol's last folded tick and never folded: refused)."""
    symbol = frame["symbol"].to_numpy()
    seq = frame["sequence"].to_numpy(np.int64)
    status = np.full(len(frame), FOLDED, dtype=np.int8)
    seen = pd.DataFrame({"s": symbol, "q": seq}).duplicated().to_numpy()
    status[seen] = DUPLICATE
    # Running maximum of each symbol's earlier folded sequences (duplicates are equal to one of them: harmless).
    prev_max = pd.Series(seq).groupby(symbol, sort=False).cummax().groupby(symbol, sort=False).shift(1).to_numpy()
    first = np.isnan(prev_max)
    prev = np.where(first, 0, prev_max).astype(np.int64)
    fresh = ~seen
    status[fresh & ~first & (seq < prev)] = STALE
    status[fresh & ~first & (seq > prev + 1)] = GAP
    if seen.any():  # a copy of a refused tick is refused too
        first_row = first_of_same_tick(frame)
        status[seen & (status[first_row] == STALE)] = STALE
    return status


def first_of_same_tick(frame: pd.DataFrame) -> np.ndarray:
    """Per row, the first row with the same symbol and sequence."""
    rows = pd.Series(np.arange(len(frame)))
    return rows.groupby([frame["symbol"].to_numpy(), frame["sequence"].to_numpy()], sort=False).transform(
        "first").to_numpy()


def raw_matrix(frame: pd.DataFrame) -> np.ndarray:
    """float64 [len(RAW_FIELDS), n]: the raw fields of every row, field-major."""
    return np.stack([frame[c].to_numpy(np.float64) for c in RAW_FIELDS])


def compute_offline(frame: pd.DataFrame, *, chunk: int = 16_384) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Features and sequences of every row of a feed in arrival order, as the feature service computes them.

    Returns (features [n, F] float32, sequences [n, SEQ_LEN, S] float32, status [n] int8). A DUPLICATE row gets
    the features of the tick it repeats; a STALE row gets zeros (the gateway refuses it)."""
    status = fold_status(frame)
    n = len(frame)
    raw = raw_matrix(frame)
    kept = np.flatnonzero((status == FOLDED) | (status == GAP))
    symbol = frame["symbol"].to_numpy()[kept]
    # Folded ticks grouped by symbol, each group in arrival order; a segment starts at a symbol's first or a gap.
    order = kept[np.argsort(pd.factorize(symbol)[0], kind="stable")]
    sym_sorted = frame["symbol"].to_numpy()[order]
    starts = np.ones(len(order), dtype=bool)
    starts[1:] = (sym_sorted[1:] != sym_sorted[:-1]) | (status[order[1:]] == GAP)
    segment_start = np.maximum.accumulate(np.where(starts, np.arange(len(order)), 0))
    features = np.zeros((n, len(FEATURE_NAMES)), np.float32)
    seqs = np.zeros((n, SEQ_LEN, len(SEQ_FEATURE_NAMES)), np.float32)
    offsets = np.arange(-WINDOW + 1, 1)
    for lo in range(0, len(order), chunk):
        pos = np.arange(lo, min(len(order), lo + chunk))
        idx = pos[:, None] + offsets[None, :]
        valid = idx >= segment_start[pos][:, None]
        f, s = from_windows(raw[:, order[np.maximum(idx, 0)]], valid)
        features[order[pos]] = f
        seqs[order[pos]] = s
    dup = np.flatnonzero(status == DUPLICATE)
    if len(dup):
        first_row = first_of_same_tick(frame)
        features[dup] = features[first_row[dup]]
        seqs[dup] = seqs[first_row[dup]]
    return features, seqs, status
