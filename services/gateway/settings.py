"""Settings of the gateway (environment prefix GATEWAY_)."""

from __future__ import annotations

from pathlib import Path

from pydantic_settings import SettingsConfigDict

from scoring.common.settings import ServiceSettings
from scoring.scenarios.fraud.validation import DEFAULT_LIMITS


class GatewaySettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="GATEWAY_", extra="ignore")

    port: int = 50051
    metrics_port: int = 9464
    features_address: str = "127.0.0.1:50052"
    filter_address: str = "127.0.0.1:50053"
    triton_address: str = "127.0.0.1:8001"
    ensemble_model: str = "fraud_ensemble"
    # The admin API (scoring.v1.Releases, `scoring release ...`): its own port, on loopback unless set otherwise.
    admin_host: str = "127.0.0.1"
    admin_port: int = 50055
    # The release store (scoring.releases.store). Empty: no releases; the stages' own models score every event.
    release_dir: str = "artifacts/releases"
    # The training output the first release is made from when the store holds none.
    release_bootstrap_dir: Path = Path("artifacts")
    # Triton's model repository as this gateway sees it: releases are written into it before they are loaded.
    triton_repository: Path = Path("artifacts/triton_repository")
    # The canary's gate (scoring.releases.gates.GateSpec): a step passes only on enough events and figures in bounds.
    gate_min_events: int = 2000
    gate_min_pairs: int = 500
    gate_interval_s: float = 1.0
    gate_step_min_s: float = 10.0
    gate_p99_ratio: float = 1.5
    gate_alert_rate_ratio: float = 2.0
    gate_max_score_psi: float = 0.2
    gate_min_agreement: float = 0.95
    # Each event's budget: min(the client's deadline, this). A client asks for another explicitly with the metadata
    # key x-scoring-budget-ms (backfills, evaluations), up to max_budget_ms.
    budget_ms: float = 10.0
    max_budget_ms: float = 1000.0
    # The last-resort scorer: the filter's fallback model (fallback.onnx + filter.json), run in-process for every
    # event that no stage could score in time.
    fallback_model_dir: Path = Path("artifacts/models/filter")
    # The other scenarios served, by name, with their filter's folder (its fallback is the gateway's last resort
    # for them), as JSON: {"market": "artifacts/models/market/filter"}. Empty: transactions only.
    scenario_model_dirs: dict[str, Path] = {}
    # Plausible ranges of the numeric fields (beyond them INVALID_ARGUMENT naming the field).
    max_amount: float = DEFAULT_LIMITS.max_amount
    # 1970-01-01: history is normal use (market data goes back decades); a deployment may raise it.
    min_event_time_s: int = DEFAULT_LIMITS.min_event_time_s
    # Share of the budget each stage may take at most (the rest is the gateway's own time). The cheap stages
    # first: without features and a filter score an event gets no answer at all, while a late ensemble still
    # leaves the filter's; measured here (budget report), features take ~3.5 ms and the filter ~3 ms at p50.
    features_share: float = 0.4
    filter_share: float = 0.3
    ensemble_share: float = 0.25
    # Circuit breaker per stage: open after this many failed calls in a row (timeouts, unavailable) that also
    # span breaker_min_streak_ms, then let one probe batch through every breaker_reset_ms.
    breaker_failures: int = 5
    breaker_min_streak_ms: float = 50.0
    breaker_reset_ms: float = 250.0
    # Events answered without the feature service, kept to be folded into state when it is back.
    fold_backlog_events: int = 200_000
    # With the filter down, at most this many events of a batch go to the ensemble (largest amounts first).
    unfiltered_ensemble_max: int = 64
    # Micro-batching: a batch closes at this size, or after this wait when a batch is already in flight
    # (an idle gateway sends a lone event at once).
    max_batch_events: int = 256
    # 0 by default: asyncio's epoll loop rounds every timer up to a whole millisecond, so a 200 us wait costs
    # 1 ms; a burst still gathers on its own while the batches in flight are out.
    batch_wait_us: int = 0
    max_inflight_batches: int = 4
    # Batches at the feature stage at once: the feature service folds one at a time, so more only queue there.
    features_inflight_batches: int = 1
    # Hard bound on events queued for a batch (admission keeps the queue far below it).
    max_queued_events: int = 8192
    # Events a single stream may have unanswered; past it the gateway stops reading (gRPC flow control).
    max_inflight_per_stream: int = 2048
    # Admission: an adaptive limit on events inside the gateway (admitted, not yet answered), cut when answers come
    # later than latency_fraction of their budget or a stage ran out of time, grown while in time and in use.
    # Past it streams are not read (flow control) and unary calls get RESOURCE_EXHAUSTED at once. The initial and
    # minimum counts are for a 10 ms budget and scale with budget_ms (Little's law), within admission_max_events.
    admission_initial_events: int = 64
    admission_min_events: int = 8
    admission_max_events: int = 4096
    admission_latency_fraction: float = 0.8
    admission_increase: float = 2.0
    admission_decrease: float = 0.75
    # Largest ScoreBatchStream message.
    max_request_batch: int = 4096
    # A re-sent event (same transaction id) within this window gets the answer already given, not a second scoring;
    # at most dedup_max_events ids are kept (oldest first out). dedup_window_s = 0 turns the cache off.
    dedup_window_s: float = 30.0
    dedup_max_events: int = 100_000
