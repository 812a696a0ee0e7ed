"""`scoring bench`: open-loop load against the gateway, with the raw ceilings of its parts beside the figures.

Method
- Open loop: every event has a scheduled send time (`rate` events per second, evenly spaced) and leaves then,
  whatever the answers do; its latency is measured from that scheduled time, not from when the sender got round
  to it, so a slow gateway (or a slow sender) shows up in the figures instead of hiding (no coordinated omission).
  Requests are built before the clock starts; the sender wakes on ~1 ms ticks and sends everything due.
- Modes: `unary` (one `Score` call per event, at most `max_outstanding` in flight: an event due while the cap
  is reached is counted as an error, never skipped silently), `stream` (`ScoreStream`, one event per message),
  `batch` (`ScoreBatchStream`: the events due within the same tick go in one message, sent when the last is due).
- Accounting, per step: every scheduled event is `sent` and ends up either `answered` (a score, its latency in
  the HDR histogram) or in `errors` by kind: `event:<code>:<reason>` (the response's error field),
  `grpc:<status>` (the call failed), `client:overflow` (unary cap), `client:behind` (the sender fell more than
  `max_lag_s` behind schedule and stopped), `client:no_answer` (no response by the end of the drain),
  `client:not_sent` (never handed to gRPC otherwise).
- Load mix: the first `warm_days` of the simulated transactions are folded into Redis through the feature
  service (the fast path), then the bench sends later transactions with fresh ids, so customers have history
  and the filter sees the events it was trained for; the frauds' labels are reported (ReportLabels) between
  steps once 7 days of event time have passed, as in production, so terminal risk stays current. The filter
  threshold is set from the training report's validation curve so that a known share of events reaches the
  ensemble; the share is measured, per step.
"""

from __future__ import annotations

import asyncio
import copy
import datetime as dt
import gc
import json
import logging
import math
import os
import shlex
import subprocess
import sys
import time
from collections import Counter, deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import numpy as np
from google.protobuf.timestamp_pb2 import Timestamp
from google.rpc import code_pb2
from hdrh.histogram import HdrHistogram

from scoring.bench_fold import fold_cost, format_fold_cost, redis_account
from scoring.features import LABEL_DELAY_DAYS, SEQ_FEATURE_NAMES, SEQ_LEN, US_PER_DAY
from scoring.replay import ANSWER_KINDS, answer_kind, replay_batches, replay_stream, transaction
from scoring.v1 import features_pb2, features_pb2_grpc, gateway_pb2, gateway_pb2_grpc, types_pb2

log = logging.getLogger(__name__)

MODES = ("unary", "stream", "batch")
PERCENTILES = (50.0, 90.0, 99.0, 99.9)
STANDARD_RATES = (100, 250, 500, 1000, 1500, 2000, 3000, 4000, 6000)
ECHO_RATES = (2000, 5000, 10000, 20000)
CHANNEL_OPTIONS = [
    ("grpc.max_receive_message_length", 64 * 1024 * 1024),
    ("grpc.max_send_message_length", 64 * 1024 * 1024),
]
_STAGE_NAMES = {
    types_pb2.STAGE_FILTER: "filter",
    types_pb2.STAGE_ENSEMBLE: "ensemble",
    types_pb2.STAGE_NONE: "none",
    types_pb2.STAGE_UNSPECIFIED: "unspecified",
}


def _histogram() -> HdrHistogram:
    # 1 us .. 60 s, 3 significant digits.
    return HdrHistogram(1, 60_000_000, 3)


# --------------------------------------------------------------------------------------------------------------
# Pure logic: the filter threshold, the schedule, pass criteria.


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


def schedule(rate: float, duration_s: float) -> np.ndarray:
    """Send offsets in seconds: `rate * duration_s` events, evenly spaced from 0."""
    if rate <= 0 or duration_s <= 0:
        raise ValueError("rate and duration must be positive")
    n = max(1, int(round(rate * duration_s)))
    return np.arange(n, dtype=np.float64) / rate


def tick_groups(due: np.ndarray, tick_s: float, max_events: int = 4096) -> list[tuple[int, int]]:
    """[start, end) runs of events due within the same tick (at most `max_events` each), in order."""
    if len(due) == 0:
        return []
    ticks = np.floor(due / tick_s + 1e-9).astype(np.int64)
    cuts = np.flatnonzero(np.diff(ticks)) + 1
    bounds = [0, *cuts.tolist(), len(due)]
    groups = []
    for start, end in zip(bounds[:-1], bounds[1:], strict=True):
        for s in range(start, end, max_events):
            groups.append((s, min(s + max_events, end)))
    return groups


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


def parse_rates(text: str) -> list[float]:
    rates = [float(part) for part in text.replace(" ", "").split(",") if part]
    if not rates or any(r <= 0 for r in rates):
        raise ValueError(f"bad rate list {text!r}")
    return rates


# --------------------------------------------------------------------------------------------------------------
# One step's result.


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


# --------------------------------------------------------------------------------------------------------------
# The events: simulated transactions, the first days for warming Redis, later ones for the bench.


