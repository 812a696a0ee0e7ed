"""What a fold costs Redis and the feature service, measured from Redis's own accounting (`INFO cpu`,
`INFO commandstats`) around direct `FeatureStore` folds of a simulated stream, the entities first warmed with
most of their history. Run against any checkout (the store's interface is unchanged since issue 4), so that an
A/B of two state layouts uses the same command:

    python -m scoring.bench.fold --url redis://127.0.0.1:6379/0

`scoring bench` runs it on the stack's Redis and prints it beside the stack's figures.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
import uuid
from typing import Any

import numpy as np
import redis.asyncio as redis

from scoring.scenarios.fraud import simulator
from scoring.scenarios.fraud.online import EventBatch, FeatureStore

SIMULATION = simulator.SimulationConfig(n_customers=2000, n_terminals=4000, n_days=12, seed=3)


async def redis_account(url: str) -> tuple[float, dict[str, tuple[int, int]]]:
    """(used CPU seconds, {command: (calls, usec)}) of the Redis behind `url`, summed over a cluster's masters."""
    nodes: list[redis.Redis] = []
    if url.startswith("redis+cluster://"):
        from redis.asyncio.cluster import RedisCluster

        cluster = RedisCluster.from_url("redis://" + url.removeprefix("redis+cluster://"))
        await cluster.initialize()
        nodes = [redis.Redis(host=n.host, port=int(n.port)) for n in cluster.get_primaries()]
        await cluster.aclose()
    else:
        nodes = [redis.Redis.from_url(url)]
    cpu = 0.0
    commands: dict[str, tuple[int, int]] = {}
    for node in nodes:
        info = await node.info("cpu")
        cpu += float(info["used_cpu_sys"]) + float(info["used_cpu_user"])
        for name, stats in (await node.info("commandstats")).items():
            calls, usec = commands.get(name, (0, 0))
            commands[name] = (calls + int(stats["calls"]), usec + int(stats["usec"]))
        await node.aclose()
    return cpu, commands


async def fold_cost(url: str, batch_sizes: tuple[int, ...] = (500, 1), **store_options: Any) -> dict[str, Any]:
    frame = simulator.simulate(SIMULATION)
    n = len(frame)
    tag = uuid.uuid4().hex[:8]
    ids = [f"{tag}-{t}" for t in frame["TRANSACTION_ID"].to_numpy()]
    time_us = frame["TX_DATETIME"].to_numpy().astype("datetime64[us]").astype(np.int64)
    customers = [f"{tag}C{c}" for c in frame["CUSTOMER_ID"].to_numpy()]
    terminals = [f"{tag}T{t}" for t in frame["TERMINAL_ID"].to_numpy()]
    amount = frame["TX_AMOUNT"].to_numpy(dtype=np.float64)
    store = FeatureStore.from_url(url, timeout_s=10, max_connections=32, state_ttl_s=3600, **store_options)
    await store.warm_up()

    async def fold(lo: int, hi: int, size: int) -> None:
        for s in range(lo, hi, size):
            e = min(hi, s + size)
            await store.update_and_get(
                EventBatch(ids[s:e], time_us[s:e], customers[s:e], terminals[s:e], amount[s:e])
            )

    # 80% of the history first (the entities' state as a long-running stack holds it), then measured folds.
    warm = int(n * 0.8)
    await fold(0, warm, 500)
    spans = {500: (warm, warm + int(n * 0.15)), 1: (warm + int(n * 0.15), min(n, warm + int(n * 0.15) + 3000))}
    out: dict[str, Any] = {"events": n, "warmed": warm, "steps": []}
    for size in batch_sizes:
        lo, hi = spans.get(size, spans[500])
        cpu0, cmd0 = await redis_account(url)
        wall0, proc0 = time.perf_counter(), time.process_time()
        await fold(lo, hi, size)
        wall1, proc1 = time.perf_counter(), time.process_time()
        cpu1, cmd1 = await redis_account(url)
        m = hi - lo
        scripts = [name for name in cmd1 if name in ("cmdstat_evalsha", "cmdstat_eval")]
        script_usec = sum(cmd1[k][1] - cmd0.get(k, (0, 0))[1] for k in scripts)
        out["steps"].append({
            "batch": size,
            "events": m,
            "redis_cpu_us_per_event": round(1e6 * (cpu1 - cpu0) / m, 1),
            "redis_script_us_per_event": round(script_usec / m, 1),
            "store_cpu_us_per_event": round(1e6 * (proc1 - proc0) / m, 1),
            "events_per_s": round(m / (wall1 - wall0), 1),
        })
    await store.close()
    return out


def format_fold_cost(cost: dict[str, Any]) -> list[str]:
    lines = []
    for s in cost["steps"]:
        lines.append(
            f"Fold of {s['events']:,} events in batches of {s['batch']} (entities warmed with {cost['warmed']:,} "
            f"earlier events): Redis {s['redis_cpu_us_per_event']:.1f} us of CPU per event by INFO cpu "
            f"(scripts {s['redis_script_us_per_event']:.1f} by commandstats; target 10 at saturation), the "
            f"feature store {s['store_cpu_us_per_event']:.1f} us, {s['events_per_s']:,.0f} events/s."
        )
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", default="redis://127.0.0.1:6379/0")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    cost = asyncio.run(fold_cost(args.url))
    print(json.dumps(cost, indent=2) if args.json else "\n".join(format_fold_cost(cost)))


if __name__ == "__main__":
    main()
