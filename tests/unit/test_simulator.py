"""Checks of the transaction simulator against the generator it describes, and of its event stream."""

from __future__ import annotations

import inspect
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from scoring.scenarios.fraud import simulator
from scoring.scenarios.fraud.simulator import (
    COLUMNS,
    KIND_LABEL,
    KIND_TRANSACTION,
    SCENARIO_1_AMOUNT_THRESHOLD,
    SCENARIO_2_WINDOW_DAYS,
    SCENARIO_3_WINDOW_DAYS,
    US_PER_DAY,
    Simulation,
    SimulationConfig,
    StreamEvent,
    read_parquet,
    simulate,
    simulate_with_profiles,
    stream,
    stream_arrays,
    summary,
    terminals_in_reach,
    write_parquet,
)

pytestmark = pytest.mark.unit

SMALL = SimulationConfig(n_customers=300, n_terminals=600, n_days=60, seed=7)
# Dense enough (about 90 terminals in reach) that every scenario fires many times in 60 days.
DENSE = SimulationConfig(n_customers=300, n_terminals=600, n_days=60, radius=20.0, seed=3)


@pytest.fixture(scope="module")
def small() -> Simulation:
    return simulate_with_profiles(SMALL)


@pytest.fixture(scope="module")
def dense() -> Simulation:
    return simulate_with_profiles(DENSE)


# ------------------------------------------------------------------------------------------------
# Frame shape and determinism
# ------------------------------------------------------------------------------------------------


def test_same_seed_gives_same_frame_and_other_seed_differs() -> None:
    a = simulate(SMALL)
    b = simulate(SMALL)
    pd.testing.assert_frame_equal(a, b)
    c = simulate(SimulationConfig(n_customers=300, n_terminals=600, n_days=60, seed=8))
    assert len(a) != len(c) or not a.equals(c)


def test_columns_and_dtypes(small: Simulation) -> None:
    df = small.transactions
    assert list(df.columns) == list(COLUMNS)
    assert {c: str(t) for c, t in df.dtypes.items()} == COLUMNS
    assert df["TX_DATETIME"].dt.tz is None
    assert len(df) > 1000


