"""Redis-backed per-entity state of the feature service: one script call per micro-batch.

The scripts (fold.lua, labels.lua) do all reads and writes of a batch server-side, so a batch costs one
round trip whatever its size; they return raw aggregates that `scoring.features` turns into model inputs.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import redis.asyncio as redis
from opentelemetry import trace
from opentelemetry.trace import SpanKind

from scoring import features as F

_HERE = Path(__file__).resolve().parent
_tracer = trace.get_tracer("scoring.feature_service.store")
# Events of a re-fold folded per script call (a live fold waits for at most one such call).
REFOLD_CHUNK_EVENTS = 32
ROW_LEN = 4 * F.N_WINDOWS + 1 + F.SEQ_RAW_FIELDS * (F.SEQ_LEN + 1)


class StoreUnavailable(Exception):
    """Redis could not be reached or answered with an error."""


@dataclass(frozen=True)
class EventBatch:
    """A validated micro-batch in columnar form."""

    transaction_id: list[str]
    event_time_us: np.ndarray  # int64
    customer_id: list[str]
    terminal_id: list[str]
    amount: np.ndarray  # float64

    def __len__(self) -> int:
        return len(self.transaction_id)


@dataclass(frozen=True)
class FeatureBatch:
    features: np.ndarray  # [n, len(FEATURE_NAMES)] float32
    sequences: np.ndarray  # [n, SEQ_LEN, len(SEQ_FEATURE_NAMES)] float32


class FeatureStore:
    def __init__(
        self, url: str, *, timeout_s: float, max_connections: int, state_ttl_s: int, labels_timeout_s: float = 10.0
    ) -> None:
        # A blocking pool: past max_connections a fold waits for a connection (up to timeout_s) instead of
        # failing at once with "Too many connections", which would leave its events out of the state.
        pool = redis.BlockingConnectionPool.from_url(
            url,
            socket_timeout=timeout_s,
            socket_connect_timeout=timeout_s,
            max_connections=max_connections,
            timeout=timeout_s,
            health_check_interval=0,
        )
        self.redis = redis.Redis(connection_pool=pool)
        # Labels on their own connection with their own timeout: behind a long fold, a label batch must wait its
        # turn, not fail on the folds' 0.5 s socket timeout (and be lost by a client that does not retry).
        self.labels_timeout_s = labels_timeout_s
        self.labels_redis = redis.Redis.from_url(
            url, socket_timeout=labels_timeout_s, socket_connect_timeout=min(timeout_s * 4, labels_timeout_s),
            health_check_interval=0,
        )
        self.state_ttl_s = state_ttl_s
        self._in_order = asyncio.Lock()
        # Live folds waiting for the lock or folding: re-folds (the gateway's backlog) yield to them, in chunks.
        self._live = 0
        self._no_live = asyncio.Event()
        self._no_live.set()
        self._fold = self.redis.register_script((_HERE / "fold.lua").read_text())
        self._labels = self.labels_redis.register_script((_HERE / "labels.lua").read_text())
        self._fold_header = [
            F.SEQ_LEN,
            state_ttl_s,
            F.LABEL_DELAY_DAYS * F.US_PER_DAY,
            F.SEQ_RISK_WINDOW_INDEX + 1,
            F.N_WINDOWS,
            *[w * F.US_PER_DAY for w in F.WINDOWS_DAYS],
        ]

    async def warm_up(self) -> None:
        """Connects and loads both scripts, so the first real batch pays neither."""
        try:
            await self.redis.ping()
            await self.redis.script_load((_HERE / "fold.lua").read_text())
            await self.labels_redis.script_load((_HERE / "labels.lua").read_text())
        except redis.RedisError as exc:
            raise StoreUnavailable(str(exc)) from exc

    @contextlib.asynccontextmanager
    async def _turn(self, live: bool) -> AsyncIterator[None]:
        """The fold lock; a re-fold first waits until no live fold is waiting for it."""
        if live:
            self._live += 1
            self._no_live.clear()
        else:
            await self._no_live.wait()
        try:
            await self._in_order.acquire()
        finally:
            if live:
                self._live -= 1
                if not self._live:
                    self._no_live.set()
        try:
            yield
        finally:
            self._in_order.release()

    async def update_and_get(self, batch: EventBatch, *, live: bool = True) -> FeatureBatch:
        n = len(batch)
        args: list[str | int] = [n, *self._fold_header]
        for i in range(n):
            args += (
                batch.transaction_id[i],
                int(batch.event_time_us[i]),
                batch.customer_id[i],
                batch.terminal_id[i],
                float.__repr__(float(batch.amount[i])),
            )
        # A manual span rather than the redis instrumentation: that one would copy the script's arguments (every
        # event of the batch) into db.statement.
        with _tracer.start_as_current_span(
            "redis fold", kind=SpanKind.CLIENT, record_exception=False, set_status_on_exception=False
        ) as span:
            try:
                # One fold at a time, in arrival order (asyncio.Lock is FIFO): with folds in flight on several
                # connections, a customer's later event could reach Redis first and its recent-event sequence
                # would miss the earlier one. Redis runs scripts one at a time anyway; only the round trip is lost.
                async with self._turn(live):
                    if span.is_recording():
                        span.set_attributes({"db.system": "redis", "db.operation": "EVALSHA", "scoring.batch_size": n})
                        span.add_event("lock acquired")
                    reply = await self._fold(args=args)
            except redis.RedisError as exc:
                span.set_status(trace.StatusCode.ERROR, str(exc))
                raise StoreUnavailable(str(exc)) from exc
        rows = np.frombuffer(reply, dtype="<f8").reshape(n, ROW_LEN)
        raw = rows[:, : 4 * F.N_WINDOWS]
        seq_count = rows[:, 4 * F.N_WINDOWS].astype(np.int64)
        seq_raw = rows[:, 4 * F.N_WINDOWS + 1 :].reshape(n, F.SEQ_LEN + 1, F.SEQ_RAW_FIELDS)
        return FeatureBatch(
            features=F.derive_features(batch.amount, batch.event_time_us, raw),
            sequences=F.derive_sequences(batch.event_time_us, seq_raw, seq_count),
        )

    async def fold_missing(self, batch: EventBatch) -> int:
        """Folds the events of `batch` that are not folded yet (2 round trips); returns how many were folded."""
        try:
            async with self.redis.pipeline(transaction=False) as pipe:
                for txid in batch.transaction_id:
                    pipe.exists(f"x:{txid}")
                seen = await pipe.execute()
        except redis.RedisError as exc:
            raise StoreUnavailable(str(exc)) from exc
        missing = [i for i, known in enumerate(seen) if not known]
        # In small chunks, each after the live folds waiting: a re-fold must not make live events late.
        for start in range(0, len(missing), REFOLD_CHUNK_EVENTS):
            chunk = missing[start : start + REFOLD_CHUNK_EVENTS]
            idx = np.asarray(chunk)
            await self.update_and_get(
                EventBatch(
                    transaction_id=[batch.transaction_id[i] for i in chunk],
                    event_time_us=batch.event_time_us[idx],
                    customer_id=[batch.customer_id[i] for i in chunk],
                    terminal_id=[batch.terminal_id[i] for i in chunk],
                    amount=batch.amount[idx],
                ),
                live=False,
            )
        return len(missing)

    async def report_labels(self, transaction_ids: list[str], fraud: list[bool]) -> tuple[int, int]:
        args: list[str | int] = [len(transaction_ids), self.state_ttl_s]
        for txid, is_fraud in zip(transaction_ids, fraud, strict=True):
            args += (txid, "1" if is_fraud else "0")
        deadline = time.monotonic() + self.labels_timeout_s
        delay = 0.05
        while True:
            try:
                accepted, unknown = await self._labels(args=args)
                return int(accepted), int(unknown)
            except (redis.ConnectionError, redis.TimeoutError) as exc:
                # Idempotent (a label already recorded is recorded again with the same value): retrying is safe.
                if time.monotonic() + delay >= deadline:
                    raise StoreUnavailable(f"{exc} (retried for {self.labels_timeout_s:g} s)") from exc
                await asyncio.sleep(delay)
                delay = min(delay * 2, 1.0)
            except redis.RedisError as exc:
                raise StoreUnavailable(str(exc)) from exc

    async def close(self) -> None:
        await self.redis.aclose()
        await self.labels_redis.aclose()