class EventSource:
    """Columns of the simulated transactions; a cursor hands out later transactions for the bench."""

    def __init__(self, frame: Any, warm_days: float) -> None:
        from scoring.features import frame_time_us

        self.time_us = frame_time_us(frame)
        self.customer = frame["CUSTOMER_ID"].to_numpy()
        self.terminal = frame["TERMINAL_ID"].to_numpy()
        self.amount = frame["TX_AMOUNT"].to_numpy(dtype=np.float64)
        self.fraud = frame["TX_FRAUD"].to_numpy().astype(bool)
        self.row_id = frame["TRANSACTION_ID"].to_numpy()
        start = int(self.time_us[0]) if len(self.time_us) else 0
        self.warm_end_us = start + int(warm_days * US_PER_DAY)
        self.warm_end = int(np.searchsorted(self.time_us, self.warm_end_us, side="left"))
        if self.warm_end >= len(self.time_us):
            raise ValueError(f"the data has no transactions after the first {warm_days:g} days")
        self.warm_days = warm_days
        self.cursor = self.warm_end
        self.lap = 0
        # Each lap over the bench part is shifted by its span, so event time keeps moving forward.
        self.lap_span_us = int(self.time_us[-1] - self.time_us[self.warm_end]) + 1_000_000
        self.label_delay_us = LABEL_DELAY_DAYS * US_PER_DAY
        # Fraud labels of events already sent, not yet due: (event time us, transaction id as sent), in time order.
        self.pending_labels: deque[tuple[int, str]] = deque()

    def fork(self) -> EventSource:
        """A copy with its own cursor and label backlog (for loads that never reach the stack, like the echo):
        the stack's customers then see no hole in their history."""
        other = copy.copy(self)
        other.pending_labels = deque()
        return other

    def next_time_us(self) -> int:
        return int(self.time_us[self.cursor]) + self.lap * self.lap_span_us

    def due_labels(self, now_us: int | None = None) -> list[str]:
        """Ids of the sent frauds whose label has arrived by `now_us` (default: the next event's time): event
        time plus the label delay. They leave the backlog."""
        now_us = self.next_time_us() if now_us is None else now_us
        out = []
        while self.pending_labels and self.pending_labels[0][0] + self.label_delay_us <= now_us:
            out.append(self.pending_labels.popleft()[1])
        return out

    @classmethod
    def from_artifacts(cls, artifacts: Path, warm_days: float) -> EventSource:
        from scoring import simulator

        return cls(simulator.read_parquet(artifacts / "data" / "transactions.parquet"), warm_days)

    def take(self, n: int) -> tuple[np.ndarray, np.ndarray]:
        """Row indices and (shifted) event times of the next `n` bench transactions."""
        rows, times = [], []
        left = n
        while left > 0:
            end = min(len(self.time_us), self.cursor + left)
            idx = np.arange(self.cursor, end)
            rows.append(idx)
            times.append(self.time_us[idx] + self.lap * self.lap_span_us)
            left -= end - self.cursor
            self.cursor = end
            if self.cursor >= len(self.time_us):
                self.cursor, self.lap = self.warm_end, self.lap + 1
        return np.concatenate(rows), np.concatenate(times)

    def transactions(self, n: int, prefix: str) -> list[types_pb2.Transaction]:
        """The next `n` transactions, with ids `<prefix><i>` (fresh: the feature service dedups by id)."""
        rows, times = self.take(n)
        out = []
        for i in np.flatnonzero(self.fraud[rows]).tolist():
            self.pending_labels.append((int(times[i]), f"{prefix}{i}"))
        for i, (r, t) in enumerate(zip(rows.tolist(), times.tolist(), strict=True)):
            tx = transaction(i, t, int(self.customer[r]), int(self.terminal[r]), float(self.amount[r]))
            tx.transaction_id = f"{prefix}{i}"
            out.append(tx)
        return out


@dataclass
class Load:
    """A step's requests, built before the clock starts: units of (send offset s, first event, end, message)."""

    mode: str
    prefix: str
    due: list[float]
    units: list[tuple[float, int, int, Any]]


def build_load(source: EventSource, mode: str, rate: float, duration_s: float, prefix: str,
               tick_s: float = 0.001) -> Load:
    if mode not in MODES:
        raise ValueError(f"unknown mode {mode!r}")
    due = schedule(rate, duration_s)
    txs = source.transactions(len(due), prefix)
    units: list[tuple[float, int, int, Any]]
    if mode == "batch":
        units = [(float(due[e - 1]), s, e, gateway_pb2.ScoreBatchRequest(transactions=txs[s:e]))
                 for s, e in tick_groups(due, tick_s)]
    else:
        units = [(float(d), i, i + 1, gateway_pb2.ScoreRequest(transaction=tx))
                 for i, (d, tx) in enumerate(zip(due.tolist(), txs, strict=True))]
    return Load(mode, prefix, due.tolist(), units)


# --------------------------------------------------------------------------------------------------------------
# The load generator.


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


