"""One chaos experiment: a steady open-loop stream, one fault at a set time, its restoration, and the report.

Timeline (monotonic clock): the stream starts; `before_s` later the fault is injected (`fault_at`); a timed fault is
restored `fault_s` after that, a crash when the service is healthy again (`back_at`); the stream goes on for
`after_s`, stops, and the client drains (reconnecting and re-sending as long as answers are owed, up to
`drain_s`). Events belong to the phase in which they were due: before `fault_at`, during (up to `back_at`), after.

The report counts every event: sent, answered (once), lost (never answered), duplicated (answered again), errors,
degraded answers by reason (all, and during the fault), latency percentiles per phase from the due time (so time
spent waiting for a dead gateway counts), the same from the last send (what the gateway itself took), the time the
service was down (`fault_at` to `back_at`) and the time to recover: from `back_at` to the due time of the last event
that was not a full answer (every later event got a full, undegraded answer); `None` when fewer than `stable_s`
of full answers follow it, that is, when the stream had not recovered by the end.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import os
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Any

import grpc

from scoring.bench.recorder import _histogram
from scoring.chaos.client import DEGRADED, ERROR, FULL, UNANSWERED, Ledger, ResilientStream, TransactionSource, feed
from scoring.chaos.faults import Fault
from scoring.chaos.targets import ChaosTarget
from scoring.v1 import gateway_pb2, gateway_pb2_grpc, types_pb2

log = logging.getLogger(__name__)
PHASES = ("before", "during", "after")


@dataclass
class Timing:
    rate: float = 200.0  # events per second, open loop
    before_s: float = 2.0
    fault_s: float = 3.0  # how long a timed fault lasts
    after_s: float = 4.0
    back_timeout_s: float = 120.0  # a crashed service must be healthy again within this
    drain_s: float = 30.0
    stable_s: float = 1.0  # full answers that must follow the last degraded one for the stream to count as recovered
    settle_s: float = 60.0  # before an experiment: until the stack gives full answers again


@dataclass
class Report:
    name: str
    kind: str
    service: str
    target: str
    rate: float
    sent: int = 0
    answered: int = 0
    lost: int = 0
    duplicated: int = 0
    unknown_ids: int = 0
    full: int = 0
    errors: dict[str, int] = field(default_factory=dict)
    degraded: dict[str, int] = field(default_factory=dict)
    degraded_during: dict[str, int] = field(default_factory=dict)
    unexpected_reasons: dict[str, int] = field(default_factory=dict)
    unexpected_errors: dict[str, int] = field(default_factory=dict)
    events: dict[str, int] = field(default_factory=dict)  # per phase
    p50_ms: dict[str, float | None] = field(default_factory=dict)
    p99_ms: dict[str, float | None] = field(default_factory=dict)
    max_ms: dict[str, float | None] = field(default_factory=dict)
    service_p99_ms: dict[str, float | None] = field(default_factory=dict)  # from the event's last send
    down_s: float = 0.0
    recover_s: float | None = None
    caught: int = 0  # sent before the fault was in, answered only after the service was back: caught in it
    resent: int = 0
    reconnects: int = 0
    stalls: int = 0
    gateway_rss_mb: dict[str, float | None] = field(default_factory=dict)
    gateway_instances: list[str] = field(default_factory=list)
    notes: dict[str, Any] = field(default_factory=dict)
    elapsed_s: float = 0.0

    @property
    def recovered(self) -> bool:
        return self.recover_s is not None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _percentiles(latencies_s: list[float]) -> tuple[float | None, float | None, float | None]:
    if not latencies_s:
        return None, None, None
    hist = _histogram()
    for x in latencies_s:
        hist.record_value(max(1, int(x * 1e6)))
    return (round(hist.get_value_at_percentile(50.0) / 1e3, 2), round(hist.get_value_at_percentile(99.0) / 1e3, 2),
            round(hist.get_max_value() / 1e3, 2))


def build_report(fault: Fault, target_name: str, rate: float, ledger: Ledger, fault_at: float, back_at: float,
                 stable_s: float, injected_at: float | None = None) -> Report:
    """`injected_at`: when the fault had been injected (the signal sent, the proxy set), for `caught`."""
    injected_at = fault_at if injected_at is None else injected_at
    report = Report(name=fault.name, kind=fault.kind, service=fault.service, target=target_name, rate=rate)
    n = len(ledger)
    report.sent = n
    report.answered = ledger.answered
    report.lost = n - report.answered
    report.duplicated = ledger.duplicates
    report.unknown_ids = ledger.unknown_ids
    report.resent = ledger.resent
    report.down_s = round(back_at - fault_at, 3)
    latency: dict[str, list[float]] = {p: [] for p in PHASES}
    service: dict[str, list[float]] = {p: [] for p in PHASES}
    errors: Counter[str] = Counter()
    degraded: Counter[str] = Counter()
    during: Counter[str] = Counter()
    unexpected: Counter[str] = Counter()
    unexpected_errors: Counter[str] = Counter()
    last_not_full = -math.inf
    last_due = -math.inf
    for i in range(n):
        due = ledger.due[i]
        phase = "before" if due < fault_at else ("during" if due < back_at else "after")
        status = ledger.status[i]
        report.events[phase] = report.events.get(phase, 0) + 1
        last_due = max(last_due, due)
        if status != FULL and due >= back_at:
            last_not_full = max(last_not_full, due)
        if status == UNANSWERED:
            continue
        if ledger.last_sent[i] < injected_at and ledger.answered_at[i] >= back_at:
            report.caught += 1
        latency[phase].append(ledger.answered_at[i] - due)
        service[phase].append(ledger.answered_at[i] - ledger.last_sent[i])
        if status == FULL:
            report.full += 1
        elif status == ERROR:
            errors[ledger.reason[i]] += 1
            if not fault.error_expected(ledger.reason[i].split(":", 1)[-1]):  # "<code>:<reasons>"
                unexpected_errors[ledger.reason[i]] += 1
        elif status == DEGRADED:
            reason = ledger.reason[i]
            degraded[reason] += 1
            if phase == "during":
                during[reason] += 1
            # A reason may join several ("features_timeout,filter_timeout"): each part must fit the fault.
            if phase != "before" and not fault.degraded_expected(reason):
                unexpected[reason] += 1
    for phase in PHASES:
        p50, p99, peak = _percentiles(latency[phase])
        report.p50_ms[phase], report.p99_ms[phase], report.max_ms[phase] = p50, p99, peak
        report.service_p99_ms[phase] = _percentiles(service[phase])[1]
    report.errors = dict(errors)
    report.degraded = dict(degraded)
    report.degraded_during = dict(during)
    report.unexpected_reasons = dict(unexpected)
    report.unexpected_errors = dict(unexpected_errors)
    if last_not_full == -math.inf:
        report.recover_s = 0.0
    elif last_due - last_not_full >= stable_s:
        report.recover_s = round(max(0.0, last_not_full - back_at), 3)
    return report


async def settle(address: str, timeout_s: float, prefix: str, needed: int = 3) -> int:
    """Scores probe events until `needed` full answers in a row: the previous fault has healed. Returns how many
    probes it sent."""
    deadline = time.monotonic() + timeout_s
    in_a_row = 0
    k = 0
    last = "no answer"
    async with grpc.aio.insecure_channel(address) as channel:
        stub = gateway_pb2_grpc.GatewayStub(channel)
        while in_a_row < needed:
            if time.monotonic() > deadline:
                raise TimeoutError(f"the stack gave no full answers within {timeout_s:g} s (last: {last})")
            k += 1
            tx = types_pb2.Transaction(transaction_id=f"{prefix}{k}", customer_id="chaos-probe",
                                       terminal_id="chaos-probe", amount=1.0)
            tx.timestamp.FromSeconds(1_530_000_000)
            try:
                response = await stub.Score(gateway_pb2.ScoreRequest(transaction=tx), timeout=5)
                full = not response.degraded
                last = response.degraded_reason or "full"
            except grpc.aio.AioRpcError as exc:
                full = False
                last = exc.code().name
            in_a_row = in_a_row + 1 if full else 0
            if not full:
                await asyncio.sleep(0.1)
    return k


async def run_experiment(target: ChaosTarget, fault: Fault, source: TransactionSource, timing: Timing | None = None,
                         tag: str | None = None) -> Report:
    """Runs one experiment against `target` and returns its report (the fault is always undone)."""
    timing = timing or Timing()
    tag = tag or f"chaos{os.getpid()}t{time.time_ns() % 10**10}"
    started = time.monotonic()
    await target.wait_all_up(timing.back_timeout_s)
    notes: dict[str, Any] = {"settle_probes": await settle(target.client_address(), timing.settle_s, f"{tag}-settle-")}
    rss_start = await target.memory_bytes("gateway")
    instances = [target.instance("gateway")]
    ledger = Ledger()
    stream = ResilientStream(target.client_address(fault.through_proxy), ledger)
    running = asyncio.create_task(stream.run(), name="chaos-stream")
    stop = asyncio.Event()
    feeding = asyncio.create_task(feed(stream, source, timing.rate, stop, f"{tag}-"), name="chaos-feed")
    fault_at = back_at = injected_at = math.nan
    try:
        await _sleep_checking(timing.before_s, running, feeding)
        if fault.kind == "redis-empty":
            notes["redis_keys_before"] = await target.state_keys()
        fault_at = time.monotonic()
        try:
            await fault.inject(target)
            injected_at = time.monotonic()
            if fault.timed:
                await _sleep_checking(fault_at + timing.fault_s - time.monotonic(), running, feeding)
            back_at = await fault.restore(target, timing.back_timeout_s)
        finally:
            await fault.cleanup(target)
        if fault.kind == "redis-empty":
            notes["redis_keys_when_back"] = await target.state_keys()
        await _sleep_checking(back_at + timing.after_s - time.monotonic(), running, feeding)
    finally:
        stop.set()
        await asyncio.gather(feeding, return_exceptions=True)
        stream.close()
        try:
            await asyncio.wait_for(running, timing.drain_s)
        except TimeoutError:
            log.warning("drain timed out with %d answers owed", len(stream.unacked))
    if fault.kind == "redis-empty":
        notes["redis_keys_at_end"] = await target.state_keys()
    if fault.through_proxy:
        with contextlib.suppress(Exception):
            notes["proxy"] = (await target.proxy().status()).get(fault.route, {}).get("stats")
    instances.append(target.instance("gateway"))
    report = build_report(fault, target.name, timing.rate, ledger, fault_at, back_at, timing.stable_s, injected_at)
    report.reconnects = stream.reconnects
    report.stalls = stream.stalls
    rss_end = await target.memory_bytes("gateway")
    report.gateway_rss_mb = {"start": _mb(rss_start), "end": _mb(rss_end)}
    report.gateway_instances = instances
    if stream.breaks:
        notes["stream_breaks"] = dict(Counter(stream.breaks))
    report.notes = notes
    report.elapsed_s = round(time.monotonic() - started, 2)
    return report


def _mb(value: int | None) -> float | None:
    return None if value is None else round(value / 2**20, 1)


async def _sleep_checking(seconds: float, *tasks: asyncio.Task[Any]) -> None:
    """Sleeps, but fails at once if the stream or the feeder died (a harness bug must not look like a pass)."""
    if seconds > 0:
        await asyncio.wait(set(tasks), timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
    for task in tasks:
        if task.done():
            task.result()
            raise RuntimeError(f"{task.get_name()} ended before the experiment did")


# ---------------------------------------------------------------------------------------------------------------
# The table.


def _fmt_ms(x: float | None) -> str:
    return "-" if x is None else f"{x:,.0f}" if x >= 100 else f"{x:.1f}"


def _fmt_reasons(reasons: dict[str, int]) -> str:
    return ", ".join(f"{k} {v:,}" for k, v in sorted(reasons.items(), key=lambda kv: -kv[1])) or "-"


def format_table(reports: list[Report]) -> str:
    """A markdown table: one row per experiment, then the degraded answers and errors by reason."""
    head = ("fault", "sent", "answered", "lost", "dup", "errors", "degraded", "p99 before ms", "p99 during ms",
            "p99 after ms", "down s", "recover s", "resent", "gw RSS MiB")
    rows = []
    for r in reports:
        rss = r.gateway_rss_mb
        rss_text = "-" if rss.get("start") is None else f"{rss['start']:.0f}→{rss.get('end') or 0:.0f}"
        rows.append((r.name, f"{r.sent:,}", f"{r.answered:,}", f"{r.lost:,}", f"{r.duplicated:,}",
                     f"{sum(r.errors.values()):,}", f"{sum(r.degraded.values()):,}", _fmt_ms(r.p99_ms.get("before")),
                     _fmt_ms(r.p99_ms.get("during")), _fmt_ms(r.p99_ms.get("after")), f"{r.down_s:.2f}",
                     "not recovered" if r.recover_s is None else f"{r.recover_s:.2f}", f"{r.resent:,}", rss_text))
    widths = [max(len(h), *(len(row[k]) for row in rows)) if rows else len(h) for k, h in enumerate(head)]
    lines = ["| " + " | ".join(h.ljust(w) for h, w in zip(head, widths, strict=True)) + " |",
             "|" + "|".join("-" * (w + 2) for w in widths) + "|"]
    lines += ["| " + " | ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) + " |" for row in rows]
    lines.append("")
    lines.append("degraded answers by reason (errors, if any, after 'errors:'):")
    for r in reports:
        line = f"- {r.name}: {_fmt_reasons(r.degraded)}"
        if r.errors:
            line += f"; errors: {_fmt_reasons(r.errors)}"
        if r.unexpected_reasons:
            line += f"; NOT FROM THE FAULTED STAGE: {_fmt_reasons(r.unexpected_reasons)}"
        if r.unexpected_errors:
            line += f"; UNEXPECTED ERRORS: {_fmt_reasons(r.unexpected_errors)}"
        lines.append(line)
    return "\n".join(lines)


def write_json(reports: list[Report], path: Any, extra: dict[str, Any] | None = None) -> None:
    from pathlib import Path

    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({**(extra or {}), "experiments": [r.to_dict() for r in reports]}, indent=1) + "\n")


def summary_ok(report: Report) -> list[str]:
    """What a report shows against the promise (empty when kept): nothing lost or doubled, healed."""
    problems = []
    if report.lost:
        problems.append(f"{report.lost} lost")
    if report.duplicated:
        problems.append(f"{report.duplicated} answered twice")
    if report.unknown_ids:
        problems.append(f"{report.unknown_ids} answers for ids never sent")
    if not report.recovered:
        problems.append("not recovered by the end")
    return problems
