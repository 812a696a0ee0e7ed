"""What is measured: a step's result and its pass criteria, the per-event accounting, CPU per process tree."""

from __future__ import annotations

import math
import os
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from google.rpc import code_pb2
from hdrh.histogram import HdrHistogram

from scoring.bench.workload import Load
from scoring.replay import ANSWER_KINDS, answer_kind
from scoring.v1 import types_pb2

PERCENTILES = (50.0, 90.0, 99.0, 99.9)
_STAGE_NAMES = {
    types_pb2.STAGE_FILTER: "filter",
    types_pb2.STAGE_ENSEMBLE: "ensemble",
    types_pb2.STAGE_NONE: "none",
    types_pb2.STAGE_UNSPECIFIED: "unspecified",
}


def _histogram() -> HdrHistogram:
    # 1 us .. 60 s, 3 significant digits.
    return HdrHistogram(1, 60_000_000, 3)


@dataclass(frozen=True)
class Criteria:
    """What a step must show to count as sustained."""

    p99_ms: float = 10.0
    min_ensemble_share: float = 0.05
    max_error_share: float = 0.001
    max_degraded_share: float = 0.01
    min_answered_ratio: float = 0.95  # answered events/s over the target rate

    def check(self, step: StepResult) -> list[str]:
        """Reasons the step fails; empty when it passes."""
        reasons = []
        if step.answered == 0:
            return ["nothing answered"]
        p99 = step.percentile_ms(99.0)
        if p99 > self.p99_ms:
            reasons.append(f"p99 {p99:.2f} ms > {self.p99_ms:g} ms")
        if step.ensemble_share < self.min_ensemble_share:
            reasons.append(f"ensemble {step.ensemble_share:.1%} < {self.min_ensemble_share:.0%}")
        if step.error_count > self.max_error_share * step.sent:
            reasons.append(f"errors {step.error_count:,} > {self.max_error_share:.1%}")
        if step.degraded_count > self.max_degraded_share * step.answered:
            reasons.append(f"degraded {step.degraded_count:,} > {self.max_degraded_share:.0%}")
        if step.answered_per_s < self.min_answered_ratio * step.target_rate:
            reasons.append(f"answered {step.answered_per_s:,.0f}/s < {self.min_answered_ratio:.0%} of target")
        return reasons


def highest_passing(steps: Sequence[StepResult]) -> float | None:
    """The highest target rate among the steps that passed; None when none did."""
    rates = [s.target_rate for s in steps if s.passed]
    return max(rates) if rates else None


