"""Micro-batching of concurrent events into one downstream call per stage.

Greedy: an idle gateway sends a lone event at once; while a batch is at the feature stage, new events queue and
the next batch takes all of them (up to `max_batch`) as soon as that stage is over, after at most
`batch_wait_us` to let a burst gather. The feature service folds one batch at a time (in arrival order), so
sending it several small batches at once only queues them there; one batch at the feature stage and up to
`max_inflight_batches` in the later stages makes batches grow with the load instead of the queue. The queue is
bounded: past `max_queued` a submit fails with `Overloaded` at once, so memory cannot grow without bound.

A queued item is one event (`submit`: a future per event) or a group of them (`submit_group`: a columnar batch,
one future for all, its outcome as arrays), so a columnar client costs no Python object per event. A group is
never split across micro-batches; `submit_group` cuts it into groups of at most `max_batch` events.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from opentelemetry import trace
from opentelemetry.trace import Span

from scoring.scenarios.fraud.events import EventBatch
from scoring.scenarios.fraud.validation import Event
from services.gateway import metrics as M
from services.gateway import tracing
from services.gateway.admission import AdmissionLimit
from services.gateway.cascade import BatchOutcome, Cascade, StageShares

log = logging.getLogger(__name__)


class Overloaded(Exception):
    """The gateway's queue is full."""


@dataclass(frozen=True, slots=True)
class Outcome:
    score: float
    filter_score: float
    stage: int
    degraded_reason: str
    model_version: str
    error: str
    # Multi-class scenarios: the class probabilities and the class given (-1: none).
    probs: tuple[float, ...] = ()
    signal: int = -1
    release: str = ""


@dataclass(slots=True)
class _Pending:
    event: Event
    deadline: float
    budget: float  # the event's whole budget (deadline - arrival): the stages' shares are of this
    future: asyncio.Future[Outcome]
    span: Span  # the event's span (non-recording unless sampled)

    @property
    def size(self) -> int:
        return 1


@dataclass(slots=True)
class _Group:
    batch: EventBatch
    deadline: float
    budget: float
    future: asyncio.Future[BatchOutcome]
    span: Span

    @property
    def size(self) -> int:
        return len(self.batch)


def slice_outcome(outcome: BatchOutcome, lo: int, hi: int) -> BatchOutcome:
    return BatchOutcome(
        score=outcome.score[lo:hi],
        filter_score=outcome.filter_score[lo:hi],
        stage=outcome.stage[lo:hi],
        degraded_reason=outcome.degraded_reason[lo:hi],
        model_version=outcome.model_version[lo:hi],
        error=outcome.error[lo:hi],
        timings=outcome.timings,
        probs=None if outcome.probs is None else outcome.probs[lo:hi],
        signal=None if outcome.signal is None else outcome.signal[lo:hi],
        release=outcome.release[lo:hi],
    )


def concat_outcomes(parts: list[BatchOutcome]) -> BatchOutcome:
    if len(parts) == 1:
        return parts[0]
    return BatchOutcome(
        score=np.concatenate([p.score for p in parts]),
        filter_score=np.concatenate([p.filter_score for p in parts]),
        stage=np.concatenate([p.stage for p in parts]),
        degraded_reason=[r for p in parts for r in p.degraded_reason],
        model_version=[v for p in parts for v in p.model_version],
        error=[e for p in parts for e in p.error],
        timings=parts[0].timings,
        probs=None if parts[0].probs is None else np.concatenate([p.probs for p in parts]),  # type: ignore[misc]
        signal=None if parts[0].signal is None else np.concatenate([p.signal for p in parts]),  # type: ignore[misc]
        release=[r for p in parts for r in p.release],
    )


