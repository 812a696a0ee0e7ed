"""Clients of the three downstream stages, each behind one typed interface.

Every call takes the time it may use; a stage that fails raises `StageError` with a reason the client of the
gateway can act on (`<stage>_timeout`, `<stage>_unavailable`, `<stage>_error`). gRPC's own channel handles
reconnection when a stage comes back.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import grpc
import numpy as np
import tritonclient.grpc.aio as triton
from opentelemetry import propagate, trace
from opentelemetry.trace import SpanKind
from tritonclient.utils import InferenceServerException

from scoring.scenarios.fraud.events import EventBatch
from scoring.v1 import features_pb2, features_pb2_grpc, filter_pb2, filter_pb2_grpc
from services.gateway import metrics as M

CHANNEL_OPTIONS = [
    ("grpc.max_receive_message_length", 64 * 1024 * 1024),
    ("grpc.max_send_message_length", 64 * 1024 * 1024),
    # Reconnect quickly after a stage restarts, instead of gRPC's default backoff up to 120 s.
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 1000),
    ("grpc.min_reconnect_backoff_ms", 100),
]


# Slack over a stage's deadline before the gateway stops waiting for it regardless.
CUTOFF_MARGIN_S = 0.0005
# The smallest per-request timeout sent to Triton, and the least time worth an ensemble call.
TRITON_MIN_TIMEOUT_US = 1000


class StageError(Exception):
    def __init__(self, stage: str, kind: str, detail: str = "") -> None:
        super().__init__(f"{stage}_{kind}: {detail}")
        self.stage = stage
        self.kind = kind

    @property
    def reason(self) -> str:
        return f"{self.stage}_{self.kind}"


def _from_rpc_error(stage: str, exc: grpc.aio.AioRpcError) -> StageError:
    code = exc.code()
    if code == grpc.StatusCode.DEADLINE_EXCEEDED:
        return StageError(stage, "timeout", exc.details() or "")
    if code == grpc.StatusCode.UNAVAILABLE:
        return StageError(stage, "unavailable", exc.details() or "")
    return StageError(stage, "error", f"{code.name}: {exc.details()}")


@dataclass(frozen=True)
class FilterResult:
    scores: np.ndarray
    threshold: float
    model_version: str
    probs: np.ndarray | None = None  # multi-class scenarios: [rows, classes]


@dataclass(frozen=True)
class EnsembleResult:
    scores: np.ndarray
    model_version: str
    probs: np.ndarray | None = None  # multi-class scenarios: [rows, classes] and the class given per row
    signal: np.ndarray | None = None


class _TracedCall:
    """A client span and a W3C traceparent for one unary call.

    Not the gRPC instrumentation's asyncio client interceptor: an intercepted grpc.aio call runs through extra
    tasks and cost the traced stack 13% of its saturated throughput, on every call, sampled or not. The header is
    sent for unsampled calls too, so that the stages (parent-based samplers) follow the "not sampled" decision.
    """

    __slots__ = ("metadata", "span")

    def __init__(self, method: str) -> None:
        self.span = trace.get_tracer("scoring.gateway.stages").start_span(method, kind=SpanKind.CLIENT)
        ctx = self.span.get_span_context()
        self.metadata: tuple[tuple[str, str], ...] | None = None
        if ctx.is_valid:
            self.metadata = (("traceparent", f"00-{ctx.trace_id:032x}-{ctx.span_id:016x}-{int(ctx.trace_flags):02x}"),)
            if self.span.is_recording():
                service, _, name = method.strip("/").rpartition("/")
                self.span.set_attributes({"rpc.system": "grpc", "rpc.service": service, "rpc.method": name})

    def failed(self, exc: grpc.aio.AioRpcError) -> None:
        if self.span.is_recording():
            self.span.set_attribute("rpc.grpc.status_code", exc.code().value[0])
            self.span.set_status(trace.StatusCode.ERROR, f"{exc.code().name}: {exc.details()}")


# Folds sent without waiting (`FeatureClient.fold_late`) in flight at once, at most: past it one is not sent.
LATE_FOLDS_MAX = 64
LATE_FOLD_TIMEOUT_S = 5.0


class FeatureClient:
    def __init__(self, address: str) -> None:
        self.channel = grpc.aio.insecure_channel(address, options=CHANNEL_OPTIONS)
        self.stub = features_pb2_grpc.FeatureServiceStub(self.channel)
        self._late: set[asyncio.Future[features_pb2.FeatureResponse]] = set()

    def fold_late(self, request: features_pb2.FeatureRequest) -> bool:
        """Sends a batch that got no time for its features, only so that the state it folds into stays complete
        and in order (a symbol's ring that missed a tick would flag the next one as a gap and restart its window;
        such a batch cannot be folded later, after newer ticks). The call starts now, before any later batch's
        (grpc.aio starts a call when it is made), and nobody waits for it. False when it was not sent (too many in
        flight: the feature service is down or far behind)."""
        if len(self._late) >= LATE_FOLDS_MAX:
            M.LATE_FOLDS.labels("skipped").inc()
            return False
        call = asyncio.ensure_future(self.stub.UpdateAndGet(request, timeout=LATE_FOLD_TIMEOUT_S))
        self._late.add(call)

        def done(f: asyncio.Future[features_pb2.FeatureResponse]) -> None:
            self._late.discard(f)
            failed = f.cancelled() or f.exception() is not None
            M.LATE_FOLDS.labels("failed" if failed else "folded").inc()

        call.add_done_callback(done)
        return True

    async def _fold(self, batch: EventBatch, timeout_s: float, *, fold_only: bool) -> features_pb2.FeatureResponse:
        request = features_pb2.FeatureRequest(
            transaction_id=batch.transaction_id,
            event_time_us=batch.event_time_us.tolist(),
            customer_id=batch.customer_id,
            terminal_id=batch.terminal_id,
            amount=batch.amount.tolist(),
            fold_only=fold_only,
        )
        return await self._send(request, timeout_s)

    async def fold_other(
        self, request: features_pb2.FeatureRequest, n_features: int, timeout_s: float
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Another scenario's batch (its request built by the scenario): features, sequences and fold status."""
        reply = await self._send(request, timeout_s)
        n = reply.rows
        if n == 0:
            return np.zeros((0, n_features), np.float32), np.zeros((0, 0, 0), np.float32), np.zeros(0, np.int8)
        if len(reply.feature_names) != n_features:
            raise StageError("features", "invalid", f"{len(reply.feature_names)} features, expected {n_features}")
        features = np.frombuffer(reply.features, dtype="<f4").reshape(n, n_features)
        sequences = np.frombuffer(reply.sequences, dtype="<f4").reshape(n, reply.seq_len, reply.seq_feature_count)
        if not (np.isfinite(features).all() and np.isfinite(sequences).all()):
            raise StageError("features", "invalid", "non-finite features")
        return features, sequences, np.asarray(reply.fold_status, dtype=np.int8)

    async def _send(self, request: features_pb2.FeatureRequest, timeout_s: float) -> features_pb2.FeatureResponse:
        traced = _TracedCall("/scoring.v1.FeatureService/UpdateAndGet")
        try:
            reply: features_pb2.FeatureResponse = await self.stub.UpdateAndGet(
                request, timeout=timeout_s, metadata=traced.metadata
            )
        except grpc.aio.AioRpcError as exc:
            traced.failed(exc)
            raise _from_rpc_error("features", exc) from exc
        finally:
            traced.span.end()
        return reply

    async def update_and_get(self, batch: EventBatch, timeout_s: float) -> tuple[np.ndarray, np.ndarray]:
        reply = await self._fold(batch, timeout_s, fold_only=False)
        n = reply.rows
        if n == 0:
            return np.zeros((0, len(reply.feature_names)), np.float32), np.zeros((0, 0, 0), np.float32)
        features = np.frombuffer(reply.features, dtype="<f4").reshape(n, len(reply.feature_names))
        sequences = np.frombuffer(reply.sequences, dtype="<f4").reshape(n, reply.seq_len, reply.seq_feature_count)
        if not (np.isfinite(features).all() and np.isfinite(sequences).all()):
            raise StageError("features", "invalid", "non-finite features")
        return features, sequences

    async def refold(self, batch: EventBatch, timeout_s: float) -> None:
        """Folds the events of `batch` that the feature service has not folded yet; no features come back."""
        await self._fold(batch, timeout_s, fold_only=True)

    async def report_labels(self, labels: features_pb2.LabelBatch, timeout_s: float) -> features_pb2.LabelAck:
        traced = _TracedCall("/scoring.v1.FeatureService/ReportLabels")
        try:
            return await self.stub.ReportLabels(labels, timeout=timeout_s, metadata=traced.metadata)
        except grpc.aio.AioRpcError as exc:
            traced.failed(exc)
            raise _from_rpc_error("features", exc) from exc
        finally:
            traced.span.end()

    async def describe(self, timeout_s: float) -> dict[str, str]:
        """The feature schema hash of each scenario the feature service folds."""
        try:
            reply = await self.stub.Describe(features_pb2.DescribeRequest(), timeout=timeout_s)
        except grpc.aio.AioRpcError as exc:
            raise _from_rpc_error("features", exc) from exc
        return {s.scenario: s.hash for s in reply.schemas}

    async def close(self) -> None:
        await self.channel.close()