def test_sorted_by_time_with_ids_in_time_order(small: Simulation) -> None:
    df = small.transactions
    assert np.array_equal(df["TRANSACTION_ID"].to_numpy(), np.arange(len(df)))
    assert df["TX_DATETIME"].is_monotonic_increasing
    seconds = df["TX_TIME_SECONDS"].to_numpy()
    assert np.all(np.diff(seconds) >= 0)
    expected_dt = pd.Timestamp(SMALL.start_date) + pd.to_timedelta(seconds, unit="s")
    assert np.array_equal(df["TX_DATETIME"].to_numpy(), expected_dt.to_numpy().astype("datetime64[ns]"))
    assert np.array_equal(df["TX_TIME_DAYS"].to_numpy(), seconds // 86_400)
    assert df["TX_TIME_DAYS"].min() >= 0 and df["TX_TIME_DAYS"].max() < SMALL.n_days


def test_start_date_with_timezone_is_stored_as_naive_utc() -> None:
    cfg = SimulationConfig(n_customers=50, n_terminals=100, n_days=3, start_date="2018-04-01T02:00:00+02:00")
    df = simulate(cfg)
    day0 = df[df["TX_TIME_DAYS"] == 0]
    assert (day0["TX_DATETIME"] >= pd.Timestamp("2018-04-01 00:00:00")).all()
    assert (day0["TX_DATETIME"] < pd.Timestamp("2018-04-02 00:00:00")).all()


def test_empty_configs_give_empty_typed_frames() -> None:
    for cfg in (
        SimulationConfig(n_customers=10, n_terminals=10, n_days=0),
        SimulationConfig(n_customers=0, n_terminals=10, n_days=5),
        SimulationConfig(n_customers=10, n_terminals=0, n_days=5),
    ):
        df = simulate(cfg)
        assert len(df) == 0
        assert {c: str(t) for c, t in df.dtypes.items()} == COLUMNS
        assert summary(df)["n_transactions"] == 0
        assert list(stream(df)) == []


@pytest.mark.parametrize(
    "kwargs", [{"n_customers": -1}, {"n_terminals": -1}, {"n_days": -1}, {"radius": 0.0}]
)
def test_invalid_config_is_rejected(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        SimulationConfig(**kwargs)  # type: ignore[arg-type]


# ------------------------------------------------------------------------------------------------
# Profiles, geometry and the legitimate transactions
# ------------------------------------------------------------------------------------------------


def test_profiles_follow_their_distributions(dense: Simulation) -> None:
    cust, term = dense.customers, dense.terminals
    for col in ("x_customer_id", "y_customer_id"):
        assert cust[col].between(0, 100).all()
    for col in ("x_terminal_id", "y_terminal_id"):
        assert term[col].between(0, 100).all()
    assert cust["mean_amount"].between(5, 100).all()
    assert np.allclose(cust["std_amount"], cust["mean_amount"] / 2)
    assert cust["mean_nb_tx_per_day"].between(0, 4).all()
    assert np.array_equal(cust["CUSTOMER_ID"], np.arange(DENSE.n_customers))
    assert np.array_equal(term["TERMINAL_ID"], np.arange(DENSE.n_terminals))


def _brute_force_reach(customer_xy: np.ndarray, terminal_xy: np.ndarray, radius: float) -> list[np.ndarray]:
    dist = np.sqrt(((customer_xy[:, None, :] - terminal_xy[None, :, :]) ** 2).sum(axis=2))
    return [np.flatnonzero(row < radius) for row in dist]


@pytest.mark.parametrize("radius", [0.5, 5.0, 17.0, 150.0])
def test_terminals_in_reach_kdtree_and_grid_match_brute_force(radius: float) -> None:
    rng = np.random.default_rng(1)
    customer_xy = rng.uniform(0, 100, size=(200, 2))
    terminal_xy = rng.uniform(0, 100, size=(400, 2))
    expected = _brute_force_reach(customer_xy, terminal_xy, radius)
    for method in ("kdtree", "grid"):
        offsets, reach = terminals_in_reach(customer_xy, terminal_xy, radius, method=method)
        got = [reach[offsets[c] : offsets[c + 1]] for c in range(len(customer_xy))]
        assert all(np.array_equal(g, e) for g, e in zip(got, expected, strict=True)), method


def test_frame_is_the_same_without_scipy(monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = SimulationConfig(n_customers=200, n_terminals=400, n_days=20, seed=5)
    with_scipy = simulate(cfg)
    # A None entry makes `import scipy.spatial` raise ImportError, as on a machine without scipy.
    monkeypatch.setitem(sys.modules, "scipy.spatial", None)
    pd.testing.assert_frame_equal(simulate(cfg), with_scipy)


def test_transactions_use_terminals_within_radius(small: Simulation) -> None:
    df, cust, term = small.transactions, small.customers, small.terminals
    c = df["CUSTOMER_ID"].to_numpy()
    t = df["TERMINAL_ID"].to_numpy()
    dx = cust["x_customer_id"].to_numpy()[c] - term["x_terminal_id"].to_numpy()[t]
    dy = cust["y_customer_id"].to_numpy()[c] - term["y_terminal_id"].to_numpy()[t]
    assert np.all(np.hypot(dx, dy) < SMALL.radius)


def test_customer_without_terminal_in_reach_makes_no_transaction() -> None:
    cfg = SimulationConfig(n_customers=300, n_terminals=600, n_days=20, radius=1.0, seed=2)
    sim = simulate_with_profiles(cfg)
    nb_terminals = sim.customers["nb_terminals"].to_numpy()
    assert (nb_terminals == 0).sum() > 100 and (nb_terminals > 0).sum() > 10
    active = np.unique(sim.transactions["CUSTOMER_ID"])
    assert np.all(nb_terminals[active] > 0)


def test_amounts_counts_and_times_have_the_handbook_distributions(dense: Simulation) -> None:
    df, cust = dense.transactions, dense.customers
    base = dense.amount_before_scenario_3
    assert np.all(base >= 0)
    assert np.allclose(base * 100, np.round(base * 100), atol=1e-6)
    c = df["CUSTOMER_ID"].to_numpy()
    # Mean amount per customer: (near) the customer's mean_amount; a wrong std or a missing redraw
    # of negative amounts would not move this much, but a wrong customer mapping would.
    per_customer = pd.Series(base).groupby(c).mean()
    expected = cust["mean_amount"].to_numpy()[per_customer.index]
    assert np.corrcoef(per_customer.to_numpy(), expected)[0, 1] > 0.97
    # Transactions per day: Poisson(lambda) thinned by the time-of-day cut (P(|z| < 2.16) ~ 0.969).
    per_day = np.bincount(c, minlength=DENSE.n_customers) / DENSE.n_days
    lam = cust["mean_nb_tx_per_day"].to_numpy() * 0.969
    assert abs(per_day.sum() / lam.sum() - 1) < 0.02
    assert np.corrcoef(per_day, lam)[0, 1] > 0.97
    tod = df["TX_TIME_SECONDS"].to_numpy() % 86_400
    assert abs(tod.mean() - 43_200) < 300
    assert 17_000 < tod.std() < 19_500  # N(43200, 20000) truncated to one day


# ------------------------------------------------------------------------------------------------
# Fraud scenarios
# ------------------------------------------------------------------------------------------------


def test_fraud_flag_matches_scenario(dense: Simulation) -> None:
    df = dense.transactions
    scenario = df["TX_FRAUD_SCENARIO"].to_numpy()
    assert set(np.unique(scenario)) == {0, 1, 2, 3}
    assert np.array_equal(df["TX_FRAUD"].to_numpy(), (scenario > 0).astype(np.int8))


def test_scenario_1_is_amount_above_threshold(dense: Simulation) -> None:
    df = dense.transactions
    scenario = df["TX_FRAUD_SCENARIO"].to_numpy()
    amount = df["TX_AMOUNT"].to_numpy()
    base = dense.amount_before_scenario_3
    assert np.all(df["TX_FRAUD"].to_numpy()[amount > SCENARIO_1_AMOUNT_THRESHOLD] == 1)
    assert np.all(scenario[base > SCENARIO_1_AMOUNT_THRESHOLD] > 0)
    assert np.all(base[scenario == 1] > SCENARIO_1_AMOUNT_THRESHOLD)
    assert np.array_equal(amount[scenario == 1], base[scenario == 1])
    assert (scenario == 1).sum() > 10


def test_scenario_2_marks_exactly_the_compromised_terminal_windows(dense: Simulation) -> None:
    df = dense.transactions
    day = df["TX_TIME_DAYS"].to_numpy()
    terminal = df["TERMINAL_ID"].to_numpy()
    scenario = df["TX_FRAUD_SCENARIO"].to_numpy()
    assert dense.compromised_terminals.shape == (DENSE.n_days, 2)
    assert all(len(set(row)) == 2 for row in dense.compromised_terminals.tolist())
    in_window = np.zeros(len(df), dtype=bool)
    for d, terminals in enumerate(dense.compromised_terminals):
        in_window |= (day >= d) & (day < d + SCENARIO_2_WINDOW_DAYS) & np.isin(terminal, terminals)
    assert in_window.sum() > 100
    assert np.all(in_window[scenario == 2])
    # Only scenario 3, applied later, may take a compromised-terminal transaction away from scenario 2.
    assert np.all(scenario[in_window & (scenario != 3)] == 2)


def test_scenario_3_multiplies_a_third_of_the_compromised_customers_transactions(dense: Simulation) -> None:
    df = dense.transactions
    day = df["TX_TIME_DAYS"].to_numpy()
    customer = df["CUSTOMER_ID"].to_numpy()
    scenario = df["TX_FRAUD_SCENARIO"].to_numpy()
    amount = df["TX_AMOUNT"].to_numpy()
    base = dense.amount_before_scenario_3
    s3 = scenario == 3
    assert s3.sum() > 50
    assert np.array_equal(amount != base, s3)
    ratio = amount[s3] / base[s3]
    times = np.round(np.log(ratio) / np.log(5)).astype(int)
    assert np.all(times >= 1)
    assert np.allclose(ratio, 5.0**times)

    in_window = np.zeros(len(df), dtype=bool)
    expected_draws = 0
    assert dense.compromised_customers.shape == (DENSE.n_days, 3)
    for d, customers in enumerate(dense.compromised_customers):
        pool = (day >= d) & (day < d + SCENARIO_3_WINDOW_DAYS) & np.isin(customer, customers)
        in_window |= pool
        expected_draws += int(pool.sum()) // 3
    assert np.all(in_window[s3])
    # Every draw multiplies one transaction by 5 once, so the exponents add up to the draws made.
    assert int(times.sum()) == expected_draws


def test_default_size_and_fraud_rate() -> None:
    s = summary(simulate())
    assert 1_700_000 < s["n_transactions"] < 1_850_000
    assert 0.006 < s["fraud_rate"] < 0.011
    assert min(s["n_scenario_1"], s["n_scenario_2"], s["n_scenario_3"]) > 500
    assert s["n_days"] == 183
    assert s["first_datetime"].startswith("2018-04-01")
    assert s["last_datetime"].startswith("2018-09-30")


# ------------------------------------------------------------------------------------------------
# Storage and summary
# ------------------------------------------------------------------------------------------------


def test_parquet_round_trip_keeps_values_and_dtypes(small: Simulation, tmp_path: Path) -> None:
    path = tmp_path / "nested" / "dir" / "tx.parquet"
    write_parquet(small.transactions, path)
    back = read_parquet(path)
    pd.testing.assert_frame_equal(back, small.transactions)


def test_read_parquet_rejects_other_files(tmp_path: Path) -> None:
    path = tmp_path / "other.parquet"
    pd.DataFrame({"a": [1]}).to_parquet(path)
    with pytest.raises(ValueError, match="missing columns"):
        read_parquet(path)


def test_summary(small: Simulation) -> None:
    df = small.transactions
    s = summary(df)
    assert s["n_transactions"] == len(df)
    assert s["n_frauds"] == int(df["TX_FRAUD"].sum())
    assert s["fraud_rate"] == pytest.approx(df["TX_FRAUD"].mean())
    assert s["n_scenario_1"] + s["n_scenario_2"] + s["n_scenario_3"] == s["n_frauds"]
    assert s["n_days"] == SMALL.n_days
    assert pd.Timestamp(s["first_datetime"]) == df["TX_DATETIME"].iloc[0]
    assert pd.Timestamp(s["last_datetime"]) == df["TX_DATETIME"].iloc[-1]


# ------------------------------------------------------------------------------------------------
# Event stream
# ------------------------------------------------------------------------------------------------


def _as_arrays(events: list[StreamEvent]) -> dict[str, np.ndarray]:
    return {
        "kind": np.array([KIND_LABEL if e.kind == "label" else KIND_TRANSACTION for e in events], np.int8),
        "event_time_us": np.array([e.event_time_us for e in events], np.int64),
        "transaction_id": np.array([e.transaction_id for e in events], np.int64),
        "customer_id": np.array([e.customer_id for e in events], np.int64),
        "terminal_id": np.array([e.terminal_id for e in events], np.int64),
        "amount": np.array([e.amount for e in events], np.float64),
        "fraud": np.array([e.fraud for e in events], np.int8),
    }


def _check_stream(df: pd.DataFrame, arrays: dict[str, np.ndarray], delay_days: float) -> None:
    n = len(df)
    kind = arrays["kind"]
    t = arrays["event_time_us"]
    tid = arrays["transaction_id"]
    assert len(kind) == 2 * n
    assert np.all(np.diff(t) >= 0)
    tx, lb = kind == KIND_TRANSACTION, kind == KIND_LABEL
    assert np.array_equal(np.sort(tid[tx]), df["TRANSACTION_ID"].to_numpy())
    assert np.array_equal(np.sort(tid[lb]), df["TRANSACTION_ID"].to_numpy())
    tx_time = df["TX_DATETIME"].to_numpy().astype("datetime64[us]").astype(np.int64)
    delay = round(delay_days * US_PER_DAY)
    assert np.array_equal(t[tx], tx_time[tid[tx]])
    assert np.array_equal(t[lb], tx_time[tid[lb]] + delay)
    # Each label comes after its own transaction, and carries that transaction's fields.
    position = np.empty((2, n), dtype=np.int64)
    position[0, tid[tx]] = np.flatnonzero(tx)
    position[1, tid[lb]] = np.flatnonzero(lb)
    assert np.all(position[1] > position[0])
    for name, col in (
        ("customer_id", "CUSTOMER_ID"),
        ("terminal_id", "TERMINAL_ID"),
        ("amount", "TX_AMOUNT"),
        ("fraud", "TX_FRAUD"),
    ):
        assert np.array_equal(arrays[name], df[col].to_numpy()[tid]), name
    # Ties: no transaction directly followed by a label at the same microsecond.
    same_time = t[1:] == t[:-1]
    assert not np.any(same_time & (kind[:-1] == KIND_TRANSACTION) & (kind[1:] == KIND_LABEL))


@pytest.mark.parametrize("delay_days", [7.0, 0.5, 1e-9])
def test_stream_arrays_is_a_correct_merge(small: Simulation, delay_days: float) -> None:
    _check_stream(small.transactions, stream_arrays(small.transactions, delay_days), delay_days)


@pytest.mark.parametrize("chunk_size", [1, 7, 1000, 1_000_000])
def test_stream_matches_stream_arrays_whatever_the_chunk(small: Simulation, chunk_size: int) -> None:
    df = small.transactions.iloc[:5000]
    events = list(stream(df, 0.25, chunk_size=chunk_size))
    assert all(isinstance(e, StreamEvent) and e.kind in ("transaction", "label") for e in events)
    got = _as_arrays(events)
    expected = stream_arrays(df, 0.25)
    for name in expected:
        assert np.array_equal(got[name], expected[name]), name
    _check_stream(df, got, 0.25)


def _tie_frame() -> pd.DataFrame:
    # Transactions every 12 hours plus a duplicate time, so that a 1-day delay puts labels exactly on
    # later transactions' microseconds.
    seconds = np.array([0, 0, 43_200, 86_400, 86_400, 129_600, 172_800], dtype=np.int64)
    n = len(seconds)
    return pd.DataFrame(
        {
            "TRANSACTION_ID": np.arange(n, dtype=np.int64),
            "TX_DATETIME": (np.datetime64("2018-04-01", "ns") + seconds.astype("timedelta64[s]")),
            "CUSTOMER_ID": np.arange(n, dtype=np.int64) % 3,
            "TERMINAL_ID": np.arange(n, dtype=np.int64) % 2,
            "TX_AMOUNT": np.linspace(1.0, 7.0, n),
            "TX_TIME_SECONDS": seconds,
            "TX_TIME_DAYS": seconds // 86_400,
            "TX_FRAUD": np.array([0, 1, 0, 0, 1, 0, 0], dtype=np.int8),
            "TX_FRAUD_SCENARIO": np.array([0, 2, 0, 0, 1, 0, 0], dtype=np.int8),
        }
    ).astype(COLUMNS)


@pytest.mark.parametrize("chunk_size", [1, 2, 3, 100])
def test_stream_puts_labels_before_transactions_at_the_same_time(chunk_size: int) -> None:
    df = _tie_frame()
    got = [(e.kind[0], e.transaction_id) for e in stream(df, 1.0, chunk_size=chunk_size)]
    assert got == [
        ("t", 0), ("t", 1), ("t", 2),
        ("l", 0), ("l", 1), ("t", 3), ("t", 4),
        ("l", 2), ("t", 5),
        ("l", 3), ("l", 4), ("t", 6),
        ("l", 5), ("l", 6),
    ]  # fmt: skip
    arrays = stream_arrays(df, 1.0)
    assert [("t" if k == KIND_TRANSACTION else "l", i) for k, i in
            zip(arrays["kind"].tolist(), arrays["transaction_id"].tolist(), strict=True)] == got  # fmt: skip


def test_stream_orders_an_unsorted_frame_by_time(small: Simulation) -> None:
    df = small.transactions.iloc[:2000]
    shuffled = df.sample(frac=1.0, random_state=0)
    expected = stream_arrays(df, 2.0)
    got = _as_arrays(list(stream(shuffled, 2.0, chunk_size=64)))
    # Simultaneous transactions may come in another order; times, kinds and the multiset of ids may not.
    assert np.array_equal(got["event_time_us"], expected["event_time_us"])
    assert np.array_equal(got["kind"], expected["kind"])
    _check_stream(df, got, 2.0)


def test_stream_is_lazy(small: Simulation, monkeypatch: pytest.MonkeyPatch) -> None:
    sizes: list[int] = []
    real = simulator._merge_block

    def counting(*args: Any, **kwargs: Any) -> dict[str, np.ndarray]:
        out = real(*args, **kwargs)
        sizes.append(len(out["kind"]))
        return out

    monkeypatch.setattr(simulator, "_merge_block", counting)
    events = stream(small.transactions, chunk_size=16)
    assert inspect.isgenerator(stream(small.transactions))
    first = next(events)
    assert first.kind == "transaction" and first.transaction_id == 0
    # One chunk built, of about chunk_size events: not the whole frame.
    assert len(sizes) == 1 and sizes[0] <= 64


@pytest.mark.parametrize("delay_days", [-1.0, 0.0, 1e-12, float("nan")])
def test_label_delay_below_one_microsecond_is_rejected(small: Simulation, delay_days: float) -> None:
    with pytest.raises(ValueError):
        stream_arrays(small.transactions, delay_days)
    with pytest.raises(ValueError):
        next(stream(small.transactions, delay_days))
