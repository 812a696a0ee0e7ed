"""The live half of `scoring evaluate`: the test period replayed through a running gateway, with its labels.

History and test period go through `ScoreBatchStream` an hour of event time at a time, preceded by enough history
for every window and sequence to be complete. Labels, genuine and fraudulent, are reported through the gateway's
`ReportLabels` as the label-arrival model delivers them: in hourly batches, a label arriving during an hour sent
after that hour's transactions (`delivered_arrival_us`), as a bank's label feed would. The offline evaluation
computes its features with the same delivery times, so every served score can be compared with its offline twin.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import grpc
import numpy as np
import pandas as pd

from scoring.replay import budget_metadata, transaction
from scoring.scenarios.fraud import features as F
from scoring.scenarios.fraud import simulator
from scoring.v1 import gateway_pb2, gateway_pb2_grpc, types_pb2

HOUR_US = 3_600_000_000


def delivered_arrival_us(frame: pd.DataFrame, label_delay: str, seed: int) -> np.ndarray:
    """When each row's label is delivered: the end of the UTC hour in which the arrival model puts it."""
    arrival = simulator.frame_label_arrival_us(frame, label_delay, seed)
    return -(-arrival // HOUR_US) * HOUR_US


@dataclass
class Live:
    score: np.ndarray
    filter_score: np.ndarray
    stage: Counter[str] = field(default_factory=Counter)
    degraded: Counter[str] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)
    versions: Counter[str] = field(default_factory=Counter)
    stage_codes: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int8))
    replayed: int = 0
    labels_accepted: int = 0
    labels_unknown: int = 0
    elapsed_s: float = 0.0


async def live_scores(
    address: str,
    frame: pd.DataFrame,
    period: tuple[int, int],
    delivered_us: np.ndarray,
    *,
    history_days: int,
    batch_size: int = 256,
    window_batches: int = 4,
    namespace: str | None = None,
    budget_ms: float | None = None,
) -> Live:
    """Replays history + test period through the gateway and returns the test period's scores.

    `delivered_us`: each row's label delivery time (`delivered_arrival_us`, whole hours). Identifiers get a fresh
    namespace, so the replay builds its own entity state even on a gateway that has served other traffic.
    """
    prefix = namespace if namespace is not None else f"ev{uuid.uuid4().hex[:8]}-"
    days = frame["TX_TIME_DAYS"].to_numpy()
    keep = (days >= period[0] - history_days) & (days < period[1])
    part = frame.loc[keep].reset_index(drop=True)
    delivered = np.asarray(delivered_us)[keep]
    time_us = F.frame_time_us(part)
    ids = part["TRANSACTION_ID"].to_numpy()
    customers, terminals = part["CUSTOMER_ID"].to_numpy(), part["TERMINAL_ID"].to_numpy()
    amounts, frauds = part["TX_AMOUNT"].to_numpy(), part["TX_FRAUD"].to_numpy()
    days_part = part["TX_TIME_DAYS"].to_numpy()
    te = (days_part >= period[0]) & (days_part < period[1])
    test_row = np.full(len(part), -1)
    test_row[te] = np.arange(int(te.sum()))
    n_test = int(te.sum())
    live = Live(score=np.full(n_test, np.nan), filter_score=np.full(n_test, np.nan),
                stage_codes=np.zeros(n_test, np.int8))
    started = time.perf_counter()

    def tx(i: int) -> types_pb2.Transaction:
        t = transaction(int(ids[i]), int(time_us[i]), int(customers[i]), int(terminals[i]), float(amounts[i]))
        t.transaction_id = prefix + t.transaction_id
        t.customer_id = prefix + t.customer_id
        t.terminal_id = prefix + t.terminal_id
        return t

    # Step h: the transactions of hour h, then the labels delivered at its end (known from hour h + 1 on).
    tx_hour = time_us // HOUR_US
    label_step = delivered // HOUR_US - 1
    steps = np.union1d(tx_hour, label_step[label_step <= tx_hour.max()])
    tx_order, label_order = np.argsort(tx_hour, kind="stable"), np.argsort(label_step, kind="stable")
    tx_bounds = np.searchsorted(tx_hour[tx_order], np.append(steps, steps[-1] + 1))
    label_bounds = np.searchsorted(label_step[label_order], np.append(steps, steps[-1] + 1))
    async with grpc.aio.insecure_channel(address) as channel:
        stub = gateway_pb2_grpc.GatewayStub(channel)
        for k in range(len(steps)):
            rows = tx_order[tx_bounds[k] : tx_bounds[k + 1]]
            if len(rows):
                await _replay_rows(stub, rows, tx, test_row, live, batch_size, window_batches, budget_ms)
            labelled = label_order[label_bounds[k] : label_bounds[k + 1]]
            if len(labelled):
                ack = await stub.ReportLabels(
                    gateway_pb2.ReportLabelsRequest(
                        labels=[types_pb2.LabelReport(transaction_id=f"{prefix}{ids[i]}", fraud=bool(frauds[i]))
                                for i in labelled]
                    ),
                    timeout=30,
                )
                live.labels_accepted += ack.accepted
                live.labels_unknown += ack.unknown
    live.elapsed_s = time.perf_counter() - started
    return live


async def _replay_rows(
    stub: gateway_pb2_grpc.GatewayStub,
    rows: np.ndarray,
    tx: Any,
    test_row: np.ndarray,
    live: Live,
    batch_size: int,
    window_batches: int,
    budget_ms: float | None = None,
) -> None:
    batches = [rows[i : i + batch_size] for i in range(0, len(rows), batch_size)]
    # A bounded window of batches in flight: within the gateway's per-stream bound, and answers stay in order.
    window = asyncio.Semaphore(window_batches)

    async def requests():  # noqa: ANN202
        for batch in batches:
            await window.acquire()
            yield gateway_pb2.ScoreBatchRequest(transactions=[tx(int(i)) for i in batch])

    call = stub.ScoreBatchStream(requests(), timeout=600, metadata=budget_metadata(budget_ms))
    answered = 0
    async for reply in call:
        batch = batches[answered]
        answered += 1
        window.release()
        if len(reply.responses) != len(batch):
            raise RuntimeError(f"gateway answered {len(reply.responses)} events for a batch of {len(batch)}")
        for i, response in zip(batch, reply.responses, strict=True):
            live.replayed += 1
            j = test_row[i]
            if j < 0:
                continue
            if response.HasField("error"):
                live.errors[response.error.field or response.degraded_reason or str(response.error.code)] += 1
                continue
            live.score[j] = response.score
            live.filter_score[j] = response.filter_score
            live.stage_codes[j] = response.stage
            live.stage[types_pb2.Stage.Name(response.stage).removeprefix("STAGE_").lower()] += 1
            live.versions[response.model_version] += 1
            if response.degraded:
                live.degraded[response.degraded_reason] += 1
    if answered != len(batches):
        raise RuntimeError(f"gateway answered {answered} of {len(batches)} batches")
