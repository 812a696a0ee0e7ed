"""Redis-backed per-entity state of the feature service.

A fold is two phases, each one script call per hash-tag shard (so each call touches one Redis Cluster slot):
terminal.lua folds the batch's terminals (time buckets, label routing, idempotency), then customer.lua folds its
customers (the recent-event log, each record carrying the terminal risk that phase 1 gave the event). Redis does
a few fixed-cost commands per event; the window arithmetic is done here, over arrays (`aggregates`).

On a single Redis there is one shard per kind, so a fold is two round trips whatever the batch's size; on a
cluster a batch is split into one call per shard present, sent concurrently.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import time
import zlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import redis.asyncio as redis
from opentelemetry import trace
from opentelemetry.trace import SpanKind
from redis.asyncio.cluster import RedisCluster
from redis.exceptions import NoScriptError

from scoring import features as F
from services.feature_service import aggregates

_HERE = Path(__file__).resolve().parent
_tracer = trace.get_tracer("scoring.feature_service.store")
# Events of a re-fold folded per call (a live fold waits for at most one such call).
REFOLD_CHUNK_EVENTS = 32
# Batches up to this size fold in one round trip on a single Redis (see FeatureStore._both_phases).
ONE_TRIP_MAX_EVENTS = 32
CLUSTER_SCHEME = "redis+cluster://"
_EVENT_DTYPE = np.dtype([("key", "<u4"), ("ring", "<u4"), ("record", aggregates.RECORD_DTYPE)])
# The window whose terminal risk a customer's log record carries (customer.lua computes it on a single Redis), in
# buckets, the bucket's length and the ring's slots.
_RISK_WINDOW = (
    F.TERMINAL_DELAY_BUCKETS,
    F.WINDOWS_DAYS[F.SEQ_RISK_WINDOW_INDEX] * F.TERMINAL_BUCKETS_PER_DAY,
    F.TERMINAL_BUCKET_US,
    aggregates.RING_SLOTS,
)
_Call = tuple[str, list[str], list[Any]]
_TERMINAL_EVENT_DTYPE = np.dtype([("key", "<u4"), ("bucket", "<i4")])


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


@dataclass
class _Shard:
    """The events of a batch whose entity (terminal or customer) falls in one hash-tag shard."""

    tag: str
    keys: list[str] = field(default_factory=list)
    key_of: dict[str, int] = field(default_factory=dict)
    events: list[int] = field(default_factory=list)
    key_index: list[int] = field(default_factory=list)  # 1-based, as the scripts take it


def shard_of(entity: str, shards: int) -> int:
    return zlib.crc32(entity.encode()) % shards if shards > 1 else 0


def shard_tag(kind: str, shard: int) -> str:
    return f"{{{kind}{shard}}}"


def _split(ids: list[str], kind: str, shards: int) -> list[_Shard]:
    groups: dict[int, _Shard] = {}
    for i, entity in enumerate(ids):
        s = shard_of(entity, shards)
        group = groups.get(s)
        if group is None:
            group = groups[s] = _Shard(shard_tag(kind, s))
        k = group.key_of.get(entity)
        if k is None:
            group.keys.append(f"{kind}{group.tag}:{entity}")
            k = group.key_of[entity] = len(group.keys)
        group.events.append(i)
        group.key_index.append(k)
    return list(groups.values())


def _risk(terminal_raw: np.ndarray) -> np.ndarray:
    k = F.SEQ_RISK_WINDOW_INDEX
    return F.terminal_risk(terminal_raw[:, 2 * k], terminal_raw[:, 2 * k + 1])


def id_hashes(transaction_ids: list[str]) -> bytes:
    """8 bytes per id: how customer.lua recognises an event it has folded."""
    return b"".join(hashlib.blake2b(t.encode(), digest_size=8).digest() for t in transaction_ids)


def connect(url: str, *, cluster: bool, timeout_s: float, max_connections: int) -> redis.Redis | RedisCluster:
    """A client for a single Redis, or for a Redis Cluster (cluster=True, or a redis+cluster:// URL)."""
    if url.startswith(CLUSTER_SCHEME):
        cluster, url = True, "redis://" + url[len(CLUSTER_SCHEME) :]
    options: dict[str, Any] = {
        "socket_timeout": timeout_s,
        "socket_connect_timeout": timeout_s,
        "health_check_interval": 0,
    }
    if cluster:
        # Per node, and a cluster client fails past it rather than waiting: room for a call per shard at once.
        return RedisCluster.from_url(url, max_connections=max_connections, **options)
    # A blocking pool: past max_connections a fold waits for a connection (up to timeout_s) instead of failing at
    # once with "Too many connections", which would leave its events out of the state.
    pool = redis.BlockingConnectionPool.from_url(url, max_connections=max_connections, timeout=timeout_s, **options)
    return redis.Redis(connection_pool=pool)


def is_cluster_url(url: str) -> bool:
    return url.startswith(CLUSTER_SCHEME)


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


class _Scripts:
    """The three scripts by SHA, loaded on every primary; reloaded once when Redis has forgotten them."""

    NAMES = ("terminal", "customer", "labels")

    def __init__(self) -> None:
        self.text = {name: (_HERE / f"{name}.lua").read_text() for name in self.NAMES}
        self.text["fold"] = _fused(self.text["terminal"], self.text["customer"])
        self.sha = {name: hashlib.sha1(text.encode()).hexdigest() for name, text in self.text.items()}

    async def load(self, client: redis.Redis | RedisCluster) -> None:
        for text in self.text.values():
            await client.script_load(text)

    async def run(self, client: redis.Redis | RedisCluster, calls: list[tuple[str, list[str], list[Any]]]) -> list[Any]:
        """Runs script calls, given as (name, keys, args), all at once: each is one command to the node of its slot
        (redis-py's cluster pipeline refuses EVALSHA, so a cluster gets concurrent commands)."""
        if len(calls) == 1:  # a single Redis: no task to create
            return [await self._call(client, *calls[0])]
        return list(await asyncio.gather(*(self._call(client, *call) for call in calls)))

    async def both(self, client: redis.Redis, terminal: _Call, customer: _Call) -> tuple[Any, Any]:
        """Both phases of a fold in one command on a single Redis (fold: the two scripts as functions)."""
        (_, t_keys, t_args), (_, c_keys, c_args) = terminal, customer
        keys, args = [*t_keys, *c_keys], [len(t_keys), len(t_args), *t_args, *c_args]
        t_reply, c_reply = await self._call(client, "fold", keys, args)
        return t_reply, c_reply

    async def _call(self, client: redis.Redis | RedisCluster, name: str, keys: list[str], args: list[Any]) -> Any:
        try:
            return await client.evalsha(self.sha[name], len(keys), *keys, *args)
        except NoScriptError:  # a node restarted or joined since the scripts were loaded
            await self.load(client)
            return await client.evalsha(self.sha[name], len(keys), *keys, *args)


class FeatureStore:
    def __init__(
        self,
        url: str,
        *,
        timeout_s: float,
        max_connections: int,
        state_ttl_s: int,
        labels_timeout_s: float = 10.0,
        cluster: bool = False,
        shards: int = 16,
    ) -> None:
        self.cluster = cluster or is_cluster_url(url)
        # One shard per entity kind on a single Redis: every call of a phase is one call.
        self.shards = max(1, shards) if self.cluster else 1
        if self.cluster:
            max_connections = max(max_connections, 2 * self.shards)
        self.redis = connect(url, cluster=self.cluster, timeout_s=timeout_s, max_connections=max_connections)
        # Labels on their own connection with their own timeout: behind a long fold, a label batch must wait its
        # turn, not fail on the folds' 0.5 s socket timeout (and be lost by a client that does not retry).
        self.labels_timeout_s = labels_timeout_s
        self.labels_redis = connect(
            url, cluster=self.cluster, timeout_s=labels_timeout_s, max_connections=max_connections
        )
        self.state_ttl_s = state_ttl_s
        self._scripts = _Scripts()
        self._in_order = asyncio.Lock()
        # Live folds waiting for the lock or folding: re-folds (the gateway's backlog) yield to them, in chunks.
        self._live = 0
        self._no_live = asyncio.Event()
        self._no_live.set()

    async def warm_up(self) -> None:
        """Connects and loads the scripts on every primary, so the first real batch pays neither."""
        try:
            await self.redis.ping()
            await self._scripts.load(self.redis)
            await self.labels_redis.ping()
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

    def _terminal_calls(self, batch: EventBatch, bucket: np.ndarray) -> tuple[list[_Shard], list[_Call]]:
        groups = _split(batch.terminal_id, "t", self.shards)
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
    def _terminal_result(n: int, groups: list[_Shard], replies: list[Any]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
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
        self, batch: EventBatch, risk: np.ndarray | None, terminals: _Shard | None
    ) -> tuple[list[_Shard], list[_Call]]:
        """Phase 2's calls: with the risk of every event, or (a single Redis) with the terminal shard whose rings
        the script reads the risk from."""
        groups = _split(batch.customer_id, "c", self.shards)
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
        n: int, groups: list[_Shard], replies: list[Any]
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
            t_reply, c_reply = await self._scripts.both(self.redis, t_calls[0], c_calls[0])
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
        await self.redis.aclose()
        await self.labels_redis.aclose()