def _concat(items: list[_Pending | _Group]) -> EventBatch:
    if len(items) == 1 and isinstance(items[0], _Group):
        return items[0].batch
    ids: list[str] = []
    customers: list[str] = []
    terminals: list[str] = []
    times: list[np.ndarray] = []
    amounts: list[np.ndarray] = []
    singles: list[Event] = []

    def flush_singles() -> None:
        if singles:
            times.append(np.fromiter((e.event_time_us for e in singles), np.int64, len(singles)))
            amounts.append(np.fromiter((e.amount for e in singles), np.float64, len(singles)))
            singles.clear()

    for item in items:
        if isinstance(item, _Pending):
            e = item.event
            ids.append(e.transaction_id)
            customers.append(e.customer_id)
            terminals.append(e.terminal_id)
            singles.append(e)
        else:
            flush_singles()
            b = item.batch
            ids += b.transaction_id
            customers += b.customer_id
            terminals += b.terminal_id
            times.append(b.event_time_us)
            amounts.append(b.amount)
    flush_singles()
    return EventBatch(
        transaction_id=ids,
        event_time_us=np.concatenate(times),
        customer_id=customers,
        terminal_id=terminals,
        amount=np.concatenate(amounts),
    )


class MicroBatcher:
    def __init__(
        self,
        cascade: Cascade,
        *,
        max_batch: int,
        batch_wait_us: int,
        max_inflight_batches: int,
        max_queued: int,
        features_inflight_batches: int = 1,
        admission: AdmissionLimit | None = None,
        concat: Callable[[list[Any]], Any] | None = None,
        scenario: str = "default",
    ) -> None:
        self.cascade = cascade
        # Builds a micro-batch from queued items: fraud's columns by default; another scenario's batch type
        # (events of one scenario per batcher) otherwise.
        self._concat = _concat if concat is None else concat
        # Told how late each answered batch was, so that it admits what can be served in time.
        self.admission = admission
        self.max_batch = max_batch
        self.batch_wait_s = batch_wait_us / 1e6
        self.max_queued = max_queued
        self._queue: deque[_Pending | _Group] = deque()
        self._queued_events = 0
        self._wakeup = asyncio.Event()
        self._slots = asyncio.Semaphore(max_inflight_batches)
        self._feature_slots = asyncio.Semaphore(max(1, min(features_inflight_batches, max_inflight_batches)))
        self._inflight = 0
        self._tasks: set[asyncio.Task[None]] = set()
        self._runner: asyncio.Task[None] | None = None
        M.INFLIGHT_BATCHES.labels(scenario).set_function(lambda: self._inflight)
        M.QUEUED_EVENTS.labels(scenario).set_function(lambda: self._queued_events)

    def start(self) -> None:
        self._runner = asyncio.create_task(self._run(), name="micro-batcher")

    async def stop(self) -> None:
        if self._runner is not None:
            self._runner.cancel()
        for task in list(self._tasks):
            await asyncio.gather(task, return_exceptions=True)

    @property
    def queued(self) -> int:
        return self._queued_events

    def submit(self, event: Event, deadline: float) -> asyncio.Future[Outcome]:
        if self._queued_events >= self.max_queued:
            raise Overloaded(f"{self._queued_events} events queued")
        future: asyncio.Future[Outcome] = asyncio.get_running_loop().create_future()
        span = tracing.submitting()  # the event's span, handed over by the server (tracing.submit)
        self._queue.append(_Pending(event, deadline, deadline - time.monotonic(), future, span))
        self._queued_events += 1
        self._wakeup.set()
        return future

    def submit_group(self, batch: EventBatch, deadline: float, span: Span) -> list[asyncio.Future[BatchOutcome]]:
        """A columnar batch, in groups of at most max_batch events: one future per group, in order."""
        if self._queued_events + len(batch) > self.max_queued and self._queued_events:
            raise Overloaded(f"{self._queued_events} events queued")
        loop = asyncio.get_running_loop()
        budget = deadline - time.monotonic()
        futures: list[asyncio.Future[BatchOutcome]] = []
        for lo in range(0, len(batch), self.max_batch):
            hi = min(len(batch), lo + self.max_batch)
            part = batch if (lo, hi) == (0, len(batch)) else EventBatch(
                batch.transaction_id[lo:hi], batch.event_time_us[lo:hi], batch.customer_id[lo:hi],
                batch.terminal_id[lo:hi], batch.amount[lo:hi])
            future: asyncio.Future[BatchOutcome] = loop.create_future()
            self._queue.append(_Group(part, deadline, budget, future, span))
            futures.append(future)
        self._queued_events += len(batch)
        self._wakeup.set()
        return futures

    async def _run(self) -> None:
        while True:
            await self._wakeup.wait()
            if not self._queue:
                self._wakeup.clear()
                continue
            await self._slots.acquire()
            await self._feature_slots.acquire()
            if self._inflight > 0 and self._queued_events < self.max_batch and self.batch_wait_s > 0:
                await asyncio.sleep(self.batch_wait_s)
            # Whole items up to max_batch events (at least one item: a group is at most max_batch itself).
            batch: list[_Pending | _Group] = []
            taken = 0
            while self._queue and (not batch or taken + self._queue[0].size <= self.max_batch):
                item = self._queue.popleft()
                batch.append(item)
                taken += item.size
            self._queued_events -= taken
            if not self._queue:
                self._wakeup.clear()
            self._inflight += 1
            task = asyncio.create_task(self._process(batch))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _process(self, pending: list[_Pending | _Group]) -> None:
        released = False

        def features_done() -> None:
            nonlocal released
            if not released:
                released = True
                self._feature_slots.release()

        try:
            live = [p for p in pending if not p.future.done()]
            if live:
                batch = self._concat(live)
                urgent = min(live, key=lambda p: p.deadline)
                started = time.monotonic()
                batch_span = tracing.batch_span([p.span for p in live], len(batch))
                # Downstream calls take their parent from here: the batch's span when an event of it is sampled,
                # else the first event's unsampled span, so that the stages follow its "not sampled" decision.
                parent = batch_span if batch_span is not None else live[0].span
                if not parent.get_span_context().is_valid:
                    parent = tracing.unsampled_parent()
                try:
                    with trace.use_span(parent, end_on_exit=False):
                        outcome = await self.cascade.score(batch, urgent.deadline, urgent.budget, features_done)
                except Exception as exc:  # a bug must not leave events unanswered
                    log.exception("cascade failed")
                    outcome = self.cascade.last_resort_outcome(batch, f"internal_{type(exc).__name__}")
                arrival = np.repeat([p.deadline - p.budget for p in live], [p.size for p in live])
                budget = np.repeat([p.budget for p in live], [p.size for p in live])
                _count(outcome, arrival)
                releases = getattr(self.cascade, "releases", None)
                if releases is not None:
                    releases.observe(outcome, time.monotonic() - arrival)
                if self.admission is not None:
                    _observe(self.admission, outcome, arrival, budget, self.cascade.shares, urgent.budget)
                if batch_span is not None:
                    _trace(outcome, live, started)
                    batch_span.end()
                _answer(outcome, live)
        finally:
            features_done()
            self._inflight -= 1
            self._slots.release()


