"""Training/serving parity: features served by the running feature service, on one real Redis and on a real
three-master Redis Cluster, equal the offline computation used for training, on a replayed simulated stream whose
labels (frauds and genuine ones) arrive late and out of order, as the realistic label-arrival model draws them."""

from __future__ import annotations

import uuid

import grpc
import numpy as np
import pytest

from scoring.scenarios.fraud import features as F
from scoring.scenarios.fraud import simulator
from scoring.v1 import features_pb2, features_pb2_grpc, types_pb2

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("label_delay", ["realistic", "fixed:7d"])
async def test_online_features_equal_offline_features_within_float32_rounding(feature_address, label_delay) -> None:
    # 45 days: past the 37-day window and the 40-day ring, so ring slots are reused as time goes on.
    frame = simulator.simulate(simulator.SimulationConfig(n_customers=80, n_terminals=600, n_days=45, seed=11))
    assert 2000 < len(frame) < 10_000 and frame["TX_FRAUD"].sum() > 0
    arrival = simulator.frame_label_arrival_us(frame, label_delay)
    offline_features, offline_sequences = F.compute_offline(frame, arrival)
    events = simulator.stream_arrays(frame, label_delay)
    labels = events["transaction_id"][events["kind"] == simulator.KIND_LABEL]
    if label_delay == "realistic":  # the case this test is for: labels out of their transactions' order
        assert (np.diff(np.searchsorted(frame["TRANSACTION_ID"].to_numpy(), labels)) < 0).sum() > 100
    row_of = {int(t): i for i, t in enumerate(frame["TRANSACTION_ID"].to_numpy())}
    online_features = np.full_like(offline_features, np.nan)
    online_sequences = np.full_like(offline_sequences, np.nan)
    labels_known = 0
    ns = f"par{uuid.uuid4().hex[:8]}"  # fresh entities: each run builds its own state on a shared Redis

    async with grpc.aio.insecure_channel(feature_address) as channel:
        stub = features_pb2_grpc.FeatureServiceStub(channel)
        pending: list[int] = []

        async def flush() -> None:
            if not pending:
                return
            rows = [row_of[i] for i in pending]
            request = features_pb2.FeatureRequest(
                transaction_id=[f"{ns}-{i}" for i in pending],
                event_time_us=[int(events["event_time_us"][j]) for j in batch_positions],
                customer_id=[f"{ns}-C{events['customer_id'][j]}" for j in batch_positions],
                terminal_id=[f"{ns}-T{events['terminal_id'][j]}" for j in batch_positions],
                amount=[float(events["amount"][j]) for j in batch_positions],
            )
            reply = await stub.UpdateAndGet(request, timeout=30)
            online_features[rows] = np.frombuffer(reply.features, "<f4").reshape(len(rows), -1)
            online_sequences[rows] = np.frombuffer(reply.sequences, "<f4").reshape(
                len(rows), reply.seq_len, reply.seq_feature_count
            )
            pending.clear()
            batch_positions.clear()

        batch_positions: list[int] = []
        for j in range(len(events["kind"])):
            if events["kind"][j] == simulator.KIND_LABEL:
                await flush()
                ack = await stub.ReportLabels(
                    features_pb2.LabelBatch(
                        labels=[types_pb2.LabelReport(
                            transaction_id=f"{ns}-{events['transaction_id'][j]}", fraud=bool(events["fraud"][j])
                        )]
                    ),
                    timeout=30,
                )
                labels_known += ack.accepted
            else:
                pending.append(int(events["transaction_id"][j]))
                batch_positions.append(j)
                if len(pending) == 64:
                    await flush()
        await flush()

    assert labels_known > 0
    assert not np.isnan(online_features).any()
    np.testing.assert_allclose(online_features, offline_features, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(online_sequences, offline_sequences, rtol=1e-6, atol=1e-6)
    # The label-based features really were exercised, with windows partly labelled.
    assert offline_features[:, F.FEATURE_NAMES.index("terminal_risk_14day")].max() > 0
    labelled = offline_features[:, F.FEATURE_NAMES.index("terminal_nb_labelled_37day")]
    total = offline_features[:, F.FEATURE_NAMES.index("terminal_nb_tx_37day")]
    assert ((labelled > 0) & (labelled < total)).mean() > 0.3
