"""The canary's gate in the gateway: per-release windows of a step's answers, judged on a timer.

Every `interval_s` the step's windows (`scoring.releases.gates`) give a verdict: a failed gate rolls the candidate
back at once, with the figures in the audit log; a passed one, once the step has held `step_min_s`, moves to the
next step or, after the last, promotes; an inconclusive one waits for more events.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING, Any

import numpy as np

from scoring.releases.gates import FAIL, INCONCLUSIVE, PASS, GateSpec, ReleaseWindow, Verdict, judge
from services.gateway import metrics as M

if TYPE_CHECKING:
    from services.gateway.cascade import BatchOutcome
    from services.gateway.releases import ReleaseManager

log = logging.getLogger(__name__)


class CanaryGate:
    def __init__(self, manager: ReleaseManager, spec: GateSpec, *, interval_s: float, step_min_s: float) -> None:
        self.manager = manager
        self.spec = spec
        self.interval_s = interval_s
        self.step_min_s = step_min_s
        self.windows: dict[str, ReleaseWindow] = {}
        self.step_started = 0.0
        self.verdict: Verdict | None = None
        self._task: asyncio.Future[None] | None = None

    def start(self) -> None:
        if self.manager.routing.mode == "canary":
            self.new_step(fresh=True)  # a restarted gateway judges the step afresh: its figures were in the old one
        self._task = asyncio.ensure_future(self._loop())

    def close(self) -> None:
        if self._task is not None:
            self._task.cancel()

    def observe(self, outcome: BatchOutcome, latency_s: np.ndarray) -> None:
        """A batch's answers into the per-release series and, during a canary, its per-release windows."""
        if not outcome.release:
            return
        releases = np.asarray(outcome.release)
        canary = self.manager.routing.mode == "canary"
        if canary:
            degraded = np.fromiter((bool(r) for r in outcome.degraded_reason), dtype=bool, count=len(releases))
        error = np.fromiter((bool(e) for e in outcome.error), dtype=bool, count=len(releases))
        for name in np.unique(releases).tolist():
            if not name:
                continue
            rows = releases == name
            threshold = self.manager.alert_threshold.get(name, 0.5)
            M.RELEASE_ALERTS.labels(name).inc(int(((outcome.score[rows] >= threshold) & ~error[rows]).sum()))
            histogram = M.RELEASE_LATENCY.labels(name)
            for latency in latency_s[rows].tolist():
                histogram.observe(latency)
            window = self.windows.get(name) if canary else None
            if window is not None:
                window.add(latency_s[rows], outcome.score[rows], degraded[rows], error[rows], threshold)

    def new_step(self, *, fresh: bool = False) -> None:
        """Fresh windows for a step (`fresh`: a new canary); at 100% the champion answers nothing, so its last
        step's window stays the reference (and so does the paired comparison gathered so far)."""
        routing = self.manager.routing
        champion = None if fresh else self.windows.get(routing.champion)
        if routing.fraction < 1.0 or champion is None:
            champion = ReleaseWindow()
        self.windows = {routing.champion: champion, routing.candidate: ReleaseWindow()}
        self.step_started = time.monotonic()
        self.verdict = None

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self.interval_s)
            try:
                await self.judge_step()
            except Exception:  # the loop must outlive any one bad verdict; counted in the log
                log.exception("gate failed")

    async def judge_step(self) -> Verdict | None:
        """One look at the canary's step: roll back on a failed gate, step up (or promote) on a passed one."""
        manager = self.manager
        routing = manager.routing
        if routing.mode != "canary":
            return None
        champion, candidate = self.windows.get(routing.champion), self.windows.get(routing.candidate)
        if champion is None or candidate is None:
            return None
        verdict = judge(self.spec, champion, candidate, manager.shadow_figures())
        self.verdict = verdict
        for state in (PASS, FAIL, INCONCLUSIVE):
            M.GATE_STATE.labels(routing.candidate, state).set(1.0 if verdict.state == state else 0.0)
        if verdict.state == FAIL:
            log.warning("gate failed: rolling back", extra={"release": routing.candidate,
                                                             "reasons": list(verdict.reasons)})
            await manager.rollback("gate", "; ".join(verdict.reasons), gate=verdict.to_dict())
        elif verdict.state == PASS and time.monotonic() - self.step_started >= self.step_min_s:
            async with manager.lock:
                if manager.routing != routing:
                    return verdict  # changed by an admin call meanwhile
                if routing.step + 1 < len(routing.steps):
                    await manager.set_routing(routing.changed("gate passed", step=routing.step + 1))
                    self.new_step()
                    await manager.record("canary_step", routing.candidate, by="gate", step=routing.step + 1,
                                      fraction=manager.routing.fraction, champion=routing.champion,
                                      gate=verdict.to_dict())
                    return verdict
            await manager.promote(routing.candidate, "gate", gate=verdict.to_dict())
        return verdict

    def figures(self) -> dict[str, Any]:
        if self.verdict is None:
            return {}
        return self.verdict.to_dict() | {"step_held_s": round(time.monotonic() - self.step_started, 1)}