async def _send_on_schedule(
    load: Load, rec: _Recorder, send: Callable[[int], Awaitable[None] | None], max_lag_s: float
) -> None:
    """Sends each unit at its time (send may be sync or async); stops when more than max_lag_s behind."""
    units, t0, result = load.units, rec.t0, rec.r
    burst = 0
    k = 0
    while k < len(units):
        send_at = t0 + units[k][0]
        now = time.perf_counter()
        if now < send_at:
            burst = 0
            await asyncio.sleep(send_at - now)
            continue
        if now - send_at > max_lag_s:
            rec.error(units[k][1], len(load.due), "client:behind")
            break
        result.send_lag_us.record_value(max(1, int((now - send_at) * 1e6)))
        pending = send(k)
        if pending is not None:
            try:
                await pending
            except grpc.aio.AioRpcError as exc:
                rec.call_failed = exc.code().name
                rec.error(units[k][1], len(load.due), f"grpc:{exc.code().name}")
                break
        else:
            burst += 1
            if burst >= 32:  # sync sends (unary) must still let the answers in
                burst = 0
                await asyncio.sleep(0)
        k += 1
    result.messages = k
    result.send_elapsed_s = time.perf_counter() - t0


async def _run_streaming(channel: grpc.aio.Channel, load: Load, rec: _Recorder, max_lag_s: float,
                         drain_s: float, call_timeout_s: float, streams: int = 1) -> None:
    """One bidi call (or `streams` calls on the same channel, messages dealt round-robin)."""
    stub = gateway_pb2_grpc.GatewayStub(channel)
    batch = load.mode == "batch"
    method = stub.ScoreBatchStream if batch else stub.ScoreStream
    calls: list[Any] = [method(timeout=call_timeout_s) for _ in range(max(1, streams))]

    async def reader(call: Any) -> None:
        try:
            while True:
                message = await call.read()
                if message is grpc.aio.EOF:
                    return
                now = time.perf_counter()
                if batch:
                    for response in message.responses:
                        rec.response(response, now)
                else:
                    rec.response(message, now)
        except grpc.aio.AioRpcError as exc:
            rec.call_failed = exc.code().name

    reading = [asyncio.create_task(reader(call)) for call in calls]
    units = load.units
    n_calls = len(calls)

    def send(k: int) -> Awaitable[None]:
        _, start, end, message = units[k]
        rec.on_wire(start, end)
        return calls[k % n_calls].write(message)  # type: ignore[no-any-return]

    await _send_on_schedule(load, rec, send, max_lag_s)
    for call in calls:
        try:
            await call.done_writing()
        except grpc.aio.AioRpcError as exc:
            rec.call_failed = rec.call_failed or exc.code().name
    _, late = await asyncio.wait(reading, timeout=drain_s)
    for task in late:
        task.cancel()
    for call in calls:
        call.cancel()
    await asyncio.gather(*late, return_exceptions=True)


async def _run_unary(channel: grpc.aio.Channel, load: Load, rec: _Recorder, max_lag_s: float, drain_s: float,
                     max_outstanding: int) -> None:
    stub = gateway_pb2_grpc.GatewayStub(channel)
    tasks: set[asyncio.Task[None]] = set()
    units = load.units

    async def one(k: int) -> None:
        _, i, end, message = units[k]
        try:
            response = await stub.Score(message)  # no deadline: the gateway would take it as the event's budget
        except grpc.aio.AioRpcError as exc:
            rec.error(i, end, f"grpc:{exc.code().name}")
            return
        rec.response(response, time.perf_counter())

    def send(k: int) -> None:
        _, i, end, _ = units[k]
        if len(tasks) >= max_outstanding:
            rec.error(i, end, "client:overflow")
            return
        rec.on_wire(i, end)
        task = asyncio.create_task(one(k))
        tasks.add(task)
        task.add_done_callback(tasks.discard)

    await _send_on_schedule(load, rec, send, max_lag_s)
    if tasks:
        _, pending = await asyncio.wait(set(tasks), timeout=drain_s)
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)


async def _run_closed_loop(channel: grpc.aio.Channel, load: Load, rec: _Recorder, max_lag_s: float,
                           drain_s: float) -> None:
    """Unary, one event in flight: each is sent at its time or when the previous answer came, whichever is
    later; the latency still counts from its scheduled time."""
    stub = gateway_pb2_grpc.GatewayStub(channel)
    units = load.units

    async def send(k: int) -> None:
        _, i, end, message = units[k]
        rec.on_wire(i, end)
        sent_at = time.perf_counter()
        try:
            response = await asyncio.wait_for(stub.Score(message), drain_s)
        except grpc.aio.AioRpcError as exc:
            rec.error(i, end, f"grpc:{exc.code().name}")
            return
        except TimeoutError:
            rec.error(i, end, "client:no_answer")
            return
        now = time.perf_counter()
        if not response.HasField("error"):
            rec.r.service_us.record_value(max(1, int((now - sent_at) * 1e6)))
        rec.response(response, now)

    await _send_on_schedule(load, rec, send, max_lag_s)


