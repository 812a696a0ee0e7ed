"""`scoring budget`: where each event's latency budget went, from the traces.

Reads the gateway's `score event` spans from Jaeger's query API or from an OTLP/JSON file (the local trace
sink's), and prints, per stage, p50/p99 time and share of the budget, the events over budget and the stage
that ate most of theirs. Each sampled event's span carries its own queue wait and its batch's stage times
(see services/gateway/tracing.py), so every sampled event counts, not only the one whose trace holds the
batch's downstream spans; those spans give the Triton models' own times where they are present.
"""

from __future__ import annotations

import json
import urllib.parse
import urllib.request
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from scoring.trace_sink import Span, read_spans

EVENT_SPAN = "score event"
STAGES = ("queue", "features", "filter", "ensemble", "gateway")


@dataclass
class BudgetReport:
    events: int = 0
    over_budget: int = 0
    budget_ms: float = 0.0
    # stage -> times (ms) over the events that went through it
    stage_ms: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    share: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    ate_it: Counter[str] = field(default_factory=Counter)
    decided_by: Counter[str] = field(default_factory=Counter)
    degraded: Counter[str] = field(default_factory=Counter)
    total_ms: list[float] = field(default_factory=list)
    triton_ms: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    source: str = ""

    def as_dict(self) -> dict[str, Any]:
        def pct(values: list[float], q: float) -> float:
            return float(np.percentile(values, q)) if values else 0.0

        return {
            "source": self.source,
            "events": self.events,
            "over_budget": self.over_budget,
            "budget_ms": self.budget_ms,
            "total_ms": {"p50": pct(self.total_ms, 50), "p99": pct(self.total_ms, 99)},
            "stages": {
                s: {
                    "events": len(self.stage_ms[s]),
                    "p50_ms": pct(self.stage_ms[s], 50),
                    "p99_ms": pct(self.stage_ms[s], 99),
                    "mean_share": float(np.mean(self.share[s])) if self.share[s] else 0.0,
                }
                for s in STAGES
                if self.stage_ms.get(s)
            },
            "over_budget_by_stage": dict(self.ate_it),
            "decided_by": dict(self.decided_by),
            "degraded": dict(self.degraded),
            "triton_models": {
                m: {"spans": len(v), "p50_ms": pct(v, 50), "p99_ms": pct(v, 99)} for m, v in self.triton_ms.items()
            },
        }


def budget_report(spans: list[Span], source: str = "") -> BudgetReport:
    report = BudgetReport(source=source)
    budgets = []
    # Triton's spans count only in the traces of scored events: the gateway's warm-up calls at start (a cold
    # Triton, tens of ms) are traced too, and are not part of any event's budget.
    scored_traces = {s.trace_id for s in spans if s.name == EVENT_SPAN and "scoring.total_ms" in s.attributes}
    for span in spans:
        if span.service == "triton" and "triton.model_name" in span.attributes and span.trace_id in scored_traces:
            report.triton_ms[str(span.attributes["triton.model_name"])].append(span.duration_ms)
        if span.name != EVENT_SPAN or "scoring.total_ms" not in span.attributes:
            continue
        a = span.attributes
        budget = float(a.get("scoring.budget_ms", 0.0))
        total = float(a["scoring.total_ms"])
        times = {"queue": float(a.get("scoring.queue_ms", 0.0))}
        for stage in ("features", "filter", "ensemble"):
            if f"scoring.{stage}_ms" in a:
                times[stage] = float(a[f"scoring.{stage}_ms"])
        # What the stages do not account for: batching, encoding, the event loop of the gateway.
        times["gateway"] = max(0.0, total - sum(times.values()))
        report.events += 1
        budgets.append(budget)
        report.total_ms.append(total)
        for stage, took in times.items():
            report.stage_ms[stage].append(took)
            if budget > 0:
                report.share[stage].append(took / budget)
        report.decided_by[str(a.get("scoring.stage", ""))] += 1
        if a.get("scoring.degraded_reason"):
            report.degraded[str(a["scoring.degraded_reason"])] += 1
        if total > budget > 0:
            report.over_budget += 1
            report.ate_it[max(times, key=lambda s: times[s])] += 1
    report.budget_ms = float(np.median(budgets)) if budgets else 0.0
    return report


def spans_from_jaeger(url: str, service: str = "gateway", limit: int = 2000, lookback: str = "1h") -> list[Span]:
    """Spans of the gateway's recent traces from Jaeger's HTTP query API (`/api/traces`)."""
    query = urllib.parse.urlencode({"service": service, "limit": limit, "lookback": lookback})
    with urllib.request.urlopen(f"{url.rstrip('/')}/api/traces?{query}", timeout=30) as reply:
        payload = json.load(reply)
    spans: list[Span] = []
    for t in payload.get("data") or []:
        processes = {k: v.get("serviceName", "") for k, v in (t.get("processes") or {}).items()}
        for s in t.get("spans", []):
            parents = [r["spanID"] for r in s.get("references", []) if r.get("refType") == "CHILD_OF"]
            start_ns = int(s["startTime"]) * 1000
            spans.append(
                Span(
                    service=processes.get(s.get("processID", ""), ""),
                    name=s.get("operationName", ""),
                    trace_id=s.get("traceID", ""),
                    span_id=s.get("spanID", ""),
                    parent_span_id=parents[0] if parents else "",
                    start_ns=start_ns,
                    end_ns=start_ns + int(s.get("duration", 0)) * 1000,
                    attributes={tag["key"]: tag.get("value") for tag in s.get("tags", [])},
                    links=tuple(r["spanID"] for r in s.get("references", []) if r.get("refType") == "FOLLOWS_FROM"),
                )
            )
    return spans


def load(file: Path | None = None, jaeger: str | None = None) -> BudgetReport:
    if jaeger:
        return budget_report(spans_from_jaeger(jaeger), source=f"jaeger {jaeger}")
    if file is None or not file.exists():
        raise FileNotFoundError(f"no trace file at {file}: run the stack (scoring up/demo) first, or pass --jaeger")
    return budget_report(read_spans(file), source=str(file))


def format_report(report: BudgetReport) -> str:
    d = report.as_dict()
    if not report.events:
        return f"latency budget: no sampled events in {report.source}"
    lines = [
        f"latency budget from {d['events']:,} sampled events ({report.source}); budget {d['budget_ms']:.1f} ms",
        f"  end to end in the gateway: p50 {d['total_ms']['p50']:.2f} ms  p99 {d['total_ms']['p99']:.2f} ms",
        f"  {'stage':<10}{'events':>8}{'p50 ms':>10}{'p99 ms':>10}{'share of budget':>18}",
    ]
    for stage, s in d["stages"].items():
        lines.append(
            f"  {stage:<10}{s['events']:>8,}{s['p50_ms']:>10.2f}{s['p99_ms']:>10.2f}{s['mean_share']:>17.0%}"
        )
    culprits = ", ".join(f"{k} {v:,}" for k, v in report.ate_it.most_common()) or "-"
    lines.append(f"  over budget: {d['over_budget']:,} of {d['events']:,}; the stage that took most of it: {culprits}")
    if report.triton_ms:
        models = "  ".join(f"{m} p50 {v['p50_ms']:.2f} / p99 {v['p99_ms']:.2f}" for m, v in d["triton_models"].items())
        lines.append(f"  inside Triton (ms): {models}")
    return "\n".join(lines)
