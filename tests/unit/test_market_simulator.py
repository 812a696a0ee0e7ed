"""The market scenario's simulator (issue 16, first part): a queue-reactive book whose ticks are well formed,
reproducible, carry the order-flow imbalance fact of Cont, Kukanov and Stoikov, and can be faulted like a feed."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from scoring.scenarios.market.simulator import (
    SIDE_BUY,
    SIDE_NONE,
    SIDE_SELL,
    TICK_SIZE,
    MarketConfig,
    cks_regression,
    simulate,
    with_feed_faults,
)

pytestmark = pytest.mark.unit
CONFIG = MarketConfig(n_symbols=20, ticks_per_symbol=5000, seed=4)


@pytest.fixture(scope="module")
def ticks() -> pd.DataFrame:
    return simulate(CONFIG)


def test_the_same_seed_gives_the_same_ticks_and_another_seed_others(ticks: pd.DataFrame) -> None:
    pd.testing.assert_frame_equal(simulate(CONFIG), ticks)
    other = simulate(MarketConfig(n_symbols=20, ticks_per_symbol=5000, seed=5))
    assert not np.array_equal(other["bid_price"].to_numpy(), ticks["bid_price"].to_numpy())


def test_ticks_are_well_formed_books_in_time_order(ticks: pd.DataFrame) -> None:
    assert len(ticks) == 20 * 5000 and ticks["tick_id"].is_unique
    assert (np.diff(ticks["time_us"].to_numpy()) >= 0).all()
    for _, one in ticks.groupby("symbol"):
        assert (np.diff(one["sequence"].to_numpy()) == 1).all() and one["sequence"].iloc[0] == 1
    assert (ticks["ask_price"] > ticks["bid_price"] + TICK_SIZE / 2).all()  # never crossed or locked here
    assert (ticks[["bid_price", "ask_price", "bid_size", "ask_size"]] > 0).all().all()
    trades = ticks[ticks["last_side"] != SIDE_NONE]
    assert 0.05 < len(trades) / len(ticks) < 0.4
    assert (trades["last_size"] > 0).all() and (ticks.loc[ticks["last_side"] == SIDE_NONE, "last_size"] == 0).all()


def test_a_trade_prints_at_the_touch_it_took(ticks: pd.DataFrame) -> None:
    prev = ticks.groupby("symbol")[["bid_price", "ask_price"]].shift(1)
    buys, sells = ticks["last_side"] == SIDE_BUY, ticks["last_side"] == SIDE_SELL
    # A buy takes the ask standing before it (the book shown is after it, so compare with the previous tick's).
    for rows, touch in ((buys, "ask_price"), (sells, "bid_price")):
        before = prev.loc[rows, touch].fillna(ticks.loc[rows, "last_price"])  # a symbol's first tick: no before
        assert np.allclose(ticks.loc[rows, "last_price"], before)


def test_mid_price_changes_follow_order_flow_imbalance(ticks: pd.DataFrame) -> None:
    fit = cks_regression(ticks, interval_s=1.0)
    assert fit.intervals > 500 and fit.slope > 0 and fit.r2 > 0.5


def test_the_hidden_alpha_predicts_the_next_moves(ticks: pd.DataFrame) -> None:
    mid = (ticks["bid_price"] + ticks["ask_price"]) / 2
    future = mid.groupby(ticks["symbol"]).shift(-50) - mid
    ok = future.notna()
    assert np.corrcoef(ticks.loc[ok, "alpha"], future[ok])[0, 1] > 0.05


def test_feed_faults_mark_what_they_did(ticks: pd.DataFrame) -> None:
    faulted = with_feed_faults(ticks, duplicates=0.01, gaps=0.01, reorders=0.01, seed=1)
    counts = faulted["fault"].value_counts()
    assert all(counts.get(k, 0) > 300 for k in ("duplicate", "after_gap", "reordered"))
    dup = faulted.index[faulted["fault"] == "duplicate"]
    assert (faulted.loc[dup, "tick_id"].to_numpy() == faulted.loc[dup - 1, "tick_id"].to_numpy()).all()
    # A reordered tick is older than one of its symbol already sent; a tick after a gap skips ahead.
    clean = faulted[faulted["fault"] != "duplicate"]
    step = clean.groupby("symbol")["sequence"].diff()
    assert (step[clean["fault"] == "reordered"] < 0).all()
    assert (step[clean["fault"] == "after_gap"] > 1).all()
    lost = len(ticks) - len(clean)
    assert 300 < lost < 2000 and counts["after_gap"] <= lost
