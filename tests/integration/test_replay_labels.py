"""`scoring replay` reports each replayed transaction's label through the gateway once the stream's event time
passes the label's arrival, as the label-arrival model draws it."""

from __future__ import annotations

import numpy as np
import pytest

from scoring.replay import LabelFeed, frame_transactions, load_replay_frame, replay_batches, replay_stream
from scoring.scenarios.fraud import features as F
from scoring.scenarios.fraud import simulator

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("mode", ["stream", "batch"])
async def test_labels_arriving_within_the_replay_are_reported_once_and_all_known(artifacts, stack, mode) -> None:
    frame = load_replay_frame(artifacts, 3000, offset=10_000 if mode == "stream" else 20_000)
    transactions = frame_transactions(frame)
    feed = LabelFeed(frame, "uniform:1h-6h")
    if mode == "stream":
        result = await replay_stream(stack.gateway_address, transactions, 0, budget_ms=3000, labels=feed)
    else:
        result = await replay_batches(stack.gateway_address, transactions, 100, budget_ms=3000, labels=feed)
    assert result.answered == len(transactions) and not result.errors

    arrival = simulator.frame_label_arrival_us(frame, "uniform:1h-6h")
    last_event = int(F.frame_time_us(frame).max())
    due = int((arrival <= last_event).sum())
    # Every label due within the replayed span was sent (a batch sends those due by its last event), none twice,
    # and each named a transaction the graph had already folded.
    assert 0 < due < len(frame)
    assert result.labels_accepted == due and result.labels_unknown == 0
    assert np.all(np.diff(feed.arrival) >= 0)
