"""The market scenario's online fold: per-symbol rings of raw ticks in Redis, features from `features`.

Keys: `m2{m<shard>}:<symbol>` (the hash-tag shards every scenario's state uses, `scoring.common.redis_state`).

Per symbol, one Redis string holds the last `features.WINDOW` folded ticks (raw fields as little-endian doubles,
`features.RAW_FIELDS` order), since its last sequence gap. A batch folds in one script call per hash-tag shard
(`ticks.lua`: 1 round trip on a single Redis): the script checks each tick's sequence against its symbol's ring
(folded, gap, duplicate, stale), appends, and returns the rings as they were before the batch. The window of each
tick is then rebuilt here from those and the batch's own records, the same way, and `features.from_windows` turns
windows into features: the arithmetic offline and online is one function. Redis does a few string operations per
tick; no feature math runs in Lua.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from redis.exceptions import RedisError

from scoring.common.online import Folded, InvalidBatch
from scoring.common.redis_state import RedisClients, StoreUnavailable, split
from scoring.scenarios.market import features as MF
from scoring.v1 import features_pb2

SCRIPT = (Path(__file__).resolve().parent / "ticks.lua").read_text()
SCRIPT_SHA = hashlib.sha1(SCRIPT.encode()).hexdigest()
RECORD_BYTES = 8 * len(MF.RAW_FIELDS)


@dataclass(frozen=True)
class TickBatch:
    """A validated micro-batch of ticks in columns (raw: float64 [len(RAW_FIELDS), n], field-major)."""

    tick_id: list[str]
    symbol: list[str]
    raw: np.ndarray

    def __len__(self) -> int:
        return len(self.tick_id)

    @property
    def sequence(self) -> np.ndarray:
        return self.raw[MF.RAW["sequence"]].astype(np.int64)

    def rows(self, idx: list[int] | np.ndarray) -> TickBatch:
        idx = np.asarray(idx, dtype=np.int64)
        return TickBatch([self.tick_id[i] for i in idx], [self.symbol[i] for i in idx], self.raw[:, idx])

    def slice(self, lo: int, hi: int) -> TickBatch:
        return TickBatch(self.tick_id[lo:hi], self.symbol[lo:hi], self.raw[:, lo:hi])

    @classmethod
    def concat(cls, parts: list[TickBatch]) -> TickBatch:
        if len(parts) == 1:
            return parts[0]
        return cls([t for p in parts for t in p.tick_id], [s for p in parts for s in p.symbol],
                   np.concatenate([p.raw for p in parts], axis=1))

    @classmethod
    def empty(cls) -> TickBatch:
        return cls([], [], np.zeros((len(MF.RAW_FIELDS), 0)))


def windows(batch: TickBatch, status: np.ndarray, before: dict[str, bytes]) -> tuple[np.ndarray, np.ndarray]:
    """Each tick's window ([len(RAW_FIELDS), n, WINDOW] and its valid mask), rebuilt from the symbols' rings
    before the batch and the batch's own ticks, as ticks.lua folded them. A stale tick's window is its own record
    alone (its features are not used).

    Over arrays, not tick by tick: every symbol's history (its ring, then the ticks of the batch folded into it)
    is laid out in one array, each folded tick's window is a slice of it that starts at the symbol's start or at
    its last gap, and one gather builds them all. Duplicates (rare) are rebuilt one by one."""
    n = len(batch)
    nf = len(MF.RAW_FIELDS)
    w = np.zeros((nf, n, MF.WINDOW))
    valid = np.zeros((n, MF.WINDOW), dtype=bool)
    if n == 0:
        return w, valid
    code_of: dict[str, int] = {}
    code = np.fromiter((code_of.setdefault(sym, len(code_of)) for sym in batch.symbol), dtype=np.int64, count=n)
    ring_bytes = [before.get(sym) or b"" for sym in code_of]
    ring_len = np.fromiter((len(b) for b in ring_bytes), dtype=np.int64, count=len(ring_bytes)) // (8 * nf)
    ring_at = np.concatenate([[0], np.cumsum(ring_len)[:-1]])  # each symbol's ring in `rings`
    rings = np.frombuffer(b"".join(ring_bytes), dtype="<f8").reshape(-1, nf)
    appended = np.flatnonzero((status == MF.FOLDED) | (status == MF.GAP))
    order = appended[np.argsort(code[appended], kind="stable")]  # appended ticks, by symbol, in batch order
    per_symbol = np.bincount(code[order], minlength=len(ring_bytes))
    base = np.concatenate([[0], np.cumsum(ring_len + per_symbol)[:-1]])  # where each symbol's history starts
    first = np.concatenate([[0], np.cumsum(per_symbol)[:-1]])  # each symbol's first entry in `order`
    c = code[order]
    pos = base[c] + ring_len[c] + (np.arange(len(order)) - first[c])
    # The histories as rows of `source` (the rings, then the batch's records), so one gather builds the windows.
    source = np.concatenate([rings, batch.raw.T])
    hist = np.empty(int((ring_len + per_symbol).sum()), dtype=np.int64)
    hist[np.repeat(base - ring_at, ring_len) + np.arange(len(rings))] = np.arange(len(rings))
    hist[pos] = len(rings) + order
    # A window starts at its symbol's history or at the symbol's last gap so far (a gap restarts the ring); the
    # symbols' histories are laid out in order, so one running maximum gives both.
    start = np.maximum.accumulate(np.where(status[order] == MF.GAP, pos, base[c])) if len(order) else pos
    if len(order):
        at = pos[:, None] - (MF.WINDOW - 1) + np.arange(MF.WINDOW)
        inside = at >= start[:, None]
        rows = source[hist[np.maximum(at, 0)]]  # [m, WINDOW, nf]
        rows[~inside] = 0.0
        w[:, order, :] = rows.transpose(2, 0, 1)
        valid[order] = inside
    own = np.flatnonzero(status == MF.STALE)
    w[:, own, -1] = batch.raw[:, own]
    valid[own, -1] = True
    seq_col = MF.RAW["sequence"]
    last_entry = {}  # tick index -> its entry in `order`, for the duplicates' lookup
    if np.any(status == MF.DUPLICATE):
        last_entry = {int(i): k for k, i in enumerate(order)}
    for i in np.flatnonzero(status == MF.DUPLICATE):
        # The symbol's ring at this tick: the window of its last tick folded before it in the batch, else the ring
        # the batch started from.
        earlier = [j for j in order[code[order] == code[i]] if j < i]
        if earlier:
            k = last_entry[int(earlier[-1])]
            ring = source[hist[max(int(start[k]), int(pos[k]) + 1 - MF.WINDOW) : int(pos[k]) + 1]]
        else:
            ring = rings[ring_at[code[i]] : ring_at[code[i]] + ring_len[code[i]]]
        match = np.flatnonzero(ring[:, seq_col] == batch.raw[seq_col, i])
        view = ring[: match[0] + 1] if len(match) else batch.raw[:, i][None, :]
        w[:, i, :] = 0.0
        w[:, i, MF.WINDOW - len(view) :] = view.T
        valid[i] = False
        valid[i, MF.WINDOW - len(view) :] = True
    return w, valid


def windows_by_tick(batch: TickBatch, status: np.ndarray, before: dict[str, bytes]) -> tuple[np.ndarray, np.ndarray]:
    """`windows`, tick by tick as ticks.lua folds them: the reference that the array version must equal (a unit
    test) and the A/B row of the bench's tick mode."""
    n = len(batch)
    w = np.zeros((len(MF.RAW_FIELDS), n, MF.WINDOW))
    valid = np.zeros((n, MF.WINDOW), dtype=bool)
    rings = {s: np.frombuffer(r, dtype="<f8").reshape(-1, len(MF.RAW_FIELDS)) for s, r in before.items()}
    seq_col = MF.RAW["sequence"]
    for i in range(n):
        rec = batch.raw[:, i]
        ring = rings.get(batch.symbol[i])
        s = status[i]
        if s == MF.FOLDED:
            ring = rec[None, :] if ring is None or len(ring) == 0 else np.vstack([ring, rec[None, :]])[-MF.WINDOW:]
            rings[batch.symbol[i]] = ring
            view = ring
        elif s == MF.GAP:
            ring = rings[batch.symbol[i]] = rec[None, :]
            view = ring
        elif s == MF.DUPLICATE:
            assert ring is not None
            (at,) = np.flatnonzero(ring[:, seq_col] == rec[seq_col])[:1]
            view = ring[: at + 1]
        else:
            view = rec[None, :]
        k = len(view)
        w[:, i, MF.WINDOW - k :] = view.T
        valid[i, MF.WINDOW - k :] = True
    return w, valid


