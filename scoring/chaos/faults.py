"""The faults the chaos harness injects, each with how it is undone and what a user should see meanwhile.

A fault is injected at a set time and restored either after a fixed window (`timed`: a pause, a proxy fault) or
when the service is back by itself (a crash: the supervisor or the container engine restarts it, and the fault
ends when its health check passes again). `reasons` are the degraded reasons a correct gateway may give while the
fault lasts (all from the stage that is hurt), `primary` is the one that must be seen at least once, and
`error_expected` tells which explicit per-event errors follow from the fault (the cascade's own limits, as the
README's degradation table states them).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass, field
from typing import Any

from scoring.chaos.targets import ChaosTarget, FaultNotSupported

# The gateway's name for each service's stage in degraded reasons (`<stage>_timeout`, ...).
STAGE_OF = {"feature_service": "features", "redis": "features", "filter_model": "filter", "triton": "ensemble"}
KINDS = ("kill", "pause", "latency", "drop", "redis-empty", "client-drop")


def stage_reasons(service: str) -> frozenset[str]:
    stage = STAGE_OF.get(service)
    if stage is None:
        return frozenset()
    return frozenset(f"{stage}_{kind}" for kind in ("timeout", "unavailable", "circuit_open", "error"))


@dataclass
class Fault:
    kind: str
    service: str
    timed: bool = True
    # Latency faults.
    latency_ms: float = 0.0
    jitter_ms: float = 0.0
    # Drop faults: refuse new connections for the whole window, or drop the open ones every `every_s` seconds.
    every_s: float | None = None
    through_proxy: bool = False  # the client reaches the gateway through the fault proxy
    _token: Any = field(default=None, repr=False)
    _flapping: asyncio.Task[None] | None = field(default=None, repr=False)
    _paused: bool = field(default=False, repr=False)
    _proxied: bool = field(default=False, repr=False)

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"unknown fault kind {self.kind!r}; kinds: {', '.join(KINDS)}")

    @property
    def name(self) -> str:
        if self.kind == "latency":
            return f"latency {self.latency_ms:g}±{self.jitter_ms:g} ms to {self.service}"
        if self.kind == "drop":
            how = f"every {self.every_s:g} s" if self.every_s else "refused"
            return f"drop connections to {self.service} ({how})"
        if self.kind == "client-drop":
            slow = f", {self.latency_ms:g} ms latency" if self.latency_ms else ""
            return f"drop client connections to the gateway (every {self.every_s or 1:g} s{slow})"
        if self.kind == "redis-empty":
            return "redis restarted empty"
        return f"{'kill -9' if self.kind == 'kill' else 'SIGSTOP'} {self.service}"

    @property
    def reasons(self) -> frozenset[str]:
        """Degraded reasons a correct gateway may give during this fault."""
        return stage_reasons(self.service)

    def error_expected(self, reason: str) -> bool:
        """Whether an explicit per-event error (UNAVAILABLE: no stage could score the event) follows from this fault.

        `reason` lists the stages' failures in the order they happened ("filter_timeout+ensemble_capacity"). Such
        an error is the cascade's design, not a fault of its own, when the faulted stage failed first and what was
        left could not score the event: with the filter down, events past GATEWAY_UNFILTERED_ENSEMBLE_MAX of a
        batch (`ensemble_capacity`), or an ensemble left without budget after the filter's share ran out. In a
        frozen gateway, events caught inside it have no budget left when it resumes (`budget_exhausted`), after
        the stage call that was in flight when it froze has timed out (`features_timeout+budget_exhausted`)."""
        parts = reason.replace(",", "+").split("+")
        first = parts[0]
        if self.service == "gateway":
            return (self.kind == "pause" and parts[-1] == "budget_exhausted"
                    and all(p == "budget_exhausted" or p.endswith("_timeout") for p in parts))
        return self.kind != "client-drop" and first in self.reasons

    def degraded_expected(self, reason: str) -> bool:
        """Whether a degraded answer's reason fits this fault. A plain reason names stages' failures joined by ","
        (each must be the faulted stage's); an answer of the gateway's last resort names the chain of failures that
        led to it ("filter_timeout+budget_exhausted+last_resort"), which must fit as an error would have."""
        if reason.endswith("+last_resort"):
            return self.error_expected(reason.removesuffix("+last_resort"))
        return all(part in self.reasons for part in reason.split(","))

    @property
    def primary(self) -> str | None:
        """A reason that must be seen during this fault (None: no degradation is expected)."""
        stage = STAGE_OF.get(self.service)
        if stage is None or self.kind == "client-drop":
            return None
        if self.kind in ("pause", "latency"):
            return f"{stage}_timeout"
        return f"{stage}_unavailable"

    @property
    def route(self) -> str:
        return "gateway" if self.kind == "client-drop" else self.service

    async def inject(self, target: ChaosTarget) -> None:
        if self.kind == "kill":
            self._token = await target.crash(self.service)
        elif self.kind == "redis-empty":
            self._token = await target.wipe_and_crash(self.service)
        elif self.kind == "pause":
            await target.pause(self.service)
            self._paused = True
        elif self.kind == "latency":
            self._proxied = True
            await target.proxy().set(self.route, latency_ms=self.latency_ms, jitter_ms=self.jitter_ms)
        elif self.kind in ("drop", "client-drop"):
            proxy = target.proxy()
            self._proxied = True
            if self.latency_ms or self.jitter_ms:  # answers held in flight longer: more of them are lost at a drop
                await proxy.set(self.route, latency_ms=self.latency_ms, jitter_ms=self.jitter_ms)
            every = self.every_s if self.every_s else (1.0 if self.kind == "client-drop" else None)
            if every is None:
                await proxy.set(self.route, refuse=True)
            else:
                await proxy.drop(self.route)
                self._flapping = asyncio.create_task(self._flap(target, every))

    async def _flap(self, target: ChaosTarget, every_s: float) -> None:
        proxy = target.proxy()
        while True:
            await asyncio.sleep(every_s)
            await proxy.drop(self.route)

    async def restore(self, target: ChaosTarget, timeout_s: float) -> float:
        """Undoes the fault (or waits for the service to be back); returns the monotonic time it was."""
        if self.kind in ("kill", "redis-empty"):
            return await target.wait_back(self.service, self._token, timeout_s)
        await self.cleanup(target)
        return time.monotonic()

    async def cleanup(self, target: ChaosTarget) -> None:
        """Idempotent: leaves nothing of the fault behind, even after an error half-way."""
        if self._flapping is not None:
            self._flapping.cancel()
            await asyncio.gather(self._flapping, return_exceptions=True)
            self._flapping = None
        if self._paused:
            await target.resume(self.service)
            self._paused = False
        if self._proxied:
            with contextlib.suppress(FaultNotSupported):
                await target.proxy().reset(self.route)
            self._proxied = False


def parse_fault(text: str) -> Fault:
    """`kill:triton`, `pause:filter_model`, `latency:feature_service:200:50`, `drop:triton`,
    `drop:filter_model:0.5` (flapping), `redis-empty`, `client-drop[:EVERY_S[:LATENCY_MS]]`."""
    parts = text.split(":")
    kind = parts[0]
    if kind == "redis-empty":
        return Fault("redis-empty", "redis", timed=False)
    if kind == "client-drop":
        return Fault("client-drop", "gateway", every_s=float(parts[1]) if len(parts) > 1 else 1.0,
                     latency_ms=float(parts[2]) if len(parts) > 2 else 0.0, through_proxy=True)
    if len(parts) < 2:
        raise ValueError(f"bad fault {text!r}: want KIND:SERVICE[:...]")
    service = parts[1]
    if kind == "kill":
        return Fault("kill", service, timed=False)
    if kind == "pause":
        return Fault("pause", service)
    if kind == "latency":
        latency = float(parts[2]) if len(parts) > 2 else 200.0
        jitter = float(parts[3]) if len(parts) > 3 else latency / 4
        return Fault("latency", service, latency_ms=latency, jitter_ms=jitter)
    if kind == "drop":
        return Fault("drop", service, every_s=float(parts[2]) if len(parts) > 2 else None)
    raise ValueError(f"unknown fault kind {kind!r}; kinds: {', '.join(KINDS)}")


# The standard set: every fault of issue 7, in an order that keeps the gateway's own process (and so its memory
# measurement) for as long as possible: the gateway's crash comes last.
STANDARD_FAULTS = (
    "kill:filter_model", "kill:feature_service", "kill:triton", "redis-empty",
    "pause:filter_model", "pause:feature_service", "pause:triton", "pause:redis",
    # Round trips (twice the added latency) past the stage's share of the 1 s chaos budget: 300 ms for the
    # features, what is left of 950 ms for the ensemble.
    "latency:feature_service:250:50", "latency:triton:700:100",
    "drop:filter_model", "drop:triton:0.5",
    "kill:redis", "client-drop:0.5:50", "pause:gateway", "kill:gateway",
)
