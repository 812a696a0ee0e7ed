"""The feature service's state on a single Redis and on a three-master Redis Cluster: folds are idempotent by
event id, a batch whose entities span many slots is folded completely and in event order per entity, and labels
count once however often they are re-sent."""

from __future__ import annotations

import uuid

import grpc
import numpy as np
import pytest

from scoring.scenarios.fraud import features as F
from scoring.v1 import features_pb2, features_pb2_grpc, types_pb2

pytestmark = pytest.mark.integration
DAY = F.US_PER_DAY
T0 = 1_700_006_400_000_000  # 2023-11-15 00:00 UTC


def col(name: str) -> int:
    return F.FEATURE_NAMES.index(name)


def request(prefix: str, rows: list[tuple[str, int, str, str, float]]) -> features_pb2.FeatureRequest:
    return features_pb2.FeatureRequest(
        transaction_id=[f"{prefix}-{r[0]}" for r in rows],
        event_time_us=[r[1] for r in rows],
        customer_id=[f"{prefix}-{r[2]}" for r in rows],
        terminal_id=[f"{prefix}-{r[3]}" for r in rows],
        amount=[r[4] for r in rows],
    )


async def fold(stub, req) -> tuple[np.ndarray, np.ndarray]:
    reply = await stub.UpdateAndGet(req, timeout=30)
    n = len(req.transaction_id)
    return (
        np.frombuffer(reply.features, "<f4").reshape(n, -1),
        np.frombuffer(reply.sequences, "<f4").reshape(n, reply.seq_len, reply.seq_feature_count),
    )


async def test_a_re_sent_batch_is_answered_alike_and_folded_once(feature_address) -> None:
    prefix = uuid.uuid4().hex[:8]
    rows = [(f"e{i}", T0 + i * 60_000_000, f"c{i % 3}", f"t{i % 5}", 10.0 + i) for i in range(12)]
    async with grpc.aio.insecure_channel(feature_address) as channel:
        stub = features_pb2_grpc.FeatureServiceStub(channel)
        first = await fold(stub, request(prefix, rows))
        again = await fold(stub, request(prefix, rows))
        np.testing.assert_array_equal(first[0], again[0])
        np.testing.assert_array_equal(first[1], again[1])
        # A later event of customer c0 sees each of c0's four earlier events once, not twice.
        (later, _) = await fold(stub, request(prefix, [("late", T0 + DAY // 2, "c0", "t0", 1.0)]))
        assert later[0, col("customer_nb_tx_1day")] == 5
        assert later[0, col("customer_avg_amount_1day")] == pytest.approx((10 + 13 + 16 + 19 + 1.0) / 5)
        # A re-fold (the gateway's backlog) of events already folded folds none of them again.
        refold = request(prefix, rows)
        refold.fold_only = True
        await stub.UpdateAndGet(refold, timeout=30)
        (after, _) = await fold(stub, request(prefix, [("late2", T0 + DAY // 2 + 1, "c0", "t0", 1.0)]))
        assert after[0, col("customer_nb_tx_1day")] == 6


async def test_a_batch_over_many_slots_is_folded_whole_and_in_order_per_entity(feature_address) -> None:
    prefix = uuid.uuid4().hex[:8]
    customers = 300  # over every shard of the cluster's hash tags, and so over all three masters
    # Three events per customer, interleaved across customers, each customer's in time order.
    rows = [
        (f"e{k}-{c}", T0 + k * 3_600_000_000 + c, f"c{c}", f"t{c % 97}", float(1 + k))
        for k in range(3)
        for c in range(customers)
    ]
    async with grpc.aio.insecure_channel(feature_address) as channel:
        stub = features_pb2_grpc.FeatureServiceStub(channel)
        features, sequences = await fold(stub, request(prefix, rows))
    counts = features[:, col("customer_nb_tx_1day")].reshape(3, customers)
    assert (counts == np.array([[1], [2], [3]])).all()
    means = features[:, col("customer_avg_amount_1day")].reshape(3, customers)
    np.testing.assert_allclose(means, np.array([[1.0], [1.5], [2.0]]) * np.ones((1, customers)), rtol=1e-6)
    # The third event's sequence holds the customer's three events, oldest first, amounts 1, 2, 3.
    present = F.SEQ_FEATURE_NAMES.index("present")
    third = sequences.reshape(3, customers, F.SEQ_LEN, -1)[2]
    assert (third[:, -3:, present] == 1).all() and (third[:, :-3, present] == 0).all()
    np.testing.assert_allclose(third[:, -3:, 0], np.log1p([[1.0, 2.0, 3.0]] * customers), rtol=1e-6)


async def test_labels_count_once_and_can_be_withdrawn(feature_address) -> None:
    prefix = uuid.uuid4().hex[:8]
    rows = [(f"e{i}", T0 + i, f"c{i}", "shop", 5.0) for i in range(4)]
    probe_time = T0 + 8 * DAY  # the first 6 hours of day 0 are in the 8-day window of an event 8 days later

    async def window(stub, name: str) -> tuple[float, float]:
        """(labelled, risk) of the shop's 8-day window, seen by a probe event."""
        (features, _) = await fold(stub, request(prefix, [(name, probe_time, "probe", "shop", 1.0)]))
        assert features[0, col("terminal_nb_tx_8day")] == 4
        return float(features[0, col("terminal_nb_labelled_8day")]), float(features[0, col("terminal_risk_8day")])

    async def label(stub, txids: list[str], fraud: bool) -> features_pb2.LabelAck:
        return await stub.ReportLabels(
            features_pb2.LabelBatch(
                labels=[types_pb2.LabelReport(transaction_id=f"{prefix}-{t}", fraud=fraud) for t in txids]
            ),
            timeout=30,
        )

    async with grpc.aio.insecure_channel(feature_address) as channel:
        stub = features_pb2_grpc.FeatureServiceStub(channel)
        await fold(stub, request(prefix, rows))
        ack = await label(stub, ["e0", "e1", "never-seen"], True)
        assert (ack.accepted, ack.unknown) == (2, 1)
        assert (await label(stub, ["e0", "e0"], True)).accepted == 2  # re-sent: known, counted once
        assert await window(stub, "p1") == (2, pytest.approx(1.0))
        await label(stub, ["e1"], False)  # withdrawn: still labelled, no longer a fraud
        assert await window(stub, "p2") == (2, pytest.approx(1 / 2))
        await label(stub, ["e2"], False)  # a genuine label: labelled, and the risk is over the labelled
        assert await window(stub, "p3") == (3, pytest.approx(1 / 3))

