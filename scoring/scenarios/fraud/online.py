"""Card fraud's online fold: per-customer and per-terminal state in Redis, for the feature service.

A fold is two phases, each one script call per hash-tag shard (so each call touches one Redis Cluster slot):
terminal.lua folds the batch's terminals (time buckets, label routing, idempotency), then customer.lua folds its
customers (the recent-event log, each record carrying the terminal risk that phase 1 gave the event). Redis does
a few fixed-cost commands per event; the window arithmetic is done here, over arrays (`aggregates`).

On a single Redis there is one shard per kind: a batch of up to ONE_TRIP_MAX_EVENTS folds in one command (both
scripts fused), a larger one in two round trips. On a cluster a batch is split into one call per shard present,
sent concurrently (`scoring.common.redis_state` holds the shards, keys and clients). `FraudFold` is what the
feature service calls: protobuf in, this store, protobuf out.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import redis.asyncio as redis
from opentelemetry import trace
from opentelemetry.trace import SpanKind

from scoring.common.online import Folded, InvalidBatch
from scoring.common.redis_state import Call, RedisClients, Scripts, Shard, StoreUnavailable, shard_tag, split
from scoring.scenarios.fraud import aggregates
from scoring.scenarios.fraud import features as F
from scoring.scenarios.fraud.events import EventBatch
from scoring.v1 import features_pb2

__all__ = ["EventBatch", "FeatureBatch", "FeatureStore", "FraudFold", "StoreUnavailable"]

_tracer = trace.get_tracer("scoring.feature_service.fraud")
# Events of a re-fold folded per call (a live fold waits for at most one such call).
REFOLD_CHUNK_EVENTS = 32
# Batches up to this size fold in one round trip on a single Redis (see FeatureStore._both_phases).
ONE_TRIP_MAX_EVENTS = 32
_EVENT_DTYPE = np.dtype([("key", "<u4"), ("ring", "<u4"), ("record", aggregates.RECORD_DTYPE)])
# The window whose terminal risk a customer's log record carries (customer.lua computes it on a single Redis), in
# buckets, the bucket's length and the ring's slots.
_RISK_WINDOW = (
    1,
    F.TERMINAL_WINDOW_BUCKETS[F.SEQ_RISK_WINDOW_INDEX],
    F.TERMINAL_BUCKET_US,
    aggregates.RING_SLOTS,
)
_TERMINAL_EVENT_DTYPE = np.dtype([("key", "<u4"), ("bucket", "<i4")])


_HERE = Path(__file__).resolve().parent


def id_hashes(transaction_ids: list[str]) -> bytes:
    """8 bytes per id: how customer.lua recognises an event it has folded."""
    return b"".join(hashlib.blake2b(t.encode(), digest_size=8).digest() for t in transaction_ids)


def _fused(terminal: str, customer: str) -> str:
    """One script running terminal.lua then customer.lua, each as a function of its own KEYS and ARGV: on a single
    Redis a small batch folds in one command. KEYS: the terminal call's, then the customer call's; ARGV: the
    number of terminal KEYS and of terminal ARGV, then the terminal call's ARGV, then the customer call's."""
    return f"""local function terminal_phase(KEYS, ARGV)
{terminal}
end
local function customer_phase(KEYS, ARGV)
{customer}
end
local nk, na = tonumber(ARGV[1]), tonumber(ARGV[2])
local tk, ck, ta, ca = {{}}, {{}}, {{}}, {{}}
for i = 1, #KEYS do
  if i <= nk then tk[#tk + 1] = KEYS[i] else ck[#ck + 1] = KEYS[i] end
end
for i = 3, #ARGV do
  if i - 2 <= na then ta[#ta + 1] = ARGV[i] else ca[#ca + 1] = ARGV[i] end
end
local t = terminal_phase(tk, ta)
return {{t, customer_phase(ck, ca)}}
"""


def _scripts() -> Scripts:
    text = {name: (_HERE / f"{name}.lua").read_text() for name in ("terminal", "customer", "labels")}
    text["fold"] = _fused(text["terminal"], text["customer"])
    return Scripts(text)


@dataclass(frozen=True)
class FeatureBatch:
    features: np.ndarray  # [n, len(FEATURE_NAMES)] float32
    sequences: np.ndarray  # [n, SEQ_LEN, len(SEQ_FEATURE_NAMES)] float32


def _risk(terminal_raw: np.ndarray) -> np.ndarray:
    base = F.TERMINAL_RAW_FIELDS * F.SEQ_RISK_WINDOW_INDEX
    return F.terminal_risk(terminal_raw[:, base + 1], terminal_raw[:, base + 2])


class FeatureStore:
    def __init__(self, clients: RedisClients) -> None:
        self.clients = clients
        self.cluster = clients.cluster
        self.shards = clients.shards
        self.redis = clients.folds
        self.labels_redis = clients.labels
        self.labels_timeout_s = clients.labels_timeout_s
        self.state_ttl_s = clients.state_ttl_s
        self._scripts = _scripts()
        self._in_order = asyncio.Lock()
        # Live folds waiting for the lock or folding: re-folds (the gateway's backlog) yield to them, in chunks.
        self._live = 0
        self._no_live = asyncio.Event()
        self._no_live.set()

    @classmethod
    def from_url(cls, url: str, **options: Any) -> FeatureStore:
        """A store with clients of its own (`RedisClients.connect`'s options)."""
        return cls(RedisClients.connect(url, **options))

    async def warm_up(self) -> None:
        """Connects and loads the scripts on every primary, so the first real batch pays neither."""
        try:
            await self.clients.warm_up()
            await self._scripts.load(self.redis)
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

    def _terminal_calls(self, batch: EventBatch, bucket: np.ndarray) -> tuple[list[Shard], list[Call]]:
        groups = split(batch.terminal_id, "t", self.shards)
        calls = []
        for g in groups:
            packed = np.empty(len(g.events), dtype=_TERMINAL_EVENT_DTYPE)
            packed["key"], packed["bucket"] = g.key_index, bucket[g.events]
            args = [
                self.state_ttl_s,
                g.tag,
                aggregates.RING_SLOTS,
                packed.tobytes(),
                *(batch.transaction_id[i] for i in g.events),
            ]
            calls.append(("terminal", g.keys, args))
        return groups, calls

    @staticmethod
    def _terminal_result(n: int, groups: list[Shard], replies: list[Any]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Phase 1's replies -> (folded now [n] bool, ring index [n], rings [k, RING_SLOTS])."""
        fresh = np.zeros(n, dtype=bool)
        ring_of = np.zeros(n, dtype=np.int64)
        rings: list[bytes] = []
        for g, reply in zip(groups, replies, strict=True):
            fresh[g.events] = np.frombuffer(reply[0], dtype=np.uint8) == ord("1")
            ring_of[g.events] = len(rings) + np.asarray(g.key_index) - 1
            rings.extend(reply[1:])
        return fresh, ring_of, aggregates.parse_rings(rings)

    def _customer_calls(
        self, batch: EventBatch, risk: np.ndarray | None, terminals: Shard | None
    ) -> tuple[list[Shard], list[Call]]:
        """Phase 2's calls: with the risk of every event, or (a single Redis) with the terminal shard whose rings
        the script reads the risk from."""
        groups = split(batch.customer_id, "c", self.shards)
        hashes = np.frombuffer(id_hashes(batch.transaction_id), dtype="V8")
        ring_index = np.zeros(len(batch), dtype=np.uint32)
        if terminals is not None:
            ring_index[terminals.events] = terminals.key_index
        calls = []
        for g in groups:
            idx = np.asarray(g.events)
            packed = np.empty(len(idx), dtype=_EVENT_DTYPE)
            packed["key"], packed["ring"] = g.key_index, ring_index[idx]
            record = packed["record"]
            record["time"], record["amount"] = batch.event_time_us[idx], batch.amount[idx]
            record["risk"] = risk[idx] if risk is not None else 0.0
            record["id_hash"] = hashes[idx]
            keys = g.keys + (terminals.keys if terminals is not None else [])
            args = [self.state_ttl_s, F.HORIZON_US, packed.tobytes(), len(g.keys), *_RISK_WINDOW]
            calls.append(("customer", keys, args))
        return groups, calls

    @staticmethod
    def _customer_result(
        n: int, groups: list[Shard], replies: list[Any]
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[bytes]]:
        """Phase 2's replies -> (folded now [n] bool, log index [n], records visible [n], logs)."""
        fresh = np.zeros(n, dtype=bool)
        visible = np.zeros(n, dtype=np.int64)
        log_of = np.zeros(n, dtype=np.int64)
        logs: list[bytes] = []
        for g, reply in zip(groups, replies, strict=True):
            per_event = np.frombuffer(reply[0], dtype="<f8").reshape(-1, 2)
            visible[g.events] = per_event[:, 0].astype(np.int64)
            fresh[g.events] = per_event[:, 1] > 0
            log_of[g.events] = len(logs) + np.asarray(g.key_index) - 1
            logs.extend(reply[1:])
        return fresh, log_of, visible, logs

    async def _both_phases(self, batch: EventBatch, bucket: np.ndarray) -> tuple[tuple[Any, ...], tuple[Any, ...]]:
        n = len(batch)
        t_groups, t_calls = self._terminal_calls(batch, bucket)
        if self.shards == 1 and n <= ONE_TRIP_MAX_EVENTS:
            # One Redis runs both scripts in one command, the risk read from the rings that phase 1 has just
            # written. (A large batch rather pays the second round trip, once for many events, than Redis reading
            # every ring twice.)
            assert isinstance(self.redis, redis.Redis)
            c_groups, c_calls = self._customer_calls(batch, None, t_groups[0])
            (_, t_keys, t_args), (_, c_keys, c_args) = t_calls[0], c_calls[0]
            fused = [*t_keys, *c_keys], [len(t_keys), len(t_args), *t_args, *c_args]
            t_reply, c_reply = await self._scripts.call(self.redis, "fold", *fused)
            return self._terminal_result(n, t_groups, [t_reply]), self._customer_result(n, c_groups, [c_reply])
        terminals = self._terminal_result(n, t_groups, await self._scripts.run(self.redis, t_calls))
        t_raw = aggregates.terminal_raw(bucket, terminals[1], terminals[2])
        c_groups, c_calls = self._customer_calls(batch, _risk(t_raw), None)
        return terminals, self._customer_result(n, c_groups, await self._scripts.run(self.redis, c_calls))

    async def _fold(self, batch: EventBatch, *, live: bool, derive: bool) -> tuple[FeatureBatch | None, int]:
        n = len(batch)
        bucket = batch.event_time_us // F.TERMINAL_BUCKET_US
        # A manual span rather than the redis instrumentation: that one would copy the scripts' arguments (every
        # event of the batch) into db.statement.
        with _tracer.start_as_current_span(
            "redis fold", kind=SpanKind.CLIENT, record_exception=False, set_status_on_exception=False
        ) as span:
            try:
                # One fold at a time, in arrival order (asyncio.Lock is FIFO): with folds in flight on several
                # connections, a customer's later event could reach Redis first and its recent-event log would
                # hold the two out of order.
                async with self._turn(live):
                    if span.is_recording():
                        span.set_attributes({"db.system": "redis", "db.operation": "EVALSHA", "scoring.batch_size": n})
                        span.add_event("lock acquired")
                    (t_fresh, ring_of, rings), (c_fresh, log_of, visible, logs) = await self._both_phases(batch, bucket)
            except redis.RedisError as exc:
                span.set_status(trace.StatusCode.ERROR, str(exc))
                raise StoreUnavailable(str(exc)) from exc
        folded = int((t_fresh | c_fresh).sum())
        if not derive:
            return None, folded
        t_raw = aggregates.terminal_raw(bucket, ring_of, rings)
        c_raw, seq_raw, seq_count = aggregates.customer_raw(batch.event_time_us, log_of, visible, logs)
        raw = np.concatenate([c_raw, t_raw], axis=1)
        return (
            FeatureBatch(
                features=F.derive_features(batch.amount, batch.event_time_us, raw),
                sequences=F.derive_sequences(batch.event_time_us, seq_raw, seq_count),
            ),
            folded,
        )

    async def update_and_get(self, batch: EventBatch, *, live: bool = True) -> FeatureBatch:
        if not len(batch):
            return FeatureBatch(
                np.zeros((0, len(F.FEATURE_NAMES)), np.float32),
                np.zeros((0, F.SEQ_LEN, len(F.SEQ_FEATURE_NAMES)), np.float32),
            )
        features, _ = await self._fold(batch, live=live, derive=True)
        assert features is not None
        return features

    async def fold_missing(self, batch: EventBatch) -> int:
        """Folds the events of `batch` that are not folded yet; returns how many were folded.

        In small chunks, each after the live folds waiting: a re-fold must not make live events late. An event
        already folded costs a key lookup on each side, as the folds are idempotent by transaction id."""
        folded = 0
        for start in range(0, len(batch), REFOLD_CHUNK_EVENTS):
            part = slice(start, start + REFOLD_CHUNK_EVENTS)
            _, count = await self._fold(
                EventBatch(
                    transaction_id=batch.transaction_id[part],
                    event_time_us=batch.event_time_us[part],
                    customer_id=batch.customer_id[part],
                    terminal_id=batch.terminal_id[part],
                    amount=batch.amount[part],
                ),
                live=False,
                derive=False,
            )
            folded += count
        return folded

    async def _labels_once(self, args: list[str]) -> int:
        n = len(args) // 2
        known = np.zeros(n, dtype=bool)
        # A label names its transaction only; the transaction lives in its terminal's shard: every shard is asked.
        tags = [shard_tag("t", s) for s in range(self.shards)]
        calls = [("labels", [tag], [tag, aggregates.RING_SLOTS, *args]) for tag in tags]
        for reply in await self._scripts.run(self.labels_redis, calls):
            known |= np.frombuffer(reply, dtype=np.uint8) == ord("1")
        return int(known.sum())

    async def report_labels(self, transaction_ids: list[str], fraud: list[bool]) -> tuple[int, int]:
        args: list[str] = []
        for txid, is_fraud in zip(transaction_ids, fraud, strict=True):
            args += (txid, "1" if is_fraud else "0")
        if not args:
            return 0, 0
        deadline = time.monotonic() + self.labels_timeout_s
        delay = 0.05
        while True:
            try:
                accepted = await self._labels_once(args)
                return accepted, len(transaction_ids) - accepted
            except (redis.ConnectionError, redis.TimeoutError) as exc:
                # Idempotent (a label already recorded is recorded again with the same value): retrying is safe.
                if time.monotonic() + delay >= deadline:
                    raise StoreUnavailable(f"{exc} (retried for {self.labels_timeout_s:g} s)") from exc
                await asyncio.sleep(delay)
                delay = min(delay * 2, 1.0)
            except redis.RedisError as exc:
                raise StoreUnavailable(str(exc)) from exc

    async def close(self) -> None:
        await self.clients.close()


class FraudFold:
    """The feature service's view of this store: a FeatureRequest's transaction columns in, features out."""

    request_field = None  # the request's own columns (transaction_id, event_time_us, ...)
    takes_labels = True
    schema = F.SCHEMA

    def __init__(self, clients: RedisClients) -> None:
        self.store = FeatureStore(clients)

    async def warm_up(self) -> None:
        await self.store.warm_up()

    async def close(self) -> None:  # the clients are the feature service's
        pass

    async def fold(self, request: features_pb2.FeatureRequest) -> Folded:
        n = len(request.transaction_id)
        columns = (request.event_time_us, request.customer_id, request.terminal_id, request.amount)
        if any(len(c) != n for c in columns):
            raise InvalidBatch("columns of the batch differ in length")
        batch = EventBatch(
            transaction_id=list(request.transaction_id),
            event_time_us=np.asarray(request.event_time_us, dtype=np.int64),
            customer_id=list(request.customer_id),
            terminal_id=list(request.terminal_id),
            amount=np.asarray(request.amount, dtype=np.float64),
        )
        # The gateway validates events at the edge; this guards the state against any other caller: a non-finite or
        # negative amount folded into a customer's window would poison every later feature of that customer.
        if not (np.isfinite(batch.amount).all() and (batch.amount >= 0).all()):
            raise InvalidBatch("amount: every value must be finite and >= 0")
        empty = features_pb2.FeatureResponse(rows=0, feature_names=F.FEATURE_NAMES)
        if n == 0:
            return Folded(empty, 0)
        if request.fold_only:
            return Folded(empty, n, refolded=await self.store.fold_missing(batch))
        result = await self.store.update_and_get(batch)
        return Folded(
            features_pb2.FeatureResponse(
                rows=n,
                features=result.features.tobytes(),
                feature_names=F.FEATURE_NAMES,
                sequences=result.sequences.tobytes(),
                seq_len=F.SEQ_LEN,
                seq_feature_count=len(F.SEQ_FEATURE_NAMES),
            ),
            n,
        )

    async def report_labels(self, request: features_pb2.LabelBatch) -> tuple[int, int]:
        return await self.store.report_labels(
            [label.transaction_id for label in request.labels], [label.fraud for label in request.labels]
        )