@dataclass
class StepResult:
    name: str
    mode: str
    target_rate: float
    duration_s: float
    closed_loop: bool = False
    streams: int = 1
    sent: int = 0  # every scheduled event
    on_wire: int = 0  # of which actually handed to gRPC
    answered: int = 0  # scored (no error), latency recorded
    errors: Counter[str] = field(default_factory=Counter)
    stages: Counter[str] = field(default_factory=Counter)
    degraded: Counter[str] = field(default_factory=Counter)
    # Every answer by what produced it: "full" (every stage in time), a fallback, or "error" (scoring.replay).
    kinds: Counter[str] = field(default_factory=Counter)
    unknown_ids: int = 0
    duplicates: int = 0
    latency_us: HdrHistogram = field(default_factory=_histogram)
    # Closed loop only: from the actual send to the answer (latency_us counts from the scheduled time).
    service_us: HdrHistogram = field(default_factory=_histogram)
    send_lag_us: HdrHistogram = field(default_factory=_histogram)
    send_elapsed_s: float = 0.0
    elapsed_s: float = 0.0
    messages: int = 0
    cpu: dict[str, float] = field(default_factory=dict)
    passed: bool | None = None
    fail_reasons: list[str] = field(default_factory=list)

    @property
    def error_count(self) -> int:
        return sum(self.errors.values())

    @property
    def degraded_count(self) -> int:
        return sum(self.degraded.values())

    @property
    def sent_per_s(self) -> float:
        return self.on_wire / max(self.send_elapsed_s, self.duration_s, 1e-9)

    @property
    def answered_per_s(self) -> float:
        return self.answered / max(self.elapsed_s, self.duration_s, 1e-9)

    @property
    def ensemble_share(self) -> float:
        return self.stages["ensemble"] / self.answered if self.answered else 0.0

    def share(self, stage: str) -> float:
        return self.stages[stage] / self.answered if self.answered else 0.0

    def percentile_ms(self, p: float) -> float:
        return float(self.latency_us.get_value_at_percentile(p)) / 1e3 if self.answered else math.nan

    def max_ms(self) -> float:
        return float(self.latency_us.get_max_value()) / 1e3 if self.answered else math.nan

    def judge(self, criteria: Criteria) -> None:
        self.fail_reasons = criteria.check(self)
        self.passed = not self.fail_reasons

    def to_dict(self) -> dict[str, Any]:
        latency = {f"p{p:g}": _round(self.percentile_ms(p)) for p in PERCENTILES}
        latency["max"] = _round(self.max_ms())
        return {
            "name": self.name,
            "mode": self.mode,
            "closed_loop": self.closed_loop,
            "streams": self.streams,
            "target_rate": self.target_rate,
            "duration_s": self.duration_s,
            "sent": self.sent,
            "on_wire": self.on_wire,
            "answered": self.answered,
            "errors": dict(self.errors),
            "error_count": self.error_count,
            "sent_per_s": round(self.sent_per_s, 1),
            "answered_per_s": round(self.answered_per_s, 1),
            "messages": self.messages,
            "latency_ms": latency,
            "latency_count": int(self.latency_us.get_total_count()),
            "service_ms": {f"p{p:g}": _round(self.service_us.get_value_at_percentile(p) / 1e3) for p in PERCENTILES}
            if self.service_us.get_total_count() else None,
            "send_lag_ms": {"p99": _round(self.send_lag_us.get_value_at_percentile(99.0) / 1e3),
                            "max": _round(self.send_lag_us.get_max_value() / 1e3)},
            "stages": dict(self.stages),
            "stage_share": {k: round(v / self.answered, 5) for k, v in self.stages.items()} if self.answered else {},
            "ensemble_share": round(self.ensemble_share, 5),
            "degraded": dict(self.degraded),
            "answers": {k: self.kinds[k] for k in ANSWER_KINDS},
            "unknown_ids": self.unknown_ids,
            "duplicates": self.duplicates,
            "elapsed_s": round(self.elapsed_s, 3),
            "cpu_percent": self.cpu,
            "passed": self.passed,
            "fail_reasons": self.fail_reasons,
            # The whole latency histogram (HdrHistogram's compressed base64 form), for later analysis.
            "latency_hdr": self.latency_us.encode().decode() if self.answered else "",
        }


def _round(x: float, digits: int = 3) -> float | None:
    return None if math.isnan(x) else round(float(x), digits)


