"""gRPC servicer of the filter model: bytes in, ONNX Runtime run, bytes out."""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path
from typing import Any

import grpc
import numpy as np
from opentelemetry import trace
from prometheus_client import Counter, Histogram

from scoring.common import telemetry
from scoring.common.metrics import LATENCY_BUCKETS_S
from scoring.releases.store import ReleaseError, ReleaseStore
from scoring.v1 import filter_pb2, filter_pb2_grpc
from services.filter_model.model import FilterInputError, FilterModel

PREDICT_LATENCY = Histogram(
    "scoring_filter_predict_seconds", "One model run, by model", ["model"], buckets=LATENCY_BUCKETS_S
)
ROWS = Counter("scoring_filter_rows_total", "Rows scored, by model", ["model"])
PASSED = Counter("scoring_filter_passed_total", "Rows at or above the threshold (sent on to the ensemble)")
_tracer = trace.get_tracer("scoring.filter_model")
log = logging.getLogger(__name__)


class FilterServicer(filter_pb2_grpc.FilterModelServicer):
    def __init__(
        self,
        model: FilterModel,
        threshold: float,
        inline_max_rows: int,
        scenario_models: dict[str, Any] | None = None,
        scenario_thresholds: dict[str, float] | None = None,
        default_scenario: str = "",
        release_dir: Path | None = None,
        threshold_override: float | None = None,
    ) -> None:
        # The default scenario's binary model (`model`; a request naming no scenario is for it), then the others'.
        self.default_scenario = default_scenario
        self.model = model
        self.threshold = threshold
        self.inline_max_rows = inline_max_rows
        # Multi-class scenarios' models (class probabilities out), by scenario name.
        self.scenario_models = scenario_models or {}
        self.scenario_thresholds = scenario_thresholds or {}
        # Releases' filters by name, loaded on first use from the release store.
        self.release_dir = release_dir
        self.threshold_override = threshold_override
        self.releases: dict[str, FilterModel] = {}
        self._loading = asyncio.Lock()

    async def _release_model(self, name: str, context: grpc.aio.ServicerContext) -> FilterModel:
        model = self.releases.get(name)
        if model is not None:
            return model
        async with self._loading:
            if name not in self.releases:
                try:
                    self.releases[name] = await asyncio.to_thread(self._load_release, name)
                except ReleaseError as exc:
                    await context.abort(grpc.StatusCode.FAILED_PRECONDITION, f"release: {exc}")
                log.info("release filter loaded", extra={"release": name})
        return self.releases[name]

    def _load_release(self, name: str) -> FilterModel:
        if self.release_dir is None:
            raise ReleaseError("this filter service has no release store")
        store = ReleaseStore(self.release_dir)
        release = store.get(name)
        store.verify(release)
        model = FilterModel(release.filter_dir)
        zeros = np.zeros((8, model.n_features), dtype=np.float32)
        model.predict(zeros)  # ORT's first run allocates: pay it at load
        model.predict(zeros, self_contained_only=True)
        return model

    async def _predict_classes(
        self, request: filter_pb2.FilterRequest, matrix: np.ndarray, context: grpc.aio.ServicerContext
    ) -> filter_pb2.FilterResponse:
        model = self.scenario_models.get(request.scenario)
        if model is None:
            await context.abort(grpc.StatusCode.FAILED_PRECONDITION,
                                f"scenario: no filter model for {request.scenario!r} in this service")
        assert model is not None  # abort raised otherwise
        started = time.perf_counter()
        try:
            if request.rows <= self.inline_max_rows:
                probs = model.predict(matrix, self_contained_only=request.self_contained_only)
            else:
                probs = await asyncio.to_thread(model.predict, matrix, self_contained_only=request.self_contained_only)
        except ValueError as exc:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        name = f"{request.scenario}_{'fallback' if request.self_contained_only else 'main'}"
        PREDICT_LATENCY.labels(name).observe(time.perf_counter() - started)
        ROWS.labels(name).inc(request.rows)
        threshold = self.scenario_thresholds[request.scenario]
        scores = model.pass_score(probs).astype("<f4")
        PASSED.inc(int((scores >= threshold).sum()))
        return filter_pb2.FilterResponse(
            scores=scores.tobytes(), threshold=threshold, model_version=model.version,
            class_probabilities=np.ascontiguousarray(probs, dtype="<f4").tobytes(), classes=probs.shape[1],
        )

    @telemetry.traced_unary("/scoring.v1.FilterModel/Predict")
    async def Predict(
        self, request: filter_pb2.FilterRequest, context: grpc.aio.ServicerContext
    ) -> filter_pb2.FilterResponse:
        if request.rows < 0 or request.cols <= 0 or len(request.features) != 4 * request.rows * request.cols:
            await context.abort(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"features: {len(request.features)} bytes do not hold [{request.rows}, {request.cols}] float32",
            )
        matrix = np.frombuffer(request.features, dtype="<f4").reshape(request.rows, request.cols)
        if request.scenario and request.scenario != self.default_scenario:
            return await self._predict_classes(request, matrix, context)
        started = time.perf_counter()
        served, threshold = self.model, self.threshold
        if request.release:
            served = await self._release_model(request.release, context)
            threshold = served.meta.threshold if self.threshold_override is None else self.threshold_override
        model = "fallback" if request.self_contained_only else "main"
        span = _tracer.start_span("filter predict")
        if span.is_recording():
            span.set_attributes(
                {
                    "scoring.batch_size": request.rows,
                    "scoring.model": model,
                    "scoring.model_version": served.version,
                }
            )
        try:
            if request.rows <= self.inline_max_rows:
                scores = served.predict(matrix, self_contained_only=request.self_contained_only)
            else:
                scores = await asyncio.to_thread(
                    served.predict, matrix, self_contained_only=request.self_contained_only
                )
        except FilterInputError as exc:
            span.set_status(trace.StatusCode.ERROR, str(exc))
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        finally:
            span.end()
        PREDICT_LATENCY.labels(model).observe(time.perf_counter() - started)
        ROWS.labels(model).inc(request.rows)
        PASSED.inc(int((scores >= threshold).sum()))
        return filter_pb2.FilterResponse(
            scores=scores.astype("<f4").tobytes(), threshold=threshold, model_version=served.version
        )
