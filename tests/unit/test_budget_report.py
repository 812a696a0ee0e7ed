"""`scoring budget` on hand-made spans: stage shares, the events over budget, and which Triton spans count."""

from __future__ import annotations

from scoring.budget import EVENT_SPAN, budget_report
from scoring.trace_sink import Span


def _span(service: str, name: str, trace: str, ms: float, **attributes: object) -> Span:
    return Span(service, name, trace, f"{trace}-{name}", "", 0, int(ms * 1e6), dict(attributes), ())


def _event(trace: str, total: float, **stages: float) -> Span:
    attrs = {"scoring.budget_ms": 10.0, "scoring.total_ms": total, "scoring.stage": "ensemble"}
    attrs.update({f"scoring.{k}_ms": v for k, v in stages.items()})
    return _span("gateway", EVENT_SPAN, trace, total, **attrs)


def test_stage_times_shares_and_the_stage_that_ate_an_over_budget_event() -> None:
    spans = [
        _event("a", 6.0, queue=1.0, features=2.0, filter=1.0, ensemble=1.5),
        _event("b", 12.0, queue=1.0, features=8.0, filter=1.0, ensemble=1.0),
    ]
    report = budget_report(spans).as_dict()
    assert report["events"] == 2 and report["over_budget"] == 1 and report["budget_ms"] == 10.0
    assert report["over_budget_by_stage"] == {"features": 1}
    features = report["stages"]["features"]
    assert features["events"] == 2 and features["p50_ms"] == 5.0 and abs(features["mean_share"] - 0.5) < 1e-9
    # The gateway's own time is what the stages leave of each event's total: 0.5 ms and 1 ms.
    gateway = report["stages"]["gateway"]
    assert gateway["events"] == 2 and abs(gateway["mean_share"] - 0.075) < 1e-9

def test_triton_spans_count_only_in_the_traces_of_scored_events() -> None:
    spans = [
        _event("a", 6.0, queue=1.0, features=2.0, filter=1.0, ensemble=1.5),
        _span("triton", "compute", "a", 1.2, **{"triton.model_name": "fraud_gbt"}),
        # The gateway's warm-up call at start: a cold Triton, no event in its trace.
        _span("triton", "compute", "warm", 40.0, **{"triton.model_name": "fraud_gbt"}),
    ]
    report = budget_report(spans).as_dict()
    assert report["triton_models"]["fraud_gbt"]["spans"] == 1
    assert report["triton_models"]["fraud_gbt"]["p99_ms"] == 1.2
