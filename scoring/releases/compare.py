"""Paired shadow comparison: the champion's and the shadow's scores of the same events, on the same features.

The window holds the last `capacity` pairs in fixed numpy rings (a fixed cost per event, whatever the rate), and
`figures` reads them: the quantiles of the score difference, agreement at each release's decision threshold, the
alert rate of each (share of events at or over its threshold) and the overlap of their top k.
"""

from __future__ import annotations

from typing import Any

import numpy as np

TOP_K_SHARE = 0.01


class PairedWindow:
    def __init__(self, capacity: int = 200_000) -> None:
        self.capacity = capacity
        self.primary = np.zeros(capacity)
        self.shadow = np.zeros(capacity)
        self.ids: list[str] = [""] * capacity
        self.n = 0  # pairs written into the ring in all
        self.seen = 0  # pairs seen in all (a batch larger than the ring keeps its last `capacity`)
        self.failed = 0  # shadow batches that got no score (a stage failed or was late)
        self.skipped = 0  # batches not shadowed (too many shadow batches in flight)

    def add(self, ids: list[str], primary: np.ndarray, shadow: np.ndarray) -> None:
        m = len(ids)
        self.seen += m
        if m == 0:
            return
        if m > self.capacity:
            ids, primary, shadow = ids[-self.capacity:], primary[-self.capacity:], shadow[-self.capacity:]
            m = self.capacity
        at = (self.n + np.arange(m)) % self.capacity
        self.primary[at] = primary
        self.shadow[at] = shadow
        for j, i in enumerate(at.tolist()):
            self.ids[i] = ids[j]
        self.n += m

    def figures(self, primary_threshold: float, shadow_threshold: float) -> dict[str, Any]:
        size = min(self.n, self.capacity)
        out: dict[str, Any] = {"pairs": size, "pairs_seen": self.seen, "shadow_failed_batches": self.failed,
                               "shadow_skipped_batches": self.skipped}
        if size == 0:
            return out
        p, s = self.primary[:size], self.shadow[:size]
        diff = s - p
        q = np.quantile(np.abs(diff), [0.5, 0.9, 0.99])
        alert_p, alert_s = p >= primary_threshold, s >= shadow_threshold
        k = max(1, int(round(size * TOP_K_SHARE)))
        top_p = set(np.argpartition(-p, k - 1)[:k].tolist())
        top_s = set(np.argpartition(-s, k - 1)[:k].tolist())
        out.update({
            "mean_difference": float(diff.mean()),
            "abs_difference_p50": float(q[0]),
            "abs_difference_p90": float(q[1]),
            "abs_difference_p99": float(q[2]),
            "agreement": float((alert_p == alert_s).mean()),
            "alert_rate_champion": float(alert_p.mean()),
            "alert_rate_shadow": float(alert_s.mean()),
            "alert_rate_difference": float(alert_s.mean() - alert_p.mean()),
            "top_k": k,
            "top_k_overlap": len(top_p & top_s) / k,
        })
        return out
