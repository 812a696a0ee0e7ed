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
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Protocol

from prometheus_client import Counter, Gauge

from services.gateway.batcher import Outcome
from services.gateway.validation import Event, FieldError

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


class RecentAnswers:
    """A `Submitter` that sends each transaction id to `inner` at most once per window."""

    def __init__(
        self,
        inner: Submitter,
        *,
        window_s: float,
        max_events: int,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if window_s <= 0 or max_events < 1:
            raise ValueError("a recent-answer cache needs window_s > 0 and max_events >= 1")
        self.inner = inner
        self.window_s = window_s
        self.max_events = max_events
        self._clock = clock
        # id -> (time first seen, fingerprint, pending or answered future), oldest first.
        self._entries: OrderedDict[str, tuple[float, _Fingerprint, asyncio.Future[Outcome]]] = OrderedDict()
        self.hits = 0
        CACHED.set_function(lambda: len(self._entries))

    def __len__(self) -> int:
        return len(self._entries)

    def submit(self, event: Event, deadline: float) -> asyncio.Future[Outcome]:
        now = self._clock()
        self._evict(now)
        txid = event.transaction_id
        entry = self._entries.get(txid)
        if entry is not None:
            _, fingerprint, future = entry
            if fingerprint != _fingerprint(event):
                raise FieldError("transaction_id", f"{txid!r} was already used for a different event")
            self.hits += 1
            REPLAYED.labels("answered" if future.done() else "in_flight").inc()
            return future
        future = self.inner.submit(event, deadline)  # Overloaded propagates: nothing is kept
        self._entries[txid] = (now, _fingerprint(event), future)
        future.add_done_callback(lambda f: self._forget_failure(txid, f))
        return future

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