async def run_step(
    address: str,
    load: Load,
    *,
    name: str,
    rate: float,
    duration_s: float,
    closed_loop: bool = False,
    max_outstanding: int = 512,
    streams: int = 1,
    max_lag_s: float = 2.0,
    drain_s: float = 10.0,
    cpu: CpuMeter | None = None,
    lead_s: float = 0.05,
) -> StepResult:
    """Sends a prepared load to the gateway on its schedule and accounts for every event."""
    result = StepResult(name=name, mode=load.mode, target_rate=rate, duration_s=duration_s, closed_loop=closed_loop,
                        streams=1 if closed_loop or load.mode == "unary" else max(1, streams))
    async with grpc.aio.insecure_channel(address, options=CHANNEL_OPTIONS) as channel:
        await asyncio.wait_for(channel.channel_ready(), 10.0)
        gc.collect()
        gc.disable()  # no collector pauses inside the measurement (everything big was built beforehand)
        if cpu is not None:
            cpu.start()
        t0 = time.perf_counter() + lead_s
        rec = _Recorder(result, load, t0)
        try:
            if closed_loop:
                await _run_closed_loop(channel, load, rec, max_lag_s, drain_s)
            elif load.mode == "unary":
                await _run_unary(channel, load, rec, max_lag_s, drain_s, max_outstanding)
            else:
                await _run_streaming(channel, load, rec, max_lag_s, drain_s, duration_s + max_lag_s + drain_s + 30,
                                     streams)
        finally:
            gc.enable()
        # Until the last answer: the step's throughput window (the drain after it does not count).
        result.elapsed_s = (rec.last_answer if rec.last_answer > t0 else time.perf_counter()) - t0
        if cpu is not None:
            result.cpu = cpu.stop()
        rec.finish()
    return result


# --------------------------------------------------------------------------------------------------------------
# Warming Redis: the first days folded straight through the feature service, with their delayed labels.


@dataclass
class WarmUp:
    events: int = 0
    labels_sent: int = 0
    labels_accepted: int = 0
    seconds: float = 0.0
    batch: int = 0
    features: np.ndarray | None = None  # a sample of real feature rows, for the Triton ceiling
    sequences: np.ndarray | None = None

    @property
    def events_per_s(self) -> float:
        return self.events / self.seconds if self.seconds else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {"events": self.events, "labels_sent": self.labels_sent, "labels_accepted": self.labels_accepted,
                "seconds": round(self.seconds, 2), "events_per_s": round(self.events_per_s, 1), "batch": self.batch}


async def warm_features(address: str, source: EventSource, id_prefix: str, *, batch: int = 250,
                        concurrency: int = 2, timeout_s: float = 60.0) -> WarmUp:
    """Folds every transaction before `source.warm_end` into Redis via UpdateAndGet, in order, `concurrency`
    batches at a time; then reports the fraud labels that would have arrived by then (7 days later)."""
    n = source.warm_end
    out = WarmUp(batch=batch)
    started = time.perf_counter()
    starts = iter(range(0, n, batch))
    async with grpc.aio.insecure_channel(address, options=CHANNEL_OPTIONS) as channel:
        stub = features_pb2_grpc.FeatureServiceStub(channel)

        async def worker() -> None:
            for s in starts:
                e = min(s + batch, n)
                request = features_pb2.FeatureRequest(
                    transaction_id=[f"{id_prefix}{t}" for t in source.row_id[s:e].tolist()],
                    event_time_us=source.time_us[s:e].tolist(),
                    customer_id=[f"C{c}" for c in source.customer[s:e].tolist()],
                    terminal_id=[f"T{t}" for t in source.terminal[s:e].tolist()],
                    amount=source.amount[s:e].tolist(),
                )
                reply = await stub.UpdateAndGet(request, timeout=timeout_s)
                out.events += e - s
                if e == n or out.features is None:
                    out.features = np.frombuffer(reply.features, "<f4").reshape(reply.rows, -1)
                    out.sequences = np.frombuffer(reply.sequences, "<f4").reshape(
                        reply.rows, SEQ_LEN, len(SEQ_FEATURE_NAMES))

        await asyncio.gather(*(worker() for _ in range(concurrency)))
        known = source.time_us[:n] + LABEL_DELAY_DAYS * US_PER_DAY <= source.warm_end_us
        frauds = source.row_id[:n][source.fraud[:n] & known]
        # The rest arrive during the bench, when event time gets there.
        later = np.flatnonzero(source.fraud[:n] & ~known)
        source.pending_labels.extendleft(
            reversed([(int(source.time_us[i]), f"{id_prefix}{source.row_id[i]}") for i in later.tolist()]))
        for s in range(0, len(frauds), 1000):
            labels = [types_pb2.LabelReport(transaction_id=f"{id_prefix}{t}", fraud=True)
                      for t in frauds[s:s + 1000].tolist()]
            ack = await stub.ReportLabels(features_pb2.LabelBatch(labels=labels), timeout=timeout_s)
            out.labels_sent += len(labels)
            out.labels_accepted += ack.accepted
    out.seconds = time.perf_counter() - started
    return out


@dataclass
class LabelCount:
    sent: int = 0
    accepted: int = 0


async def report_due_labels(gateway: str, source: EventSource, count: LabelCount, now_us: int | None = None,
                            timeout_s: float = 30.0) -> None:
    """Reports, through the gateway's public ReportLabels, the fraud labels of sent events that have arrived by the
    next event's time, so the terminal-risk features stay as fresh as in production (between steps, untimed)."""
    ids = source.due_labels(now_us)
    if not ids:
        return
    async with grpc.aio.insecure_channel(gateway, options=CHANNEL_OPTIONS) as channel:
        stub = gateway_pb2_grpc.GatewayStub(channel)
        for s in range(0, len(ids), 1000):
            labels = [types_pb2.LabelReport(transaction_id=t, fraud=True) for t in ids[s:s + 1000]]
            reply = await stub.ReportLabels(gateway_pb2.ReportLabelsRequest(labels=labels), timeout=timeout_s)
            count.sent += len(labels)
            count.accepted += reply.accepted


