"""Card fraud as the gateway's binary cascade sees it: the shapes of its features, an empty batch (warm-up), and the
features an event carries by itself (the filter's input while the feature service is down)."""

from __future__ import annotations

import numpy as np

from scoring.scenarios.fraud import features as F
from scoring.scenarios.fraud.events import EventBatch


class FraudEdge:
    n_features = len(F.FEATURE_NAMES)
    seq_shape = (F.SEQ_LEN, len(F.SEQ_FEATURE_NAMES))

    @staticmethod
    def empty() -> EventBatch:
        return EventBatch([], np.zeros(0, np.int64), [], [], np.zeros(0))

    def self_contained(self, batch: EventBatch) -> tuple[np.ndarray, np.ndarray]:
        """(features [n, n_features] with only the event's own fields set, empty sequences [n, *seq_shape])."""
        features = F.self_contained_features(batch.amount, batch.event_time_us)
        return features, np.zeros((len(batch), *self.seq_shape), dtype=np.float32)

    @staticmethod
    def priority(batch: EventBatch) -> np.ndarray:
        """Which events go to the ensemble first when the filter is down and only some can: the largest amounts."""
        return batch.amount