class _Recorder:
    def __init__(self, result: StepResult, load: Load, t0: float) -> None:
        self.r = result
        self.prefix = load.prefix
        self.plen = len(load.prefix)
        self.due = load.due
        self.t0 = t0
        self.n = len(load.due)
        self.done = bytearray(self.n)  # 1 once an event is accounted for (answered or errored)
        self.wire = bytearray(self.n)  # 1 once an event was handed to gRPC
        self.call_failed = ""
        self.last_answer = t0

    def _index(self, txid: str) -> int:
        if not txid.startswith(self.prefix):
            return -1
        try:
            i = int(txid[self.plen:])
        except ValueError:
            return -1
        return i if 0 <= i < self.n else -1

    def on_wire(self, start: int, end: int) -> None:
        for i in range(start, end):
            self.wire[i] = 1
        self.r.on_wire += end - start

    def response(self, response: types_pb2.ScoreResponse, now: float) -> None:
        i = self._index(response.transaction_id)
        r = self.r
        if i < 0:
            r.unknown_ids += 1
            return
        if self.done[i]:
            r.duplicates += 1
            return
        self.done[i] = 1
        self.last_answer = now
        r.kinds[answer_kind(response)] += 1
        if response.HasField("error"):
            code = code_pb2.Code.Name(response.error.code) if response.error.code in code_pb2.Code.values() \
                else str(response.error.code)
            r.errors[f"event:{code}:{response.degraded_reason or response.error.field}"] += 1
            return
        r.answered += 1
        r.latency_us.record_value(max(1, int((now - self.t0 - self.due[i]) * 1e6)))
        r.stages[_STAGE_NAMES.get(response.stage, str(response.stage))] += 1
        if response.degraded:
            r.degraded[response.degraded_reason] += 1

    def error(self, start: int, end: int, kind: str) -> None:
        for i in range(start, end):
            if not self.done[i]:
                self.done[i] = 1
                self.r.errors[kind] += 1

    def finish(self) -> None:
        """Whatever is not accounted for yet: on the wire with no answer, or never sent."""
        kind = f"grpc:{self.call_failed}" if self.call_failed else "client:no_answer"
        for i in range(self.n):
            if not self.done[i]:
                self.done[i] = 1
                self.r.errors[kind if self.wire[i] else "client:not_sent"] += 1
        self.r.sent = self.n


def _proc_table() -> dict[int, tuple[int, int]]:
    """pid -> (ppid, utime + stime in clock ticks) for every process."""
    table = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as f:
                text = f.read().decode(errors="replace")
        except OSError:
            continue
        rest = text[text.rfind(")") + 2:].split()
        table[int(entry)] = (int(rest[1]), int(rest[11]) + int(rest[12]))
    return table


def _machine_ticks() -> tuple[int, int]:
    """(busy, total) clock ticks of all CPUs since boot."""
    with open("/proc/stat") as f:
        values = [int(v) for v in f.readline().split()[1:]]
    idle = values[3] + (values[4] if len(values) > 4 else 0)
    total = sum(values[:8])
    return total - idle, total


class CpuMeter:
    """CPU used between start() and stop() by named process trees (a process and all its descendants), by this
    process alone ('bench', the load generator), and by everything else on the machine ('others')."""

    def __init__(self, roots: dict[str, int] | Callable[[], dict[str, int]]) -> None:
        # A callable is asked again at every start(): a restarted child has a new pid.
        self.roots_of = roots if callable(roots) else (lambda: dict(roots))
        self.roots: dict[str, int] = {}
        self.hz = os.sysconf("SC_CLK_TCK")
        self._start: tuple[float, dict[str, int], int] | None = None

    def _sample(self) -> tuple[float, dict[str, int], int]:
        table = _proc_table()
        children: dict[int, list[int]] = {}
        for pid, (ppid, _) in table.items():
            children.setdefault(ppid, []).append(pid)
        own = os.getpid()
        usage = {"bench": table.get(own, (0, 0))[1]}
        for name, root in self.roots.items():
            total, stack = 0, [root]
            while stack:
                pid = stack.pop()
                total += table.get(pid, (0, 0))[1]
                stack.extend(children.get(pid, []))
            usage[name] = total
        busy, _ = _machine_ticks()
        return time.perf_counter(), usage, busy

    def start(self) -> None:
        self.roots = self.roots_of()
        self._start = self._sample()

    def stop(self) -> dict[str, float]:
        """Percent of one core per name, plus 'others' and 'machine' (all CPUs busy, in percent of one core)."""
        if self._start is None:
            return {}
        t1, u1, b1 = self._sample()
        t0, u0, b0 = self._start
        wall = max(t1 - t0, 1e-9)
        pct = {name: round(100.0 * (u1[name] - u0.get(name, 0)) / self.hz / wall, 1) for name in u1}
        machine = 100.0 * (b1 - b0) / self.hz / wall
        pct["others"] = round(max(0.0, machine - sum(pct.values())), 1)
        pct["machine"] = round(machine, 1)
        return pct
