"""Card fraud's events as the graph carries them between stages: a validated micro-batch in columns."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class EventBatch:
    """A validated micro-batch in columnar form."""

    transaction_id: list[str]
    event_time_us: np.ndarray  # int64
    customer_id: list[str]
    terminal_id: list[str]
    amount: np.ndarray  # float64

    def __len__(self) -> int:
        return len(self.transaction_id)

    def take(self, rows: np.ndarray) -> EventBatch:
        """The events at `rows` (indices), in that order."""
        picked = rows.tolist()
        return EventBatch(
            transaction_id=[self.transaction_id[i] for i in picked],
            event_time_us=self.event_time_us[rows],
            customer_id=[self.customer_id[i] for i in picked],
            terminal_id=[self.terminal_id[i] for i in picked],
            amount=self.amount[rows],
        )