class TickStore:
    """Folds tick batches into Redis; shares the feature service's client (one Redis or a Redis Cluster)."""

    def __init__(self, client: Any, *, state_ttl_s: int, shards: int = 1) -> None:
        import asyncio

        self.redis = client
        self.state_ttl_s = state_ttl_s
        self.shards = shards
        # Batches fold one at a time, in the order they came: a symbol's ticks must reach its ring in order.
        self._in_order = asyncio.Lock()

    async def warm_up(self) -> None:
        await self.redis.script_load(SCRIPT)

    def _calls(self, batch: TickBatch) -> list[tuple[list[int], list[str], list[str], list[Any]]]:
        calls = []
        for shard in split(batch.symbol, "m", self.shards):
            args: list[Any] = [MF.WINDOW, RECORD_BYTES, self.state_ttl_s]
            records = np.ascontiguousarray(batch.raw[:, shard.events].T, dtype="<f8")
            for j, i in enumerate(shard.events):
                args += [shard.key_index[j], int(batch.raw[MF.RAW["sequence"], i]), records[j].tobytes()]
            symbols = list(shard.key_of)  # in the order of shard.keys
            calls.append((shard.events, symbols, shard.keys, args))
        return calls

    async def _run(self, keys: list[str], args: list[Any]) -> Any:
        from redis.exceptions import NoScriptError

        try:
            return await self.redis.evalsha(SCRIPT_SHA, len(keys), *keys, *args)
        except NoScriptError:
            await self.warm_up()
            return await self.redis.evalsha(SCRIPT_SHA, len(keys), *keys, *args)

    async def update_and_get(self, batch: TickBatch) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(features, sequences, fold status) of every tick, in the batch's order."""
        import asyncio

        n = len(batch)
        status = np.zeros(n, dtype=np.int8)
        before: dict[str, bytes] = {}
        calls = self._calls(batch)
        async with self._in_order:
            replies = await asyncio.gather(*(self._run(keys, args) for _, _, keys, args in calls))
        for (events, symbols, _, _), (digits, rings) in zip(calls, replies, strict=True):
            status[events] = np.frombuffer(digits, dtype=np.uint8) - ord("0")
            before.update(zip(symbols, rings, strict=True))
        w, valid = windows(batch, status, before)
        features, sequences = MF.from_windows(w, valid)
        stale = status == MF.STALE
        features[stale] = 0.0
        sequences[stale] = 0.0
        return features, sequences, status


