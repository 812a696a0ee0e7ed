"""Synthetic card-transaction generator: the data source for training, replay and benchmarks.

The model is the generator described in "Reproducible Machine Learning for Credit Card Fraud
Detection - Practical Handbook" (Le Borgne et al., chapter 3, "Simulated dataset"), written anew
with numpy so that the default dataset is produced in about a second instead of minutes:

* customers: location ``x, y ~ U(0, 100)``, ``mean_amount ~ U(5, 100)``, ``std_amount = mean_amount / 2``,
  ``mean_nb_tx_per_day ~ U(0, 4)``; terminals: location ``x, y ~ U(0, 100)``;
* a customer uses the terminals strictly within ``radius`` of its location (none: no transactions);
* per customer and day, ``Poisson(mean_nb_tx_per_day)`` transactions, time of day ``N(43200, 20000)`` s
  (draws outside ``[0, 86400)`` are dropped), amount ``N(mean, std)`` with negatives redrawn from
  ``U(0, 2 * mean)``, rounded to cents, terminal uniform among those in reach;
* frauds, applied in this order so a transaction keeps the last scenario that marked it:
  1. amount > 220;
  2. each day, 2 random terminals are compromised: all their transactions of that day and the next 27;
  3. each day, 3 random customers are compromised: over that day and the next 13, a third of their
     transactions (pooled, drawn at random) get their amount multiplied by 5.

Differences from the handbook's reference code, all deliberate: the random streams are numpy
``Generator`` streams spawned from one seed (so the output differs from the handbook's files, but one
seed always gives the same frame), and scenarios 2 and 3 run on every simulated day (the handbook
stops one day short). As in the handbook, a transaction picked by two overlapping scenario-3
compromises is multiplied twice (x25).

Measured on the default config (5,000 customers x 10,000 terminals x 183 days from 2018-04-01,
radius 5, seed 0) on a 2-core VM with numpy 1.26 and pandas 3.0: 1,779,996 transactions, 14,801
frauds (0.83%; scenarios 1/2/3: 1,069 / 8,841 / 4,891), :func:`simulate` in 0.7-0.85 s; Parquet
37 MB, written in 0.25 s and read in 0.3 s; :func:`stream_arrays` 0.1-0.25 s and :func:`stream`
2.8 s for the 3.56 M events.

The module also turns a frame into the time-ordered event stream the replay and benchmark tools feed
to the gateway: every transaction, and its label when it arrives, a fixed delay later or as a label-arrival
model draws it (`scoring.scenarios.fraud.label_delay`; :func:`stream`, :func:`stream_arrays`).
"""

from __future__ import annotations

import argparse
import json
import math
import numbers
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, NamedTuple

import numpy as np
import pandas as pd

from scoring.scenarios.fraud.label_delay import LabelDelay

SECONDS_PER_DAY = 86_400
US_PER_DAY = SECONDS_PER_DAY * 1_000_000

# The handbook's constants, kept in one place so that the tests can refer to them.
SCENARIO_1_AMOUNT_THRESHOLD = 220.0
SCENARIO_2_TERMINALS_PER_DAY = 2
SCENARIO_2_WINDOW_DAYS = 28
SCENARIO_3_CUSTOMERS_PER_DAY = 3
SCENARIO_3_WINDOW_DAYS = 14
SCENARIO_3_AMOUNT_FACTOR = 5.0

TIME_OF_DAY_MEAN_S = SECONDS_PER_DAY / 2
TIME_OF_DAY_STD_S = 20_000.0

COLUMNS: dict[str, str] = {
    "TRANSACTION_ID": "int64",
    "TX_DATETIME": "datetime64[ns]",
    "CUSTOMER_ID": "int64",
    "TERMINAL_ID": "int64",
    "TX_AMOUNT": "float64",
    "TX_TIME_SECONDS": "int64",
    "TX_TIME_DAYS": "int64",
    "TX_FRAUD": "int8",
    "TX_FRAUD_SCENARIO": "int8",
}

KIND_TRANSACTION = 0
KIND_LABEL = 1
_KIND_NAMES = ("transaction", "label")


