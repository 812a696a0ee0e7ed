"""The bench's tick mode: market ticks on ScoreBatchStream, open loop, at a rising rate.

Each step sends a fresh slice of simulated ticks (100 symbols, their own prefix per step, so each step starts with
empty rings), one ScoreBatchStream message per `tick_s` of schedule, and measures each tick's latency from its
message's scheduled time to its answer. A step passes when p99 <= the budget, every tick is answered, at least 99%
in full (no stage degraded, no error) and the ensemble scored at least `min_ensemble_share` of them: the figure is
the highest passing rate.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from typing import Any

import grpc
from hdrh.histogram import HdrHistogram

from scoring.scenarios.market.replay import frame_ticks
from scoring.scenarios.market.simulator import MarketConfig, simulate
from scoring.v1 import gateway_pb2, gateway_pb2_grpc, types_pb2

STANDARD_TICK_RATES = (250.0, 500.0, 1000.0, 2000.0, 4000.0, 8000.0)


async def tick_step(gateway: str, ticks: list[gateway_pb2.ScoreRequest], rate: float, *, tick_s: float = 0.005,
                    drain_s: float = 5.0) -> dict[str, Any]:
    n = len(ticks)
    per_message = max(1, int(round(rate * tick_s)))
    groups = [ticks[i : i + per_message] for i in range(0, n, per_message)]
    due = [k * per_message / rate for k in range(len(groups))]
    latency = HdrHistogram(1, 60_000_000, 3)
    kinds: Counter[str] = Counter()
    stages: Counter[str] = Counter()
    answered = 0
    lag = 0.0

    async with grpc.aio.insecure_channel(gateway) as channel:
        stub = gateway_pb2_grpc.GatewayStub(channel)
        t0 = time.perf_counter() + 0.05

        async def requests():  # type: ignore[no-untyped-def]
            nonlocal lag
            for k, group in enumerate(groups):
                wait = t0 + due[k] - time.perf_counter()
                if wait > 0:
                    await asyncio.sleep(wait)
                else:
                    lag = max(lag, -wait)
                yield gateway_pb2.ScoreBatchRequest(events=group)

        call = stub.ScoreBatchStream(requests(), timeout=due[-1] + 30.0 + drain_s)
        k = 0
        rpc_error = ""
        try:
            async for reply in call:
                took = time.perf_counter() - (t0 + due[k])
                k += 1
                for response in reply.responses:
                    answered += 1
                    latency.record_value(max(1, int(took * 1e6)))
                    if response.HasField("error"):
                        kinds[f"error:{response.error.code}"] += 1
                        continue
                    kinds["full" if not response.degraded else "degraded"] += 1
                    stages[types_pb2.Stage.Name(response.stage).removeprefix("STAGE_").lower()] += 1
        except grpc.aio.AioRpcError as exc:  # a stream far behind its schedule runs past its deadline: a figure too
            rpc_error = exc.code().name
    elapsed = due[-1] + per_message / rate
    return {
        "rate": rate, "ticks": n, "answered": answered, "answered_per_s": answered / max(elapsed, 1e-9),
        "p50_ms": latency.get_value_at_percentile(50) / 1e3, "p99_ms": latency.get_value_at_percentile(99) / 1e3,
        "full_share": kinds["full"] / max(answered, 1), "ensemble_share": stages["ensemble"] / max(answered, 1),
        "errors": sum(v for key, v in kinds.items() if key.startswith("error")), "send_lag_ms": lag * 1e3,
        "ticks_per_message": per_message, "rpc_error": rpc_error,
    }


async def tick_sweep(gateway: str, tag: str, *, rates: tuple[float, ...] = STANDARD_TICK_RATES,
                     duration_s: float = 5.0, budget_ms: float = 10.0, min_ensemble_share: float = 0.05) -> dict:
    need = int(sum(rates) * duration_s)
    frame = simulate(MarketConfig(n_symbols=100, ticks_per_symbol=need // 100 + 1, seed=23))
    steps = []
    offset = 0
    for i, rate in enumerate(rates):
        n = int(rate * duration_s)
        ticks = frame_ticks(frame.iloc[offset : offset + n], f"{tag}k{i}-")
        offset += n
        step = await tick_step(gateway, ticks, rate)
        step["passed"] = bool(step["answered"] == n and step["errors"] == 0 and step["p99_ms"] <= budget_ms
                              and step["full_share"] >= 0.99 and step["ensemble_share"] >= min_ensemble_share)
        steps.append(step)
        print(f"  ticks {rate:,.0f}/s: p50 {step['p50_ms']:.2f} ms p99 {step['p99_ms']:.2f} ms, full "
              f"{step['full_share']:.1%}, ensemble {step['ensemble_share']:.1%}, errors {step['errors']}, answered "
              f"{step['answered']:,} of {n:,}{', ' + step['rpc_error'] if step['rpc_error'] else ''} "
              f"({'pass' if step['passed'] else 'fail'})", flush=True)
        if step["p50_ms"] > 100 * budget_ms or step["answered"] < n:
            # Saturated: the stream queues in the client, and a higher rate would only queue longer.
            print(f"  saturated at {rate:,.0f} ticks/s (p50 {step['p50_ms'] / 1e3:.1f} s): higher rates not run",
                  flush=True)
            break
    passing = [s["rate"] for s in steps if s["passed"]]
    return {"steps": steps, "highest_passing_rate": max(passing) if passing else None,
            "criteria": {"p99_ms": budget_ms, "min_full_share": 0.99, "min_ensemble_share": min_ensemble_share}}


def window_rebuild_ab(sizes: tuple[int, ...] = (40, 500), repeat: int = 50) -> dict[str, dict[str, float]]:
    """The feature service's window rebuild per tick (µs), tick by tick (the reference) and over arrays (served),
    on 100 symbols with full rings: the A/B row of the array version."""
    import numpy as np

    from scoring.scenarios.market import features as MF
    from scoring.scenarios.market.online import TickBatch, windows, windows_by_tick

    frame = simulate(MarketConfig(n_symbols=100, ticks_per_symbol=max(sizes) // 100 + 40, seed=29))
    raw = MF.raw_matrix(frame)
    out: dict[str, dict[str, float]] = {}
    for n in sizes:
        batch = TickBatch(frame["tick_id"].astype(str).tolist()[:n], frame["symbol"].tolist()[:n], raw[:, :n])
        status = np.full(n, MF.FOLDED, dtype=np.int8)
        before = {s: np.zeros((MF.WINDOW, len(MF.RAW_FIELDS))).tobytes() for s in set(batch.symbol)}
        row = {}
        for name, rebuild in (("by_tick", windows_by_tick), ("arrays", windows)):
            started = time.perf_counter()
            for _ in range(repeat):
                rebuild(batch, status, before)
            row[name] = (time.perf_counter() - started) / repeat / n * 1e6
        out[str(n)] = row
    return out


def format_window_ab(ab: dict[str, dict[str, float]]) -> str:
    rows = "; ".join(f"batch of {n}: {r['by_tick']:.1f} us a tick by tick, {r['arrays']:.1f} over arrays"
                     for n, r in ab.items())
    return f"tick window rebuild in the feature service (A/B): {rows}."


def format_tick_sweep(sweep: dict[str, Any]) -> str:
    best = sweep["highest_passing_rate"]
    rows = ", ".join(f"{s['rate']:,.0f}/s p99 {s['p99_ms']:.2f} ms full {s['full_share']:.1%} ensemble "
                     f"{s['ensemble_share']:.1%}" for s in sweep["steps"])
    head = "no rate passed" if best is None else f"highest passing rate {best:,.0f} ticks/s"
    return f"ticks (market, ScoreBatchStream, {sweep['steps'][0]['ticks_per_message']}+ ticks a message): {head}; " \
           f"{rows}."



