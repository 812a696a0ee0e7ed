"""The raw ceilings of the parts (a gRPC echo, Redis alone, Triton alone) and the tracing overhead A/B."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from hdrh.histogram import HdrHistogram

from scoring.bench.driver import run_step, saturated_throughput
from scoring.bench.recorder import CpuMeter, Criteria, _histogram, _round
from scoring.bench.workload import MODES, EventSource, build_load

ECHO_RATES = (2000, 5000, 10000, 20000)


def _latency_summary(hist: HdrHistogram, count: int, seconds: float, unit: str = "calls") -> dict[str, Any]:
    return {
        "p50_ms": _round(hist.get_value_at_percentile(50) / 1e3),
        "p99_ms": _round(hist.get_value_at_percentile(99) / 1e3),
        "max_ms": _round(hist.get_max_value() / 1e3),
        f"{unit}_per_s": round(count / seconds, 1) if seconds else None,
        unit: count,
    }


async def redis_ceiling(url: str, pings: int = 2000, pipeline: int = 256, rounds: int = 100) -> dict[str, Any]:
    """PING round trips one at a time, then pipelines of `pipeline` PINGs, with the feature service's client."""
    import redis.asyncio as redis

    client = redis.Redis.from_url(url)
    try:
        await client.ping()
        single = _histogram()
        started = time.perf_counter()
        for _ in range(pings):
            t = time.perf_counter()
            await client.ping()
            single.record_value(max(1, int((time.perf_counter() - t) * 1e6)))
        single_s = time.perf_counter() - started
        piped = _histogram()
        started = time.perf_counter()
        for _ in range(rounds):
            t = time.perf_counter()
            pipe = client.pipeline(transaction=False)
            for _ in range(pipeline):
                pipe.ping()
            await pipe.execute()
            piped.record_value(max(1, int((time.perf_counter() - t) * 1e6)))
        piped_s = time.perf_counter() - started
    finally:
        await client.aclose()
    return {
        "ping": _latency_summary(single, pings, single_s),
        "pipeline": {**_latency_summary(piped, rounds, piped_s, "round_trips"), "commands_per_round_trip": pipeline,
                     "commands_per_s": round(rounds * pipeline / piped_s, 1)},
    }


async def triton_ceiling(address: str, model: str, features: np.ndarray, sequences: np.ndarray,
                         batches: Sequence[int] = (1, 4, 16), calls: int = 300,
                         concurrency: int = 4) -> dict[str, Any]:
    """The ensemble alone, called as the gateway calls it (tritonclient.grpc.aio, all outputs), on real feature
    rows: `calls` sequential calls per batch size, then `concurrency` callers at batch 1."""
    import tritonclient.grpc.aio as triton

    client = triton.InferenceServerClient(url=address)

    def inputs(rows: int, offset: int) -> list[Any]:
        idx = (np.arange(rows) + offset) % len(features)
        f = np.ascontiguousarray(features[idx], dtype=np.float32)
        s = np.ascontiguousarray(sequences[idx], dtype=np.float32)
        ins = [triton.InferInput("FEATURES", list(f.shape), "FP32"),
               triton.InferInput("SEQUENCE", list(s.shape), "FP32")]
        ins[0].set_data_from_numpy(f)
        ins[1].set_data_from_numpy(s)
        return ins

    out: dict[str, Any] = {"model": model}
    try:
        await client.infer(model, inputs(1, 0), outputs=None)  # warm
        for rows in batches:
            prepared = [inputs(rows, k * rows) for k in range(calls)]
            hist = _histogram()
            started = time.perf_counter()
            for ins in prepared:
                t = time.perf_counter()
                await client.infer(model, ins, outputs=None)
                hist.record_value(max(1, int((time.perf_counter() - t) * 1e6)))
            seconds = time.perf_counter() - started
            out[f"batch_{rows}"] = {**_latency_summary(hist, calls, seconds),
                                    "rows_per_s": round(calls * rows / seconds, 1)}
        prepared = [inputs(1, k) for k in range(calls)]
        hist = _histogram()
        queue = iter(prepared)

        async def caller() -> None:
            for ins in queue:
                t = time.perf_counter()
                await client.infer(model, ins, outputs=None)
                hist.record_value(max(1, int((time.perf_counter() - t) * 1e6)))

        started = time.perf_counter()
        await asyncio.gather(*(caller() for _ in range(concurrency)))
        seconds = time.perf_counter() - started
        out[f"batch_1_x{concurrency}"] = _latency_summary(hist, calls, seconds)
    finally:
        await client.close()
    return out