@dataclass(frozen=True)
class SimulationConfig:
    n_customers: int = 5000
    n_terminals: int = 10000
    n_days: int = 183
    start_date: str = "2018-04-01"
    radius: float = 5.0
    seed: int = 0

    def __post_init__(self) -> None:
        if self.n_customers < 0 or self.n_terminals < 0 or self.n_days < 0:
            raise ValueError(f"sizes must be >= 0: {self}")
        if not self.radius > 0:
            raise ValueError(f"radius must be > 0: {self.radius}")


DEFAULT_CONFIG = SimulationConfig()


class Simulation(NamedTuple):
    """Everything :func:`simulate_with_profiles` draws, for checks and analysis of the generator."""

    transactions: pd.DataFrame
    customers: pd.DataFrame
    terminals: pd.DataFrame
    # Row d: the ids compromised on day d (fewer columns only when there are fewer ids than that).
    compromised_terminals: np.ndarray
    compromised_customers: np.ndarray
    # Aligned with ``transactions``: the amount before scenario 3 changed it (scenario 1 judged this one).
    amount_before_scenario_3: np.ndarray


@dataclass(frozen=True)
class StreamEvent:
    kind: str
    event_time_us: int
    transaction_id: int
    customer_id: int
    terminal_id: int
    amount: float
    fraud: int


# --------------------------------------------------------------------------------------------------
# Profiles and geometry
# --------------------------------------------------------------------------------------------------


def generate_customer_profiles(n_customers: int, rng: np.random.Generator) -> pd.DataFrame:
    xy = rng.uniform(0.0, 100.0, size=(n_customers, 2))
    mean_amount = rng.uniform(5.0, 100.0, size=n_customers)
    mean_nb_tx_per_day = rng.uniform(0.0, 4.0, size=n_customers)
    return pd.DataFrame(
        {
            "CUSTOMER_ID": np.arange(n_customers, dtype=np.int64),
            "x_customer_id": xy[:, 0],
            "y_customer_id": xy[:, 1],
            "mean_amount": mean_amount,
            "std_amount": mean_amount / 2.0,
            "mean_nb_tx_per_day": mean_nb_tx_per_day,
        }
    )


def generate_terminal_profiles(n_terminals: int, rng: np.random.Generator) -> pd.DataFrame:
    xy = rng.uniform(0.0, 100.0, size=(n_terminals, 2))
    return pd.DataFrame(
        {
            "TERMINAL_ID": np.arange(n_terminals, dtype=np.int64),
            "x_terminal_id": xy[:, 0],
            "y_terminal_id": xy[:, 1],
        }
    )


def _pairs_to_csr(
    customer_idx: np.ndarray, terminal_idx: np.ndarray, n_customers: int
) -> tuple[np.ndarray, np.ndarray]:
    # Sorting by terminal inside each customer makes the result independent of the search method,
    # which keeps the terminal draws (and so the whole frame) identical with or without scipy.
    order = np.lexsort((terminal_idx, customer_idx))
    counts = np.bincount(customer_idx, minlength=n_customers)
    offsets = np.zeros(n_customers + 1, dtype=np.int64)
    np.cumsum(counts, out=offsets[1:])
    return offsets, terminal_idx[order].astype(np.int64, copy=False)


def _pairs_kdtree(
    customer_xy: np.ndarray, terminal_xy: np.ndarray, radius: float
) -> tuple[np.ndarray, np.ndarray]:
    from scipy.spatial import cKDTree

    pairs = cKDTree(customer_xy).sparse_distance_matrix(cKDTree(terminal_xy), radius, output_type="ndarray")
    # scipy keeps distance <= r; the handbook keeps < r.
    keep = pairs["v"] < radius
    return pairs["i"][keep].astype(np.int64), pairs["j"][keep].astype(np.int64)


