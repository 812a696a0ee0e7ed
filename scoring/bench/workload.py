"""What is sent: the events, their schedule, a step's prepared load, the Redis warm-up, the labels between steps."""

from __future__ import annotations

import asyncio
import copy
import heapq
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import numpy as np

from scoring.replay import transaction
from scoring.scenarios.fraud.features import SEQ_FEATURE_NAMES, SEQ_LEN, US_PER_DAY
from scoring.scenarios.fraud.label_delay import REALISTIC
from scoring.v1 import features_pb2, features_pb2_grpc, gateway_pb2, gateway_pb2_grpc, types_pb2

MODES = ("unary", "stream", "batch")
CHANNEL_OPTIONS = [
    ("grpc.max_receive_message_length", 64 * 1024 * 1024),
    ("grpc.max_send_message_length", 64 * 1024 * 1024),
]


def schedule(rate: float, duration_s: float) -> np.ndarray:
    """Send offsets in seconds: `rate * duration_s` events, evenly spaced from 0."""
    if rate <= 0 or duration_s <= 0:
        raise ValueError("rate and duration must be positive")
    n = max(1, int(round(rate * duration_s)))
    return np.arange(n, dtype=np.float64) / rate


def tick_groups(due: np.ndarray, tick_s: float, max_events: int = 4096) -> list[tuple[int, int]]:
    """[start, end) runs of events due within the same tick (at most `max_events` each), in order."""
    if len(due) == 0:
        return []
    ticks = np.floor(due / tick_s + 1e-9).astype(np.int64)
    cuts = np.flatnonzero(np.diff(ticks)) + 1
    bounds = [0, *cuts.tolist(), len(due)]
    groups = []
    for start, end in zip(bounds[:-1], bounds[1:], strict=True):
        for s in range(start, end, max_events):
            groups.append((s, min(s + max_events, end)))
    return groups


