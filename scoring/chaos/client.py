"""The chaos harness's client: an open-loop stream that survives the gateway and keeps exact accounts.

`ResilientStream` keeps one `ScoreStream` call open to the gateway. Every event it is given is unacknowledged until
its answer arrives. When the call breaks (the gateway died, the connection was reset) or stalls (no answer for
`stall_s` while answers are owed: a hung gateway), it reconnects with exponential back-off, waits until the
gateway's health check says SERVING (traffic goes back only to a ready gateway, as a Kubernetes Service does), and
sends every unacknowledged event again with the same id, then the live traffic. The gateway answers a re-sent id
once (its recent-answer cache); a gateway that was killed has forgotten it, and then the client's accounting is
what keeps the answers exactly-once from the user's side.

`Ledger` is that accounting, one row per event: when it was due (latency counts from there, so time spent
reconnecting shows up), how often it was sent, when and how it was answered. A second answer for an id is never
taken as the answer: it is counted as a duplicate, which is what the chaos tests assert to be zero.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections import deque
from dataclasses import dataclass, field

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from scoring.bench.workload import CHANNEL_OPTIONS, EventSource
from scoring.v1 import gateway_pb2, gateway_pb2_grpc, types_pb2

log = logging.getLogger(__name__)

UNANSWERED, FULL, DEGRADED, ERROR = 0, 1, 2, 3
NO_STAGE = "no stage could score the event"  # the gateway's per-event UNAVAILABLE message

CLIENT_CHANNEL_OPTIONS = [
    *CHANNEL_OPTIONS,
    # Reconnect within a fraction of a second when the gateway is back, not after gRPC's default back-off.
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.min_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 1000),
]


@dataclass
class Ledger:
    """One row per event, in the order the events were due."""

    index: dict[str, int] = field(default_factory=dict)
    due: list[float] = field(default_factory=list)  # monotonic time the event was scheduled
    sends: list[int] = field(default_factory=list)
    last_sent: list[float] = field(default_factory=list)
    answered_at: list[float] = field(default_factory=list)
    status: list[int] = field(default_factory=list)  # UNANSWERED, FULL, DEGRADED, ERROR
    reason: list[str] = field(default_factory=list)  # degraded reason, or "<code>:<reason>" of an error
    stage: list[int] = field(default_factory=list)
    duplicates: int = 0
    unknown_ids: int = 0

    def __len__(self) -> int:
        return len(self.due)

    def add(self, transaction_id: str, due: float) -> int:
        if transaction_id in self.index:
            raise ValueError(f"event {transaction_id!r} scheduled twice")
        i = len(self.due)
        self.index[transaction_id] = i
        self.due.append(due)
        self.sends.append(0)
        self.last_sent.append(math.nan)
        self.answered_at.append(math.nan)
        self.status.append(UNANSWERED)
        self.reason.append("")
        self.stage.append(0)
        return i

    def sent(self, i: int, now: float) -> bool:
        """Records a send; True when it is a re-send."""
        self.sends[i] += 1
        self.last_sent[i] = now
        return self.sends[i] > 1

    def answer(self, response: types_pb2.ScoreResponse, now: float) -> int | None:
        """Records an answer; returns the event's row the first time it is answered, None otherwise."""
        i = self.index.get(response.transaction_id)
        if i is None:
            self.unknown_ids += 1
            return None
        if self.status[i] != UNANSWERED:
            self.duplicates += 1
            return None
        self.answered_at[i] = now
        self.stage[i] = int(response.stage)
        if response.HasField("error"):
            self.status[i] = ERROR
            message = response.error.message
            # "no stage could score the event: <the stages' reasons, in the order they failed>"
            why = message.rsplit(": ", 1)[-1] if message.startswith(NO_STAGE) else ""
            self.reason[i] = f"{response.error.code}:{why or response.degraded_reason or response.error.field}"
        elif response.degraded:
            self.status[i] = DEGRADED
            self.reason[i] = response.degraded_reason
        else:
            self.status[i] = FULL
        return i

    @property
    def answered(self) -> int:
        return sum(1 for s in self.status if s != UNANSWERED)

    @property
    def resent(self) -> int:
        return sum(1 for n in self.sends if n > 1)