async def echo_ceiling(source: EventSource, run_tag: str, log_dir: Path, *, rates: Sequence[float] = ECHO_RATES,
                       duration_s: float = 2.0, tick_s: float = 0.001, max_outstanding: int = 512,
                       criteria: Criteria | None = None) -> dict[str, Any]:
    """The same load generator against a do-nothing Gateway (scoring.bench.echo) in a child process: closed-loop
    unary latency, then per mode a rising rate ladder until a step fails (p99 and throughput criteria only)."""
    from scoring.launcher import Child, free_port, grpc_serving

    criteria = criteria or Criteria(min_ensemble_share=0.0)
    port = free_port()
    child = Child("bench_echo", [sys.executable, "-m", "scoring.bench.echo", "--port", str(port)],
                  dict(os.environ), log_dir / "bench_echo.log")
    child.start()
    address = f"127.0.0.1:{port}"
    out: dict[str, Any] = {"rates": list(rates), "duration_s": duration_s, "steps": []}
    try:
        deadline = time.monotonic() + 30
        while not await grpc_serving(address):
            if not child.alive() or time.monotonic() > deadline:
                raise RuntimeError(f"echo server did not start:\n{child.log_tail()}")
            await asyncio.sleep(0.1)
        cpu = CpuMeter({"echo": child.pid or 0})
        load = build_load(source, "unary", 500, 2.0, f"{run_tag}e0-", tick_s)
        step = await run_step(address, load, name="echo unary 1-in-flight", rate=500, duration_s=2.0,
                              closed_loop=True, cpu=cpu)
        step.judge(criteria)
        out["steps"].append(step.to_dict())
        k = 1
        for mode in MODES:
            best = None
            for rate in rates:
                load = build_load(source, mode, rate, duration_s, f"{run_tag}e{k}-", tick_s)
                k += 1
                step = await run_step(address, load, name=f"echo {mode}@{rate:g}", rate=rate, duration_s=duration_s,
                                      max_outstanding=max_outstanding, cpu=cpu)
                step.judge(criteria)
                out["steps"].append(step.to_dict())
                if not step.passed:
                    break
                best = rate
            out[f"{mode}_highest_passing_rate"] = best
    finally:
        if child.process is not None and child.alive():
            child.process.terminate()
            try:
                child.process.wait(5)
            except subprocess.TimeoutExpired:
                child.process.kill()
                child.process.wait()
    return out


async def _wait_backlog_drained(metrics_url: str, timeout_s: float = 120.0) -> bool:
    import urllib.request

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        text = await asyncio.to_thread(lambda: urllib.request.urlopen(metrics_url, timeout=5).read().decode())
        for line in text.splitlines():
            if line.startswith("scoring_gateway_fold_backlog_events "):
                if float(line.split()[1]) == 0.0:
                    return True
        await asyncio.sleep(1.0)
    return False


def balanced_order(rounds: int) -> list[str]:
    """Tracing modes in ABBA order (off on, on off, ...): a drift over the runs (caches, Redis, the VM's
    neighbours) then adds the same to both means instead of favouring whichever mode runs later."""
    return [m for r in range(rounds) for m in (("off", "on") if r % 2 == 0 else ("on", "off"))]


async def tracing_overhead(stack: Any, source: EventSource, run_tag: str, rounds: int = 4,
                           seconds: float = 8.0) -> dict[str, Any]:
    """Saturated throughput with tracing at the default sampling and with tracing off, `rounds` pairs in ABBA
    order (the services are restarted with or without OTEL_SDK_DISABLED; Redis and Triton stay up). The gateway
    gets a budget that no stage misses for these runs, so that both do the same work: errors and cut-off stages
    would make the faster answers cheaper."""
    from scoring.common.telemetry import DEFAULT_SAMPLER, DEFAULT_SAMPLER_ARG

    names = ("feature_service", "filter_model", "gateway")
    # The sweeps' overload leaves folds in the gateway's backlog; measured while they drain, the first run
    # came out at two thirds of the later ones. Wait for the backlog to empty (the restarts would drop it).
    drained = await _wait_backlog_drained(stack.metrics_urls["gateway"])
    print(f"  fold backlog {'drained' if drained else 'still not empty after 120 s'}", flush=True)
    original = {name: dict(stack.children[name].env) for name in names}
    runs: dict[str, list[float]] = {"on": [], "off": []}
    try:
        for i, mode in enumerate(balanced_order(rounds)):
            for name in names:
                env = dict(original[name])
                env["GATEWAY_BUDGET_MS"] = "1000"
                if mode == "off":
                    env["OTEL_SDK_DISABLED"] = "true"
                else:
                    env.pop("OTEL_SDK_DISABLED", None)
                stack.children[name].env = env
                await stack.restart(name)
            await asyncio.sleep(1.0)  # channels reconnect, breakers close
            if i == 0:
                # Not counted: the first saturated run after the sweeps ran far below every later one, both
                # modes alike (folds left over from the sweeps, cold caches); it would favour whichever
                # mode comes second.
                await saturated_throughput(stack.gateway_address, source, f"{run_tag}trw-", seconds=4.0)
            got = await saturated_throughput(stack.gateway_address, source, f"{run_tag}tr{i}{mode}-",
                                             seconds=seconds)
            runs[mode].append(got["events_per_s"])
            print(f"  tracing {mode:>3}, run {i + 1}: {got['events_per_s']:,.0f} events/s "
                  f"({got['answered']:,} answered, {got['errors']:,} errors)", flush=True)
    finally:
        for name in names:
            stack.children[name].env = original[name]
    on, off = float(np.mean(runs["on"])), float(np.mean(runs["off"]))
    sampler = original["gateway"].get("OTEL_TRACES_SAMPLER", DEFAULT_SAMPLER)
    ratio = original["gateway"].get("OTEL_TRACES_SAMPLER_ARG", DEFAULT_SAMPLER_ARG)
    return {"sampler": f"{sampler} {ratio}", "rounds": rounds, "seconds": seconds, "on": runs["on"],
            "off": runs["off"], "on_mean": round(on, 1), "off_mean": round(off, 1),
            "difference": round((on - off) / off, 4) if off else None,
            "within_10_percent": bool(off) and abs(on - off) / off <= 0.10}