class EventSource:
    """Columns of the simulated transactions; a cursor hands out later transactions for the bench."""

    def __init__(self, frame: Any, warm_days: float, label_delay: str = REALISTIC, seed: int = 0) -> None:
        from scoring.scenarios.fraud import simulator
        from scoring.scenarios.fraud.features import frame_time_us

        self.time_us = frame_time_us(frame)
        self.customer = frame["CUSTOMER_ID"].to_numpy()
        self.terminal = frame["TERMINAL_ID"].to_numpy()
        self.amount = frame["TX_AMOUNT"].to_numpy(dtype=np.float64)
        self.fraud = frame["TX_FRAUD"].to_numpy().astype(bool)
        self.row_id = frame["TRANSACTION_ID"].to_numpy()
        start = int(self.time_us[0]) if len(self.time_us) else 0
        self.warm_end_us = start + int(warm_days * US_PER_DAY)
        self.warm_end = int(np.searchsorted(self.time_us, self.warm_end_us, side="left"))
        if self.warm_end >= len(self.time_us):
            raise ValueError(f"the data has no transactions after the first {warm_days:g} days")
        self.warm_days = warm_days
        self.cursor = self.warm_end
        self.lap = 0
        # Each lap over the bench part is shifted by its span, so event time keeps moving forward.
        self.lap_span_us = int(self.time_us[-1] - self.time_us[self.warm_end]) + 1_000_000
        # Each row's label delay, as training's label-arrival model draws it (every label, genuine or fraud).
        self.label_delay_us = simulator.label_arrival_us(self.time_us, self.row_id, label_delay, seed) - self.time_us
        # Labels of events already sent, not yet due: a heap of (arrival us, transaction id as sent, fraud).
        self.pending_labels: list[tuple[int, str, bool]] = []

    def fork(self) -> EventSource:
        """A copy with its own cursor and label backlog (for loads that never reach the stack, like the echo):
        the stack's customers then see no hole in their history."""
        other = copy.copy(self)
        other.pending_labels = []
        return other

    def next_time_us(self) -> int:
        return int(self.time_us[self.cursor]) + self.lap * self.lap_span_us

    def due_labels(self, now_us: int | None = None) -> list[tuple[str, bool]]:
        """(id, fraud) of the sent events whose label has arrived by `now_us` (default: the next event's time), in
        arrival order. They leave the backlog."""
        now_us = self.next_time_us() if now_us is None else now_us
        out = []
        while self.pending_labels and self.pending_labels[0][0] <= now_us:
            _, txid, fraud = heapq.heappop(self.pending_labels)
            out.append((txid, fraud))
        return out

    @classmethod
    def from_artifacts(cls, artifacts: Path, warm_days: float) -> EventSource:
        """The training data, labels arriving as the models were trained to expect them (the report's first label
        delay and seed)."""
        import json

        from scoring.scenarios.fraud import simulator

        report = json.loads((artifacts / "train_report.json").read_text())
        return cls(simulator.read_parquet(artifacts / "data" / "transactions.parquet"), warm_days,
                   label_delay=str(report.get("label_delay", REALISTIC)),
                   seed=int(report.get("config", {}).get("simulation", {}).get("seed", 0)))

    def take(self, n: int) -> tuple[np.ndarray, np.ndarray]:
        """Row indices and (shifted) event times of the next `n` bench transactions."""
        rows, times = [], []
        left = n
        while left > 0:
            end = min(len(self.time_us), self.cursor + left)
            idx = np.arange(self.cursor, end)
            rows.append(idx)
            times.append(self.time_us[idx] + self.lap * self.lap_span_us)
            left -= end - self.cursor
            self.cursor = end
            if self.cursor >= len(self.time_us):
                self.cursor, self.lap = self.warm_end, self.lap + 1
        return np.concatenate(rows), np.concatenate(times)

    def transactions(self, n: int, prefix: str) -> list[types_pb2.Transaction]:
        """The next `n` transactions, with ids `<prefix><i>` (fresh: the feature service dedups by id)."""
        rows, times = self.take(n)
        out = []
        arrival = times + self.label_delay_us[rows]
        for i, (a, r) in enumerate(zip(arrival.tolist(), rows.tolist(), strict=True)):
            heapq.heappush(self.pending_labels, (a, f"{prefix}{i}", bool(self.fraud[r])))
        for i, (r, t) in enumerate(zip(rows.tolist(), times.tolist(), strict=True)):
            tx = transaction(i, t, int(self.customer[r]), int(self.terminal[r]), float(self.amount[r]))
            tx.transaction_id = f"{prefix}{i}"
            out.append(tx)
        return out


@dataclass
class Load:
    """A step's requests, built before the clock starts: units of (send offset s, first event, end, message)."""

    mode: str
    prefix: str
    due: list[float]
    units: list[tuple[float, int, int, Any]]


def build_load(source: EventSource, mode: str, rate: float, duration_s: float, prefix: str,
               tick_s: float = 0.001) -> Load:
    if mode not in MODES:
        raise ValueError(f"unknown mode {mode!r}")
    due = schedule(rate, duration_s)
    txs = source.transactions(len(due), prefix)
    units: list[tuple[float, int, int, Any]]
    if mode == "batch":
        units = [(float(due[e - 1]), s, e, gateway_pb2.ScoreBatchRequest(transactions=txs[s:e]))
                 for s, e in tick_groups(due, tick_s)]
    else:
        units = [(float(d), i, i + 1, gateway_pb2.ScoreRequest(transaction=tx))
                 for i, (d, tx) in enumerate(zip(due.tolist(), txs, strict=True))]
    return Load(mode, prefix, due.tolist(), units)


@dataclass
class WarmUp:
    events: int = 0
    labels_sent: int = 0
    labels_accepted: int = 0
    seconds: float = 0.0
    batch: int = 0
    features: np.ndarray | None = None  # a sample of real feature rows, for the Triton ceiling
    sequences: np.ndarray | None = None

    @property
    def events_per_s(self) -> float:
        return self.events / self.seconds if self.seconds else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {"events": self.events, "labels_sent": self.labels_sent, "labels_accepted": self.labels_accepted,
                "seconds": round(self.seconds, 2), "events_per_s": round(self.events_per_s, 1), "batch": self.batch}


