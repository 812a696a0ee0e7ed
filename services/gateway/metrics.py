"""The gateway's Prometheus series."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

from scoring.common.metrics import BATCH_BUCKETS, LATENCY_BUCKETS_S

EVENT_LATENCY = Histogram(
    "scoring_gateway_event_latency_seconds", "From an event's arrival to its answer", buckets=LATENCY_BUCKETS_S
)
STAGE_LATENCY = Histogram(
    "scoring_gateway_stage_latency_seconds", "One downstream call, by stage and outcome", ["stage", "outcome"],
    buckets=LATENCY_BUCKETS_S,
)
EVENTS = Counter("scoring_gateway_events_total", "Events answered, by deciding stage", ["stage"])
DEGRADED = Counter("scoring_gateway_degraded_total", "Degraded answers, by reason", ["reason"])
ERRORS = Counter("scoring_gateway_errors_total", "Events answered with an error, by gRPC code", ["code"])
BATCH_SIZE = Histogram("scoring_gateway_batch_events", "Events per downstream micro-batch", buckets=BATCH_BUCKETS)
# One micro-batcher per scenario, each its own series (one unlabelled gauge would show whichever was built last).
INFLIGHT_BATCHES = Gauge("scoring_gateway_inflight_batches", "Micro-batches in flight", ["scenario"])
QUEUED_EVENTS = Gauge("scoring_gateway_queued_events", "Events waiting for a micro-batch", ["scenario"])
BREAKER_STATE = Gauge(
    "scoring_gateway_breaker_state", "Circuit breaker per stage: 0 closed, 1 half-open, 2 open", ["stage"]
)
BREAKER_OPENED = Counter("scoring_gateway_breaker_opened_total", "Times a stage's circuit opened", ["stage"])
FOLD_BACKLOG = Gauge("scoring_gateway_fold_backlog_events", "Events waiting to be folded into entity state")
STAGE_NAMES = {1: "filter", 2: "ensemble", 3: "none"}
BREAKER_CODES = {"closed": 0, "half_open": 1, "open": 2}
LATE_FOLDS = Counter(
    "scoring_gateway_late_folds_total",
    "Batches of a scenario whose state must stay in order, sent to the feature service without waiting after "
    "their budget ran out: folded, failed, or skipped (too many in flight)",
    ["outcome"],
)
SHADOW_BATCHES = Counter(
    "scoring_gateway_shadow_batches_total", "Batches scored by a shadow release, by outcome (scored, degraded, "
    "failed, skipped)", ["outcome"]
)
RELEASE_EVENTS = Counter(
    "scoring_gateway_release_events_total", "Events answered, by release and deciding stage", ["release", "stage"]
)
RELEASE_DEGRADED = Counter("scoring_gateway_release_degraded_total", "Degraded answers, by release", ["release"])
RELEASE_ROLE = Gauge(
    "scoring_gateway_release_role", "1 for the release in each role now (champion, candidate, shadow, previous)",
    ["release", "role"]
)
GATE_STATE = Gauge(
    "scoring_gateway_release_gate", "1 for the canary gate's last verdict (pass, fail, inconclusive) per candidate",
    ["release", "state"]
)
RELEASE_LATENCY = Histogram(
    "scoring_gateway_release_event_seconds", "Event latency (arrival to answer), by release", ["release"],
    buckets=LATENCY_BUCKETS_S,
)
RELEASE_ALERTS = Counter(
    "scoring_gateway_release_alerts_total", "Answers at or over their release's decision threshold, by release",
    ["release"]
)