# --------------------------------------------------------------------------------------------------------------
# CPU per process (and what the rest of the machine used), from /proc.


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


# --------------------------------------------------------------------------------------------------------------
# Ceilings: a gRPC echo through the same stack, Redis alone, Triton alone.


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
    """The same load generator against a do-nothing Gateway (scoring.bench_echo) in a child process: closed-loop
    unary latency, then per mode a rising rate ladder until a step fails (p99 and throughput criteria only)."""
    from scoring.launcher import Child, free_port, grpc_serving

    criteria = criteria or Criteria(min_ensemble_share=0.0)
    port = free_port()
    child = Child("bench_echo", [sys.executable, "-m", "scoring.bench_echo", "--port", str(port)],
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


# --------------------------------------------------------------------------------------------------------------
# The stack, the run, the reports.


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


async def saturated_throughput(gateway: str, source: EventSource, prefix: str, *, seconds: float = 8.0,
                               batch: int = 200, window: int = 16) -> dict[str, Any]:
    """Closed loop on ScoreBatchStream: `window` batches of `batch` events always outstanding; the events answered
    per second (scored, degraded or not; errors counted apart) is the stack's throughput at saturation."""
    n_messages = max(window * 4, int(seconds * 40_000 / batch))  # more than any rate this machine reaches
    load = build_load(source, "batch", rate=batch * 100.0, duration_s=n_messages / 100.0, prefix=prefix, tick_s=0.01)
    messages = [unit[3] for unit in load.units]
    answered = errors = 0
    room = asyncio.Semaphore(window)
    stop_at = 0.0

    async with grpc.aio.insecure_channel(gateway, options=CHANNEL_OPTIONS) as channel:
        call = gateway_pb2_grpc.GatewayStub(channel).ScoreBatchStream(timeout=seconds + 60)
        started = time.perf_counter()
        stop_at = started + seconds

        async def write() -> None:
            for message in messages:
                await room.acquire()
                if time.perf_counter() >= stop_at:
                    break
                await call.write(message)
            await call.done_writing()

        writer = asyncio.create_task(write())
        last = started
        while True:
            reply = await call.read()
            if reply is grpc.aio.EOF:
                break
            last = time.perf_counter()
            if last <= stop_at:
                for response in reply.responses:
                    if response.HasField("error") and response.error.code:
                        errors += 1
                    else:
                        answered += 1
            room.release()
        await writer
    elapsed = min(last, stop_at) - started
    return {"seconds": round(elapsed, 2), "batch": batch, "window": window, "answered": answered,
            "errors": errors, "events_per_s": round(answered / elapsed, 1) if elapsed > 0 else 0.0}


async def saturated_replay(gateway: str, source: EventSource, prefix: str, events: int = 50_000,
                           batch: int = 500, redis_url: str | None = None) -> dict[str, Any]:
    """A client replaying history as fast as the gateway takes it, at the stack's own budget: on ScoreStream (one
    event a message) and on ScoreBatchStream (batches of `batch`). Admission sets the pace; what counts is the
    answered rate and the share of full answers (target: 99%, 0 errors)."""
    out: dict[str, Any] = {"events": events, "batch_size": batch}
    for mode in ("stream", "batch"):
        transactions = source.transactions(events, f"{prefix}{mode}-")
        redis_before = await redis_account(redis_url) if redis_url else None
        if mode == "stream":
            got = await replay_stream(gateway, transactions, 0, timeout_s=900)
        else:
            got = await replay_batches(gateway, transactions, batch, timeout_s=900)
        out[mode] = {
            "answered": got.answered, "lost": got.sent - got.answered, "duplicates": got.duplicates,
            "seconds": round(got.elapsed_s, 2), "events_per_s": round(got.answered / max(got.elapsed_s, 1e-9), 1),
            "answers": {k: got.kinds[k] for k in ANSWER_KINDS},
            "full_share": round(got.kinds["full"] / max(got.answered, 1), 5),
            "errors": sum(got.errors.values()),
        }
        if redis_before is not None and redis_url:
            cpu_after, _ = await redis_account(redis_url)
            out[mode]["redis_cpu_us_per_event"] = round(1e6 * (cpu_after - redis_before[0]) / max(got.answered, 1), 1)
        await asyncio.sleep(1.0)
    return out


def format_saturated_replay(sat: dict[str, Any]) -> list[str]:
    lines = []
    for mode, rpc in (("stream", "ScoreStream, one event a message"),
                      ("batch", f"ScoreBatchStream, {sat['batch_size']} a message")):
        m = sat[mode]
        lines.append(f"Saturated replay of {sat['events']:,} events on {rpc}, as fast as the gateway takes them: "
                     f"{m['events_per_s']:,.0f} events/s, full answers {m['full_share']:.2%} (target 99%), "
                     f"fallbacks f/e/u/l {_fallbacks(m['answers'])}, errors {m['errors']:,}, lost {m['lost']:,}, "
                     f"answered twice {m['duplicates']:,}"
                     + (f"; Redis {m['redis_cpu_us_per_event']:.1f} us of CPU per event (INFO cpu)."
                        if "redis_cpu_us_per_event" in m else "."))
    return lines


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


def machine_info() -> dict[str, Any]:
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem_gib = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem_gib = round(int(line.split()[1]) / 1024 / 1024, 1)
    except OSError:
        pass
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count() or 0
    return {"cores": os.cpu_count(), "usable_cores": usable, "cpu_model": model, "memory_gib": mem_gib,
            "python": sys.version.split()[0], "grpcio": grpc.__version__}


def git_info(cwd: Path | None = None) -> dict[str, Any]:
    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, check=True).stdout.strip()

    try:
        sha = git("rev-parse", "--short", "HEAD")
        changed = [line for line in git("status", "--porcelain").splitlines() if line.strip()]
    except (OSError, subprocess.CalledProcessError):
        return {"commit": "unknown", "dirty": None, "changed_files": None}
    return {"commit": sha, "dirty": bool(changed), "changed_files": len(changed)}


