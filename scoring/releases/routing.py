"""Who serves what: the champion, a candidate in shadow or canary, and the salted hash that picks canary entities.

The state is one small JSON file in the release store, rewritten whole (write, fsync, rename) on every change, so a
gateway that restarts reads the same routing, and the same salt puts the same entities on the candidate.

Canary by entity: an entity (a customer for fraud) is on the candidate when the first 8 bytes of
BLAKE2b(salt, entity id) read as a fraction of 2**64 fall under the canary's fraction. The fraction only grows
through the steps, so an entity on the candidate at 5% stays on it at 25%: within a step every entity is scored by
one release, and across steps it moves at most once, from the champion to the candidate.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

MODES = ("none", "shadow", "canary")
DEFAULT_STEPS = (0.01, 0.05, 0.25, 0.5, 1.0)
_SCALE = float(2**64)


@dataclass(frozen=True)
class Routing:
    champion: str = ""
    candidate: str = ""
    mode: str = "none"
    steps: tuple[float, ...] = ()
    step: int = -1  # index into steps while a canary runs
    # The champion before the last promotion: kept loaded while the promotion is provisional (labels mature).
    previous: str = ""
    salt: str = field(default_factory=lambda: secrets.token_hex(8))
    changed_at: float = 0.0
    reason: str = ""

    @property
    def fraction(self) -> float:
        return self.steps[self.step] if self.mode == "canary" and 0 <= self.step < len(self.steps) else 0.0

    def live(self) -> list[str]:
        """Releases whose models must stay loaded."""
        return [n for n in dict.fromkeys((self.champion, self.candidate, self.previous)) if n]

    def changed(self, reason: str, **fields: Any) -> Routing:
        return replace(self, changed_at=time.time(), reason=reason, **fields)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["steps"] = list(self.steps)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Routing:
        data = dict(data)
        data["steps"] = tuple(float(s) for s in data.get("steps", ()))
        if data.get("mode", "none") not in MODES:
            raise ValueError(f"routing: mode {data['mode']!r} is not one of {', '.join(MODES)}")
        return cls(**{k: v for k, v in data.items() if k in cls.__dataclass_fields__})


def validate_steps(steps: tuple[float, ...]) -> tuple[float, ...]:
    if not steps:
        return DEFAULT_STEPS
    if any(not (0.0 < s <= 1.0) for s in steps) or list(steps) != sorted(set(steps)):
        raise ValueError(f"steps: {list(steps)} must be increasing fractions in (0, 1] (for example 0.01,0.05,0.25)")
    return steps


def entity_fraction(salt: str, entity: str) -> float:
    digest = hashlib.blake2b(entity.encode(), digest_size=8, key=salt.encode()).digest()
    return int.from_bytes(digest, "big") / _SCALE


def on_candidate(salt: str, entities: list[str], fraction: float) -> np.ndarray:
    """One bool per entity: whether the canary at `fraction` sends it to the candidate."""
    if fraction <= 0.0:
        return np.zeros(len(entities), dtype=bool)
    if fraction >= 1.0:
        return np.ones(len(entities), dtype=bool)
    return np.fromiter((entity_fraction(salt, e) < fraction for e in entities), dtype=bool, count=len(entities))


class RoutingFile:
    """The routing of each scenario, in `<store>/routing.json`."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)

    def read(self, scenario: str = "fraud") -> Routing | None:
        if not self.path.is_file():
            return None
        data = json.loads(self.path.read_text()).get(scenario)
        return None if data is None else Routing.from_dict(data)

    def write(self, routing: Routing, scenario: str = "fraud") -> None:
        everything = json.loads(self.path.read_text()) if self.path.is_file() else {}
        everything[scenario] = routing.to_dict()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        with tmp.open("w") as f:
            f.write(json.dumps(everything, indent=2))
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.path)