class MarketFold:
    """The feature service's view of the tick store: a FeatureRequest's `ticks` columns in, features out."""

    request_field = "ticks"
    takes_labels = False
    schema = MF.SCHEMA

    def __init__(self, clients: RedisClients) -> None:
        self.store = TickStore(clients.folds, state_ttl_s=clients.state_ttl_s, shards=clients.shards)

    async def warm_up(self) -> None:
        try:
            await self.store.warm_up()
        except RedisError as exc:
            raise StoreUnavailable(str(exc)) from exc

    async def close(self) -> None:  # the clients are the feature service's
        pass

    async def fold(self, request: features_pb2.FeatureRequest) -> Folded:
        ticks = request.ticks
        n = len(ticks.tick_id)
        columns = {name: getattr(ticks, name) for name in MF.RAW_FIELDS if name != "time_us"}
        columns["time_us"] = ticks.event_time_us
        if len(ticks.symbol) != n or any(len(c) != n for c in columns.values()):
            raise InvalidBatch("columns of the tick batch differ in length")
        raw = np.array([np.asarray(columns[name], dtype=np.float64) for name in MF.RAW_FIELDS]).reshape(
            len(MF.RAW_FIELDS), n)
        if not np.isfinite(raw).all():
            raise InvalidBatch("ticks: every number must be finite")
        names = list(MF.FEATURE_NAMES)
        if n == 0:
            return Folded(features_pb2.FeatureResponse(rows=0, feature_names=names), 0)
        try:
            features, sequences, status = await self.store.update_and_get(TickBatch(list(ticks.tick_id),
                                                                                    list(ticks.symbol), raw))
        except RedisError as exc:
            raise StoreUnavailable(str(exc)) from exc
        return Folded(features_pb2.FeatureResponse(
            rows=n, features=features.tobytes(), feature_names=names, sequences=sequences.tobytes(),
            seq_len=MF.SEQ_LEN, seq_feature_count=len(MF.SEQ_FEATURE_NAMES), fold_status=status.tolist(),
        ), n)