def _fmt(x: float | None, spec: str = ".2f") -> str:
    return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else format(x, spec)


TABLE_HEADER = ("step", "mode", "target/s", "sent/s", "answered/s", "p50", "p90", "p99", "p99.9", "max",
                "filter", "ensemble", "full", "fallbacks f/e/u/l", "degraded", "errors", "pass")


def _fallbacks(answers: dict[str, int]) -> str:
    """filter only / filter on the event's fields / ensemble unfiltered / last resort."""
    return "/".join(f"{answers.get(k, 0):,}" for k in ANSWER_KINDS[1:5])


def table_rows(steps: Sequence[dict[str, Any]]) -> list[tuple[str, ...]]:
    rows = []
    for s in steps:
        lat = s["latency_ms"]
        share = s["stage_share"]
        errors = s["error_count"]
        rows.append((
            s["name"], s["mode"] + (" (closed)" if s["closed_loop"] else ""), f"{s['target_rate']:,.0f}",
            f"{s['sent_per_s']:,.0f}", f"{s['answered_per_s']:,.0f}",
            *(_fmt(lat[k]) for k in ("p50", "p90", "p99", "p99.9", "max")),
            f"{share.get('filter', 0):.1%}", f"{share.get('ensemble', 0):.1%}",
            f"{s.get('answers', {}).get('full', 0):,}", _fallbacks(s.get("answers", {})),
            f"{sum(s['degraded'].values()):,}", f"{errors:,}",
            "-" if s["passed"] is None else ("yes" if s["passed"] else "no"),
        ))
    return rows


def format_table(steps: Sequence[dict[str, Any]]) -> str:
    rows = [TABLE_HEADER, *table_rows(steps)]
    widths = [max(len(r[i]) for r in rows) for i in range(len(TABLE_HEADER))]
    lines = []
    for n, row in enumerate(rows):
        lines.append("  ".join(c.ljust(w) if i < 2 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths,
                                                                                                   strict=True))))
        if n == 0:
            lines.append("  ".join("-" * w for w in widths))
    lines.append("latency in ms from each event's scheduled send time; filter/ensemble: share of answered events; "
                 "full: every stage in time; fallbacks: filter only / filter on the event's fields / ensemble "
                 "without the filter / the gateway's last resort")
    return "\n".join(lines)


def format_ceilings(ceilings: dict[str, Any]) -> str:
    lines = []
    echo = ceilings.get("echo")
    if echo:
        single = echo["steps"][0]["latency_ms"]
        lines.append(f"gRPC echo (Python grpc.aio, child process): unary 1-in-flight p50 {_fmt(single['p50'])} ms "
                     f"p99 {_fmt(single['p99'])} ms; highest rate passing (p99 <= 10 ms, >= 95% answered) over "
                     f"{', '.join(f'{r:g}' for r in echo['rates'])}/s: "
                     + ", ".join(f"{m} {_fmt(echo.get(f'{m}_highest_passing_rate'), ',.0f')}" for m in MODES))
        for s in echo["steps"][1:]:
            lines.append(f"    {s['name']:<20} answered {s['answered_per_s']:>9,.0f}/s"
                         f"  p50 {_fmt(s['latency_ms']['p50'])}  p99 {_fmt(s['latency_ms']['p99'])} ms"
                         f"  errors {s['error_count']:,}")
    red = ceilings.get("redis")
    if red:
        p, q = red["ping"], red["pipeline"]
        lines.append(f"Redis PING (redis.asyncio): p50 {_fmt(p['p50_ms'], '.3f')} ms "
                     f"p99 {_fmt(p['p99_ms'], '.3f')} ms, "
                     f"{p['calls_per_s']:,.0f}/s one at a time; pipeline of {q['commands_per_round_trip']}: "
                     f"p50 {_fmt(q['p50_ms'])} ms p99 {_fmt(q['p99_ms'])} ms, {q['commands_per_s']:,.0f} commands/s")
    warm = ceilings.get("feature_fold")
    if warm:
        lines.append(f"Feature fold (UpdateAndGet, batches of {warm['batch']}, the warm-up): "
                     f"{warm['events_per_s']:,.0f} events/s")
    for tri in (ceilings.get("triton"), ceilings.get("triton_scheduled")):
        if not tri:
            continue
        parts = []
        for key, v in tri.items():
            if key.startswith("batch_"):
                rows, _, callers = key.removeprefix("batch_").partition("_x")
                shape = f"{rows} rows x{callers} callers" if callers else f"{rows} rows"
                extra = (f", {v['rows_per_s']:,.0f} rows/s" if "rows_per_s" in v
                         else f", {v['calls_per_s']:,.0f} calls/s")
                parts.append(f"{shape}: p50 {_fmt(v['p50_ms'])} p99 {_fmt(v['p99_ms'])} ms" + extra)
        lines.append(f"Triton {tri['model']} alone (tritonclient.grpc.aio): " + "; ".join(parts))
    return "\n".join(lines)


