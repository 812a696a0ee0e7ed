"""gRPC servicer of the feature service: a request to the fold of the scenario whose batch it carries.

Scenario-agnostic: the folds (`scoring.common.online.Fold`, one per scenario, from `scoring.scenarios.registry`)
hold the state's layout and the feature code; this holds what every fold needs: a fold that runs to its end when
the caller gives up, metrics, and gRPC statuses for a bad batch or an unreachable Redis.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Sequence
from typing import TypeVar

import grpc
from prometheus_client import Counter, Histogram

from scoring.common import telemetry
from scoring.common.metrics import LATENCY_BUCKETS_S
from scoring.common.online import Fold, InvalidBatch, StoreUnavailable
from scoring.v1 import features_pb2, features_pb2_grpc

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
    def __init__(self, folds: Sequence[Fold]) -> None:
        self._by_field = {f.request_field: f for f in folds}
        self._default = self._by_field.get(None)
        self._fields = [name for name in self._by_field if name is not None]
        self._labels = next((f for f in folds if f.takes_labels), None)
        self._folding: set[asyncio.Task[object]] = set()
        self._describe = features_pb2.DescribeResponse(
            schemas=[
                features_pb2.FeatureSchema(
                    scenario=f.schema.scenario, hash=f.schema.hash, definition_version=f.schema.definition_version,
                    feature_names=f.schema.feature_names, sequence_features=f.schema.sequence_features,
                    sequence_length=f.schema.sequence_length,
                )
                for f in folds
            ]
        )

    async def _to_completion(self, work: Awaitable[T]) -> T:
        """Runs a fold to its end even when the caller gives up (deadline, cancel).

        A gateway that stops waiting has already answered its client from another stage; the events must still
        reach the entities' state, or every later feature of those entities would be wrong.
        """
        task = asyncio.ensure_future(work)
        self._folding.add(task)  # type: ignore[arg-type]
        task.add_done_callback(self._folding.discard)  # type: ignore[arg-type]
        return await asyncio.shield(task)

    def _fold_of(self, request: features_pb2.FeatureRequest) -> Fold | None:
        for name in self._fields:
            if request.HasField(name):
                return self._by_field[name]
        return self._default

    @telemetry.traced_unary("/scoring.v1.FeatureService/UpdateAndGet")
    async def UpdateAndGet(
        self, request: features_pb2.FeatureRequest, context: grpc.aio.ServicerContext
    ) -> features_pb2.FeatureResponse:
        fold = self._fold_of(request)
        if fold is None:
            await context.abort(grpc.StatusCode.FAILED_PRECONDITION, "this feature service folds no such batch")
        started = time.perf_counter()
        try:
            folded = await self._to_completion(fold.fold(request))  # type: ignore[union-attr]
        except InvalidBatch as exc:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        except StoreUnavailable as exc:
            FOLD_ERRORS.labels("redis").inc()
            log.warning("fold failed", extra={"error": str(exc)})
            await context.abort(grpc.StatusCode.UNAVAILABLE, f"redis: {exc}")
        if folded.refolded is not None:
            REFOLDED.labels("folded").inc(folded.refolded)
            REFOLDED.labels("already").inc(folded.events - folded.refolded)
        elif folded.events:
            FOLD_LATENCY.observe(time.perf_counter() - started)
            FOLDED.inc(folded.events)
        return folded.response

    @telemetry.traced_unary("/scoring.v1.FeatureService/ReportLabels")
    async def ReportLabels(
        self, request: features_pb2.LabelBatch, context: grpc.aio.ServicerContext
    ) -> features_pb2.LabelAck:
        labels = self._labels
        if labels is None:
            await context.abort(grpc.StatusCode.FAILED_PRECONDITION, "this feature service takes no labels")
        try:
            accepted, unknown = await self._to_completion(labels.report_labels(request))  # type: ignore[union-attr]
        except StoreUnavailable as exc:
            await context.abort(grpc.StatusCode.UNAVAILABLE, f"redis: {exc}")
        LABELS.labels("accepted").inc(accepted)
        LABELS.labels("unknown").inc(unknown)
        return features_pb2.LabelAck(accepted=accepted, unknown=unknown)

    async def Describe(
        self, request: features_pb2.DescribeRequest, context: grpc.aio.ServicerContext
    ) -> features_pb2.DescribeResponse:
        return self._describe
