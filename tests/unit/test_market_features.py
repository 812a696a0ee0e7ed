"""The market scenario's features, labels, fold statuses and edge validation, without processes."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from google.protobuf.timestamp_pb2 import Timestamp

from scoring.common.errors import FieldError
from scoring.scenarios.market import features as MF
from scoring.scenarios.market import labels as ML
from scoring.scenarios.market import models as MM
from scoring.scenarios.market.online import TickBatch, windows, windows_by_tick
from scoring.scenarios.market.serving import validate_tick
from scoring.scenarios.market.simulator import MarketConfig, simulate, with_feed_faults
from scoring.v1 import types_pb2


def _feed(seq: list[int], symbol: str = "A") -> pd.DataFrame:
    n = len(seq)
    return pd.DataFrame({
        "tick_id": np.arange(n), "symbol": [symbol] * n, "sequence": seq, "time_us": np.arange(n) * 1000 + 10**15,
        "bid_price": 10.0, "bid_size": 100.0, "ask_price": 10.01, "ask_size": 50.0, "last_price": 0.0,
        "last_size": 0.0, "last_side": 0,
    })


def test_fold_status_names_gaps_duplicates_and_stale_ticks() -> None:
    status = MF.fold_status(_feed([1, 2, 2, 5, 3, 6, 5]))
    assert status.tolist() == [MF.FOLDED, MF.FOLDED, MF.DUPLICATE, MF.GAP, MF.STALE, MF.FOLDED, MF.DUPLICATE]


def test_a_gap_restarts_the_window_and_a_duplicate_repeats_its_first_features() -> None:
    frame = _feed([1, 2, 3, 9, 10, 10])
    frame.loc[1, "bid_size"] = 300.0
    features, _, status = MF.compute_offline(frame)
    window_ticks = features[:, MF.FEATURE_NAMES.index("window_ticks")]
    assert window_ticks.tolist() == [1, 2, 3, 1, 2, 2]
    assert status[3] == MF.GAP
    np.testing.assert_array_equal(features[5], features[4])


def test_online_windows_rebuilt_from_rings_equal_the_offline_windows() -> None:
    """What the feature service does with ticks.lua's answer, against compute_offline, on a faulty feed cut into
    batches (the rings carried from batch to batch as Redis would)."""
    feed = with_feed_faults(simulate(MarketConfig(n_symbols=5, ticks_per_symbol=200)), duplicates=0.05, gaps=0.05,
                            reorders=0.05, seed=1)
    expected, _, status = MF.compute_offline(feed)
    raw = MF.raw_matrix(feed)
    rings: dict[str, bytes] = {}
    got = []
    for lo in range(0, len(feed), 37):
        batch = TickBatch(feed["tick_id"].astype(str).tolist()[lo : lo + 37], feed["symbol"].tolist()[lo : lo + 37],
                          raw[:, lo : lo + 37])
        w, valid = windows(batch, status[lo : lo + 37], {s: rings.get(s, b"") for s in set(batch.symbol)})
        got.append(MF.from_windows(w, valid)[0])
        for i in range(len(batch)):  # the ring after the batch: the last WINDOW valid ticks of each symbol's window
            if status[lo + i] in (MF.FOLDED, MF.GAP):
                k = int(valid[i].sum())
                rings[batch.symbol[i]] = np.ascontiguousarray(w[:, i, MF.WINDOW - k :].T, "<f8").tobytes()
    keep = status != MF.STALE
    np.testing.assert_array_equal(np.concatenate(got)[keep], expected[keep])


@pytest.mark.parametrize("cut", [1, 7, 37, 500])
def test_windows_over_arrays_equal_the_tick_by_tick_rebuild(cut: int) -> None:
    """The served rebuild against the reference, on a feed with duplicates, gaps and reordering, cut into batches
    of several sizes (a symbol's duplicates, gaps and folds within one batch)."""
    feed = with_feed_faults(simulate(MarketConfig(n_symbols=7, ticks_per_symbol=300, seed=cut)), duplicates=0.08,
                            gaps=0.05, reorders=0.05, seed=cut)
    _, _, status = MF.compute_offline(feed)
    assert (status == MF.DUPLICATE).any() and (status == MF.GAP).any() and (status == MF.STALE).any()
    raw, ids, symbols = MF.raw_matrix(feed), feed["tick_id"].astype(str).tolist(), feed["symbol"].tolist()
    rings: dict[str, bytes] = {}
    for lo in range(0, len(feed), cut):
        batch = TickBatch(ids[lo : lo + cut], symbols[lo : lo + cut], raw[:, lo : lo + cut])
        before = {s: rings.get(s, b"") for s in set(batch.symbol)}
        w_ref, valid_ref = windows_by_tick(batch, status[lo : lo + cut], before)
        w, valid = windows(batch, status[lo : lo + cut], before)
        np.testing.assert_array_equal(valid, valid_ref)
        np.testing.assert_array_equal(w, w_ref)
        for i in range(len(batch)):
            if status[lo + i] in (MF.FOLDED, MF.GAP):
                k = int(valid_ref[i].sum())
                rings[batch.symbol[i]] = np.ascontiguousarray(w_ref[:, i, MF.WINDOW - k :].T, "<f8").tobytes()


def test_self_contained_features_equal_a_window_of_the_tick_alone() -> None:
    feed = simulate(MarketConfig(n_symbols=5, ticks_per_symbol=400, seed=3))
    rows = MF.raw_matrix(feed).T
    assert set(np.unique(rows[:, MF.RAW["last_side"]])) == {0.0, MF.SIDE_BUY, MF.SIDE_SELL}
    np.testing.assert_array_equal(MF.self_contained_features(rows), MF.self_contained_by_window(rows))


def test_labels_are_up_down_beyond_the_half_spread_and_none_at_the_end() -> None:
    frame = _feed(list(range(1, 8)))
    frame["bid_price"] = [10.0, 10.0, 10.02, 10.02, 10.02, 9.98, 9.98]
    frame["ask_price"] = frame["bid_price"] + 0.01
    y = ML.labels(frame, 2, alpha=pd.Series({"A": 0.005}))
    assert y.tolist() == [ML.UP, ML.UP, ML.FLAT, ML.DOWN, ML.DOWN, ML.NO_LABEL, ML.NO_LABEL]


def test_the_decision_signals_a_move_only_at_tau() -> None:
    p = np.array([[0.2, 0.7, 0.1], [0.05, 0.6, 0.35], [0.01, 0.98, 0.01]])
    assert MM.decide(p, 0.3).tolist() == [ML.FLAT, ML.UP, ML.FLAT]
    assert MM.decide(p, 0.15).tolist() == [ML.DOWN, ML.UP, ML.FLAT]


def _tick(**fields: object) -> types_pb2.MarketTick:
    ts = Timestamp(seconds=1_700_000_000)
    base = {"tick_id": "t1", "symbol": "AAPL", "sequence": 1, "timestamp": ts, "bid_price": 10.0, "bid_size": 5.0,
            "ask_price": 10.01, "ask_size": 7.0}
    base.update(fields)
    return types_pb2.MarketTick(**base)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"tick_id": ""}, "tick.tick_id"),
        ({"symbol": "a\nb"}, "tick.symbol"),
        ({"sequence": 0}, "tick.sequence"),
        ({"sequence": 2**60}, "tick.sequence"),
        ({"bid_price": 10.02}, "tick.bid_price"),
        ({"bid_price": -1.0}, "tick.bid_price"),
        ({"ask_size": 0.0}, "tick.ask_size"),
        ({"bid_size": float("nan")}, "tick.bid_size"),
        ({"last_price": float("-inf")}, "tick.last_price"),
        ({"last_side": 1}, "tick.last_price"),
        ({"last_side": 7}, "tick.last_side"),
        ({"timestamp": Timestamp(seconds=4_000_000_000)}, "tick.timestamp"),
    ],
)
def test_validation_names_the_bad_field(fields: dict[str, object], field: str) -> None:
    with pytest.raises(FieldError) as refused:
        validate_tick(_tick(**fields), now_s=1_700_000_000)
    assert refused.value.field == field


def test_a_locked_book_and_a_trade_are_valid() -> None:
    tick = validate_tick(_tick(ask_price=10.0, last_side=2, last_price=10.0, last_size=3.0), now_s=1_700_000_000)
    assert tick.sequence == 1 and tick.raw[MF.RAW["last_side"]] == 2
