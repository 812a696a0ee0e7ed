"""Ticks of the market simulator as the public API's messages, for the demo, the live evaluation and the bench."""

from __future__ import annotations

import numpy as np
import pandas as pd
from google.protobuf.timestamp_pb2 import Timestamp

from scoring.v1 import gateway_pb2, types_pb2


def frame_ticks(frame: pd.DataFrame, prefix: str = "") -> list[gateway_pb2.ScoreRequest]:
    """One ScoreRequest per row, in the frame's order; `prefix` makes ids and symbols another run's own (a replay
    into a stack that already folded these symbols would otherwise be stale or duplicate there)."""
    out = []
    cols = {c: frame[c].to_numpy() for c in ("tick_id", "symbol", "sequence", "time_us", "bid_price", "bid_size",
                                             "ask_price", "ask_size", "last_price", "last_size", "last_side")}
    for i in range(len(frame)):
        ts = Timestamp()
        ts.FromMicroseconds(int(cols["time_us"][i]))
        out.append(gateway_pb2.ScoreRequest(tick=types_pb2.MarketTick(
            tick_id=f"{prefix}{cols['tick_id'][i]}", symbol=f"{prefix}{cols['symbol'][i]}",
            sequence=int(cols["sequence"][i]), timestamp=ts, bid_price=float(cols["bid_price"][i]),
            bid_size=float(cols["bid_size"][i]), ask_price=float(cols["ask_price"][i]),
            ask_size=float(cols["ask_size"][i]), last_price=float(cols["last_price"][i]),
            last_size=float(cols["last_size"][i]), last_side=int(cols["last_side"][i]))))
    return out


def demo_frame(n_ticks: int, seed: int = 11) -> pd.DataFrame:
    """A fresh simulation (another seed than training's) of about `n_ticks` ticks over 20 symbols."""
    from scoring.scenarios.market.simulator import MarketConfig, simulate

    per_symbol = max(1, int(np.ceil(n_ticks / 20)))
    return simulate(MarketConfig(n_symbols=20, ticks_per_symbol=per_symbol, seed=seed)).iloc[:n_ticks]