def _pairs_grid(
    customer_xy: np.ndarray, terminal_xy: np.ndarray, radius: float
) -> tuple[np.ndarray, np.ndarray]:
    # Cells of side `radius`: every terminal in reach lies in the customer's cell or one of its 8
    # neighbours. Only occupied cells are indexed, so a tiny radius does not allocate a huge grid.
    origin = np.minimum(customer_xy.min(axis=0), terminal_xy.min(axis=0)) - radius
    c_cell = np.floor((customer_xy - origin) / radius).astype(np.int64)
    t_cell = np.floor((terminal_xy - origin) / radius).astype(np.int64)
    width = int(max(c_cell[:, 1].max(), t_cell[:, 1].max())) + 2
    t_id = t_cell[:, 0] * width + t_cell[:, 1]
    t_order = np.argsort(t_id, kind="stable")
    t_id_sorted = t_id[t_order]

    cust_parts: list[np.ndarray] = []
    term_parts: list[np.ndarray] = []
    customers = np.arange(len(customer_xy), dtype=np.int64)
    for dx in (-1, 0, 1):
        for dy in (-1, 0, 1):
            cell = (c_cell[:, 0] + dx) * width + (c_cell[:, 1] + dy)
            lo = np.searchsorted(t_id_sorted, cell, side="left")
            hi = np.searchsorted(t_id_sorted, cell, side="right")
            counts = hi - lo
            total = int(counts.sum())
            if total == 0:
                continue
            cust = np.repeat(customers, counts)
            starts = np.cumsum(counts) - counts
            pos = np.arange(total, dtype=np.int64) - np.repeat(starts - lo, counts)
            cust_parts.append(cust)
            term_parts.append(t_order[pos])
    if not cust_parts:
        return np.empty(0, np.int64), np.empty(0, np.int64)
    cust = np.concatenate(cust_parts)
    term = np.concatenate(term_parts).astype(np.int64)
    d2 = ((customer_xy[cust] - terminal_xy[term]) ** 2).sum(axis=1)
    keep = np.sqrt(d2) < radius
    return cust[keep], term[keep]


def terminals_in_reach(
    customer_xy: np.ndarray,
    terminal_xy: np.ndarray,
    radius: float,
    method: Literal["auto", "kdtree", "grid"] = "auto",
) -> tuple[np.ndarray, np.ndarray]:
    """Terminals strictly within ``radius`` of each customer, as CSR ``(offsets, terminal_ids)``.

    Customer ``c`` reaches ``terminal_ids[offsets[c]:offsets[c + 1]]``, in increasing id order.
    """
    customer_xy = np.asarray(customer_xy, dtype=np.float64).reshape(-1, 2)
    terminal_xy = np.asarray(terminal_xy, dtype=np.float64).reshape(-1, 2)
    n_customers = len(customer_xy)
    if n_customers == 0 or len(terminal_xy) == 0:
        return np.zeros(n_customers + 1, dtype=np.int64), np.empty(0, dtype=np.int64)
    if method == "auto":
        try:
            import scipy.spatial  # noqa: F401

            method = "kdtree"
        except ImportError:
            method = "grid"
    if method == "kdtree":
        cust, term = _pairs_kdtree(customer_xy, terminal_xy, radius)
    elif method == "grid":
        cust, term = _pairs_grid(customer_xy, terminal_xy, radius)
    else:
        raise ValueError(f"unknown method {method!r}")
    return _pairs_to_csr(cust, term, n_customers)


# --------------------------------------------------------------------------------------------------
# Transactions and frauds
# --------------------------------------------------------------------------------------------------


def _start_datetime64(start_date: str) -> np.datetime64:
    ts = pd.Timestamp(start_date)
    if ts.tzinfo is not None:
        ts = ts.tz_convert("UTC").tz_localize(None)
    return ts.as_unit("ns").to_datetime64()


def _draw_compromised(rng: np.random.Generator, n_days: int, population: int, per_day: int) -> np.ndarray:
    k = min(per_day, population)
    out = np.empty((n_days, k), dtype=np.int64)
    for day in range(n_days):
        out[day] = rng.choice(population, size=k, replace=False)
    return out


def _empty_frame() -> pd.DataFrame:
    return pd.DataFrame({name: pd.Series([], dtype=dtype) for name, dtype in COLUMNS.items()})


