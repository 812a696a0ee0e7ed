"""OpenTelemetry tracing shared by every service, configured by the standard `OTEL_*` environment variables.

`OTEL_SERVICE_NAME`, `OTEL_EXPORTER_OTLP_ENDPOINT` (or `..._TRACES_ENDPOINT`), `OTEL_TRACES_SAMPLER` and
`OTEL_TRACES_SAMPLER_ARG`, `OTEL_BSP_*`, `OTEL_TRACES_EXPORTER=none` and `OTEL_SDK_DISABLED=true` mean what the
OpenTelemetry specification says; the SDK reads them itself. Two defaults are ours: sampling is parent-based
with a 0.1% ratio (the SDK's default traces everything), and the exporter is OTLP over gRPC through a batching
span processor, so a span costs the hot path an append to a queue and never an export.

Why 0.1%: a sampled event takes its whole micro-batch's downstream spans with it (feature service, filter,
Triton), so the share of traced work is about batch size x ratio. At saturation batches hold ~200 events: 1%
traced 87% of the batches and cost a fifth of the throughput (`make bench`); 0.1% traces ~18% of them, within
the noise of tracing off, and still gives about ten traces a second at 10,000 events/s.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence

import grpc
from opentelemetry import trace
from opentelemetry.instrumentation.grpc import aio_server_interceptor, filters
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.sdk.trace.id_generator import IdGenerator

log = logging.getLogger(__name__)

DEFAULT_SAMPLER = "parentbased_traceidratio"
DEFAULT_SAMPLER_ARG = "0.001"
# Health checks and reflection would be most of the spans and say nothing about an event.
_UNTRACED = filters.negate(
    filters.any_of(
        filters.service_prefix("grpc.health."),
        filters.service_prefix("grpc.reflection."),
    )
)

_provider: TracerProvider | None = None


def tracing_enabled(environ: dict[str, str] | os._Environ[str] = os.environ) -> bool:
    if environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    return environ.get("OTEL_TRACES_EXPORTER", "otlp").strip().lower() != "none"


def setup_tracing(default_service_name: str, id_generator: IdGenerator | None = None) -> TracerProvider | None:
    """Installs the global tracer provider (once per process); None when tracing is off."""
    global _provider
    if _provider is not None or not tracing_enabled():
        return _provider
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

    if "OTEL_TRACES_SAMPLER" not in os.environ:
        os.environ["OTEL_TRACES_SAMPLER"] = DEFAULT_SAMPLER
        os.environ.setdefault("OTEL_TRACES_SAMPLER_ARG", DEFAULT_SAMPLER_ARG)
    # OTEL_SERVICE_NAME wins over our default, as the specification says (Resource.create alone would not).
    name = os.environ.get("OTEL_SERVICE_NAME") or default_service_name
    # The sampler comes from OTEL_TRACES_SAMPLER(_ARG), read by the SDK.
    provider = TracerProvider(resource=Resource.create({"service.name": name}), id_generator=id_generator)
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    trace.set_tracer_provider(provider)
    _provider = provider
    log.info(
        "tracing on",
        extra={
            "service": name,
            "endpoint": os.environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
            or os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT", "http://localhost:4317"),
            "sampler": f"{os.environ['OTEL_TRACES_SAMPLER']}:{os.environ.get('OTEL_TRACES_SAMPLER_ARG', '')}",
        },
    )
    return provider


def root_sampling_ratio(environ: dict[str, str] | os._Environ[str] = os.environ) -> float | None:
    """The ratio at which root spans are sampled, when the configured sampler is a trace-id ratio one; else None."""
    if not tracing_enabled(environ):
        return None
    if environ.get("OTEL_TRACES_SAMPLER", DEFAULT_SAMPLER) not in ("traceidratio", "parentbased_traceidratio"):
        return None
    try:
        ratio = float(environ.get("OTEL_TRACES_SAMPLER_ARG", DEFAULT_SAMPLER_ARG))
    except ValueError:
        return None  # the SDK falls back to its own default; so does the caller
    return ratio if 0.0 <= ratio <= 1.0 else None


def shutdown_tracing() -> None:
    """Exports what is queued; called when a service stops."""
    global _provider
    if _provider is not None:
        _provider.shutdown()
        _provider = None


def server_interceptors() -> Sequence[grpc.aio.ServerInterceptor]:
    """Server spans, and the caller's W3C traceparent taken from the request metadata."""
    return [aio_server_interceptor(filter_=_UNTRACED)] if _provider is not None else []


def otlp_http_traces_url(environ: dict[str, str]) -> str:
    """Triton's OTLP/HTTP traces URL, from the same `OTEL_*` settings as the services' OTLP/gRPC exporter.

    Triton exports over HTTP only. With an HTTP protocol the endpoint is used as the specification says (the
    signal's own endpoint as is, the general one plus `/v1/traces`); with gRPC (the default) the collector's
    HTTP receiver is taken on the same host at the standard port 4318, as Jaeger and the collector listen.
    """
    from urllib.parse import urlsplit

    signal = environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "")
    general = environ.get("OTEL_EXPORTER_OTLP_ENDPOINT", "")
    protocol = environ.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL") or environ.get("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")
    if protocol.startswith("http"):
        if signal:
            return signal
        return (general or "http://localhost:4318").rstrip("/") + "/v1/traces"
    parts = urlsplit(signal or general or "http://localhost:4317")
    scheme = "https" if parts.scheme == "https" else "http"
    return f"{scheme}://{parts.hostname or 'localhost'}:4318/v1/traces"
