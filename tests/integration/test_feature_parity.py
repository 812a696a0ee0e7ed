"""Training/serving parity: features served by the running feature service, on one real Redis and on a real
three-master Redis Cluster, equal the offline computation used for training, on a replayed simulated stream with
its delayed labels."""

from __future__ import annotations

import grpc
import numpy as np
import pytest

from scoring import features as F
from scoring import simulator
from scoring.v1 import features_pb2, features_pb2_grpc, types_pb2

pytestmark = pytest.mark.integration


async def test_online_features_equal_offline_features_within_float32_rounding(feature_address) -> None:
    frame = simulator.simulate(simulator.SimulationConfig(n_customers=100, n_terminals=200, n_days=25, seed=11))
    assert 2000 < len(frame) < 10_000 and frame["TX_FRAUD"].sum() > 0
    offline_features, offline_sequences = F.compute_offline(frame)
    events = simulator.stream_arrays(frame, label_delay_days=F.LABEL_DELAY_DAYS)
    row_of = {int(t): i for i, t in enumerate(frame["TRANSACTION_ID"].to_numpy())}
    online_features = np.full_like(offline_features, np.nan)
    online_sequences = np.full_like(offline_sequences, np.nan)
    labels_known = 0

    async with grpc.aio.insecure_channel(feature_address) as channel:
        stub = features_pb2_grpc.FeatureServiceStub(channel)
        pending: list[int] = []

        async def flush() -> None:
            if not pending:
                return
            rows = [row_of[i] for i in pending]
            request = features_pb2.FeatureRequest(
                transaction_id=[f"par-{i}" for i in pending],
                event_time_us=[int(events["event_time_us"][j]) for j in batch_positions],
                customer_id=[f"par-C{events['customer_id'][j]}" for j in batch_positions],
                terminal_id=[f"par-T{events['terminal_id'][j]}" for j in batch_positions],
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
                            transaction_id=f"par-{events['transaction_id'][j]}", fraud=bool(events["fraud"][j])
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
    # The label-based features really were exercised.
    assert offline_features[:, F.FEATURE_NAMES.index("terminal_risk_7day")].max() > 0