def simulate_with_profiles(config: SimulationConfig = DEFAULT_CONFIG) -> Simulation:
    """:func:`simulate`, also returning the profiles and fraud draws it made (for checks)."""
    # One independent stream per stage: changing, say, the number of terminals leaves the customer
    # profiles unchanged, which makes it easier to reason about two configs.
    rng_cust, rng_term, rng_tx, rng_s2, rng_s3 = (
        np.random.default_rng(s) for s in np.random.SeedSequence(config.seed).spawn(5)
    )
    customers = generate_customer_profiles(config.n_customers, rng_cust)
    terminals = generate_terminal_profiles(config.n_terminals, rng_term)
    customer_xy = customers[["x_customer_id", "y_customer_id"]].to_numpy()
    terminal_xy = terminals[["x_terminal_id", "y_terminal_id"]].to_numpy()
    offsets, reach = terminals_in_reach(customer_xy, terminal_xy, config.radius)
    nb_terminals = np.diff(offsets)
    customers["nb_terminals"] = nb_terminals

    n_days = config.n_days
    mean_amount = customers["mean_amount"].to_numpy()
    std_amount = customers["std_amount"].to_numpy()
    lam = customers["mean_nb_tx_per_day"].to_numpy()

    # Customer-major (customer, day) grid, so each customer's transactions end up contiguous and in
    # day order: scenario 3 then finds a customer's window with two binary searches.
    nb = rng_tx.poisson(lam[:, None], size=(config.n_customers, n_days))
    # Without a terminal in reach the handbook makes no transaction at all.
    nb[nb_terminals == 0] = 0
    counts = nb.ravel()
    cell_customer = np.repeat(np.arange(config.n_customers, dtype=np.int64), n_days)
    cell_day = np.tile(np.arange(n_days, dtype=np.int64), config.n_customers)
    cust = np.repeat(cell_customer, counts)
    day = np.repeat(cell_day, counts)

    time_of_day = rng_tx.normal(TIME_OF_DAY_MEAN_S, TIME_OF_DAY_STD_S, size=len(cust))
    kept = (time_of_day >= 0) & (time_of_day < SECONDS_PER_DAY)
    cust, day, time_of_day = cust[kept], day[kept], time_of_day[kept]
    n = len(cust)

    amount = rng_tx.normal(mean_amount[cust], std_amount[cust])
    negative = np.flatnonzero(amount < 0)
    amount[negative] = rng_tx.uniform(0.0, 2.0 * mean_amount[cust[negative]])
    amount = np.round(amount, 2)

    pick = np.floor(rng_tx.random(n) * nb_terminals[cust]).astype(np.int64)
    # Guards the (measure-zero) case of random() * k rounding up to k.
    np.minimum(pick, nb_terminals[cust] - 1, out=pick)
    terminal = reach[offsets[cust] + pick] if n else np.empty(0, dtype=np.int64)

    seconds = day * SECONDS_PER_DAY + time_of_day.astype(np.int64)

    # Scenario 1 looks at the amounts before scenario 3 multiplies some of them.
    scenario = np.where(amount > SCENARIO_1_AMOUNT_THRESHOLD, 1, 0).astype(np.int8)
    base_amount = amount.copy()

    compromised_terminals = _draw_compromised(
        rng_s2, n_days, config.n_terminals, SCENARIO_2_TERMINALS_PER_DAY
    )
    if n and compromised_terminals.size:
        # Each terminal's compromised days as a per-terminal day mask, built with a difference array
        # over the few terminals ever compromised rather than over all terminals.
        hit, row = np.unique(compromised_terminals, return_inverse=True)
        row = row.reshape(compromised_terminals.shape)
        diff = np.zeros((len(hit), n_days + SCENARIO_2_WINDOW_DAYS + 1), dtype=np.int32)
        days = np.broadcast_to(np.arange(n_days)[:, None], row.shape)
        np.add.at(diff, (row, days), 1)
        np.add.at(diff, (row, days + SCENARIO_2_WINDOW_DAYS), -1)
        active = np.cumsum(diff, axis=1)[:, :n_days] > 0
        slot = np.minimum(np.searchsorted(hit, terminal), len(hit) - 1)
        on_hit = hit[slot] == terminal
        s2 = np.zeros(n, dtype=bool)
        s2[on_hit] = active[slot[on_hit], day[on_hit]]
        scenario[s2] = 2

    compromised_customers = _draw_compromised(
        rng_s3, n_days, config.n_customers, SCENARIO_3_CUSTOMERS_PER_DAY
    )
    if n and compromised_customers.size:
        tx_offsets = np.zeros(config.n_customers + 1, dtype=np.int64)
        np.cumsum(np.bincount(cust, minlength=config.n_customers), out=tx_offsets[1:])
        # Sequential over days on purpose: a transaction drawn by two overlapping compromises is
        # multiplied twice, as in the handbook. The loop is per day, never per transaction.
        for d in range(n_days):
            pool_parts = []
            for c in compromised_customers[d]:
                lo, hi = tx_offsets[c], tx_offsets[c + 1]
                days_c = day[lo:hi]
                a = lo + np.searchsorted(days_c, d, side="left")
                b = lo + np.searchsorted(days_c, d + SCENARIO_3_WINDOW_DAYS, side="left")
                pool_parts.append(np.arange(a, b))
            pool = np.concatenate(pool_parts)
            k = len(pool) // 3
            if k == 0:
                continue
            chosen = rng_s3.choice(pool, size=k, replace=False)
            amount[chosen] *= SCENARIO_3_AMOUNT_FACTOR
            scenario[chosen] = 3

    order = np.argsort(seconds, kind="stable")
    seconds = seconds[order]
    start = _start_datetime64(config.start_date)
    if n:
        tx_datetime = start + seconds.astype("timedelta64[s]")
    else:
        tx_datetime = np.empty(0, dtype="datetime64[ns]")
    df = pd.DataFrame(
        {
            "TRANSACTION_ID": np.arange(n, dtype=np.int64),
            "TX_DATETIME": tx_datetime.astype("datetime64[ns]"),
            "CUSTOMER_ID": cust[order],
            "TERMINAL_ID": terminal[order].astype(np.int64, copy=False),
            "TX_AMOUNT": amount[order],
            "TX_TIME_SECONDS": seconds,
            "TX_TIME_DAYS": day[order],
            "TX_FRAUD": (scenario[order] > 0).astype(np.int8),
            "TX_FRAUD_SCENARIO": scenario[order],
        },
        # The arrays are fresh; copying them into consolidated blocks would cost a third of the run.
        copy=False,
    )
    if n == 0:
        df = _empty_frame()
    df = df.astype(COLUMNS)
    return Simulation(
        transactions=df,
        customers=customers,
        terminals=terminals,
        compromised_terminals=compromised_terminals,
        compromised_customers=compromised_customers,
        amount_before_scenario_3=base_amount[order],
    )


