"""Synthetic market data for the market-ticks scenario (issue 16): a queue-reactive limit order book at the best
quotes of many symbols, simulated in lockstep with numpy.

Per symbol the state is the best bid and ask (in ticks) and the size queued at each. At every step each symbol
gets one event, drawn with intensities that depend on the queues and the spread, after the queue-reactive model of
Huang, Lehalle and Rosenbaum (2015), simplified to the first limit:
- limit orders join a queue at a rate that falls as the queue grows; cancellations leave at a rate proportional to
  the queue; market orders take liquidity at the touch; when the spread is wider than one tick, limit orders
  inside it improve the quote;
- a hidden alpha per symbol (Ornstein-Uhlenbeck) tilts the balance of market buys against sells, so order flow
  carries information about where the price goes next;
- market orders excite further activity (a self-exciting burst term that decays), and each symbol moves between
  regimes (calm, volatile: more market orders and cancels, one-sided: alpha pushed one way).
A queue that empties moves its quote one tick away, with a fresh queue behind it: that is how prices move, so the
next mid-price change follows order-flow imbalance (Cont, Kukanov and Stoikov 2014), which `cks_regression`
measures. Each event is a tick: the book after it, and the trade when it was a market order, with a per-symbol
sequence number and an event time from the symbol's own clock. `with_feed_faults` adds what real feeds do
(duplicates, gaps, reordering) for the feed-hygiene tests.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

import numpy as np
import pandas as pd

EVENT_KINDS: Final = ("limit_bid", "limit_ask", "cancel_bid", "cancel_ask", "market_buy", "market_sell",
                      "improve_bid", "improve_ask")
SIDE_NONE, SIDE_BUY, SIDE_SELL = 0, 1, 2
REGIMES: Final = ("calm", "volatile", "one_sided")
TICK_SIZE: Final = 0.01
US_PER_S: Final = 1_000_000
_CHUNK: Final = 512  # steps whose random draws are made at once


@dataclass(frozen=True)
class MarketConfig:
    n_symbols: int = 100
    ticks_per_symbol: int = 20_000
    start: str = "2024-01-02 14:30:00"
    seed: int = 0
    # Queue-reactive intensities (per second, before the symbol's activity scale): limit, cancel, market, inside.
    limit_rate: float = 2.0
    cancel_rate: float = 1.2
    market_rate: float = 0.25
    inside_rate: float = 0.8
    # Alpha: mean reversion per event, noise, and how strongly it tilts market orders (exp(+-tilt * alpha)).
    alpha_reversion: float = 0.002
    alpha_noise: float = 0.2
    alpha_tilt: float = 1.2
    # Bursts: what a market order adds to the excitation, and its decay per event.
    burst_jump: float = 0.15
    burst_decay: float = 0.9
    # Chance per event that a symbol changes regime.
    regime_switch: float = 2e-4

    def __post_init__(self) -> None:
        if self.n_symbols < 1 or self.ticks_per_symbol < 1:
            raise ValueError(f"n_symbols and ticks_per_symbol must be >= 1: {self}")


def simulate(config: MarketConfig = MarketConfig()) -> pd.DataFrame:
    """Every symbol's ticks, merged in event-time order (ties by symbol), one row each.

    Columns: tick_id (int64, unique), symbol (str), sequence (per symbol, from 1, +1 a tick), time_us (UTC),
    bid_price, bid_size, ask_price, ask_size, last_price, last_size (0 without a trade), last_side (0 none, 1 buy,
    2 sell: the aggressor); and, for analysis only (a feed has none of them), event, regime, alpha.
    """
    rng = np.random.default_rng(config.seed)
    s, n = config.n_symbols, config.ticks_per_symbol
    # Per-symbol constants: price level, typical queue, activity (events per second).
    mid0 = np.round(rng.uniform(20.0, 200.0, s) / TICK_SIZE).astype(np.int64)
    depth = rng.uniform(5.0, 40.0, s)
    activity = rng.uniform(5.0, 50.0, s)
    lot = rng.integers(1, 5, s) * 100.0

    bid, ask = mid0 - 1, mid0 + 1
    qb, qa = depth * rng.uniform(0.5, 1.5, s), depth * rng.uniform(0.5, 1.5, s)
    alpha = np.zeros(s)
    burst = np.zeros(s)
    regime = np.zeros(s, dtype=np.int8)
    direction = rng.choice([-1.0, 1.0], s)
    clock = np.full(s, pd.Timestamp(config.start).value // 1000, dtype=np.int64)

    out: dict[str, np.ndarray] = {
        "time_us": np.empty((n, s), np.int64), "bid": np.empty((n, s), np.int64), "ask": np.empty((n, s), np.int64),
        "bid_size": np.empty((n, s)), "ask_size": np.empty((n, s)), "last_price": np.zeros((n, s), np.int64),
        "last_size": np.zeros((n, s)), "side": np.zeros((n, s), np.int8), "event": np.empty((n, s), np.int8),
        "regime": np.empty((n, s), np.int8), "alpha": np.empty((n, s)),
    }
    for c0 in range(0, n, _CHUNK):
        c1 = min(n, c0 + _CHUNK)
        u_event, u_time, u_size = rng.random((c1 - c0, s)), rng.random((c1 - c0, s)), rng.random((c1 - c0, s))
        u_regime, noise = rng.random((c1 - c0, s)), rng.standard_normal((c1 - c0, s))
        new_regime = rng.integers(0, len(REGIMES), (c1 - c0, s))
        for k in range(c1 - c0):
            step = c0 + k
            switch = u_regime[k] < config.regime_switch
            regime = np.where(switch, new_regime[k], regime).astype(np.int8)
            drift = np.where(regime == 2, 0.02 * direction, 0.0)
            alpha += -config.alpha_reversion * alpha + config.alpha_noise * noise[k] * 0.1 + drift * 0.05
            volatile = regime == 1
            spread = ask - bid
            rel_b, rel_a = qb / depth, qa / depth
            excite = 1.0 + burst
            market = config.market_rate * excite * np.where(volatile, 2.0, 1.0)
            tilt = np.exp(config.alpha_tilt * np.clip(alpha, -3, 3))
            rates = np.stack([
                config.limit_rate / (1.0 + rel_b),
                config.limit_rate / (1.0 + rel_a),
                config.cancel_rate * rel_b * np.where(volatile, 1.5, 1.0),
                config.cancel_rate * rel_a * np.where(volatile, 1.5, 1.0),
                market * tilt,
                market / tilt,
                config.inside_rate * (spread - 1),
                config.inside_rate * (spread - 1),
            ])
            total = rates.sum(axis=0)
            event = (np.cumsum(rates, axis=0) < (u_event[k] * total)[None, :]).sum(axis=0).clip(0, 7)
            # The symbol's clock: exponential waiting time at its total intensity.
            wait_s = -np.log1p(-u_time[k]) / (total * activity)
            clock += np.maximum(1, (wait_s * US_PER_S).astype(np.int64))
            size = depth * (0.05 + 0.35 * u_size[k])  # a size in lots, relative to the symbol's depth

            side = np.zeros(s, np.int8)
            last_price = np.zeros(s, np.int64)
            last_size = np.zeros(s)
            qb = np.where(event == 0, qb + size, qb)
            qa = np.where(event == 1, qa + size, qa)
            qb = np.where(event == 2, qb - size, qb)
            qa = np.where(event == 3, qa - size, qa)
            buy, sell = event == 4, event == 5
            take_buy = np.minimum(size, qa)
            take_sell = np.minimum(size, qb)
            last_price = np.where(buy, ask, np.where(sell, bid, last_price))
            last_size = np.where(buy, take_buy, np.where(sell, take_sell, last_size))
            side = np.where(buy, SIDE_BUY, np.where(sell, SIDE_SELL, side)).astype(np.int8)
            qa = np.where(buy, qa - size, qa)
            qb = np.where(sell, qb - size, qb)
            # An emptied queue: the quote moves one tick away, a new queue forms behind it.
            fresh = depth * (0.5 + u_size[k])
            gone_b, gone_a = qb <= 0, qa <= 0
            bid = np.where(gone_b, bid - 1, bid)
            qb = np.where(gone_b, fresh, qb)
            ask = np.where(gone_a, ask + 1, ask)
            qa = np.where(gone_a, fresh, qa)
            # Inside the spread: a new, small queue improves the quote.
            imp_b, imp_a = (event == 6) & (ask - bid > 1), (event == 7) & (ask - bid > 1)
            bid = np.where(imp_b, bid + 1, bid)
            qb = np.where(imp_b, size, qb)
            ask = np.where(imp_a, ask - 1, ask)
            qa = np.where(imp_a, size, qa)
            burst = burst * config.burst_decay + config.burst_jump * (buy | sell)

            out["time_us"][step], out["bid"][step], out["ask"][step] = clock, bid, ask
            out["bid_size"][step], out["ask_size"][step] = qb, qa
            out["last_price"][step], out["last_size"][step], out["side"][step] = last_price, last_size, side
            out["event"][step], out["regime"][step], out["alpha"][step] = event, regime, alpha

    symbol_index = np.tile(np.arange(s), n)
    sequence = np.repeat(np.arange(1, n + 1, dtype=np.int64), s)
    flat = {k: v.reshape(-1) for k, v in out.items()}
    order = np.lexsort((symbol_index, flat["time_us"]))
    lots = lot[symbol_index]
    frame = pd.DataFrame({
        "tick_id": (symbol_index * n + sequence)[order],
        "symbol": np.array([f"S{i:03d}" for i in range(s)])[symbol_index[order]],
        "sequence": sequence[order],
        "time_us": flat["time_us"][order],
        "bid_price": (flat["bid"] * TICK_SIZE)[order],
        "bid_size": np.round(flat["bid_size"] * lots)[order],
        "ask_price": (flat["ask"] * TICK_SIZE)[order],
        "ask_size": np.round(flat["ask_size"] * lots)[order],
        "last_price": (flat["last_price"] * TICK_SIZE)[order],
        "last_size": np.round(flat["last_size"] * lots)[order],
        "last_side": flat["side"][order],
        "event": flat["event"][order],
        "regime": flat["regime"][order],
        "alpha": flat["alpha"][order],
    })
    # A size rounds to at least one share: a queue is never shown empty.
    for column in ("bid_size", "ask_size"):
        frame[column] = frame[column].clip(lower=1.0)
    frame.loc[frame["last_side"] != SIDE_NONE, "last_size"] = frame["last_size"].clip(lower=1.0)
    return frame


def order_flow_imbalance(frame: pd.DataFrame) -> np.ndarray:
    """Per tick, the order-flow imbalance contribution e_n of Cont, Kukanov and Stoikov (2014) against the same
    symbol's previous tick (0 for a symbol's first tick)."""
    g = frame.groupby("symbol", sort=False)
    pb, qb, pa, qa = (frame[c].to_numpy() for c in ("bid_price", "bid_size", "ask_price", "ask_size"))
    pb0, qb0, pa0, qa0 = (g[c].shift(1).to_numpy() for c in ("bid_price", "bid_size", "ask_price", "ask_size"))
    first = np.isnan(pb0)
    pb0, qb0, pa0, qa0 = (np.where(first, x, y) for x, y in ((pb, pb0), (qb, qb0), (pa, pa0), (qa, qa0)))
    e = (pb >= pb0) * qb - (pb <= pb0) * qb0 - (pa <= pa0) * qa + (pa >= pa0) * qa0
    return np.where(first, 0.0, e)


@dataclass(frozen=True)
class CksFit:
    slope: float  # mid-price change in ticks per unit of depth-normalised OFI
    r2: float
    intervals: int


def cks_regression(frame: pd.DataFrame, interval_s: float = 10.0) -> CksFit:
    """The stylised fact: over intervals of `interval_s`, the mid-price change (in ticks) regresses linearly on
    the order-flow imbalance, normalised per symbol by its mean depth; pooled over symbols, with an intercept."""
    e = order_flow_imbalance(frame)
    depth = frame.groupby("symbol")[["bid_size", "ask_size"]].transform("mean").mean(axis=1).to_numpy()
    mid = (frame["bid_price"].to_numpy() + frame["ask_price"].to_numpy()) / 2 / TICK_SIZE
    bucket = frame["time_us"].to_numpy() // int(interval_s * US_PER_S)
    parts = pd.DataFrame({"symbol": frame["symbol"].to_numpy(), "bucket": bucket, "ofi": e / depth, "mid": mid})
    per = parts.groupby(["symbol", "bucket"], sort=True).agg(ofi=("ofi", "sum"), last=("mid", "last"))
    per["change"] = per.groupby(level="symbol")["last"].diff()
    per = per.dropna()
    x, y = per["ofi"].to_numpy(), per["change"].to_numpy()
    if len(x) < 3 or np.var(x) == 0:
        return CksFit(0.0, 0.0, len(x))
    slope, intercept = np.polyfit(x, y, 1)
    residual = y - (slope * x + intercept)
    return CksFit(float(slope), float(1.0 - residual.var() / y.var()), len(x))


def with_feed_faults(
    frame: pd.DataFrame, *, duplicates: float = 0.001, gaps: float = 0.001, reorders: float = 0.001, seed: int = 0
) -> pd.DataFrame:
    """The feed as a real one arrives: some ticks lost (the symbol's next tick then skips a sequence number), some
    swapped with the same symbol's previous tick (the second to arrive is older than one already sent), some sent
    twice (the same tick_id and sequence, right after). Column `fault` marks the tick that shows each: 'after_gap',
    'reordered' (the older tick, arriving second), 'duplicate' (the copy); '' for the rest."""
    rng = np.random.default_rng(seed)
    out = frame.loc[rng.random(len(frame)) >= gaps].reset_index(drop=True)
    fault = np.where(out.groupby("symbol", sort=False)["sequence"].diff().to_numpy() > 1, "after_gap", "")
    # Each row's previous row of the same symbol (itself for a symbol's first).
    prev = np.arange(len(out))
    for rows in out.groupby("symbol", sort=False).indices.values():
        prev[rows[1:]] = rows[:-1]
    order = np.arange(len(out))
    taken = np.zeros(len(out), dtype=bool)
    later: list[int] = []  # of each swapped pair, the later position: it now holds the older tick
    for r in np.flatnonzero(rng.random(len(out)) < reorders).tolist():
        p = prev[r]
        if p == r or taken[p] or taken[r]:
            continue
        order[p], order[r] = r, p
        taken[p] = taken[r] = True
        later.append(r)
    out = out.iloc[order].reset_index(drop=True)
    fault = fault[order]
    fault[later] = "reordered"
    out["fault"] = fault
    dup = np.flatnonzero(rng.random(len(out)) < duplicates)
    copies = out.iloc[dup].assign(fault="duplicate")
    position = np.concatenate([np.arange(len(out), dtype=np.float64), dup + 0.5])
    merged = pd.concat([out, copies], ignore_index=True)
    return merged.iloc[np.argsort(position, kind="stable")].reset_index(drop=True)
