"""One trace per event: the gateway's span for each event, and the batch span that carries it downstream.

An event's span starts when the gateway reads the event and ends when the event is answered. On the stream
calls each event is the root of its own trace (linked to the stream's span), so a user opens one event, not a
stream of thousands; a unary `Score` continues the caller's trace. A micro-batch goes downstream as one call
per stage and so can have one parent only: the first sampled event of the batch parents the batch's span,
and through it the feature service's, the filter's and Triton's spans; the batch's other sampled events link
to that span. Every sampled event also records its own queue wait and its batch's stage times as attributes,
which is what `scoring budget` reads.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Sequence
from typing import TYPE_CHECKING

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.sdk.trace.id_generator import RandomIdGenerator
from opentelemetry.sdk.trace.sampling import TraceIdRatioBased
from opentelemetry.trace import (
    INVALID_SPAN,
    Link,
    NonRecordingSpan,
    Span,
    SpanContext,
    SpanKind,
    TraceFlags,
    Tracer,
)

from scoring.scenarios.fraud.validation import Event

if TYPE_CHECKING:
    from services.gateway.batcher import Outcome
    from services.gateway.cascade import BatchOutcome

_tracer: Tracer | None = None


class PresetIdGenerator(RandomIdGenerator):
    """Random ids, except that the next trace id can be preset (by `start_event`'s head sampling)."""

    def __init__(self) -> None:
        self.next_trace_id = 0

    def generate_trace_id(self) -> int:
        trace_id, self.next_trace_id = self.next_trace_id, 0
        return trace_id or super().generate_trace_id()


ID_GENERATOR = PresetIdGenerator()
# Head sampling of the stream events' root spans without the SDK's per-span cost (a fifth of the gateway's CPU at
# saturation, py-spy): with a trace-id ratio sampler, draw the trace id here, apply the sampler's own rule to it,
# and only for a sampled id let the SDK start the span, with that id preset, so the SDK decides the same. An
# unsampled event costs one random draw and has no span. None: no such sampler; every event goes to the SDK.
_root_bound: int | None = None
_LOW64 = (1 << 64) - 1


def configure_sampling(ratio: float | None) -> None:
    global _root_bound
    _root_bound = None if ratio is None else TraceIdRatioBased.get_bound_for_rate(ratio)
# An empty context: a span started in it is the root of a new trace.
ROOT = otel_context.Context()
STAGE_NAMES = {1: "filter", 2: "ensemble", 3: "none"}


def tracer() -> Tracer:
    """The gateway's tracer, taken once the provider is set (a tracer taken at import is a proxy, slower per span)."""
    global _tracer
    if _tracer is None:
        _tracer = trace.get_tracer("scoring.gateway")
    return _tracer


# The span of the event being submitted. `submit` below is synchronous on the event loop's one thread, so a plain
# module variable hands the span to the batcher; attaching it as the current context instead cost the gateway 15%
# of its CPU at saturation (py-spy), for every event, sampled or not.
_submitting: Span = INVALID_SPAN


def submitting() -> Span:
    """The span of the event inside `submit` (the batcher keeps it with the event)."""
    return _submitting


def stream_links() -> Sequence[Link]:
    """A link to the current (stream) span, for each event span of that stream."""
    ctx = trace.get_current_span().get_span_context()
    return (Link(ctx),) if ctx.is_valid and ctx.trace_flags.sampled else ()


def start_event(txid: str, customer_id: str, *, root: bool, links: Sequence[Link] = ()) -> Span:
    if root and _root_bound is not None:
        trace_id = random.getrandbits(128)
        if trace_id & _LOW64 >= _root_bound:
            return INVALID_SPAN
        ID_GENERATOR.next_trace_id = trace_id
    span = tracer().start_span("score event", context=ROOT if root else None, kind=SpanKind.INTERNAL, links=links)
    if span.is_recording():
        span.set_attributes({"scoring.event_id": txid, "scoring.customer_id": customer_id})
    return span


def submit(submitter: object, event: Event, deadline: float, span: Span) -> asyncio.Future[Outcome]:
    """Submits the event with its span (the batcher keeps it); the span ends when the event is answered."""
    global _submitting
    _submitting = span
    try:
        future: asyncio.Future[Outcome] = submitter.submit(event, deadline)  # type: ignore[attr-defined]
    except BaseException as exc:
        end_refused(span, exc)
        raise
    finally:
        _submitting = INVALID_SPAN
    if span.is_recording():
        future.add_done_callback(lambda _: span.end())
    return future


def end_refused(span: Span, exc: BaseException) -> None:
    if span.is_recording():
        span.set_status(trace.StatusCode.ERROR, f"{type(exc).__name__}: {exc}")
        span.end()


def unsampled_parent() -> Span:
    """A valid, unsampled context for a batch without a sampled event: its downstream calls carry a traceparent
    that says "not sampled", so the stages (parent-based samplers) do not start traces of their own."""
    if _root_bound is None:
        return INVALID_SPAN
    ctx = SpanContext(
        trace_id=ID_GENERATOR.generate_trace_id(),
        span_id=ID_GENERATOR.generate_span_id(),
        is_remote=False,
        trace_flags=TraceFlags(TraceFlags.DEFAULT),
    )
    return NonRecordingSpan(ctx)


def batch_span(spans: Sequence[Span], size: int) -> Span | None:
    """The span of a micro-batch, child of its first sampled event; None when no event of it is sampled."""
    sampled = [s for s in spans if s.is_recording()]
    if not sampled:
        return None
    return tracer().start_span(
        "gateway batch",
        context=trace.set_span_in_context(sampled[0]),
        links=[Link(s.get_span_context()) for s in sampled[1:]],
        attributes={"scoring.batch_size": size, "scoring.sampled_events": len(sampled)},
    )


def record(
    span: Span, outcome: BatchOutcome, i: int, *, size: int, budget_s: float, queued_s: float, total_s: float
) -> None:
    """The event's answer and where its budget went, on its span (only called for sampled events)."""
    reason = outcome.degraded_reason[i] or outcome.error[i]
    attributes: dict[str, str | float | int | bool] = {
        "scoring.stage": STAGE_NAMES.get(int(outcome.stage[i]), "none"),
        "scoring.degraded": bool(reason),
        "scoring.degraded_reason": reason,
        "scoring.model_version": outcome.model_version[i],
        "scoring.batch_size": size,
        "scoring.budget_ms": budget_s * 1e3,
        "scoring.queue_ms": queued_s * 1e3,
        "scoring.total_ms": total_s * 1e3,
        "scoring.over_budget": total_s > budget_s,
    }
    for stage, took in outcome.timings.items():
        attributes[f"scoring.{stage}_ms"] = took * 1e3
    span.set_attributes(attributes)
    if outcome.error[i]:
        span.set_status(trace.StatusCode.ERROR, outcome.error[i])
