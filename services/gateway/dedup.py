"""Answers a re-sent event once: a bounded cache of recent transaction ids in front of the micro-batcher.

A client that loses its stream (a dropped connection, a stalled gateway it gave up on) re-sends the events it has
no answer for, with the same ids. Some of them were already scored, or are being scored, by this gateway: scoring
them again would cost a second pass through every stage and could give a second, different answer. So the gateway
keeps each id's answer for a while:

- an id whose answer is known gets that answer back at once, not a second scoring;
- an id still in flight joins the pending answer;
- an id re-used for a different event (other customer, terminal, amount or time) is refused with
  INVALID_ARGUMENT on `transaction_id`: an id names one event.

Answers that are errors (no stage could score the event) are not kept: a retry is scored again. Memory is
bounded twice: entries older than `window_s` are evicted, and past `max_events` the oldest go first. The cache
lives in the gateway's memory, so a gateway that dies forgets it; then the client-side re-send plus the feature
service's idempotent folds (keyed by transaction id) keep the answers exactly-once from the client's view.
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
from opentelemetry.trace import Span
from prometheus_client import Counter, Gauge

from scoring.scenarios.fraud.events import EventBatch
from scoring.scenarios.fraud.validation import Event, FieldError
from services.gateway.batcher import MicroBatcher, Outcome, outcome_at
from services.gateway.cascade import BatchOutcome

REPLAYED = Counter(
    "scoring_gateway_replayed_total", "Re-sent events answered from the recent-answer cache, by state", ["state"]
)
CACHED = Gauge("scoring_gateway_recent_answers", "Events held in the recent-answer cache")


class Submitter(Protocol):
    """What the servicer needs from the batcher (MicroBatcher, or this cache in front of it)."""

    def submit(self, event: Event, deadline: float) -> asyncio.Future[Outcome]: ...


_Fingerprint = tuple[int, str, str, float]


def _fingerprint(event: Event) -> _Fingerprint:
    return (event.event_time_us, event.customer_id, event.terminal_id, event.amount)


@dataclass
class GroupSubmission:
    """A columnar batch handed to the batcher: which of its rows were sent for scoring, and what became of the
    others."""

    rows: list[int]  # rows of the batch sent for scoring, ascending; their outcomes are `futures` in order
    futures: list[asyncio.Future[BatchOutcome]]
    replays: dict[int, asyncio.Future[Outcome]] = field(default_factory=dict)  # row -> an earlier answer of its id
    # row -> an id already used for another event (the field is the column's name: the caller adds the row)
    refused: dict[int, FieldError] = field(default_factory=dict)


class _GroupSlot:
    """A cache entry for an event scored in a group: row `index` of the group's outcome."""

    __slots__ = ("future", "index")

    def __init__(self, future: asyncio.Future[BatchOutcome], index: int) -> None:
        self.future = future
        self.index = index

    def done(self) -> bool:
        return self.future.done()

    def answer(self) -> asyncio.Future[Outcome]:
        answer: asyncio.Future[Outcome] = asyncio.get_running_loop().create_future()

        def settle(group: asyncio.Future[BatchOutcome]) -> None:
            if answer.done():
                return
            if group.cancelled():
                answer.cancel()
            elif group.exception() is not None:
                answer.set_exception(group.exception())  # type: ignore[arg-type]
            else:
                answer.set_result(outcome_at(group.result(), self.index))

        if self.future.done():
            settle(self.future)
        else:
            self.future.add_done_callback(settle)
        return answer


def submit_group(submitter: object, batch: EventBatch, deadline: float, span: Span) -> GroupSubmission:
    """Hands a columnar batch to the cache when there is one, else straight to the batcher."""
    if isinstance(submitter, RecentAnswers):
        return submitter.submit_group(batch, deadline, span)
    assert isinstance(submitter, MicroBatcher)
    return GroupSubmission(list(range(len(batch))), submitter.submit_group(batch, deadline, span))


