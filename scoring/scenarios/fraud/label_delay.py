"""When each label becomes known: the label-arrival model shared by training, replay and evaluation.

A transaction's label (fraud or genuine) arrives at its event time plus a delay drawn from a distribution named by
a spec string:

- ``fixed:7d``: every label exactly that long after its transaction (the handbook's assumption; units d, h, m, s);
- ``uniform:1d-14d``: uniform between the two bounds;
- ``realistic``: ``0.9 * uniform(1d, 14d) + 0.1 * uniform(14d, 60d)``. Most fraud is confirmed within two weeks
  (the cardholder notices it on a statement or an app and disputes it; Dal Pozzolo et al., "Credit Card Fraud
  Detection: A Realistic Modeling and a Novel Learning Strategy", IEEE TNNLS 2018, model the feedback of all
  unchecked transactions as arriving after a delay of about a week), and a tail arrives through chargebacks, which
  card schemes accept for months after the transaction (practitioners report 30 to 90 days). The split and
  bounds are our assumption shaped by those two sources, not a fit to data: measure your own and pass it as a
  spec.

Delays are a pure function of (transaction id, seed): a replay of any part of a dataset draws the same delay for a
transaction as training did on the whole, and every label arrives at least one microsecond after its transaction.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final

import numpy as np

US_PER_DAY: Final = 86_400_000_000
_UNITS_US: Final = {"d": US_PER_DAY, "h": 3_600_000_000, "m": 60_000_000, "s": 1_000_000}
REALISTIC: Final = "realistic"
# (weight, low, high) of each uniform part of the realistic mix, in days.
REALISTIC_PARTS: Final = ((0.9, 1.0, 14.0), (0.1, 14.0, 60.0))
# The three arrival models `scoring evaluate` compares by default.
EVALUATED: Final = ("fixed:7d", "fixed:8d", REALISTIC)
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([dhms])\s*$")


def parse_duration_us(text: str) -> int:
    """'7d', '36h', '90m', '30s' -> microseconds."""
    match = _DURATION.match(text)
    if not match:
        raise ValueError(f"not a duration: {text!r} (a number and a unit d, h, m or s, as in 7d)")
    return int(round(float(match.group(1)) * _UNITS_US[match.group(2)]))


@dataclass(frozen=True)
class LabelDelay:
    """A label-arrival model: a mixture of uniform delays [low_us, high_us] (low == high: a fixed delay)."""

    spec: str
    parts: tuple[tuple[float, int, int], ...]  # (weight, low_us, high_us)

    @classmethod
    def parse(cls, spec: str) -> LabelDelay:
        text = spec.strip().lower()
        if text == REALISTIC:
            parts = tuple((w, int(lo * US_PER_DAY), int(hi * US_PER_DAY)) for w, lo, hi in REALISTIC_PARTS)
            return cls(REALISTIC, parts)
        kind, _, rest = text.partition(":")
        if kind == "fixed" and rest:
            delay = parse_duration_us(rest)
            return cls._checked(text, ((1.0, delay, delay),))
        if kind == "uniform" and "-" in rest:
            low, _, high = rest.partition("-")
            return cls._checked(text, ((1.0, parse_duration_us(low), parse_duration_us(high)),))
        raise ValueError(f"unknown label delay {spec!r}: use fixed:<duration>, uniform:<low>-<high> or {REALISTIC}")

    @classmethod
    def _checked(cls, spec: str, parts: tuple[tuple[float, int, int], ...]) -> LabelDelay:
        for _, low, high in parts:
            if low < 1 or high < low:
                raise ValueError(f"label delay {spec!r}: delays must be at least 1 us and low <= high")
        return cls(spec, parts)

    @property
    def max_us(self) -> int:
        return max(high for _, _, high in self.parts)

    def delays_us(self, transaction_id: np.ndarray, seed: int = 0) -> np.ndarray:
        """One delay per transaction (int64 us), a pure function of (id, seed)."""
        u1, u2 = _uniforms(np.asarray(transaction_id, dtype=np.int64), seed)
        weights = np.array([w for w, _, _ in self.parts])
        part = np.searchsorted(np.cumsum(weights) / weights.sum(), u1, side="right").clip(0, len(self.parts) - 1)
        low = np.array([lo for _, lo, _ in self.parts], dtype=np.float64)[part]
        high = np.array([hi for _, _, hi in self.parts], dtype=np.float64)[part]
        return np.maximum(np.round(low + u2 * (high - low)).astype(np.int64), 1)

    def arrival_us(self, time_us: np.ndarray, transaction_id: np.ndarray, seed: int = 0) -> np.ndarray:
        return np.asarray(time_us, dtype=np.int64) + self.delays_us(transaction_id, seed)


def _uniforms(ids: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Two independent U[0, 1) per id from a counter-based hash (splitmix64 finaliser), so no state is carried."""
    with np.errstate(over="ignore"):
        x = ids.astype(np.uint64) * np.uint64(0x9E3779B97F4A7C15) + np.uint64((seed * 0xBF58476D1CE4E5B9) % 2**64)
        out = []
        for salt in (np.uint64(0x94D049BB133111EB), np.uint64(0xD6E8FEB86659FD93)):
            z = x ^ salt
            z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
            z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
            z ^= z >> np.uint64(31)
            out.append((z >> np.uint64(11)).astype(np.float64) / float(2**53))
    return out[0], out[1]
