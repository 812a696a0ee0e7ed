"""How the feature service's state sits in Redis: hash-tag shards, key names, the client for one Redis or a
Redis Cluster, and the Lua scripts (loaded on every primary; the fused fold for a single Redis)."""

from __future__ import annotations

import asyncio
import hashlib
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis.asyncio as redis
from redis.asyncio.cluster import RedisCluster
from redis.exceptions import NoScriptError

_HERE = Path(__file__).resolve().parent
CLUSTER_SCHEME = "redis+cluster://"
Call = tuple[str, list[str], list[Any]]


@dataclass
class Shard:
    """The events of a batch whose entity (terminal or customer) falls in one hash-tag shard."""

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


class Scripts:
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

    async def both(self, client: redis.Redis, terminal: Call, customer: Call) -> tuple[Any, Any]:
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