def simulate(config: SimulationConfig = DEFAULT_CONFIG) -> pd.DataFrame:
    """The transactions of ``config``, one row each, sorted by time; columns and dtypes as ``COLUMNS``."""
    return simulate_with_profiles(config).transactions


# --------------------------------------------------------------------------------------------------
# Storage and summary
# --------------------------------------------------------------------------------------------------


def write_parquet(df: pd.DataFrame, path: str | Path) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    df.to_parquet(path, index=False, engine="pyarrow")


def read_parquet(path: str | Path) -> pd.DataFrame:
    df = pd.read_parquet(path, engine="pyarrow")
    missing = [c for c in COLUMNS if c not in df.columns]
    if missing:
        raise ValueError(f"{path}: not a simulator file, missing columns {missing}")
    # Readers may pick another timestamp unit or nullable types; callers rely on the exact schema.
    return df[list(COLUMNS)].astype(COLUMNS)


def summary(df: pd.DataFrame) -> dict[str, Any]:
    n = len(df)
    scenario = df["TX_FRAUD_SCENARIO"].to_numpy()
    counts = np.bincount(scenario.astype(np.int64), minlength=4) if n else np.zeros(4, dtype=np.int64)
    n_frauds = int(df["TX_FRAUD"].sum()) if n else 0
    days = df["TX_TIME_DAYS"].to_numpy()
    return {
        "n_transactions": n,
        "n_frauds": n_frauds,
        "fraud_rate": n_frauds / n if n else 0.0,
        "n_scenario_1": int(counts[1]),
        "n_scenario_2": int(counts[2]),
        "n_scenario_3": int(counts[3]),
        "n_days": int(days.max() - days.min() + 1) if n else 0,
        "n_customers": int(df["CUSTOMER_ID"].nunique()),
        "n_terminals": int(df["TERMINAL_ID"].nunique()),
        "first_datetime": df["TX_DATETIME"].min().isoformat() if n else None,
        "last_datetime": df["TX_DATETIME"].max().isoformat() if n else None,
    }