class ResilientStream:
    """A ScoreStream that reconnects and re-sends what is unacknowledged (see the module's docstring)."""

    def __init__(
        self,
        address: str,
        ledger: Ledger | None = None,
        *,
        reconnect_initial_s: float = 0.05,
        reconnect_max_s: float = 0.5,
        stall_s: float = 5.0,
        health_timeout_s: float = 1.0,
    ) -> None:
        self.address = address
        self.ledger = ledger if ledger is not None else Ledger()
        self.reconnect_initial_s = reconnect_initial_s
        self.reconnect_max_s = reconnect_max_s
        self.stall_s = stall_s
        self.health_timeout_s = health_timeout_s
        self.unacked: dict[int, gateway_pb2.ScoreRequest] = {}  # in the order the events were due
        self._outbox: deque[int] = deque()
        self._wakeup = asyncio.Event()
        self._closing = False
        self._last_progress = time.monotonic()
        self.calls = 0  # ScoreStream calls opened
        self.reconnects = 0  # calls that broke or stalled with answers owed
        self.stalls = 0
        self.breaks: list[str] = []  # why each call ended early (bounded)

    def submit(self, transaction: types_pb2.Transaction, due: float) -> int:
        """Schedules an event (called at its due time: the stream sends it as soon as it is connected)."""
        i = self.ledger.add(transaction.transaction_id, due)
        self.unacked[i] = gateway_pb2.ScoreRequest(transaction=transaction)
        self._outbox.append(i)
        self._wakeup.set()
        return i

    def close(self) -> None:
        """No more events: the stream ends once every event is answered."""
        self._closing = True
        self._wakeup.set()

    @property
    def done(self) -> bool:
        return self._closing and not self.unacked

    async def run(self) -> None:
        """Connects, streams, reconnects; returns once closed and every event is answered (cancel to give up)."""
        backoff = self.reconnect_initial_s
        async with grpc.aio.insecure_channel(self.address, options=CLIENT_CHANNEL_OPTIONS) as channel:
            stub = gateway_pb2_grpc.GatewayStub(channel)
            health = health_pb2_grpc.HealthStub(channel)
            while not self.done:
                if not await self._serving(health):
                    await asyncio.sleep(backoff)
                    backoff = min(self.reconnect_max_s, backoff * 2)
                    continue
                answered_before = self.ledger.answered
                ended = await self._one_call(stub)
                if self.ledger.answered > answered_before:
                    backoff = self.reconnect_initial_s
                if self.done:
                    return
                self.reconnects += 1
                if len(self.breaks) < 100:
                    self.breaks.append(ended)
                log.info("stream ended with %d answers owed (%s); reconnecting", len(self.unacked), ended)
                await asyncio.sleep(backoff)
                backoff = min(self.reconnect_max_s, backoff * 2)

    async def _serving(self, health: health_pb2_grpc.HealthStub) -> bool:
        try:
            reply = await health.Check(health_pb2.HealthCheckRequest(service=""), timeout=self.health_timeout_s)
        except grpc.aio.AioRpcError:
            return False
        return bool(reply.status == health_pb2.HealthCheckResponse.SERVING)

    async def _one_call(self, stub: gateway_pb2_grpc.GatewayStub) -> str:
        """One ScoreStream call: re-sends every unacknowledged event first, then live ones. Returns why it ended."""
        call = stub.ScoreStream()
        self.calls += 1
        self._outbox = deque(self.unacked)
        self._last_progress = time.monotonic()
        tasks = {
            asyncio.create_task(self._read(call)): "read",
            asyncio.create_task(self._write(call)): "write",
            asyncio.create_task(self._watch()): "watch",
        }
        try:
            pending = set(tasks)
            while pending:
                done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
                for task in done:
                    if tasks[task] == "write" and task.exception() is None:
                        continue  # finished writing (closed, all answered): wait for the reader's EOF
                    exc = task.exception()
                    if exc is None:
                        return "eof" if tasks[task] == "read" else tasks[task]
                    if isinstance(exc, grpc.aio.AioRpcError):
                        return exc.code().name
                    if isinstance(exc, asyncio.InvalidStateError):  # wrote to a call that had just ended
                        return "ended"
                    if isinstance(exc, StalledError):
                        self.stalls += 1
                        return "stalled"
                    raise exc
            return "eof"
        finally:
            for task in tasks:
                task.cancel()
            call.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    async def _read(self, call: grpc.aio.StreamStreamCall) -> None:
        while True:
            response = await call.read()
            if response is grpc.aio.EOF:
                return
            now = time.monotonic()
            self._last_progress = now
            i = self.ledger.answer(response, now)
            if i is not None:
                self.unacked.pop(i, None)
                if self.done:
                    self._wakeup.set()

    async def _write(self, call: grpc.aio.StreamStreamCall) -> None:
        while True:
            while self._outbox:
                i = self._outbox.popleft()
                request = self.unacked.get(i)
                if request is None:  # answered meanwhile
                    continue
                self.ledger.sent(i, time.monotonic())
                await call.write(request)
            if self.done:
                await call.done_writing()
                return
            self._wakeup.clear()
            await self._wakeup.wait()

    async def _watch(self) -> None:
        """Gives up on a call that owes answers and has answered nothing for stall_s (a hung gateway)."""
        while True:
            await asyncio.sleep(min(0.25, self.stall_s / 4))
            owed = any(self.ledger.sends[i] for i in self._owed_sample())
            if owed and time.monotonic() - self._last_progress > self.stall_s:
                raise StalledError(f"no answer for {self.stall_s:g} s")

    def _owed_sample(self) -> list[int]:
        # The oldest unacknowledged events are the ones that matter for a stall.
        out = []
        for i in self.unacked:
            out.append(i)
            if len(out) >= 8:
                break
        return out


class StalledError(Exception):
    pass


async def feed(stream: ResilientStream, transactions: TransactionSource, rate: float, stop: asyncio.Event,
               prefix: str) -> int:
    """Open loop: submits event k at start + k / rate, whatever the answers do, until `stop`; returns how many."""
    start = time.monotonic()
    k = 0
    while not stop.is_set():
        due_now = int((time.monotonic() - start) * rate) + 1
        while k < due_now:
            transaction = transactions.next()
            transaction.transaction_id = f"{prefix}{k}"
            stream.submit(transaction, start + k / rate)
            k += 1
        wait = start + k / rate - time.monotonic()
        if wait > 0:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), wait)
    return k


class TransactionSource:
    """Simulated transactions, handed out one at a time (the bench's EventSource, read in chunks)."""

    def __init__(self, source: EventSource, chunk: int = 512) -> None:
        self.source = source
        self.chunk = chunk
        self._ready: deque[types_pb2.Transaction] = deque()

    def next(self) -> types_pb2.Transaction:
        if not self._ready:
            self._ready.extend(self.source.transactions(self.chunk, ""))
        return self._ready.popleft()