def outcome_at(outcome: BatchOutcome, i: int) -> Outcome:
    release = outcome.release[i] if outcome.release else ""
    if outcome.probs is not None and outcome.signal is not None:
        return Outcome(
            score=float(outcome.score[i]),
            filter_score=float(outcome.filter_score[i]),
            stage=int(outcome.stage[i]),
            degraded_reason=outcome.degraded_reason[i],
            model_version=outcome.model_version[i],
            error=outcome.error[i],
            probs=tuple(outcome.probs[i].tolist()),
            signal=int(outcome.signal[i]),
            release=release,
        )
    return Outcome(
        score=float(outcome.score[i]),
        filter_score=float(outcome.filter_score[i]),
        stage=int(outcome.stage[i]),
        degraded_reason=outcome.degraded_reason[i],
        model_version=outcome.model_version[i],
        error=outcome.error[i],
        release=release,
    )


def _answer(outcome: BatchOutcome, live: list[_Pending | _Group]) -> None:
    i = 0
    for p in live:
        if isinstance(p, _Pending):
            if not p.future.done():
                p.future.set_result(outcome_at(outcome, i))
            i += 1
        else:
            if not p.future.done():
                p.future.set_result(slice_outcome(outcome, i, i + p.size))
            i += p.size


def _count(outcome: BatchOutcome, arrival: np.ndarray) -> None:
    """The batch's metrics, one update per distinct label rather than per event (this runs on the hot path)."""
    now = time.monotonic()
    M.BATCH_SIZE.observe(len(arrival))
    for latency in (now - arrival).tolist():
        M.EVENT_LATENCY.observe(latency)
    errors = sum(1 for e in outcome.error if e)
    if errors:
        M.ERRORS.labels("UNAVAILABLE").inc(errors)
    scored = [i for i, e in enumerate(outcome.error) if not e]
    for stage, n in Counter(int(outcome.stage[i]) for i in scored).items():
        M.EVENTS.labels(M.STAGE_NAMES.get(stage, "none")).inc(n)
    for reason, n in Counter(outcome.degraded_reason[i] for i in scored if outcome.degraded_reason[i]).items():
        M.DEGRADED.labels(reason).inc(n)
    if outcome.release:
        for (release, stage), n in Counter((outcome.release[i], int(outcome.stage[i])) for i in scored).items():
            M.RELEASE_EVENTS.labels(release, M.STAGE_NAMES.get(stage, "none")).inc(n)
        for release, n in Counter(outcome.release[i] for i in scored if outcome.degraded_reason[i]).items():
            M.RELEASE_DEGRADED.labels(release).inc(n)


