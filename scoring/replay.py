"""`scoring replay`: stream simulated transactions to a running gateway and report what came back.

Open loop: requests leave at the target rate whatever the answers do, and each latency is measured from the
moment its request was scheduled to leave, so a slow gateway cannot hide behind a slow sender. With a
`LabelFeed`, each replayed transaction's label is reported through `ReportLabels` once the stream's event time
passes the label's arrival (as the label-arrival model draws it), as a bank's feedback would reach the graph.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter
from collections.abc import AsyncIterator, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import numpy as np
import pandas as pd
from google.protobuf.timestamp_pb2 import Timestamp
from hdrh.histogram import HdrHistogram

from scoring.v1 import gateway_pb2, gateway_pb2_grpc, types_pb2


@dataclass
class ReplayResult:
    sent: int = 0
    answered: int = 0
    duplicates: int = 0
    errors: Counter[str] = field(default_factory=Counter)
    stages: Counter[str] = field(default_factory=Counter)
    kinds: Counter[str] = field(default_factory=Counter)  # full, or which fallback answered (answer_kind)
    full_ids: list[str] = field(default_factory=list)  # events answered in full, in answer order
    degraded: Counter[str] = field(default_factory=Counter)
    versions: Counter[str] = field(default_factory=Counter)
    signals: Counter[str] = field(default_factory=Counter)  # ticks: the signals given
    scores: dict[str, float] = field(default_factory=dict)
    labels_accepted: int = 0
    labels_unknown: int = 0
    labels_failed: int = 0  # in ReportLabels calls that failed
    latency_us: HdrHistogram = field(default_factory=lambda: HdrHistogram(1, 60_000_000, 3))
    elapsed_s: float = 0.0

    def percentile_ms(self, p: float) -> float:
        return float(self.latency_us.get_value_at_percentile(p)) / 1e3

    def summary(self) -> str:
        lost = self.sent - self.answered
        lines = [
            f"events sent {self.sent:,}  answered {self.answered:,}  lost {lost:,}  duplicated {self.duplicates}"
            f"  in {self.elapsed_s:.2f} s ({self.answered / max(self.elapsed_s, 1e-9):,.0f} events/s)",
            "latency ms  "
            + "  ".join(f"p{p:g} {self.percentile_ms(p):.2f}" for p in (50, 90, 99, 99.9))
            + f"  max {self.latency_us.get_max_value() / 1e3:.2f}",
            "decided by  " + "  ".join(f"{k} {v:,} ({v / max(self.answered, 1):.1%})" for k, v in
                                       sorted(self.stages.items())),
        ]
        if self.signals:
            lines.append("signals     " + "  ".join(f"{k} {v:,} ({v / max(self.answered, 1):.1%})"
                                                    for k, v in sorted(self.signals.items())))
        if self.scores and not self.signals:
            values = np.fromiter(self.scores.values(), float)
            lines.append(
                f"scores      mean {values.mean():.4f}  p50 {np.median(values):.4f}  "
                f"max {values.max():.4f}  >= 0.5: {(values >= 0.5).sum():,}"
            )
        kinds = "  ".join(
            f"{k} {self.kinds[k]:,} ({self.kinds[k] / max(self.answered, 1):.1%})"
            for k in ANSWER_KINDS
            if self.kinds[k]
        )
        lines.append("answers     " + (kinds or "none"))
        lines.append("models      " + ", ".join(f"{k} ({v:,})" for k, v in sorted(self.versions.items())))
        lines.append("degraded    " + (", ".join(f"{k} {v:,}" for k, v in sorted(self.degraded.items())) or "none"))
        lines.append("errors      " + (", ".join(f"{k} {v:,}" for k, v in sorted(self.errors.items())) or "none"))
        if self.labels_accepted or self.labels_unknown or self.labels_failed:
            lines.append(f"labels      reported as they arrived: accepted {self.labels_accepted:,}, "
                         f"unknown {self.labels_unknown:,}, in failed calls {self.labels_failed:,}")
        return "\n".join(lines)


class LabelFeed:
    """The labels of the replayed transactions, reported in event time: `advance(t)` sends, in the background,
    every label whose arrival is at or before event time t. The replay advances it as answers come back, to the
    time of the earliest event not answered yet, so a label never overtakes its own transaction's answer (a bank
    cannot label what it has not seen). An event answered degraded, its fold left to the feature service's
    backlog, can still be folded after its label: that label counts as unknown."""

    def __init__(self, frame: pd.DataFrame, label_delay: str, seed: int = 0, max_batch: int = 512) -> None:
        from scoring.scenarios.fraud import simulator

        arrival = simulator.frame_label_arrival_us(frame, label_delay, seed)
        order = np.argsort(arrival, kind="stable")
        self.arrival = arrival[order]
        self.ids = frame["TRANSACTION_ID"].to_numpy()[order]
        self.fraud = frame["TX_FRAUD"].to_numpy()[order]
        self.max_batch = max_batch
        self._next = 0
        self._stub: gateway_pb2_grpc.GatewayStub | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._result: ReplayResult | None = None

    @contextlib.asynccontextmanager
    async def reporting(self, stub: gateway_pb2_grpc.GatewayStub, result: ReplayResult) -> AsyncIterator[None]:
        """Labels go through `stub` and are counted in `result` while inside; on leaving, the calls in flight are
        awaited (a failed one counted, never raised)."""
        self._stub, self._result = stub, result
        try:
            yield
        finally:
            await self.close()

    def advance(self, event_time_us: int) -> None:
        end = int(np.searchsorted(self.arrival, event_time_us, side="right"))
        while self._next < end:
            upto = min(end, self._next + self.max_batch)
            labels = [types_pb2.LabelReport(transaction_id=str(i), fraud=bool(f))
                      for i, f in zip(self.ids[self._next : upto], self.fraud[self._next : upto], strict=True)]
            self._next = upto
            self._tasks.append(asyncio.create_task(self._send(labels)))

    async def _send(self, labels: list[types_pb2.LabelReport]) -> None:
        assert self._stub is not None and self._result is not None
        try:
            ack = await self._stub.ReportLabels(gateway_pb2.ReportLabelsRequest(labels=labels), timeout=30)
        except grpc.aio.AioRpcError:
            self._result.labels_failed += len(labels)
            return
        self._result.labels_accepted += ack.accepted
        self._result.labels_unknown += ack.unknown

    async def close(self) -> None:
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()


def _event_time_us(tx: types_pb2.Transaction) -> int:
    return tx.timestamp.seconds * 1_000_000 + tx.timestamp.nanos // 1000


def transaction(row_id: int, time_us: int, customer: int, terminal: int, amount: float) -> types_pb2.Transaction:
    ts = Timestamp(seconds=time_us // 1_000_000, nanos=(time_us % 1_000_000) * 1000)
    return types_pb2.Transaction(
        transaction_id=str(row_id), timestamp=ts, customer_id=f"C{customer}", terminal_id=f"T{terminal}",
        amount=amount,
    )


def frame_transactions(frame: pd.DataFrame) -> list[types_pb2.Transaction]:
    from scoring.scenarios.fraud.features import frame_time_us

    time_us = frame_time_us(frame)
    return [
        transaction(int(i), int(t), int(c), int(m), float(a))
        for i, t, c, m, a in zip(
            frame["TRANSACTION_ID"].to_numpy(), time_us, frame["CUSTOMER_ID"].to_numpy(),
            frame["TERMINAL_ID"].to_numpy(), frame["TX_AMOUNT"].to_numpy(), strict=True,
        )
    ]


BUDGET_KEY = "x-scoring-budget-ms"


def budget_metadata(budget_ms: float | None) -> tuple[tuple[str, str], ...] | None:
    """The metadata that asks the gateway for another per-event budget (GATEWAY_MAX_BUDGET_MS caps it)."""
    return None if budget_ms is None else ((BUDGET_KEY, f"{budget_ms:g}"),)


def _event_id(event: types_pb2.Transaction | gateway_pb2.ScoreRequest) -> str:
    if isinstance(event, types_pb2.Transaction):
        return event.transaction_id
    kind = event.WhichOneof("event")
    return event.transaction.transaction_id if kind == "transaction" else event.tick.tick_id


async def replay_stream(
    address: str,
    transactions: Sequence[types_pb2.Transaction | gateway_pb2.ScoreRequest],
    rate_per_s: float,
    timeout_s: float = 120.0,
    budget_ms: float | None = None,
    result: ReplayResult | None = None,
    labels: LabelFeed | None = None,
) -> ReplayResult:
    """One event per message on ScoreStream; `rate_per_s` 0 sends as fast as the gateway reads. Pass `result` to
    watch it fill while the replay runs. Events are transactions, or requests of any kind (labels: transactions
    only)."""
    result = ReplayResult() if result is None else result
    scheduled: dict[str, float] = {}
    interval = 1.0 / rate_per_s if rate_per_s > 0 else 0.0
    oldest_open = 0  # index of the first transaction not answered yet

    async def requests() -> AsyncIterator[gateway_pb2.ScoreRequest]:
        start = time.perf_counter()
        for i, tx in enumerate(transactions):
            due = start + i * interval
            delay = due - time.perf_counter()
            if delay > 0.0005:
                await asyncio.sleep(delay)
            # Latency counts from when the event was due, not when the sender got round to it.
            scheduled[_event_id(tx)] = due
            result.sent += 1
            yield gateway_pb2.ScoreRequest(transaction=tx) if isinstance(tx, types_pb2.Transaction) else tx

    async with grpc.aio.insecure_channel(address) as channel:
        stub = gateway_pb2_grpc.GatewayStub(channel)
        reporting = labels.reporting(stub, result) if labels is not None else contextlib.nullcontext()
        started = time.perf_counter()
        call = stub.ScoreStream(requests(), timeout=timeout_s, metadata=budget_metadata(budget_ms))
        seen: set[str] = set()
        async with reporting:
            async for response in call:
                now = time.perf_counter()
                txid = response.transaction_id or response.tick_id
                if txid in seen:
                    result.duplicates += 1
                    continue
                seen.add(txid)
                result.answered += 1
                if txid in scheduled:
                    result.latency_us.record_value(max(1, int((now - scheduled[txid]) * 1e6)))
                record(result, response)
                if labels is not None:
                    while oldest_open < len(transactions) and _event_id(transactions[oldest_open]) in seen:
                        oldest_open += 1
                    # Labels due by the earliest open event's time: their transactions came before it, all answered.
                    labels.advance(_event_time_us(transactions[min(oldest_open, len(transactions) - 1)]))  # type: ignore[arg-type]
        result.elapsed_s = time.perf_counter() - started
    return result


# What produced an answer: every stage in time ("full"), or which fallback. In the order the summary prints them.
ANSWER_KINDS = (
    "full",
    "filter_only",  # the ensemble was late, down or skipped: the filter's score
    "filter_on_event_fields",  # the feature service was late or down: the filter's fallback model on the event alone
    "ensemble_unfiltered",  # the filter was late or down: the ensemble scored the event without it
    "last_resort",  # no stage in time: the gateway's in-process fallback model
    "error",
)


def answer_kind(response: types_pb2.ScoreResponse) -> str:
    if response.HasField("error"):
        return "error"
    if not response.degraded:
        return "full"
    reason = response.degraded_reason
    if reason.endswith("last_resort"):
        return "last_resort"
    if reason.startswith("features_"):
        return "filter_on_event_fields"
    if response.stage == types_pb2.STAGE_ENSEMBLE:
        return "ensemble_unfiltered"
    return "filter_only"


async def replay_batches(
    address: str,
    transactions: list[types_pb2.Transaction],
    batch_size: int = 500,
    timeout_s: float = 300.0,
    budget_ms: float | None = None,
    result: ReplayResult | None = None,
    labels: LabelFeed | None = None,
) -> ReplayResult:
    """Batches on ScoreBatchStream, as fast as the gateway reads them (its flow control sets the pace). Latency is
    measured per batch, from the moment its message was handed to gRPC to its answer."""
    result = ReplayResult() if result is None else result
    sent_at: list[float] = []

    async def requests() -> AsyncIterator[gateway_pb2.ScoreBatchRequest]:
        for start in range(0, len(transactions), batch_size):
            chunk = transactions[start : start + batch_size]
            sent_at.append(time.perf_counter())
            result.sent += len(chunk)
            yield gateway_pb2.ScoreBatchRequest(transactions=chunk)

    async with grpc.aio.insecure_channel(address) as channel:
        stub = gateway_pb2_grpc.GatewayStub(channel)
        reporting = labels.reporting(stub, result) if labels is not None else contextlib.nullcontext()
        started = time.perf_counter()
        seen: set[str] = set()
        k = 0
        async with reporting:
            async for reply in stub.ScoreBatchStream(requests(), timeout=timeout_s,
                                                     metadata=budget_metadata(budget_ms)):
                took_us = max(1, int((time.perf_counter() - sent_at[k]) * 1e6))
                k += 1
                record_batch(result, seen, reply.responses, took_us)
                if labels is not None:  # the labels due by the batch's last event (a batch's events are one moment)
                    labels.advance(_event_time_us(transactions[min(k * batch_size, len(transactions)) - 1]))
        result.elapsed_s = time.perf_counter() - started
    return result


def columns(transactions: list[types_pb2.Transaction]) -> gateway_pb2.ColumnarScoreRequest:
    """Transactions as one ScoreColumnsStream request."""
    return gateway_pb2.ColumnarScoreRequest(
        transaction_id=[t.transaction_id for t in transactions],
        event_time_us=[_event_time_us(t) for t in transactions],
        customer_id=[t.customer_id for t in transactions],
        terminal_id=[t.terminal_id for t in transactions],
        amount=[t.amount for t in transactions],
    )


def column_responses(
    request: gateway_pb2.ColumnarScoreRequest, reply: gateway_pb2.ColumnarScoreResponse
) -> list[types_pb2.ScoreResponse]:
    """A columnar answer as the ScoreResponse messages ScoreBatchStream gives (for reports and comparisons)."""
    errors = dict(zip(reply.error_rows, reply.errors, strict=True))
    out = []
    for i in range(len(reply.score)):
        response = types_pb2.ScoreResponse(
            transaction_id=request.transaction_id[i] if i < len(request.transaction_id) else "",
            score=reply.score[i],
            stage=reply.stage[i],
            degraded=reply.degraded[i],
            degraded_reason=reply.reasons[reply.reason_index[i]],
            model_version=reply.model_versions[reply.model_index[i]],
            filter_score=reply.filter_score[i],
        )
        if i in errors:
            response.error.CopyFrom(errors[i])
        out.append(response)
    return out


async def replay_columns(
    address: str,
    transactions: list[types_pb2.Transaction],
    batch_size: int = 500,
    timeout_s: float = 300.0,
    budget_ms: float | None = None,
    result: ReplayResult | None = None,
    labels: LabelFeed | None = None,
) -> ReplayResult:
    """`replay_batches` on ScoreColumnsStream: the same batches, in columns."""
    result = ReplayResult() if result is None else result
    sent: list[tuple[float, gateway_pb2.ColumnarScoreRequest]] = []

    async def requests() -> AsyncIterator[gateway_pb2.ColumnarScoreRequest]:
        for start in range(0, len(transactions), batch_size):
            request = columns(transactions[start : start + batch_size])
            sent.append((time.perf_counter(), request))
            result.sent += len(request.transaction_id)
            yield request

    async with grpc.aio.insecure_channel(address) as channel:
        stub = gateway_pb2_grpc.GatewayStub(channel)
        reporting = labels.reporting(stub, result) if labels is not None else contextlib.nullcontext()
        started = time.perf_counter()
        seen: set[str] = set()
        k = 0
        async with reporting:
            async for reply in stub.ScoreColumnsStream(requests(), timeout=timeout_s,
                                                       metadata=budget_metadata(budget_ms)):
                sent_at, request = sent[k]
                took_us = max(1, int((time.perf_counter() - sent_at) * 1e6))
                k += 1
                record_batch(result, seen, column_responses(request, reply), took_us)
                if labels is not None:
                    labels.advance(int(request.event_time_us[-1]))
        result.elapsed_s = time.perf_counter() - started
    return result


def record_batch(
    result: ReplayResult, seen: set[str], responses: Iterable[types_pb2.ScoreResponse], took_us: int
) -> None:
    """A batch's answers, each once (a repeated id counts as a duplicate), all with the batch's latency."""
    for response in responses:
        if response.transaction_id in seen:
            result.duplicates += 1
            continue
        seen.add(response.transaction_id)
        result.answered += 1
        result.latency_us.record_value(took_us)
        record(result, response)


def record(result: ReplayResult, response: types_pb2.ScoreResponse) -> None:
    kind = answer_kind(response)
    result.kinds[kind] += 1
    event_id = response.transaction_id or response.tick_id
    if kind == "full":
        result.full_ids.append(event_id)
    if response.HasField("error"):
        result.errors[f"{response.error.code}:{response.error.field or response.degraded_reason}"] += 1
        return
    result.stages[types_pb2.Stage.Name(response.stage).removeprefix("STAGE_").lower()] += 1
    result.versions[response.model_version] += 1
    result.scores[event_id] = response.score
    if response.signal:
        result.signals[types_pb2.Signal.Name(response.signal).removeprefix("SIGNAL_").lower()] += 1
    if response.degraded:
        result.degraded[response.degraded_reason] += 1


def load_replay_frame(artifacts: Path, events: int, offset: int = 0) -> pd.DataFrame:
    from scoring.scenarios.fraud import simulator

    frame = simulator.read_parquet(artifacts / "data" / "transactions.parquet")
    return frame.iloc[offset : offset + events]
