"""Tracing configuration: the OTEL_* variables as the specification reads them, Triton's URL derived from them,
and the gateway's own head sampling agreeing with the SDK's ratio sampler."""

from __future__ import annotations

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased

from scoring.common.telemetry import otlp_http_traces_url, root_sampling_ratio, tracing_enabled
from services.gateway import tracing


def test_tracing_is_off_only_when_the_specification_says_so() -> None:
    assert tracing_enabled({})
    assert not tracing_enabled({"OTEL_SDK_DISABLED": "true"})
    assert not tracing_enabled({"OTEL_TRACES_EXPORTER": "none"})
    assert tracing_enabled({"OTEL_SDK_DISABLED": "false", "OTEL_TRACES_EXPORTER": "otlp"})


@pytest.mark.parametrize(
    ("environ", "url"),
    [
        ({}, "http://localhost:4318/v1/traces"),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://jaeger:4317"}, "http://jaeger:4318/v1/traces"),
        ({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "https://otel.example:4317"}, "https://otel.example:4318/v1/traces"),
        # With OTLP/HTTP the endpoint is taken as the specification defines it.
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318", "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf"},
         "http://collector:4318/v1/traces"),
        ({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://c:9999/custom",
          "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "http/json"}, "http://c:9999/custom"),
    ],
)
def test_tritons_http_url_comes_from_the_same_settings(environ: dict[str, str], url: str) -> None:
    assert otlp_http_traces_url(environ) == url


def test_the_root_ratio_is_read_only_from_a_ratio_sampler() -> None:
    assert root_sampling_ratio({}) == 0.001
    assert root_sampling_ratio({"OTEL_TRACES_SAMPLER": "traceidratio", "OTEL_TRACES_SAMPLER_ARG": "0.25"}) == 0.25
    assert root_sampling_ratio({"OTEL_TRACES_SAMPLER": "parentbased_always_on"}) is None
    assert root_sampling_ratio({"OTEL_TRACES_SAMPLER_ARG": "lots"}) is None
    assert root_sampling_ratio({"OTEL_SDK_DISABLED": "true"}) is None


def test_the_gateways_head_sampling_samples_the_ratio_and_the_sdk_agrees(monkeypatch: pytest.MonkeyPatch) -> None:
    ratio = 0.05
    exporter = InMemorySpanExporter()
    provider = TracerProvider(sampler=ParentBased(TraceIdRatioBased(ratio)), id_generator=tracing.ID_GENERATOR)
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    monkeypatch.setattr(tracing, "_tracer", provider.get_tracer("test"))
    tracing.configure_sampling(ratio)
    try:
        n = 40_000
        spans = [tracing.start_event(f"t{i}", "c", root=True) for i in range(n)]
        sampled = [s for s in spans if s.is_recording()]
        # Every event the fast path keeps, the SDK's own sampler keeps too (ratio, not ratio squared).
        assert abs(len(sampled) / n - ratio) < 0.005
        assert all(s.get_span_context().trace_flags.sampled for s in sampled)
        assert all(not s.get_span_context().is_valid for s in spans if not s.is_recording())
        for s in sampled:
            s.end()
        assert len(exporter.get_finished_spans()) == len(sampled)
        # A batch with no sampled event still propagates a valid, unsampled context.
        parent = tracing.unsampled_parent().get_span_context()
        assert parent.is_valid and not parent.trace_flags.sampled
    finally:
        tracing.configure_sampling(None)
