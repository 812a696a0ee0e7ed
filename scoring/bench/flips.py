"""Release flips under load: the gateway's p99 and Triton's memory across promote/rollback cycles (`make bench`).

A candidate is made from the stack's own training output and loaded once (a canary at 100% loads and warms it,
a rollback ends the canary and leaves it loaded). Then a steady stream runs twice for the same time at the same
rate: once with the routing left alone (the floor of this row), once while the routing flips between the two
releases (promote it, roll back: one cycle, routing only). Reported: p99 of each, Triton's RSS (server and
backend stubs) before and after the flips, and the models Triton loaded meanwhile (its log's "successfully
loaded" lines: none is the point).
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import psutil

from scoring.bench.driver import run_step
from scoring.bench.workload import EventSource, build_load
from scoring.v1 import releases_pb2, releases_pb2_grpc

FLIP_RATE = 500.0
ROUNDS = 5


def triton_rss_mb(stack: Any) -> float:
    """Resident memory of tritonserver and every process under it (the Python-backend stubs)."""
    child = stack.children.get("triton")
    if child is None or child.pid is None:
        return 0.0
    try:
        root = psutil.Process(child.pid)
        procs = [root, *root.children(recursive=True)]
        return sum(p.memory_info().rss for p in procs if p.is_running()) / 2**20
    except psutil.Error:
        return 0.0


def _loads(stack: Any) -> int:
    return (Path(stack.config.logs) / "triton.log").read_text().count("successfully loaded")


async def release_flips(stack: Any, source: EventSource, run_tag: str, *, cycles: int = 50,
                        duration_s: float = 20.0) -> dict[str, Any]:
    name = f"bench-flip-{run_tag}".lower()
    async with grpc.aio.insecure_channel(stack.admin_address) as channel:
        admin = releases_pb2_grpc.ReleasesStub(channel)
        champion = (await admin.Status(releases_pb2.StatusRequest(), timeout=10)).champion
        await admin.Create(releases_pb2.CreateReleaseRequest(name=name, source=str(stack.config.artifacts.resolve()),
                                                             by="bench"), timeout=120)
        await admin.Canary(releases_pb2.CanaryRequest(name=name, steps=[1.0], by="bench"), timeout=180)
        await admin.Rollback(releases_pb2.RollbackRequest(by="bench", reason="loaded for the flips"), timeout=10)

        # Not measured: the stream's first seconds (new customers' state, the candidate's first batches).
        warm_load = build_load(source, "batch", FLIP_RATE, duration_s / 4, f"{run_tag}fw-")
        await run_step(stack.gateway_address, warm_load, name="flips: warm-up", rate=FLIP_RATE,
                       duration_s=duration_s / 4)
        # Interleaved, steady then flipping, ROUNDS times: the stack's own drift over a run (seen here: a second
        # window 2x the first's p99 with one flip in it) falls on both sides alike.
        rss_before, loads_before = triton_rss_mb(stack), _loads(stack)
        flip_times: list[float] = []
        part_s = duration_s / ROUNDS
        per_round = max(1, cycles // ROUNDS)

        async def flip() -> None:
            pause = part_s / per_round / 2
            for _ in range(per_round):
                # One call at a time: a grpc.aio call starts when it is made, not when it is awaited.
                for call in (
                    lambda: admin.Promote(releases_pb2.ReleaseRequest(name=name, by="bench"), timeout=10),
                    lambda: admin.Rollback(releases_pb2.RollbackRequest(by="bench", reason="flip"), timeout=10),
                ):
                    t = time.perf_counter()
                    await call()
                    flip_times.append(time.perf_counter() - t)
                    await asyncio.sleep(pause)

        steady_p99, flipping_p99, answered = [], [], {"steady": 0, "flipping": 0}
        for r in range(ROUNDS):
            load = build_load(source, "batch", FLIP_RATE, part_s, f"{run_tag}fs{r}-")
            steady = await run_step(stack.gateway_address, load, name="flips: steady", rate=FLIP_RATE,
                                    duration_s=part_s)
            load = build_load(source, "batch", FLIP_RATE, part_s, f"{run_tag}ff{r}-")
            flipped, _ = await asyncio.gather(
                run_step(stack.gateway_address, load, name="flips: flipping", rate=FLIP_RATE, duration_s=part_s),
                flip(),
            )
            steady_p99.append(steady.percentile_ms(99))
            flipping_p99.append(flipped.percentile_ms(99))
            answered["steady"] += steady.answered
            answered["flipping"] += flipped.answered
        rss_after, loads_after = triton_rss_mb(stack), _loads(stack)
        status = await admin.Status(releases_pb2.StatusRequest(), timeout=10)
        await admin.Retire(releases_pb2.ReleaseRequest(name=name, by="bench"), timeout=60)
    p99_steady, p99_flips = float(np.median(steady_p99)), float(np.median(flipping_p99))
    return {
        "cycles": per_round * ROUNDS,
        "rounds": ROUNDS,
        "p99_steady_rounds_ms": [round(v, 2) for v in steady_p99],
        "p99_flipping_rounds_ms": [round(v, 2) for v in flipping_p99],
        "rate": FLIP_RATE,
        "duration_s": duration_s,
        "p99_steady_ms": round(p99_steady, 2),
        "p99_flipping_ms": round(p99_flips, 2),
        "p99_ratio": round(p99_flips / max(p99_steady, 1e-9), 3),
        "answered_steady": answered["steady"],
        "answered_flipping": answered["flipping"],
        "triton_rss_mb_before": round(rss_before, 1),
        "triton_rss_mb_after": round(rss_after, 1),
        "triton_loads_during_flips": loads_after - loads_before,
        "admin_call_p50_ms": round(sorted(flip_times)[len(flip_times) // 2] * 1e3, 2) if flip_times else None,
        "champion_after": status.champion,
        "champion_before": champion,
    }


def format_flips(f: dict[str, Any]) -> str:
    return (f"Release flips ({f['cycles']} promote/rollback cycles over {f['duration_s']:g} s at "
            f"{f['rate']:g} events/s, ScoreBatchStream, {f['rounds']} interleaved rounds): median p99 "
            f"{f['p99_flipping_ms']:.2f} ms flipping against {f['p99_steady_ms']:.2f} ms steady "
            f"({f['p99_ratio']:.2f}x; target within 1.10x: {'met' if f['p99_ratio'] <= 1.10 else 'missed'}); "
            f"Triton RSS {f['triton_rss_mb_before']:.0f} -> "
            f"{f['triton_rss_mb_after']:.0f} MiB; Triton model loads during the flips: "
            f"{f['triton_loads_during_flips']}; admin call p50 {f['admin_call_p50_ms']} ms.")
