"""How every scenario's online state sits in Redis: hash-tag shards, key names, the client for one Redis or a
Redis Cluster, and a scenario's set of Lua scripts (loaded on every primary, called by SHA)."""

from __future__ import annotations

import asyncio
import hashlib
import zlib
from dataclasses import dataclass, field
from typing import Any

import redis.asyncio as redis
from redis.asyncio.cluster import RedisCluster
from redis.exceptions import NoScriptError

CLUSTER_SCHEME = "redis+cluster://"
Call = tuple[str, list[str], list[Any]]


@dataclass
class Shard:
    """The events of a batch whose entity (a terminal, a customer, a symbol) falls in one hash-tag shard."""

    tag: str
    keys: list[str] = field(default_factory=list)
    key_of: dict[str, int] = field(default_factory=dict)
    events: list[int] = field(default_factory=list)
    key_index: list[int] = field(default_factory=list)  # 1-based, as the scripts take it


# The state layout's version, in every key name (t2{t3}:<terminal>, c2{c7}:<customer>, x2{t3}:<transaction>): a
# layout change gets new keys, so state in an older layout is never read as this one (it expires on its own). 2:
# rings of (bucket, transactions, labelled, frauds) and label routes that remember "no label yet" (issue 15).
STATE_LAYOUT = "2"


def shard_of(entity: str, shards: int) -> int:
    return zlib.crc32(entity.encode()) % shards if shards > 1 else 0


def shard_tag(kind: str, shard: int) -> str:
    return f"{{{kind}{shard}}}"


def split(ids: list[str], kind: str, shards: int) -> list[Shard]:
    groups: dict[int, Shard] = {}
    for i, entity in enumerate(ids):
        s = shard_of(entity, shards)
        group = groups.get(s)
        if group is None:
            group = groups[s] = Shard(shard_tag(kind, s))
        k = group.key_of.get(entity)
        if k is None:
            group.keys.append(f"{kind}{STATE_LAYOUT}{group.tag}:{entity}")
            k = group.key_of[entity] = len(group.keys)
        group.events.append(i)
        group.key_index.append(k)
    return list(groups.values())


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


class StoreUnavailable(Exception):
    """Redis could not be reached or answered with an error."""


class Scripts:
    """A scenario's Lua scripts by SHA, loaded on every primary; reloaded once when Redis has forgotten them."""

    def __init__(self, text: dict[str, str]) -> None:
        self.text = dict(text)
        self.sha = {name: hashlib.sha1(body.encode()).hexdigest() for name, body in self.text.items()}

    async def load(self, client: redis.Redis | RedisCluster) -> None:
        for body in self.text.values():
            await client.script_load(body)

    async def run(self, client: redis.Redis | RedisCluster, calls: list[Call]) -> list[Any]:
        """Runs script calls, given as (name, keys, args), all at once: each is one command to the node of its slot
        (redis-py's cluster pipeline refuses EVALSHA, so a cluster gets concurrent commands)."""
        if len(calls) == 1:  # a single Redis: no task to create
            return [await self.call(client, *calls[0])]
        return list(await asyncio.gather(*(self.call(client, *call) for call in calls)))

    async def call(self, client: redis.Redis | RedisCluster, name: str, keys: list[str], args: list[Any]) -> Any:
        try:
            return await client.evalsha(self.sha[name], len(keys), *keys, *args)
        except NoScriptError:  # a node restarted or joined since the scripts were loaded
            await self.load(client)
            return await client.evalsha(self.sha[name], len(keys), *keys, *args)


@dataclass
class RedisClients:
    """What the feature service hands each scenario's fold: its clients (folds, and labels on their own connection
    with their own timeout) and the layout they share."""

    folds: redis.Redis | RedisCluster
    labels: redis.Redis | RedisCluster
    cluster: bool
    shards: int  # hash-tag shards per entity kind (1 on a single Redis: every call of a phase is one call)
    state_ttl_s: int
    labels_timeout_s: float

    @classmethod
    def connect(
        cls, url: str, *, timeout_s: float, max_connections: int, state_ttl_s: int, labels_timeout_s: float = 10.0,
        cluster: bool = False, shards: int = 16,
    ) -> RedisClients:
        cluster = cluster or is_cluster_url(url)
        shards = max(1, shards) if cluster else 1
        if cluster:
            max_connections = max(max_connections, 2 * shards)
        # Labels on their own connection with their own timeout: behind a long fold, a label batch must wait its
        # turn, not fail on the folds' socket timeout (and be lost by a client that does not retry).
        return cls(
            folds=connect(url, cluster=cluster, timeout_s=timeout_s, max_connections=max_connections),
            labels=connect(url, cluster=cluster, timeout_s=labels_timeout_s, max_connections=max_connections),
            cluster=cluster, shards=shards, state_ttl_s=state_ttl_s, labels_timeout_s=labels_timeout_s,
        )

    async def warm_up(self) -> None:
        try:
            await self.folds.ping()
            await self.labels.ping()
        except redis.RedisError as exc:
            raise StoreUnavailable(str(exc)) from exc

    async def close(self) -> None:
        await self.folds.aclose()
        await self.labels.aclose()
