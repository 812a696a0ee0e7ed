"""Canary gates that understand rare events: per-release live figures over one window, and the verdict on them.

The champion and the candidate are judged over the same window (since the canary's step began), on the events each
answered: sample size, p99 latency, error and degraded rates, alert rate (share at or over each release's decision
threshold), a population-stability index of the candidate's scores against the champion's, and the paired
agreement of the candidate's shadow scores on champion events. Too few events is "inconclusive", never a pass:
frauds are rare, and a few hundred events say little about an alert rate of a percent or two.

Rates are judged by their confidence intervals (Wilson, at Z standard deviations), not their point values: a rate
fails only when the candidate's whole interval lies past the bound set from the champion's interval. Seen here
before this rule: an identical candidate, 7 alerts in 1,024 events against the champion's 1.4%, failed a plain
2x ratio bound and was rolled back.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

PASS, FAIL, INCONCLUSIVE = "pass", "fail", "inconclusive"
# Standard deviations of the rate intervals: a false rollback of a good candidate at about 1 in 700 per bound.
Z = 3.0
# Score bins for the PSI: fraud scores crowd near 0, so the low end is fine-grained.
PSI_EDGES = np.array([0.0, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.35, 0.5, 0.75, 1.0 + 1e-9])
_PSI_FLOOR = 1e-4  # an empty bin's share, so the index stays finite


@dataclass(frozen=True)
class GateSpec:
    # The candidate's events in the window before any verdict (and the champion's).
    min_events: int = 2000
    # Candidate p99 at most max(champion p99 * ratio, champion p99 + slack).
    p99_ratio: float = 1.5
    p99_slack_ms: float = 2.0
    # Rate differences (candidate - champion) allowed.
    max_error_rate_increase: float = 0.005
    max_degraded_rate_increase: float = 0.02
    # Alert rate of the candidate within [champion / ratio, champion * ratio], with an absolute slack for tiny rates.
    alert_rate_ratio: float = 2.0
    alert_rate_slack: float = 0.002
    max_score_psi: float = 0.2
    # Paired shadow agreement at the decision thresholds, once this many pairs are in.
    min_agreement: float = 0.95
    min_pairs: int = 500


# Latencies and scores kept per release and window at most (counts go on): a bound on memory for a long step.
WINDOW_KEPT_MAX = 200_000


@dataclass
class ReleaseWindow:
    """One release's answers in the current window (a canary step): counts, and its first latencies and scores."""

    latency_s: list[np.ndarray] = field(default_factory=list)
    score: list[np.ndarray] = field(default_factory=list)
    events: int = 0
    errors: int = 0
    degraded: int = 0
    alerts: int = 0

    def add(self, latency_s: np.ndarray, score: np.ndarray, degraded: np.ndarray, error: np.ndarray,
            threshold: float) -> None:
        ok = ~error
        self.events += len(latency_s)
        self.errors += int(error.sum())
        self.degraded += int((degraded & ok).sum())
        self.alerts += int((score[ok] >= threshold).sum())
        if self.events <= WINDOW_KEPT_MAX:
            self.latency_s.append(latency_s)
            self.score.append(score[ok])

    def figures(self) -> dict[str, float]:
        n = max(self.events, 1)
        latency = np.concatenate(self.latency_s) if self.latency_s else np.zeros(0)
        return {
            "events": self.events,
            "p99_ms": float(np.quantile(latency, 0.99) * 1e3) if len(latency) else 0.0,
            "error_rate": self.errors / n,
            "degraded_rate": self.degraded / n,
            "alert_rate": self.alerts / n,
        }

    def scores(self) -> np.ndarray:
        return np.concatenate(self.score) if self.score else np.zeros(0)


def wilson(k: int, n: int, z: float = Z) -> tuple[float, float]:
    """The Wilson score interval of a rate of k in n."""
    if n <= 0:
        return 0.0, 1.0
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return float(max(0.0, centre - half)), float(min(1.0, centre + half))


def psi(expected: np.ndarray, actual: np.ndarray, edges: np.ndarray = PSI_EDGES) -> float:
    """Population-stability index of `actual` against `expected` on fixed bins."""
    e = np.histogram(np.clip(expected, 0.0, 1.0), edges)[0] / max(len(expected), 1)
    a = np.histogram(np.clip(actual, 0.0, 1.0), edges)[0] / max(len(actual), 1)
    e, a = np.maximum(e, _PSI_FLOOR), np.maximum(a, _PSI_FLOOR)
    return float(np.sum((a - e) * np.log(a / e)))


@dataclass(frozen=True)
class Verdict:
    state: str
    reasons: tuple[str, ...]
    figures: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self) | {"reasons": list(self.reasons)}


def judge(spec: GateSpec, champion: ReleaseWindow, candidate: ReleaseWindow, shadow: dict[str, Any]) -> Verdict:
    c, k = champion.figures(), candidate.figures()
    figures: dict[str, Any] = {"champion": c, "candidate": k}
    if k["events"] < spec.min_events or c["events"] < spec.min_events:
        need = f"{spec.min_events} events each (champion {c['events']}, candidate {k['events']})"
        return Verdict(INCONCLUSIVE, (f"too few events: {need}",), figures)
    failed = []
    p99_bound = max(c["p99_ms"] * spec.p99_ratio, c["p99_ms"] + spec.p99_slack_ms)
    if k["p99_ms"] > p99_bound:
        failed.append(f"p99 {k['p99_ms']:.2f} ms > {p99_bound:.2f} ms")
    for what, count, limit in (("error rate", "errors", spec.max_error_rate_increase),
                               ("degraded rate", "degraded", spec.max_degraded_rate_increase)):
        k_lo, _ = wilson(getattr(candidate, count), candidate.events)
        _, c_hi = wilson(getattr(champion, count), champion.events)
        if k_lo - c_hi > limit:
            failed.append(f"{what} {k[what.replace(' ', '_')]:.4f} vs champion {c[what.replace(' ', '_')]:.4f} "
                          f"(candidate at least {k_lo:.4f}, champion at most {c_hi:.4f})")
    k_lo, k_hi = wilson(candidate.alerts, candidate.events)
    c_lo, c_hi = wilson(champion.alerts, champion.events)
    low = c_lo / spec.alert_rate_ratio - spec.alert_rate_slack
    high = c_hi * spec.alert_rate_ratio + spec.alert_rate_slack
    figures["alert_rate_interval"] = {"candidate": [k_lo, k_hi], "champion": [c_lo, c_hi]}
    if k_lo > high or k_hi < low:
        failed.append(f"alert rate {k['alert_rate']:.4f} (interval {k_lo:.4f}-{k_hi:.4f}) outside "
                      f"[{max(low, 0.0):.4f}, {high:.4f}] from the champion's {c['alert_rate']:.4f}")
    figures["score_psi"] = psi(champion.scores(), candidate.scores())
    if figures["score_psi"] > spec.max_score_psi:
        failed.append(f"score PSI {figures['score_psi']:.3f} > {spec.max_score_psi}")
    pairs = int(shadow.get("pairs", 0))
    figures["shadow_pairs"] = pairs
    if pairs >= spec.min_pairs:
        figures["shadow_agreement"] = float(shadow["agreement"])
        if shadow["agreement"] < spec.min_agreement:
            failed.append(f"shadow agreement {shadow['agreement']:.4f} < {spec.min_agreement}")
    elif not failed:
        return Verdict(INCONCLUSIVE, (f"too few shadow pairs: {pairs} of {spec.min_pairs}",), figures)
    if failed:
        return Verdict(FAIL, tuple(failed), figures)
    return Verdict(PASS, (), figures)
