"""The release audit log: one JSON object a line, appended and flushed to disk per event, never rewritten.

Every release event (created, shadow started, canary step, promoted, rolled back, retired) is a line with when, what,
which release, who or what triggered it, and the figures behind it (a gate's evidence), so that "which release
scored this transaction on that day" is answered by reading the lines up to that day.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

EVENTS = ("created", "shadow_started", "canary_step", "promoted", "rolled_back", "retired", "stopped")


@dataclass(frozen=True)
class AuditEvent:
    at: float
    event: str
    release: str
    scenario: str
    by: str
    detail: dict[str, Any]

    def to_json(self) -> str:
        return json.dumps(
            {"at": self.at, "event": self.event, "release": self.release, "scenario": self.scenario, "by": self.by,
             "detail": self.detail},
            sort_keys=True,
        )


class AuditLog:
    def __init__(self, path: Path) -> None:
        self.path = Path(path)

    def append(self, event: str, release: str, *, by: str, scenario: str = "fraud", **detail: Any) -> AuditEvent:
        if event not in EVENTS:
            raise ValueError(f"event: {event!r} is not one of {', '.join(EVENTS)}")
        entry = AuditEvent(time.time(), event, release, scenario, by, detail)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # O_APPEND: each line lands whole at the end even with two writers; fsync: an event told is an event kept.
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, (entry.to_json() + "\n").encode())
            os.fsync(fd)
        finally:
            os.close(fd)
        return entry

    def read(self) -> list[AuditEvent]:
        if not self.path.is_file():
            return []
        events = []
        for line in self.path.read_text().splitlines():
            if line.strip():
                d = json.loads(line)
                events.append(AuditEvent(d["at"], d["event"], d["release"], d["scenario"], d["by"], d["detail"]))
        return events

    def serving_at(self, at: float, scenario: str = "fraud") -> str:
        """The champion at time `at`: the release of the last `promoted` or `rolled_back` event before it."""
        champion = ""
        for e in self.read():
            if e.at > at:
                break
            if e.scenario == scenario and e.event in ("promoted", "rolled_back"):
                champion = e.detail.get("champion", e.release)
        return champion