def format_cpu(steps: Sequence[dict[str, Any]]) -> str:
    names = ["bench", "gateway", "feature_service", "filter_model", "triton", "redis", "others", "machine"]
    rows = [("step", *names, "stack us/event")]
    for s in steps:
        cpu = s.get("cpu_percent") or {}
        if cpu:
            # CPU time of the stack's processes (not the generator, not others) per answered event.
            stack = sum(cpu.get(n, 0.0) for n in names[1:6])
            per_event = stack / 100 * 1e6 / s["answered_per_s"] if s["answered_per_s"] else None
            rows.append((s["name"], *(_fmt(cpu.get(n), ".0f") for n in names), _fmt(per_event, ",.0f")))
    if len(rows) == 1:
        return ""
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    out = ["  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths, strict=True)))
           for r in rows]
    out.insert(1, "  ".join("-" * w for w in widths))
    out.append("percent of one core per process tree; 'bench' is the load generator, 'others' the rest of the machine;"
               " 'stack us/event': CPU microseconds of gateway, feature service, filter, Triton and Redis per answered"
               " event")
    return "\n".join(out)


def render_markdown(result: dict[str, Any]) -> str:
    m, g, st = result["machine"], result["git"], result["settings"]
    thr = st.get("filter_threshold") or {}
    lines = [
        "# Benchmarks",
        "",
        f"Written by `{result['command']}` on {result['date']} (commit `{g['commit']}`"
        + (f", working tree dirty: {g['changed_files']} changed files" if g.get("dirty") else ", clean tree") + ").",
        "",
        f"Machine: {m['cores']} cores ({m['usable_cores']} usable), {m['cpu_model'] or 'unknown CPU'}, "
        f"{m['memory_gib']} GiB; Python {m['python']}, grpcio {m['grpcio']}. Load average at start "
        f"{', '.join(f'{x:.2f}' for x in result['loadavg_start'])}; the load generator, the five services, Redis and "
        "Triton all share these cores.",
    ]
    contention = result.get("contention")
    if contention:
        lines += ["", f"Other processes on the machine used {contention['others_mean_percent']:.0f}% of one core on "
                      f"average during the measured steps (max {contention['others_max_percent']:.0f}%)"
                      + (": **figures taken under contention**." if contention["contended"] else ".")]
    lines += [
        "",
        "## Setup",
        "",
        f"- Gateway budget {st['budget_ms']:g} ms. Open loop: latency counts from each event's scheduled send time; "
        f"{st['duration_s']:g} s per step, sender ticks of {st['tick_ms']:g} ms; unary at most "
        f"{st['max_outstanding']} calls in flight; stream and batch over {st.get('streams', 1)} bidi call(s).",
        f"- Redis warmed with the first {st['warm_up']['days']:g} days of simulated transactions "
        f"({st['warm_up']['events']:,} events, {st['warm_up']['labels_accepted']:,} fraud labels) through the feature "
        f"service in {st['warm_up']['seconds']:.1f} s; the bench sends later transactions with fresh ids (the "
        f"steps covered {st.get('event_days', 0):g} further days of event time) and reports their fraud labels "
        f"through ReportLabels once they are due, 7 days of event time later, between steps "
        f"({st.get('labels_during_bench', {}).get('accepted', 0):,} labels).",
    ]
    if thr:
        lines.append(
            f"- Filter threshold {thr['threshold']:.6g}: the highest on the training report's validation curve with a "
            f"pass rate >= {thr['min_pass_rate']:.0%} (curve: {thr['pass_rate']:.2%} passed, "
            f"{thr['retention']:.1%} of the ensemble's frauds kept). The ensemble share in the table is measured.")
    crit = st["criteria"]
    lines += [
        f"- A step passes with p99 <= {crit['p99_ms']:g} ms, ensemble share >= {crit['min_ensemble_share']:.0%}, "
        f"errors <= {crit['max_error_share']:.1%} of sent, degraded <= {crit['max_degraded_share']:.0%} of answered, "
        f"answered >= {crit['min_answered_ratio']:.0%} of the target rate.",
        "",
        "## Results",
        "",
    ]
    rows = [TABLE_HEADER, *table_rows(result["steps"])]
    lines.append("| " + " | ".join(rows[0]) + " |")
    lines.append("|" + "|".join("---" if i < 2 else "---:" for i in range(len(rows[0]))) + "|")
    lines += ["| " + " | ".join(r) + " |" for r in rows[1:]]
    lines += ["", "Latency in ms. filter/ensemble: share of answered events decided by that stage. full: answered by "
              "every stage in time; fallbacks: filter only / filter on the event's own fields / ensemble without "
              "the filter / the gateway's in-process last resort."]
    summary = result.get("summary") or []
    if summary:
        lines += ["", *[f"- {s}" for s in summary]]
    failing = [s for s in result["steps"] if s["passed"] is False]
    if failing:
        lines += ["", "Why steps failed:", ""]
        lines += [f"- {s['name']}: {'; '.join(s['fail_reasons'])}" for s in failing]
    errors = Counter[str]()
    for s in result["steps"]:
        errors.update(s["errors"])
    degraded = Counter[str]()
    for s in result["steps"]:
        degraded.update(s["degraded"])
    if errors:
        lines += ["", "Errors over all steps, by kind: " + ", ".join(f"`{k}` {v:,}" for k, v in sorted(errors.items()))]
    if degraded:
        lines += ["", "Degraded answers over all steps, by reason: "
                  + ", ".join(f"`{k}` {v:,}" for k, v in sorted(degraded.items()))]
    tr = result.get("tracing")
    if tr:
        lines += ["", "## Tracing overhead", "",
                  "Saturated `ScoreBatchStream` (closed loop, 16 batches of 200 events outstanding, budget 1 s, "
                  f"{tr['seconds']:g} s a run, {tr['rounds']} off/on pairs in ABBA order; the services restarted "
                  f"with and without `OTEL_SDK_DISABLED=true`). Sampling: `{tr['sampler']}`.", "",
                  "| tracing | runs (events/s) | mean events/s |", "|---|---|---:|",
                  f"| off | {', '.join(f'{x:,.0f}' for x in tr['off'])} | {tr['off_mean']:,.0f} |",
                  f"| on | {', '.join(f'{x:,.0f}' for x in tr['on'])} | {tr['on_mean']:,.0f} |", "",
                  f"Difference {tr['difference']:+.1%} (target: within 10%, "
                  f"{'met' if tr['within_10_percent'] else 'missed'})."]
    if result.get("ceilings"):
        lines += ["", "## Raw ceilings (same machine, same run)", "", "```", format_ceilings(result["ceilings"]), "```"]
    cpu = format_cpu(result["steps"])
    if cpu:
        lines += ["", "## CPU per process during each step", "", "```", cpu, "```"]
    json_name = result.get("json_name", "benchmarks.json")
    lines += ["", f"Raw figures, with every step's full HDR latency histogram: `{json_name}`.", ""]
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------------------------
# Entry point.


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