# --------------------------------------------------------------------------------------------------
# Event stream
# --------------------------------------------------------------------------------------------------


def _delay_us(label_delay_days: float) -> int:
    delay = int(round(label_delay_days * US_PER_DAY)) if math.isfinite(label_delay_days) else 0
    # With no delay the tie rule (labels first) would report a label before its own transaction.
    if delay < 1:
        raise ValueError(f"label_delay_days must be at least one microsecond: {label_delay_days}")
    return delay


LabelDelaySpec = float | str | LabelDelay


def label_arrival_us(
    time_us: np.ndarray, transaction_id: np.ndarray, label_delay: LabelDelaySpec, seed: int = 0
) -> np.ndarray:
    """When each transaction's label arrives: a fixed delay in days, or a label-arrival model (`label_delay`)."""
    if isinstance(label_delay, str):
        model = LabelDelay.parse(label_delay)
    elif isinstance(label_delay, LabelDelay):
        model = label_delay
    elif isinstance(label_delay, numbers.Real):  # numpy numbers too
        return np.asarray(time_us, dtype=np.int64) + _delay_us(float(label_delay))
    else:
        raise TypeError(f"label_delay: days, a spec or a LabelDelay, not {label_delay!r}")
    return model.arrival_us(time_us, transaction_id, seed)


def frame_label_arrival_us(df: pd.DataFrame, label_delay: LabelDelaySpec, seed: int = 0) -> np.ndarray:
    """`label_arrival_us` for each row of a frame (TX_DATETIME, TRANSACTION_ID)."""
    time_us = df["TX_DATETIME"].to_numpy(dtype="datetime64[us]").view(np.int64)
    return label_arrival_us(time_us, df["TRANSACTION_ID"].to_numpy(), label_delay, seed)


def _stream_columns(df: pd.DataFrame) -> dict[str, np.ndarray]:
    cols = {
        "event_time_us": df["TX_DATETIME"].to_numpy(dtype="datetime64[us]").view(np.int64),
        "transaction_id": df["TRANSACTION_ID"].to_numpy(dtype=np.int64),
        "customer_id": df["CUSTOMER_ID"].to_numpy(dtype=np.int64),
        "terminal_id": df["TERMINAL_ID"].to_numpy(dtype=np.int64),
        "amount": df["TX_AMOUNT"].to_numpy(dtype=np.float64),
        "fraud": df["TX_FRAUD"].to_numpy(dtype=np.int8),
    }
    t = cols["event_time_us"]
    if len(t) > 1 and bool(np.any(t[1:] < t[:-1])):
        # Only an index array; ties keep the frame's row order.
        order = np.argsort(t, kind="stable")
        cols = {k: v[order] for k, v in cols.items()}
    return cols


