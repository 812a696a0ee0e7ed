"""One trace per event across every service, Triton included, received by a real OTLP receiver.

The stack's exporters (OTLP/gRPC from our services, OTLP/HTTP from Triton) point at `TraceSink`, a receiver
built from opentelemetry-proto's trace service. Every event is sampled and passes the filter, so each trace
must reach the ensemble inside Triton.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import grpc
import pytest
import pytest_asyncio
from google.protobuf.timestamp_pb2 import Timestamp

from scoring.budget import budget_report
from scoring.trace_sink import Span, TraceSink
from scoring.v1 import gateway_pb2, gateway_pb2_grpc, types_pb2

pytestmark = pytest.mark.integration

# The local target's fraud_ensemble is one fused step (the container target's scheduled graph adds a span per model).
# The first release's own Triton model (scoring.releases.store): what the session stack's champion is served by.
TRITON_MODELS = {"fraud_ensemble_r2"}


@pytest_asyncio.fixture(scope="module")
async def traced(artifacts, tmp_path_factory) -> AsyncIterator[tuple[object, TraceSink]]:
    from scoring.launcher import Ports, Stack, StackConfig

    async with TraceSink() as sink:
        config = StackConfig(
            artifacts=artifacts,
            ports=Ports.free(),
            env={
                "OTEL_EXPORTER_OTLP_ENDPOINT": sink.grpc_endpoint,
                "OTEL_TRACES_SAMPLER": "parentbased_always_on",
                "OTEL_BSP_SCHEDULE_DELAY": "100",
                "FILTER_THRESHOLD": "0",
                "GATEWAY_BUDGET_MS": "300",
            },
            triton_trace_url=sink.http_url,
            log_dir=tmp_path_factory.mktemp("traced-logs"),
        )
        async with Stack(config) as stack:
            yield stack, sink


def _tx(i: int) -> types_pb2.Transaction:
    return types_pb2.Transaction(
        transaction_id=f"traced-{i}", timestamp=Timestamp(seconds=1_700_000_000 + i), customer_id=f"C{i % 3}",
        terminal_id="T1", amount=42.0 + i,
    )


async def _wait_for(sink: TraceSink, ready, timeout_s: float = 30.0) -> list[Span]:
    deadline = time.monotonic() + timeout_s
    while True:
        spans = sink.spans()
        if ready(spans) or time.monotonic() > deadline:
            return spans
        await asyncio.sleep(0.2)


def _complete(trace_id: str):
    def ready(spans: list[Span]) -> bool:
        mine = [s for s in spans if s.trace_id == trace_id]
        names = {s.attributes.get("triton.model_name") for s in mine if s.service == "triton"}
        return {"gateway", "feature_service", "filter_model"} <= {s.service for s in mine} and TRITON_MODELS <= names
    return ready


def _find(spans: list[Span], predicate, what: str) -> Span:
    found = [s for s in spans if predicate(s)]
    assert found, f"no {what} among {sorted({(s.service, s.name) for s in spans})}"
    return found[0]


def _parent(spans: list[Span], span: Span) -> Span:
    by_id = {s.span_id: s for s in spans}
    assert span.parent_span_id in by_id, f"{span.service}:{span.name} has no parent in its trace"
    return by_id[span.parent_span_id]


async def test_a_streamed_event_is_one_trace_through_every_service_and_into_triton(traced) -> None:
    stack, sink = traced
    async with grpc.aio.insecure_channel(stack.gateway_address) as channel:
        stub = gateway_pb2_grpc.GatewayStub(channel)
        call = stub.ScoreStream(iter([gateway_pb2.ScoreRequest(transaction=_tx(i)) for i in range(3)]), timeout=30)
        answers = [r async for r in call]
    assert [a.stage for a in answers] == [types_pb2.STAGE_ENSEMBLE] * 3

    first = await _wait_for(sink, lambda s: any(x.attributes.get("scoring.event_id") == "traced-0" for x in s))
    event = _find(
        first, lambda s: s.name == "score event" and s.attributes.get("scoring.event_id") == "traced-0", "traced-0"
    )
    spans = [s for s in await _wait_for(sink, _complete(event.trace_id)) if s.trace_id == event.trace_id]

    # The event is the root of its own trace, and carries what a user filters on.
    assert event.service == "gateway" and event.parent_span_id == ""
    a = event.attributes
    assert a["scoring.customer_id"] == "C0" and a["scoring.stage"] == "ensemble"
    assert a["scoring.degraded"] is False and a["scoring.degraded_reason"] == ""
    assert a["scoring.model_version"] == "fraud_ensemble_r2:2" and a["scoring.batch_size"] >= 1
    assert a["scoring.features_ms"] > 0 and a["scoring.filter_ms"] > 0 and a["scoring.ensemble_ms"] > 0

    # gateway: event -> batch -> client span per stage; each service's server span under the gateway's client span.
    batch = _find(spans, lambda s: s.name == "gateway batch", "gateway batch span")
    assert _parent(spans, batch) == event
    hops = (("feature_service", "FeatureService/UpdateAndGet"), ("filter_model", "FilterModel/Predict"))
    for service, method in hops:
        server = _find(spans, lambda s, service=service, method=method: s.service == service and
                       s.name.endswith(method), f"server span of {service}")
        client = _parent(spans, server)
        assert client.service == "gateway" and client.name.endswith(method)
        assert _parent(spans, client) == batch
    fold = _find(spans, lambda s: s.name == "redis fold", "redis fold span")
    assert _parent(spans, fold).service == "feature_service" and fold.attributes["db.system"] == "redis"
    predict = _find(spans, lambda s: s.name == "filter predict", "filter predict span")
    assert predict.attributes["scoring.model_version"] == "filter:1"

    # Triton's own spans join the trace under the gateway's request span; the ensemble's steps under the ensemble.
    infer = _find(spans, lambda s: s.name == "triton infer fraud_ensemble_r2", "triton infer span")
    assert _parent(spans, infer) == batch
    triton_root = _find(
        spans, lambda s: s.service == "triton" and s.parent_span_id == infer.span_id, "Triton's request span"
    )
    ensemble = _find(
        spans, lambda s: s.attributes.get("triton.model_name") == "fraud_ensemble_r2",
        "Triton span of fraud_ensemble_r2",
    )
    assert ensemble.parent_span_id in {triton_root.span_id, infer.span_id}
    compute = _find(spans, lambda s: s.service == "triton" and s.name == "compute" and
                    s.parent_span_id == ensemble.span_id, "Triton compute span under fraud_ensemble_r2")
    assert compute.trace_id == ensemble.trace_id

    # Each event of the stream is its own trace.
    assert len({s.trace_id for s in sink.spans() if s.name == "score event" and
                str(s.attributes.get("scoring.event_id", "")).startswith("traced-")}) == 3


async def test_a_unary_call_continues_the_callers_trace(traced) -> None:
    stack, sink = traced
    trace_id, parent_id = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
    async with grpc.aio.insecure_channel(stack.gateway_address) as channel:
        stub = gateway_pb2_grpc.GatewayStub(channel)
        metadata = (("traceparent", f"00-{trace_id}-{parent_id}-01"),)
        answer = await stub.Score(gateway_pb2.ScoreRequest(transaction=_tx(100)), metadata=metadata, timeout=30)
    assert answer.stage == types_pb2.STAGE_ENSEMBLE
    spans = [s for s in await _wait_for(sink, _complete(trace_id)) if s.trace_id == trace_id]
    server = _find(spans, lambda s: s.name.endswith("Gateway/Score"), "gateway Score server span")
    assert server.parent_span_id == parent_id
    event = _find(spans, lambda s: s.name == "score event", "score event span")
    assert _parent(spans, event) == server and event.attributes["scoring.event_id"] == "traced-100"


async def test_the_budget_report_accounts_for_every_sampled_event(traced) -> None:
    stack, sink = traced
    async with grpc.aio.insecure_channel(stack.gateway_address) as channel:
        stub = gateway_pb2_grpc.GatewayStub(channel)
        batch = gateway_pb2.ScoreBatchRequest(transactions=[_tx(200 + i) for i in range(20)])
        call = stub.ScoreBatchStream(iter([batch]), timeout=30)
        [reply] = [r async for r in call]
    assert len(reply.responses) == 20

    def mine(spans: list[Span]) -> list[Span]:
        return [s for s in spans if s.name == "score event" and
                200 <= int(str(s.attributes.get("scoring.event_id", "traced-0")).split("-")[-1]) < 220]

    spans = mine(await _wait_for(sink, lambda s: len(mine(s)) == 20))
    report = budget_report(spans).as_dict()
    assert report["events"] == 20 and report["decided_by"] == {"ensemble": 20}
    assert report["budget_ms"] == pytest.approx(300, rel=0.01)
    for stage in ("queue", "features", "filter", "ensemble"):
        assert report["stages"][stage]["events"] == 20
    # The stage times and the gateway's own remainder add up to each event's time in the gateway.
    for s in spans:
        a = s.attributes
        parts = a["scoring.queue_ms"] + a["scoring.features_ms"] + a["scoring.filter_ms"] + a["scoring.ensemble_ms"]
        assert parts <= a["scoring.total_ms"] + 1e-6 <= s.duration_ms + 1.0
