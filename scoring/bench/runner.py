"""The entry point: BenchConfig, the filter threshold (and restarting the filter with it), the sweeps, `main`."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import math
import os
import shlex
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import numpy as np
from google.protobuf.timestamp_pb2 import Timestamp

from scoring.bench.ceilings import echo_ceiling, redis_ceiling, tracing_overhead, triton_ceiling
from scoring.bench.driver import run_step, saturated_replay
from scoring.bench.floor import Floor, floor
from scoring.bench.fold import fold_cost, format_fold_cost
from scoring.bench.recorder import CpuMeter, Criteria, StepResult, highest_passing
from scoring.bench.report import (
    format_ceilings,
    format_saturated_replay,
    format_table,
    git_info,
    machine_info,
    write_outputs,
)
from scoring.bench.workload import EventSource, LabelCount, WarmUp, build_load, report_due_labels, warm_features
from scoring.scenarios.fraud.features import US_PER_DAY
from scoring.v1 import gateway_pb2, gateway_pb2_grpc, types_pb2

STANDARD_RATES = (100, 250, 500, 1000, 1500, 2000, 3000, 4000, 6000)


@dataclass(frozen=True)
class CurvePoint:
    threshold: float
    pass_rate: float
    retention: float


def choose_threshold(curve: Sequence[dict[str, float]], min_pass_rate: float) -> CurvePoint:
    """The highest threshold whose validation pass rate is still at least `min_pass_rate`."""
    points = [CurvePoint(float(p["threshold"]), float(p["pass_rate"]), float(p.get("retention", math.nan)))
              for p in curve]
    eligible = [p for p in points if p.pass_rate >= min_pass_rate]
    if not eligible:
        raise ValueError(f"no threshold on the curve passes {min_pass_rate:.1%} of events")
    return max(eligible, key=lambda p: p.threshold)


def parse_rates(text: str) -> list[float]:
    rates = [float(part) for part in text.replace(" ", "").split(",") if part]
    if not rates or any(r <= 0 for r in rates):
        raise ValueError(f"bad rate list {text!r}")
    return rates


@dataclass
class BenchConfig:
    artifacts: Path = Path("artifacts")
    mode: str | None = None
    rates: list[float] | None = None
    duration_s: float = 10.0
    tick_s: float = 0.001
    max_outstanding: int = 512
    streams: int = 1
    warm_days: float = 30.0
    min_pass_rate: float = 0.06
    filter_threshold: float | None = None  # overrides the curve
    budget_ms: float | None = None
    # Well below 1 / (one event's time through every stage), so the closed loop never queues behind itself.
    single_rate: float = 100.0
    ceilings: bool = True
    # The same-shape floor (scoring.bench.floor) at every rate the graph is swept at.
    floor: bool = True
    stop_after_saturated: int = 2
    json_path: Path | None = None
    markdown_path: Path | None = None
    gateway: str | None = None
    features: str | None = None
    command: str = "scoring bench"
    criteria: Criteria = field(default_factory=Criteria)

    @property
    def standard(self) -> bool:
        """No --mode: the single-event step, then batch and stream sweeps (over `rates` when given)."""
        return self.mode is None


def _threshold(config: BenchConfig) -> dict[str, Any] | None:
    if config.filter_threshold is not None:
        return {"threshold": config.filter_threshold, "source": "--filter-threshold", "min_pass_rate": math.nan,
                "pass_rate": math.nan, "retention": math.nan}
    report_path = config.artifacts / "train_report.json"
    curve = json.loads(report_path.read_text()).get("threshold_curve")
    if not curve:
        raise SystemExit(f"{report_path} has no threshold_curve: retrain with `scoring train`")
    point = choose_threshold(curve, config.min_pass_rate)
    return {"threshold": point.threshold, "pass_rate": point.pass_rate, "retention": point.retention,
            "min_pass_rate": config.min_pass_rate, "source": str(report_path)}


async def restart_filter(stack: Any, threshold: float | None, timeout_s: float = 60.0) -> None:
    """Restarts the stack's filter service with another FILTER_THRESHOLD (the filter reads it at start), then
    waits until the gateway answers an event without a filter-related degradation again."""
    child = stack.children["filter_model"]
    env = dict(child.env)
    if threshold is None:
        env.pop("FILTER_THRESHOLD", None)
    else:
        env["FILTER_THRESHOLD"] = repr(float(threshold))
    child.env = env
    await stack.restart("filter_model")
    deadline = time.monotonic() + timeout_s
    async with grpc.aio.insecure_channel(stack.gateway_address) as channel:
        stub = gateway_pb2_grpc.GatewayStub(channel)
        k = 0
        while True:
            k += 1
            probe = types_pb2.Transaction(transaction_id=f"bench-probe-{os.getpid()}-{time.time_ns()}-{k}",
                                          timestamp=Timestamp(seconds=1_530_000_000), customer_id="bench-probe",
                                          terminal_id="bench-probe", amount=1.0)
            try:
                response = await stub.Score(gateway_pb2.ScoreRequest(transaction=probe), timeout=5)
                if "filter" not in response.degraded_reason:
                    return
            except grpc.aio.AioRpcError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("the gateway did not get the filter back after its restart")
            await asyncio.sleep(0.2)


async def _sweep(address: str, source: EventSource, config: BenchConfig, mode: str, rates: Sequence[float],
                 run_tag: str, first: int, cpu: CpuMeter | None, stop_early: bool,
                 labels: LabelCount, floor_stack: Floor | None = None,
                 floors: dict[str, StepResult] | None = None) -> list[StepResult]:
    steps: list[StepResult] = []
    failures = 0
    for k, rate in enumerate(rates):
        await report_due_labels(address, source, labels)
        load = build_load(source, mode, rate, config.duration_s, f"{run_tag}s{first + k}-", config.tick_s)
        name = f"{mode}@{rate:g}" + (f" x{config.streams}" if config.streams > 1 and mode != "unary" else "")
        step = await run_step(address, load, name=name, rate=rate, duration_s=config.duration_s,
                              max_outstanding=config.max_outstanding, streams=config.streams, cpu=cpu)
        del load
        step.judge(config.criteria)
        steps.append(step)
        print(f"  {step.name}: answered {step.answered_per_s:,.0f}/s p99 {step.percentile_ms(99):.2f} ms "
              f"ensemble {step.ensemble_share:.1%} errors {step.error_count:,} "
              f"{'pass' if step.passed else 'FAIL: ' + '; '.join(step.fail_reasons)}", flush=True)
        if floor_stack is not None and floors is not None:
            # The same load on the same hops without the work, right after the graph's step.
            await asyncio.sleep(1.0)
            floor_load = build_load(source, mode, rate, config.duration_s, f"{run_tag}f{first + k}-", config.tick_s)
            floor_step = await run_step(floor_stack.gateway, floor_load, name=f"floor {name}", rate=rate,
                                        duration_s=config.duration_s, max_outstanding=config.max_outstanding,
                                        streams=config.streams, cpu=CpuMeter(floor_stack.pids))
            del floor_load
            floors[name] = floor_step
            print(f"    floor: answered {floor_step.answered_per_s:,.0f}/s p99 {floor_step.percentile_ms(99):.2f} ms "
                  f"(graph / floor p99 {step.percentile_ms(99) / max(floor_step.percentile_ms(99), 1e-9):.2f})",
                  flush=True)
        # Only saturation ends a sweep early (a sporadic p99 or error miss at a low rate does not): the answered
        # rate falls short of the target, or the median is past the p99 limit.
        saturated = (step.answered_per_s < config.criteria.min_answered_ratio * rate
                     or not step.percentile_ms(50) <= config.criteria.p99_ms)
        failures = failures + 1 if saturated else 0
        if stop_early and failures >= config.stop_after_saturated:
            break
        await asyncio.sleep(1.0)  # let queues drain between steps
    return steps


async def run_bench(config: BenchConfig) -> dict[str, Any]:
    from scoring.launcher import Ports, Stack, StackConfig
    from services.gateway.settings import GatewaySettings

    started_at = dt.datetime.now(dt.timezone.utc)
    run_tag = f"b{os.getpid()}t{int(time.time()) % 1_000_000}"
    loadavg_start = list(os.getloadavg())
    threshold = _threshold(config)
    source = EventSource.from_artifacts(config.artifacts, config.warm_days)
    budget_ms = config.budget_ms if config.budget_ms is not None else float(
        GatewaySettings.model_fields["budget_ms"].default)
    result: dict[str, Any] = {
        "kind": "standard" if config.standard else "custom",
        "date": started_at.strftime("%Y-%m-%d %H:%M UTC"),
        "command": config.command,
        "git": git_info(),
        "machine": machine_info(),
        "loadavg_start": loadavg_start,
        "settings": {
            "budget_ms": budget_ms, "duration_s": config.duration_s, "tick_ms": config.tick_s * 1e3,
            "max_outstanding": config.max_outstanding, "streams": config.streams, "criteria": config.criteria.__dict__,
            "filter_threshold": threshold, "artifacts": str(config.artifacts),
        },
        "steps": [],
        "sweeps": {},
        "ceilings": {},
        "summary": [],
    }
    steps: list[StepResult] = []
    summary: list[str] = result["summary"]
    labels = LabelCount()
    floors: dict[str, StepResult] = {}

    async def body(gateway: str, features: str | None, stack: Any, floor_stack: Floor | None = None) -> None:
        cpu = None
        if stack is not None:
            cpu = CpuMeter(lambda: {name: child.pid for name, child in stack.children.items() if child.pid})
        warm = WarmUp()
        if features and config.mode != "ticks":  # the tick sweep starts its symbols from empty rings
            print(f"warming Redis: the first {config.warm_days:g} days through the feature service ...", flush=True)
            warm = await warm_features(features, source, f"{run_tag}w")
            print(f"  {warm.events:,} events + {warm.labels_accepted:,} labels in {warm.seconds:.1f} s "
                  f"({warm.events_per_s:,.0f} events/s)", flush=True)
        result["settings"]["warm_up"] = {"days": config.warm_days, **warm.to_dict()}
        if stack is not None and config.ceilings:
            print("ceilings: gRPC echo, Redis, Triton ...", flush=True)
            ceilings = result["ceilings"]
            ceilings["feature_fold"] = warm.to_dict()
            ceilings["echo"] = await echo_ceiling(source.fork(), run_tag, stack.config.logs, tick_s=config.tick_s,
                                                  max_outstanding=config.max_outstanding)
            ceilings["redis"] = await redis_ceiling(stack.redis_url)
            # Redis's own CPU per folded event (INFO cpu / commandstats), folds straight to the store.
            ceilings["fold_cost"] = await fold_cost(stack.redis_url)
            summary.extend(format_fold_cost(ceilings["fold_cost"]))
            if warm.features is not None and warm.sequences is not None:
                ceilings["triton"] = await triton_ceiling(stack.triton_address, "fraud_ensemble", warm.features,
                                                          warm.sequences)
                # A/B: the local target's fused fraud_ensemble against the scheduled graph of the same models.
                try:
                    ceilings["triton_scheduled"] = await triton_ceiling(
                        stack.triton_address, "fraud_ensemble_scheduled", warm.features, warm.sequences)
                except Exception as exc:  # an older repository without it: say so, measure the rest
                    print(f"  fraud_ensemble_scheduled not measured: {exc}", flush=True)
            print(format_ceilings(ceilings), flush=True)
        if config.standard:
            # (1) One event at a time through every stage: the filter passes everything for this step.
            print(f"single events, unary, closed loop at {config.single_rate:g}/s, filter threshold 0 ...", flush=True)
            await report_due_labels(gateway, source, labels)
            load = build_load(source, "unary", config.single_rate, config.duration_s, f"{run_tag}s0-", config.tick_s)
            single = await run_step(gateway, load, name="single, every stage", rate=config.single_rate,
                                    duration_s=config.duration_s, closed_loop=True, cpu=cpu)
            single.judge(Criteria(p99_ms=5.0, min_ensemble_share=0.99, max_error_share=0.0,
                                  max_degraded_share=0.01, min_answered_ratio=0.95))
            steps.append(single)
            print(f"  p50 {single.percentile_ms(50):.2f} ms p99 {single.percentile_ms(99):.2f} ms "
                  f"(target p99 < 5 ms: {'met' if single.passed else 'missed: ' + '; '.join(single.fail_reasons)})",
                  flush=True)
            service = single.service_us
            summary.append(f"One event at a time through features, filter and ensemble (threshold 0, unary, closed "
                           f"loop, {config.single_rate:g}/s): p50 {single.percentile_ms(50):.2f} ms, p99 "
                           f"{single.percentile_ms(99):.2f} ms from the scheduled time (from the actual send: p50 "
                           f"{service.get_value_at_percentile(50) / 1e3:.2f} ms, p99 "
                           f"{service.get_value_at_percentile(99) / 1e3:.2f} ms); ensemble share "
                           f"{single.ensemble_share:.1%}; target p99 < 5 ms {'met' if single.passed else 'missed'}.")
            if stack is None:
                raise SystemExit("the standard set restarts the filter of its own stack: with --gateway, give --mode")
            await restart_filter(stack, threshold["threshold"] if threshold else None)
            plan = [("batch", list(config.rates or STANDARD_RATES)), ("stream", list(config.rates or STANDARD_RATES))]
        elif config.mode == "ticks":
            plan = []
        else:
            plan = [(config.mode or "batch", list(config.rates or STANDARD_RATES))]
        first = 1
        for mode, rates in plan:
            print(f"sweep {mode}: {', '.join(f'{r:g}' for r in rates)} events/s, {config.duration_s:g} s each ...",
                  flush=True)
            swept = await _sweep(gateway, source, config, mode, rates, run_tag, first, cpu, config.standard, labels,
                                 floor_stack, floors)
            first += len(swept)
            steps.extend(swept)
            best = highest_passing(swept)
            result["sweeps"][mode] = {"rates": [s.target_rate for s in swept], "highest_passing_rate": best}
            if len(swept) > 1 or config.standard:
                summary.append(f"{mode}: " + ("no rate passed" if best is None else
                                              f"highest passing rate {best:,.0f} events/s")
                               + ("" if best is None else
                                  f" (p99 {next(s for s in swept if s.target_rate == best).percentile_ms(99):.2f} ms,"
                                  f" ensemble {next(s for s in swept if s.target_rate == best).ensemble_share:.1%})"))
            if floors:
                ratios = [f"{s.target_rate:,.0f}/s {s.percentile_ms(99) / floors[s.name].percentile_ms(99):.2f}x"
                          for s in swept if s.name in floors and floors[s.name].answered]
                summary.append(f"{mode}: graph p99 / same-shape floor p99 (target at most 1.5x at every passing "
                               f"rate): {', '.join(ratios)}.")

        if config.standard:
            print("saturated replay: 50,000 events on ScoreStream, then on ScoreBatchStream in 500s, as fast as the "
                  "gateway takes them ...", flush=True)
            await report_due_labels(gateway, source, labels)
            redis_url = stack.redis_url if stack is not None else None
            sat = await saturated_replay(gateway, source, f"{run_tag}sat", redis_url=redis_url, cpu=cpu)
            result["saturated_replay"] = sat
            summary.extend(format_saturated_replay(sat))
            for line in format_saturated_replay(sat):
                print(f"  {line}", flush=True)
            # The cost per event at saturation: a 1 s budget, so that every event is scored by every stage.
            print("saturated replay at a 1 s budget: ScoreBatchStream and ScoreColumnsStream ...", flush=True)
            await report_due_labels(gateway, source, labels)
            cost = await saturated_replay(gateway, source, f"{run_tag}cost", redis_url=redis_url, cpu=cpu,
                                          modes=("batch", "columns"), budget_ms=1000.0)
            result["saturated_cost"] = cost
            summary.extend(format_saturated_replay(cost))
            for line in format_saturated_replay(cost):
                print(f"  {line}", flush=True)

        if (config.standard and stack is not None and stack.serves("market")) or config.mode == "ticks":
            from scoring.bench.ticks import STANDARD_TICK_RATES, format_tick_sweep, tick_sweep

            print("sweep ticks (market scenario): ScoreBatchStream ...", flush=True)
            ticks = await tick_sweep(gateway, run_tag, duration_s=config.duration_s, budget_ms=budget_ms,
                                     rates=tuple(config.rates or STANDARD_TICK_RATES))
            result["sweeps"]["ticks"] = ticks
            summary.append(format_tick_sweep(ticks))
            from scoring.bench.ticks import format_window_ab, window_rebuild_ab

            result["window_rebuild_us"] = window_rebuild_ab()
            summary.append(format_window_ab(result["window_rebuild_us"]))

        if config.standard and stack is not None and stack.tracing:
            print("tracing overhead: saturated ScoreBatchStream, tracing off and at the default sampling ...",
                  flush=True)
            tr = await tracing_overhead(stack, source, run_tag)
            result["tracing"] = tr
            summary.append(f"Tracing overhead ({tr['sampler']}): saturated ScoreBatchStream throughput "
                           f"{tr['on_mean']:,.0f} events/s traced against {tr['off_mean']:,.0f} untraced "
                           f"({tr['difference']:+.1%}; target within 10%: "
                           f"{'met' if tr['within_10_percent'] else 'missed'}).")

        if config.standard and stack is not None:
            from scoring.bench.flips import format_flips, release_flips

            print("release flips: 50 promote/rollback cycles under a steady stream, against the same stream "
                  "without flips ...", flush=True)
            flips = await release_flips(stack, source, run_tag, duration_s=max(config.duration_s, 10.0))
            result["release_flips"] = flips
            summary.append(format_flips(flips))
            print(f"  {format_flips(flips)}", flush=True)

    if config.gateway:
        await body(config.gateway, config.features, None)
    else:
        env = {"FILTER_THRESHOLD": "0"} if config.standard else (
            {"FILTER_THRESHOLD": repr(float(threshold["threshold"]))} if threshold else {})
        if config.budget_ms is not None:
            env["GATEWAY_BUDGET_MS"] = repr(float(config.budget_ms))
        stack_config = StackConfig(artifacts=config.artifacts, ports=Ports.free(), env=env)
        print("starting the stack ...", flush=True)
        t = time.monotonic()
        async with Stack(stack_config) as stack:
            pids = " ".join(f"{c.name}={c.pid}" for c in stack.children.values())
            print(f"  ready in {time.monotonic() - t:.1f} s: gateway {stack.gateway_address} ({pids})", flush=True)
            if config.floor:
                print("starting the same-shape floor (the gateway in front of stages that do no work) ...", flush=True)
                async with floor(stack.service_env(), stack.config.logs) as floor_stack:
                    await body(stack.gateway_address, stack.addresses["feature_service"], stack, floor_stack)
            else:
                await body(stack.gateway_address, stack.addresses["feature_service"], stack)
    result["steps"] = [s.to_dict() for s in steps]
    for d in result["steps"]:
        f = floors.get(d["name"])
        if f is not None and f.answered:
            d["floor"] = {k: v for k, v in f.to_dict().items() if k in ("latency_ms", "answered_per_s", "answers")}
            floor_cpu = sum(v for k, v in (f.cpu or {}).items() if k.startswith("floor_"))
            d["floor"]["cpu_us_per_event"] = round(floor_cpu / 100 * 1e6 / f.answered_per_s, 1) if f.answered_per_s \
                else None
            d["p99_over_floor"] = round(d["latency_ms"]["p99"] / max(f.percentile_ms(99), 1e-9), 2)
    result["settings"]["labels_during_bench"] = {"sent": labels.sent, "accepted": labels.accepted}
    result["settings"]["event_days"] = round((source.next_time_us() - source.warm_end_us) / US_PER_DAY, 2)
    result["loadavg_end"] = list(os.getloadavg())
    others = [s.cpu["others"] for s in steps if s.cpu]
    if others:
        result["contention"] = {"others_mean_percent": round(float(np.mean(others)), 1),
                                "others_max_percent": round(float(np.max(others)), 1),
                                "contended": float(np.mean(others)) > 20.0}
    result["elapsed_s"] = round((dt.datetime.now(dt.timezone.utc) - started_at).total_seconds(), 1)
    return result


def main(config: BenchConfig) -> int:
    result = asyncio.run(run_bench(config))
    print()
    print(format_table(result["steps"]))
    if result["ceilings"]:
        print()
        print(format_ceilings(result["ceilings"]))
    print()
    for line in result["summary"]:
        print(line)
    if result.get("contention", {}).get("contended"):
        print(f"note: other processes used {result['contention']['others_mean_percent']:.0f}% of one core on average "
              "during the steps: figures taken under contention")
    write_outputs(result, config.json_path, config.markdown_path)
    for path in (config.json_path, config.markdown_path):
        if path is not None:
            print(f"wrote {path}")
    print(f"bench took {result['elapsed_s']:.0f} s")
    return 0


def command_line(argv: Sequence[str]) -> str:
    return shlex.join(["scoring", *argv])