class FilterClient:
    def __init__(self, address: str) -> None:
        self.channel = grpc.aio.insecure_channel(address, options=CHANNEL_OPTIONS)
        self.stub = filter_pb2_grpc.FilterModelStub(self.channel)

    async def predict(
        self, features: np.ndarray, self_contained_only: bool, timeout_s: float, scenario: str = "", release: str = ""
    ) -> FilterResult:
        request = filter_pb2.FilterRequest(
            rows=features.shape[0],
            cols=features.shape[1],
            features=np.ascontiguousarray(features, dtype="<f4").tobytes(),
            self_contained_only=self_contained_only,
            scenario=scenario,
            release=release,
        )
        traced = _TracedCall("/scoring.v1.FilterModel/Predict")
        try:
            reply = await self.stub.Predict(request, timeout=timeout_s, metadata=traced.metadata)
        except grpc.aio.AioRpcError as exc:
            traced.failed(exc)
            raise _from_rpc_error("filter", exc) from exc
        finally:
            traced.span.end()
        scores = np.frombuffer(reply.scores, dtype="<f4")
        if len(scores) != features.shape[0] or not np.isfinite(scores).all():
            raise StageError("filter", "invalid", "non-finite or missing scores")
        probs = None
        if reply.classes:
            probs = np.frombuffer(reply.class_probabilities, dtype="<f4")
            if len(probs) != len(scores) * reply.classes or not np.isfinite(probs).all():
                raise StageError("filter", "invalid", "non-finite or missing class probabilities")
            probs = probs.reshape(len(scores), reply.classes)
        return FilterResult(scores=scores, threshold=reply.threshold, model_version=reply.model_version, probs=probs)

    async def close(self) -> None:
        await self.channel.close()


