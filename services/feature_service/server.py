"""gRPC servicer of the feature service: protobuf in, `FeatureStore` call, protobuf out."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable
from typing import TYPE_CHECKING, TypeVar

import grpc
import numpy as np
from prometheus_client import Counter, Histogram
from redis.exceptions import RedisError

from scoring.common import telemetry
from scoring.common.metrics import LATENCY_BUCKETS_S
from scoring.scenarios.fraud import features as F
from scoring.v1 import features_pb2, features_pb2_grpc
from services.feature_service.store import EventBatch, FeatureStore, StoreUnavailable

if TYPE_CHECKING:
    from scoring.scenarios.market.online import TickStore

T = TypeVar("T")
FOLD_LATENCY = Histogram(
    "scoring_features_fold_seconds", "One batch folded into Redis, features returned", buckets=LATENCY_BUCKETS_S
)
FOLDED = Counter("scoring_features_events_total", "Events folded (or re-read, when sent again)")
FOLD_ERRORS = Counter("scoring_features_errors_total", "Batches that Redis could not fold", ["kind"])
REFOLDED = Counter(
    "scoring_features_refolded_total", "Events re-sent by the gateway's fold backlog: folded now, or already", ["state"]
)
LABELS = Counter("scoring_features_labels_total", "Label reports, by outcome", ["outcome"])
log = logging.getLogger(__name__)


class FeatureServicer(features_pb2_grpc.FeatureServiceServicer):
    def __init__(self, store: FeatureStore, ticks: TickStore | None = None) -> None:
        self.store = store
        self.ticks = ticks
        self._folding: set[asyncio.Task[object]] = set()

    async def _to_completion(self, work: Awaitable[T]) -> T:
        """Runs a fold to its end even when the caller gives up (deadline, cancel).

        A gateway that stops waiting has already answered its client from another stage; the events must still
        reach the entities' state, or every later feature of those customers and terminals would be wrong.
        """
        task = asyncio.ensure_future(work)
        self._folding.add(task)  # type: ignore[arg-type]
        task.add_done_callback(self._folding.discard)  # type: ignore[arg-type]
        return await asyncio.shield(task)

    @telemetry.traced_unary("/scoring.v1.FeatureService/UpdateAndGet")
    async def UpdateAndGet(
        self, request: features_pb2.FeatureRequest, context: grpc.aio.ServicerContext
    ) -> features_pb2.FeatureResponse:
        if request.HasField("ticks"):
            return await self._fold_ticks(request.ticks, context)
        n = len(request.transaction_id)
        columns = (request.event_time_us, request.customer_id, request.terminal_id, request.amount)
        if any(len(c) != n for c in columns):
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "columns of the batch differ in length")
        batch = EventBatch(
            transaction_id=list(request.transaction_id),
            event_time_us=np.asarray(request.event_time_us, dtype=np.int64),
            customer_id=list(request.customer_id),
            terminal_id=list(request.terminal_id),
            amount=np.asarray(request.amount, dtype=np.float64),
        )
        # The gateway validates events at the edge; this guards the state against any other caller: a non-finite or
        # negative amount folded into a customer's window would poison every later feature of that customer.
        if not (np.isfinite(batch.amount).all() and (batch.amount >= 0).all()):
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "amount: every value must be finite and >= 0")
        if n == 0:
            return features_pb2.FeatureResponse(rows=0, feature_names=F.FEATURE_NAMES)
        started = time.perf_counter()
        if request.fold_only:
            try:
                folded = await self._to_completion(self.store.fold_missing(batch))
            except StoreUnavailable as exc:
                FOLD_ERRORS.labels("redis").inc()
                await context.abort(grpc.StatusCode.UNAVAILABLE, f"redis: {exc}")
            REFOLDED.labels("folded").inc(folded)
            REFOLDED.labels("already").inc(n - folded)
            return features_pb2.FeatureResponse(rows=0, feature_names=F.FEATURE_NAMES)
        try:
            result = await self._to_completion(self.store.update_and_get(batch))
        except StoreUnavailable as exc:
            FOLD_ERRORS.labels("redis").inc()
            log.warning("fold failed", extra={"events": n, "error": str(exc)})
            await context.abort(grpc.StatusCode.UNAVAILABLE, f"redis: {exc}")
        FOLD_LATENCY.observe(time.perf_counter() - started)
        FOLDED.inc(n)
        return features_pb2.FeatureResponse(
            rows=n,
            features=result.features.tobytes(),
            feature_names=F.FEATURE_NAMES,
            sequences=result.sequences.tobytes(),
            seq_len=F.SEQ_LEN,
            seq_feature_count=len(F.SEQ_FEATURE_NAMES),
        )

    async def _fold_ticks(
        self, ticks: features_pb2.TickColumns, context: grpc.aio.ServicerContext
    ) -> features_pb2.FeatureResponse:
        from scoring.scenarios.market import features as MF
        from scoring.scenarios.market.online import TickBatch

        if self.ticks is None:
            await context.abort(grpc.StatusCode.FAILED_PRECONDITION, "this feature service folds no market ticks")
        n = len(ticks.tick_id)
        columns = {name: getattr(ticks, name) for name in MF.RAW_FIELDS if name != "time_us"}
        columns["time_us"] = ticks.event_time_us
        if len(ticks.symbol) != n or any(len(c) != n for c in columns.values()):
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "columns of the tick batch differ in length")
        raw = np.array([np.asarray(columns[name], dtype=np.float64) for name in MF.RAW_FIELDS]).reshape(
            len(MF.RAW_FIELDS), n)
        if not np.isfinite(raw).all():
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "ticks: every number must be finite")
        names = list(MF.FEATURE_NAMES)
        if n == 0:
            return features_pb2.FeatureResponse(rows=0, feature_names=names)
        started = time.perf_counter()
        batch = TickBatch(list(ticks.tick_id), list(ticks.symbol), raw)
        try:
            features, sequences, status = await self._to_completion(self.ticks.update_and_get(batch))
        except (StoreUnavailable, RedisError) as exc:
            FOLD_ERRORS.labels("redis").inc()
            await context.abort(grpc.StatusCode.UNAVAILABLE, f"redis: {exc}")
        FOLD_LATENCY.observe(time.perf_counter() - started)
        FOLDED.inc(n)
        return features_pb2.FeatureResponse(
            rows=n, features=features.tobytes(), feature_names=names, sequences=sequences.tobytes(),
            seq_len=MF.SEQ_LEN, seq_feature_count=len(MF.SEQ_FEATURE_NAMES), fold_status=status.tolist(),
        )

    @telemetry.traced_unary("/scoring.v1.FeatureService/ReportLabels")
    async def ReportLabels(
        self, request: features_pb2.LabelBatch, context: grpc.aio.ServicerContext
    ) -> features_pb2.LabelAck:
        try:
            accepted, unknown = await self._to_completion(
                self.store.report_labels(
                    [label.transaction_id for label in request.labels], [label.fraud for label in request.labels]
                )
            )
        except StoreUnavailable as exc:
            await context.abort(grpc.StatusCode.UNAVAILABLE, f"redis: {exc}")
        LABELS.labels("accepted").inc(accepted)
        LABELS.labels("unknown").inc(unknown)
        return features_pb2.LabelAck(accepted=accepted, unknown=unknown)