async def warm_features(address: str, source: EventSource, id_prefix: str, *, batch: int = 250,
                        concurrency: int = 2, timeout_s: float = 60.0) -> WarmUp:
    """Folds every transaction before `source.warm_end` into Redis via UpdateAndGet, in order, `concurrency`
    batches at a time; then reports the labels that would have arrived by then (genuine and fraud, as the
    source's label-arrival model draws them)."""
    n = source.warm_end
    out = WarmUp(batch=batch)
    started = time.perf_counter()
    starts = iter(range(0, n, batch))
    async with grpc.aio.insecure_channel(address, options=CHANNEL_OPTIONS) as channel:
        stub = features_pb2_grpc.FeatureServiceStub(channel)

        async def worker() -> None:
            for s in starts:
                e = min(s + batch, n)
                request = features_pb2.FeatureRequest(
                    transaction_id=[f"{id_prefix}{t}" for t in source.row_id[s:e].tolist()],
                    event_time_us=source.time_us[s:e].tolist(),
                    customer_id=[f"C{c}" for c in source.customer[s:e].tolist()],
                    terminal_id=[f"T{t}" for t in source.terminal[s:e].tolist()],
                    amount=source.amount[s:e].tolist(),
                )
                reply = await stub.UpdateAndGet(request, timeout=timeout_s)
                out.events += e - s
                if e == n or out.features is None:
                    out.features = np.frombuffer(reply.features, "<f4").reshape(reply.rows, -1)
                    out.sequences = np.frombuffer(reply.sequences, "<f4").reshape(
                        reply.rows, SEQ_LEN, len(SEQ_FEATURE_NAMES))

        await asyncio.gather(*(worker() for _ in range(concurrency)))
        arrival = source.time_us[:n] + source.label_delay_us[:n]
        known = np.flatnonzero(arrival <= source.warm_end_us)
        known = known[np.argsort(arrival[known], kind="stable")]
        # The rest arrive during the bench, when event time gets there.
        for i in np.flatnonzero(arrival > source.warm_end_us).tolist():
            heapq.heappush(source.pending_labels,
                           (int(arrival[i]), f"{id_prefix}{source.row_id[i]}", bool(source.fraud[i])))
        for s in range(0, len(known), 1000):
            labels = [
                types_pb2.LabelReport(transaction_id=f"{id_prefix}{source.row_id[i]}", fraud=bool(source.fraud[i]))
                for i in known[s:s + 1000].tolist()
            ]
            ack = await stub.ReportLabels(features_pb2.LabelBatch(labels=labels), timeout=timeout_s)
            out.labels_sent += len(labels)
            out.labels_accepted += ack.accepted
    out.seconds = time.perf_counter() - started
    return out


@dataclass
class LabelCount:
    sent: int = 0
    accepted: int = 0


async def report_due_labels(gateway: str, source: EventSource, count: LabelCount, now_us: int | None = None,
                            timeout_s: float = 30.0) -> None:
    """Reports, through the gateway's public ReportLabels, the labels of sent events that have arrived by the next
    event's time, so the terminal-risk features stay as fresh as in production (between steps, untimed)."""
    due = source.due_labels(now_us)
    if not due:
        return
    async with grpc.aio.insecure_channel(gateway, options=CHANNEL_OPTIONS) as channel:
        stub = gateway_pb2_grpc.GatewayStub(channel)
        for s in range(0, len(due), 1000):
            labels = [types_pb2.LabelReport(transaction_id=t, fraud=f) for t, f in due[s:s + 1000]]
            reply = await stub.ReportLabels(gateway_pb2.ReportLabelsRequest(labels=labels), timeout=timeout_s)
            count.sent += len(labels)
            count.accepted += reply.accepted
