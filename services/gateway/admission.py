"""Admission control: how many events the gateway holds at once, adapted so that what it accepts it answers in time.

An event's budget starts when it is admitted. Every event inside the gateway (queued for a micro-batch, or in a
batch in flight) holds one unit of an adaptive limit. Past the limit the gateway does not take more: a stream is
not read (gRPC flow control pushes back on the client, whose events wait in its own send buffer, their budget not
yet started) and a unary call is refused at once with RESOURCE_EXHAUSTED.

The rule is additive increase, multiplicative decrease on measured lateness, as TCP Reno does on packet loss and
Netflix's concurrency-limits AIMD limiter on latency:

- a micro-batch is *late* when one of its events was answered after `latency_fraction` of its own budget, or a
  stage was cut off for lack of time (`*_timeout`, `budget_exhausted`); a late batch cuts the limit by
  `decrease`, at most once per round: batches admitted before the last cut say nothing about the new limit;
- the floor and the start are given for a 10 ms budget and scaled with the gateway's budget by its caller
  (Little's law: at the same service rate, k times the budget holds k times the events in time). A hung stage
  times out too, so the limit falls to its floor until the stage's breaker opens; a floor scaled with the budget
  keeps enough events coming meanwhile (without it, a feature service stopped for a 1 s budget's share left a
  200 events/s stream waiting in the client: p99 1.5 s from the due time);
- each event of a batch answered in full (every stage in time; not while a stage is skipped, whose absence makes
  answers quick), while the limit was at least half used, grows the limit by `increase / limit`
  (about `increase` events per limit's worth of answers: a round lasts a few milliseconds, so the limit climbs
  from its floor to thousands in seconds, and stays where it is when the gateway is not busy).

Why not a fixed queue bound: what fits in a 10 ms budget depends on the batch sizes, the Redis state, what else
runs on the machine and which stages are up; a bound right at one load is seconds of queue at another. Latency is
measured directly, so the limit follows whatever the stack can serve now.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable

from prometheus_client import Counter, Gauge

LIMIT = Gauge("scoring_gateway_admission_limit_events", "Events the gateway admits at once (adaptive)")
INSIDE = Gauge("scoring_gateway_admission_inside_events", "Events admitted and not yet answered")
WAITING = Gauge("scoring_gateway_admission_waiting_streams", "Stream readers waiting for room (not reading)")
CUTS = Counter("scoring_gateway_admission_cuts_total", "Times lateness cut the admission limit")
REFUSED = Counter("scoring_gateway_admission_refused_total", "Unary calls refused at the door (RESOURCE_EXHAUSTED)")


class AdmissionLimit:
    def __init__(
        self,
        *,
        initial: int = 64,
        minimum: int = 8,
        maximum: int = 4096,
        latency_fraction: float = 0.8,
        increase: float = 2.0,
        decrease: float = 0.75,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not 1 <= minimum <= initial <= maximum:
            raise ValueError("admission limits need 1 <= minimum <= initial <= maximum")
        if not 0 < decrease < 1 or increase <= 0 or not 0 < latency_fraction <= 1:
            raise ValueError("admission needs 0 < decrease < 1, increase > 0 and 0 < latency_fraction <= 1")
        self.limit = float(initial)
        self.minimum = float(minimum)
        self.maximum = float(maximum)
        self.latency_fraction = latency_fraction
        self.increase = increase
        self.decrease = decrease
        self._clock = clock
        self.inside = 0
        self.cuts = 0
        self._last_cut = float("-inf")
        self._peak = 0  # most events inside since the last observation: was the limit in use?
        self._waiters: deque[tuple[int, asyncio.Future[None]]] = deque()
        LIMIT.set_function(lambda: self.limit)
        INSIDE.set_function(lambda: self.inside)
        WAITING.set_function(lambda: len(self._waiters))

    def _fits(self, n: int) -> bool:
        # An empty gateway always takes the next event (or batch), so no request is too large to ever enter.
        return self.inside == 0 or self.inside + n <= self.limit

    def _take(self, n: int) -> None:
        self.inside += n
        if self.inside > self._peak:
            self._peak = self.inside

    def try_acquire(self, n: int = 1) -> bool:
        """Admits `n` events now if there is room and nobody waits before them (FIFO)."""
        if not self._waiters and self._fits(n):
            self._take(n)
            return True
        return False

    def refuse(self) -> None:
        REFUSED.inc()

    async def acquire(self, n: int = 1) -> None:
        """Waits until `n` events fit (streams: meanwhile nothing more is read from the client)."""
        if self.try_acquire(n):
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append((n, future))
        try:
            await future
        except asyncio.CancelledError:
            if future.done() and not future.cancelled():
                self.release(n)  # granted just as the reader was cancelled: give the room back
            raise

    def release(self, n: int = 1) -> None:
        self.inside -= n
        self._wake()

    def _wake(self) -> None:
        while self._waiters:
            n, future = self._waiters[0]
            if future.done():  # its reader was cancelled
                self._waiters.popleft()
                continue
            if not self._fits(n):
                break
            self._waiters.popleft()
            self._take(n)
            future.set_result(None)

    def is_late(self, latency_s: float, budget_s: float) -> bool:
        return latency_s > self.latency_fraction * budget_s

    def observe(self, *, admitted_at: float, late: bool, events: int, full: bool = True) -> None:
        """One answered micro-batch: `admitted_at` is when its earliest event was admitted; `full` whether every
        stage answered it in time (only such a batch may grow the limit)."""
        if late:
            if admitted_at >= self._last_cut:
                self.limit = max(self.minimum, self.limit * self.decrease)
                self._last_cut = self._clock()
                self.cuts += 1
                CUTS.inc()
        elif full and self._peak * 2 >= self.limit:
            self.limit = min(self.maximum, self.limit + self.increase * events / self.limit)
        self._peak = self.inside
        self._wake()