class RecentAnswers:
    """A `Submitter` that sends each transaction id to `inner` at most once per window."""

    def __init__(
        self,
        inner: Submitter,
        *,
        window_s: float,
        max_events: int,
        clock: Callable[[], float] = time.monotonic,
        key: Callable[[Any], str] | None = None,
        fingerprint: Callable[[Any], Any] | None = None,
    ) -> None:
        if window_s <= 0 or max_events < 1:
            raise ValueError("a recent-answer cache needs window_s > 0 and max_events >= 1")
        self.inner = inner
        self.window_s = window_s
        self.max_events = max_events
        self._clock = clock
        # What names an event, and what must match for a re-sent one to be the same event: a transaction's id and
        # its fields by default; a scenario passes its own (a tick: symbol and sequence, nothing else to match).
        self._key: Callable[[Any], str] = key or (lambda event: event.transaction_id)
        self._fingerprint_of: Callable[[Any], Any] = fingerprint or _fingerprint
        # id -> (time first seen, fingerprint, pending or answered future or group row), oldest first.
        self._entries: OrderedDict[str, tuple[float, _Fingerprint, asyncio.Future[Outcome] | _GroupSlot]] = (
            OrderedDict()
        )
        self.hits = 0
        CACHED.set_function(lambda: len(self._entries))

    def __len__(self) -> int:
        return len(self._entries)

    def submit(self, event: Event, deadline: float) -> asyncio.Future[Outcome]:
        now = self._clock()
        self._evict(now)
        txid = self._key(event)
        entry = self._entries.get(txid)
        if entry is not None:
            _, fingerprint, future = entry
            if fingerprint != self._fingerprint_of(event):
                raise FieldError("transaction_id", f"{txid!r} was already used for a different event")
            self.hits += 1
            REPLAYED.labels("answered" if future.done() else "in_flight").inc()
            return future.answer() if isinstance(future, _GroupSlot) else future
        future = self.inner.submit(event, deadline)  # Overloaded propagates: nothing is kept
        self._entries[txid] = (now, self._fingerprint_of(event), future)
        future.add_done_callback(lambda f: self._forget_failure(txid, f))
        return future

    def submit_group(self, batch: EventBatch, deadline: float, span: Span) -> GroupSubmission:
        """`submit` for a columnar batch: its new ids go to the batcher as groups, the others get their earlier
        answer (an id twice in the batch: the second gets the first's)."""
        assert isinstance(self.inner, MicroBatcher)
        now = self._clock()
        self._evict(now)
        entries = self._entries
        times, amounts = batch.event_time_us.tolist(), batch.amount.tolist()
        fresh: list[int] = []
        first: dict[str, tuple[int, _Fingerprint]] = {}
        replays: dict[int, asyncio.Future[Outcome]] = {}
        repeats: dict[int, int] = {}
        refused: dict[int, FieldError] = {}
        for i, txid in enumerate(batch.transaction_id):
            fingerprint = (times[i], batch.customer_id[i], batch.terminal_id[i], amounts[i])
            entry = entries.get(txid)
            earlier = first.get(txid)
            if entry is None and earlier is None:
                first[txid] = (i, fingerprint)
                fresh.append(i)
                continue
            known = entry[1] if entry is not None else earlier[1]  # type: ignore[index]
            if known != fingerprint:
                refused[i] = FieldError("transaction_id", f"{txid!r} was already used for a different event")
                continue
            self.hits += 1
            if entry is not None:
                answer = entry[2]
                REPLAYED.labels("answered" if answer.done() else "in_flight").inc()
                replays[i] = answer.answer() if isinstance(answer, _GroupSlot) else answer
            else:
                REPLAYED.labels("in_flight").inc()
                repeats[i] = earlier[0]  # type: ignore[index]
        part = batch if len(fresh) == len(batch) else _rows(batch, fresh)
        groups = self.inner.submit_group(part, deadline, span) if fresh else []  # Overloaded: nothing kept
        slots: dict[int, _GroupSlot] = {}
        k = 0
        for group in groups:
            chunk = fresh[k : k + self.inner.max_batch]
            ids = [batch.transaction_id[i] for i in chunk]
            for j, i in enumerate(chunk):
                slot = slots[i] = _GroupSlot(group, j)
                entries[ids[j]] = (now, first[ids[j]][1], slot)
            group.add_done_callback(functools.partial(self._forget_group, ids))
            k += len(chunk)
        for i, row in repeats.items():
            replays[i] = slots[row].answer()
        return GroupSubmission(fresh, groups, replays, refused)

    def _forget_group(self, txids: list[str], future: asyncio.Future[BatchOutcome]) -> None:
        failed = future.cancelled() or future.exception() is not None
        errors = None if failed else future.result().error
        for j, txid in enumerate(txids):
            if failed or (errors is not None and errors[j]):
                entry = self._entries.get(txid)
                if entry is not None and isinstance(entry[2], _GroupSlot) and entry[2].future is future:
                    del self._entries[txid]

    def _forget_failure(self, txid: str, future: asyncio.Future[Outcome]) -> None:
        """An error (or a cancelled future, at shutdown) is not an answer worth repeating: a retry is scored."""
        if future.cancelled() or future.exception() is not None or future.result().error:
            entry = self._entries.get(txid)
            if entry is not None and entry[2] is future:
                del self._entries[txid]

    def _evict(self, now: float) -> None:
        entries = self._entries
        horizon = now - self.window_s
        while entries:
            txid, (seen, _, future) = next(iter(entries.items()))
            if seen > horizon and len(entries) < self.max_events:
                break
            if not future.done() and seen > horizon:
                # Full of events still in flight: keep them (they are bounded by the batcher's queue) and stop.
                break
            entries.popitem(last=False)


def _rows(batch: EventBatch, rows: list[int]) -> EventBatch:
    idx = np.asarray(rows, dtype=np.int64)
    return EventBatch(
        transaction_id=[batch.transaction_id[i] for i in rows],
        event_time_us=batch.event_time_us[idx],
        customer_id=[batch.customer_id[i] for i in rows],
        terminal_id=[batch.terminal_id[i] for i in rows],
        amount=batch.amount[idx],
    )