def _label_order(cols: dict[str, np.ndarray], label_delay: LabelDelaySpec, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(transaction rows in label-arrival order, their arrival times); equal arrivals keep transaction order."""
    arrival = label_arrival_us(cols["event_time_us"], cols["transaction_id"], label_delay, seed)
    order = np.argsort(arrival, kind="stable")
    return order, arrival[order]


def _merge_positions(tx_time: np.ndarray, label_time: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    # Both inputs are sorted, so each element's place in the merge is its rank in its own sequence
    # plus the number of elements of the other that precede it; labels win ties.
    pos_tx = np.arange(len(tx_time), dtype=np.int64) + np.searchsorted(label_time, tx_time, side="right")
    pos_label = np.arange(len(label_time), dtype=np.int64) + np.searchsorted(tx_time, label_time, side="left")
    return pos_tx, pos_label


def _merge_block(
    cols: dict[str, np.ndarray], label_rows: np.ndarray, label_time: np.ndarray, tx: slice, labels: slice
) -> dict[str, np.ndarray]:
    tx_time = cols["event_time_us"][tx]
    rows, label_time = label_rows[labels], label_time[labels]
    pos_tx, pos_label = _merge_positions(tx_time, label_time)
    size = len(tx_time) + len(label_time)
    out: dict[str, np.ndarray] = {"kind": np.empty(size, dtype=np.int8)}
    out["kind"][pos_tx] = KIND_TRANSACTION
    out["kind"][pos_label] = KIND_LABEL
    out["event_time_us"] = np.empty(size, dtype=np.int64)
    out["event_time_us"][pos_tx] = tx_time
    out["event_time_us"][pos_label] = label_time
    for name in ("transaction_id", "customer_id", "terminal_id", "amount", "fraud"):
        col = cols[name]
        merged = np.empty(size, dtype=col.dtype)
        merged[pos_tx] = col[tx]
        merged[pos_label] = col[rows]
        out[name] = merged
    return out


def stream_arrays(df: pd.DataFrame, label_delay: LabelDelaySpec = 7.0, *, seed: int = 0) -> dict[str, np.ndarray]:
    """The merged event order of :func:`stream` as numpy columns (``kind``: 0 transaction, 1 label)."""
    cols = _stream_columns(df)
    label_rows, label_time = _label_order(cols, label_delay, seed)
    n = len(cols["event_time_us"])
    return _merge_block(cols, label_rows, label_time, slice(0, n), slice(0, n))


def stream(
    df: pd.DataFrame, label_delay: LabelDelaySpec = 7.0, *, seed: int = 0, chunk_size: int = 65_536
) -> Iterator[StreamEvent]:
    """Every transaction of ``df`` in time order, interleaved with its label when it arrives: ``label_delay`` days
    later, or as a label-arrival model (`scoring.scenarios.fraud.label_delay`) draws it.

    Labels come before transactions at the same microsecond. Events are built a chunk at a time, so
    memory stays at a few numpy columns however long the frame.
    """
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1: {chunk_size}")
    cols = _stream_columns(df)
    label_rows, label_time = _label_order(cols, label_delay, seed)
    tx_time = cols["event_time_us"]
    n = len(tx_time)
    i = j = 0  # next transaction, next label (in arrival order)
    while i < n or j < n:
        # Emit everything up to a time bound that ends at most one chunk into either sequence; all
        # events at the bound go out together so that the tie rule holds across chunks.
        ends = []
        if i < n:
            ends.append(int(tx_time[min(i + chunk_size, n) - 1]))
        if j < n:
            ends.append(int(label_time[min(j + chunk_size, n) - 1]))
        bound = min(ends)
        i2 = int(np.searchsorted(tx_time, bound, side="right"))
        j2 = int(np.searchsorted(label_time, bound, side="right"))
        block = _merge_block(cols, label_rows, label_time, slice(i, i2), slice(j, j2))
        kinds = block["kind"].tolist()
        yield from (
            StreamEvent(_KIND_NAMES[k], t, tid, cid, term, amt, fr)
            for k, t, tid, cid, term, amt, fr in zip(
                kinds,
                block["event_time_us"].tolist(),
                block["transaction_id"].tolist(),
                block["customer_id"].tolist(),
                block["terminal_id"].tolist(),
                block["amount"].tolist(),
                block["fraud"].tolist(),
                strict=True,
            )
        )
        i, j = i2, j2


# --------------------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Generate the simulated transaction dataset as Parquet.")
    parser.add_argument("out", type=Path, help="output .parquet path")
    defaults = SimulationConfig()
    parser.add_argument("--customers", type=int, default=defaults.n_customers)
    parser.add_argument("--terminals", type=int, default=defaults.n_terminals)
    parser.add_argument("--days", type=int, default=defaults.n_days)
    parser.add_argument("--start-date", default=defaults.start_date)
    parser.add_argument("--radius", type=float, default=defaults.radius)
    parser.add_argument("--seed", type=int, default=defaults.seed)
    args = parser.parse_args(argv)
    config = SimulationConfig(
        n_customers=args.customers,
        n_terminals=args.terminals,
        n_days=args.days,
        start_date=args.start_date,
        radius=args.radius,
        seed=args.seed,
    )
    df = simulate(config)
    write_parquet(df, args.out)
    print(json.dumps(summary(df), indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