class EnsembleClient:
    """Triton over KServe v2 gRPC. The gateway cuts off on its side (client_timeout) and passes the remaining
    budget as the request timeout, so Triton drops the request from its queue instead of running stale work."""

    def __init__(self, address: str, model: str, *, classes: int = 0) -> None:
        self.model = model
        # 0: a binary scenario (SCORE out); else PROBS [classes] and SIGNAL [1] out.
        self.classes = classes
        self.client = triton.InferenceServerClient(url=address, channel_args=CHANNEL_OPTIONS)
        self.tracer = trace.get_tracer("scoring.gateway.ensemble")

    async def score(
        self, features: np.ndarray, sequences: np.ndarray, timeout_s: float, model: tuple[str, int] | None = None
    ) -> EnsembleResult:
        """`model`: (Triton model, explicit version) of a release; None: this client's model, Triton's choice of
        version (the training run's own repository, without a release store)."""
        inputs = [
            triton.InferInput("FEATURES", list(features.shape), "FP32"),
            triton.InferInput("SEQUENCE", list(sequences.shape), "FP32"),
        ]
        inputs[0].set_data_from_numpy(np.ascontiguousarray(features, dtype=np.float32))
        inputs[1].set_data_from_numpy(np.ascontiguousarray(sequences, dtype=np.float32))
        # tritonclient's aio client takes no interceptor: the client span and the traceparent header are ours.
        # Triton traces every request that carries a traceparent, so only sampled ones get it.
        name, pinned = model if model is not None else (self.model, 0)
        with self.tracer.start_as_current_span(
            f"triton infer {name}", kind=SpanKind.CLIENT, record_exception=False, set_status_on_exception=False
        ) as span:
            headers: dict[str, str] | None = None
            if span.is_recording():
                headers = {}
                propagate.inject(headers)
                span.set_attributes(
                    {"rpc.system": "grpc", "rpc.service": "inference.GRPCInferenceService", "rpc.method": "ModelInfer",
                     "scoring.model": name, "scoring.batch_size": int(features.shape[0])}
                )
            return await self._score(inputs, timeout_s, headers, span, name, pinned)

    async def _score(
        self, inputs: list[triton.InferInput], timeout_s: float, headers: dict[str, str] | None, span: trace.Span,
        model: str | None = None, pinned: int = 0,
    ) -> EnsembleResult:
        try:
            # Our own cutoff on top of the client's: with Triton 2.51 a request can come back only at a later
            # deadline than the one it was given (seen with tiny queue timeouts), and a late answer is useless.
            result = await asyncio.wait_for(
                self._infer(inputs, timeout_s, headers, model or self.model, pinned), timeout_s + CUTOFF_MARGIN_S
            )
        except TimeoutError as exc:
            span.set_status(trace.StatusCode.ERROR, "timeout")
            raise StageError("ensemble", "timeout", f"no answer within {timeout_s * 1e3:.2f} ms") from exc
        except InferenceServerException as exc:
            span.set_status(trace.StatusCode.ERROR, str(exc))
            status = str(exc.status() or "")
            if "DEADLINE_EXCEEDED" in status or "Deadline" in str(exc) or "timeout" in str(exc).lower():
                raise StageError("ensemble", "timeout", str(exc)) from exc
            if "UNAVAILABLE" in status:
                raise StageError("ensemble", "unavailable", str(exc)) from exc
            raise StageError("ensemble", "error", str(exc)) from exc
        if self.classes:
            return self._classes(result, inputs[0].shape()[0], span)
        scores = result.as_numpy("SCORE")
        if scores is None:
            raise StageError("ensemble", "error", "response has no SCORE")
        if len(scores.reshape(-1)) != inputs[0].shape()[0] or not np.isfinite(scores).all():
            raise StageError("ensemble", "invalid", "non-finite or missing scores")
        response = result.get_response()
        version = f"{response.model_name}:{response.model_version}"
        if span.is_recording():
            span.set_attribute("scoring.model_version", version)
        return EnsembleResult(scores=scores.reshape(-1).astype(np.float64), model_version=version)

    def _classes(self, result: triton.InferResult, rows: int, span: trace.Span) -> EnsembleResult:
        probs, signal = result.as_numpy("PROBS"), result.as_numpy("SIGNAL")
        if probs is None or signal is None:
            raise StageError("ensemble", "error", "response has no PROBS or SIGNAL")
        probs = probs.reshape(-1, self.classes)
        signal = signal.reshape(-1)
        if len(probs) != rows or len(signal) != rows or not np.isfinite(probs).all():
            raise StageError("ensemble", "invalid", "non-finite or missing class probabilities")
        response = result.get_response()
        version = f"{response.model_name}:{response.model_version}"
        if span.is_recording():
            span.set_attribute("scoring.model_version", version)
        return EnsembleResult(scores=probs.max(axis=1).astype(np.float64), model_version=version,
                              probs=probs.astype(np.float64), signal=signal.astype(np.int8))

    async def _infer(
        self, inputs: list[triton.InferInput], timeout_s: float, headers: dict[str, str] | None = None,
        model: str | None = None, version: int = 0,
    ) -> triton.InferResult:
        return await self.client.infer(
            model or self.model,
            inputs,
            model_version=str(version) if version else "",
            headers=headers,
            # All outputs: asking a Triton 2.51 ensemble for a subset fails with "unexpected deadlock".
            outputs=None,
            client_timeout=timeout_s,
            # Never below 1 ms: Triton 2.51 can stop serving every later request after a near-zero timeout.
            timeout=max(TRITON_MIN_TIMEOUT_US, int(timeout_s * 1e6)),
        )

    async def close(self) -> None:
        await self.client.close()