def _late(reason: str) -> bool:
    return "_timeout" in reason or "budget_exhausted" in reason


def _observe(
    admission: AdmissionLimit,
    outcome: BatchOutcome,
    arrival: np.ndarray,
    budget: np.ndarray,
    shares: StageShares,
    budget_s: float,
) -> None:
    """Was this batch answered in time? An answer past the admission's share of its budget, a stage that took more
    than that share of its own time (the early warning: a stage cut off degrades the whole batch), a stage cut off
    for lack of time, or an event that found no budget left for a stage says the gateway holds more than it can
    serve in time. (A hung stage times out too; the limit's floor, which scales with the budget, keeps the gateway
    taking enough events meanwhile, and the stage's breaker soon stops the waiting.)"""
    now = time.monotonic()
    admitted_at = float(arrival.min())
    reasons = set(outcome.degraded_reason) | set(outcome.error)
    late = bool(((now - arrival) > admission.latency_fraction * budget).any())
    if not late and len(arrival) > admission.minimum:
        # Only a batch larger than the floor: at the floor a stage's time is its cost per call, not the batch's size.
        own = {"features": shares.features, "filter": shares.filter, "ensemble": shares.ensemble}
        late = any(admission.is_late(took, own[stage] * budget_s) for stage, took in outcome.timings.items())
    if not late:
        late = any(_late(r) for r in reasons)
    # Only answers given by every stage in time say that more would be served in time: while a stage is skipped
    # (its circuit open) answers are quick because they lack it, and growing then would overload it on its return.
    full = not (reasons - {""})
    admission.observe(admitted_at=admitted_at, late=late, events=len(arrival), full=full)


def _trace(outcome: BatchOutcome, live: list[_Pending | _Group], started: float) -> None:
    """Each sampled event's answer on its span; a group's span carries its first event's."""
    now = time.monotonic()
    size = len(outcome.score)
    i = 0
    for p in live:
        if p.span.is_recording():
            arrival = p.deadline - p.budget
            tracing.record(
                p.span, outcome, i, size=size, budget_s=p.budget, queued_s=started - arrival, total_s=now - arrival
            )
        i += p.size
