"""Labels of the market-ticks scenario, as the limit-order-book literature defines them (FI-2010, DeepLOB).

For a tick and a horizon of k ticks: the mean mid-price of the symbol's next k ticks against this tick's mid is
"up" when higher by more than alpha, "down" when lower by more than alpha, "flat" otherwise. alpha is the symbol's
average half-spread (TLOB's choice: "up" then means a move worth crossing the spread for). Labels look into the
future, so they exist offline only; a symbol's last k ticks have none.
"""

from __future__ import annotations

from typing import Final

import numpy as np
import pandas as pd

DOWN, FLAT, UP = 0, 1, 2
CLASS_NAMES: Final = ("down", "flat", "up")
HORIZONS: Final = (10, 50)
NO_LABEL: Final = -1


def half_spreads(frame: pd.DataFrame) -> pd.Series:
    """alpha per symbol: the mean half-spread of its ticks (in price)."""
    half = (frame["ask_price"] - frame["bid_price"]) / 2.0
    return half.groupby(frame["symbol"].to_numpy()).mean()


def future_mean_mid(frame: pd.DataFrame, k: int) -> np.ndarray:
    """Per row, the mean mid of the same symbol's next k rows (NaN where fewer than k follow). The frame is one
    symbol's ticks in sequence order per group (a clean feed: no duplicate, no reorder)."""
    mid = ((frame["bid_price"] + frame["ask_price"]) / 2.0).to_numpy()
    out = np.full(len(frame), np.nan)
    for rows in frame.groupby("symbol", sort=False).indices.values():
        m = mid[rows]
        if len(m) <= k:
            continue
        c = np.concatenate([[0.0], np.cumsum(m)])
        # mean of m[i+1 .. i+k] = (c[i+k+1] - c[i+1]) / k
        i = np.arange(len(m) - k)
        out[rows[i]] = (c[i + k + 1] - c[i + 1]) / k
    return out


def labels(frame: pd.DataFrame, k: int, alpha: pd.Series | None = None) -> np.ndarray:
    """int8 per row: DOWN, FLAT, UP, or NO_LABEL for a symbol's last k ticks. `alpha` (per symbol) defaults to
    the frame's own half-spreads; training passes the training days' so that test labels use no test statistic."""
    alpha = half_spreads(frame) if alpha is None else alpha
    mid = ((frame["bid_price"] + frame["ask_price"]) / 2.0).to_numpy()
    future = future_mean_mid(frame, k)
    a = frame["symbol"].map(alpha).to_numpy(np.float64)
    change = future - mid
    out = np.full(len(frame), FLAT, dtype=np.int8)
    out[change > a] = UP
    out[change < -a] = DOWN
    out[np.isnan(future)] = NO_LABEL
    return out