async def _sweep(address: str, source: EventSource, config: BenchConfig, mode: str, rates: Sequence[float],
                 run_tag: str, first: int, cpu: CpuMeter | None, stop_early: bool,
                 labels: LabelCount) -> list[StepResult]:
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

    async def body(gateway: str, features: str | None, stack: Any) -> None:
        cpu = None
        if stack is not None:
            cpu = CpuMeter(lambda: {name: child.pid for name, child in stack.children.items() if child.pid})
        warm = WarmUp()
        if features:
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
        else:
            plan = [(config.mode or "batch", list(config.rates or STANDARD_RATES))]
        first = 1
        for mode, rates in plan:
            print(f"sweep {mode}: {', '.join(f'{r:g}' for r in rates)} events/s, {config.duration_s:g} s each ...",
                  flush=True)
            swept = await _sweep(gateway, source, config, mode, rates, run_tag, first, cpu, config.standard, labels)
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

        if config.standard:
            print("saturated replay: 50,000 events on ScoreStream, then on ScoreBatchStream in 500s, as fast as the "
                  "gateway takes them ...", flush=True)
            await report_due_labels(gateway, source, labels)
            sat = await saturated_replay(gateway, source, f"{run_tag}sat",
                                         redis_url=stack.redis_url if stack is not None else None)
            result["saturated_replay"] = sat
            summary.extend(format_saturated_replay(sat))
            for line in format_saturated_replay(sat):
                print(f"  {line}", flush=True)

        if config.standard and stack is not None and stack.tracing:
            print("tracing overhead: saturated ScoreBatchStream, tracing off and at the default sampling ...",
                  flush=True)
            tr = await tracing_overhead(stack, source, run_tag)
            result["tracing"] = tr
            summary.append(f"Tracing overhead ({tr['sampler']}): saturated ScoreBatchStream throughput "
                           f"{tr['on_mean']:,.0f} events/s traced against {tr['off_mean']:,.0f} untraced "
                           f"({tr['difference']:+.1%}; target within 10%: "
                           f"{'met' if tr['within_10_percent'] else 'missed'}).")

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
            await body(stack.gateway_address, stack.addresses["feature_service"], stack)
    result["steps"] = [s.to_dict() for s in steps]
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


def write_outputs(result: dict[str, Any], json_path: Path | None, markdown_path: Path | None) -> None:
    if json_path is not None:
        json_path.parent.mkdir(parents=True, exist_ok=True)
        json_path.write_text(json.dumps(result, indent=1, default=str) + "\n")
        result["json_name"] = json_path.name
    if markdown_path is not None:
        markdown_path.parent.mkdir(parents=True, exist_ok=True)
        markdown_path.write_text(render_markdown(result))


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
