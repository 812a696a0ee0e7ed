"""`scoring bench`: open-loop load against the gateway, with the raw ceilings of its parts beside the figures.

Method
- Open loop: every event has a scheduled send time (`rate` events per second, evenly spaced) and leaves then,
  whatever the answers do; its latency is measured from that scheduled time, not from when the sender got round
  to it, so a slow gateway (or a slow sender) shows up in the figures instead of hiding (no coordinated omission).
  Requests are built before the clock starts; the sender wakes on ~1 ms ticks and sends everything due.
- Modes: `unary` (one `Score` call per event, at most `max_outstanding` in flight: an event due while the cap
  is reached is counted as an error, never skipped silently), `stream` (`ScoreStream`, one event per message),
  `batch` (`ScoreBatchStream`: the events due within the same tick go in one message, sent when the last is due).
- Accounting, per step: every scheduled event is `sent` and ends up either `answered` (a score, its latency in
  the HDR histogram) or in `errors` by kind: `event:<code>:<reason>` (the response's error field),
  `grpc:<status>` (the call failed), `client:overflow` (unary cap), `client:behind` (the sender fell more than
  `max_lag_s` behind schedule and stopped), `client:no_answer` (no response by the end of the drain),
  `client:not_sent` (never handed to gRPC otherwise).
- Load mix: the first `warm_days` of the simulated transactions are folded into Redis through the feature
  service (the fast path), then the bench sends later transactions with fresh ids, so customers have history
  and the filter sees the events it was trained for; the frauds' labels are reported (ReportLabels) between
  steps once 7 days of event time have passed, as in production, so terminal risk stays current. The filter
  threshold is set from the training report's validation curve so that a known share of events reaches the
  ensemble; the share is measured, per step.

The package: `workload` (what is sent), `recorder` (what is measured), `driver` (how load is driven), `ceilings`
(the parts' raw ceilings, the tracing A/B), `report` (what is written), `runner` (the entry point); `echo` and
`fold` also run as modules. Names are re-exported lazily, so that those two start without the rest.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from scoring.bench.ceilings import (
        ECHO_RATES,
        balanced_order,
        echo_ceiling,
        redis_ceiling,
        tracing_overhead,
        triton_ceiling,
    )
    from scoring.bench.driver import run_step, saturated_replay, saturated_throughput
    from scoring.bench.recorder import (
        PERCENTILES,
        CpuMeter,
        Criteria,
        StepResult,
        _histogram,
        _Recorder,
        highest_passing,
    )
    from scoring.bench.report import (
        TABLE_HEADER,
        format_ceilings,
        format_cpu,
        format_saturated_replay,
        format_table,
        git_info,
        machine_info,
        render_markdown,
        table_rows,
        write_outputs,
    )
    from scoring.bench.runner import (
        STANDARD_RATES,
        BenchConfig,
        CurvePoint,
        choose_threshold,
        command_line,
        main,
        parse_rates,
        restart_filter,
        run_bench,
    )
    from scoring.bench.workload import (
        CHANNEL_OPTIONS,
        MODES,
        EventSource,
        LabelCount,
        Load,
        WarmUp,
        build_load,
        report_due_labels,
        schedule,
        tick_groups,
        warm_features,
    )

__all__ = [
    "CHANNEL_OPTIONS", "ECHO_RATES", "MODES", "PERCENTILES", "STANDARD_RATES", "TABLE_HEADER", "BenchConfig",
    "CpuMeter", "Criteria", "CurvePoint", "EventSource", "LabelCount", "Load", "StepResult", "WarmUp", "_Recorder",
    "_histogram", "balanced_order", "build_load", "choose_threshold", "command_line", "echo_ceiling",
    "format_ceilings", "format_cpu", "format_saturated_replay", "format_table", "git_info", "highest_passing",
    "machine_info", "main", "parse_rates", "redis_ceiling", "render_markdown", "report_due_labels", "restart_filter",
    "run_bench", "run_step", "saturated_replay", "saturated_throughput", "schedule", "table_rows", "tick_groups",
    "tracing_overhead", "triton_ceiling", "warm_features", "write_outputs",
]

_SUBMODULES = ("workload", "recorder", "driver", "ceilings", "report", "runner")


def __getattr__(name: str) -> Any:
    """`scoring.bench.X` for every X in __all__, from the submodule that defines it (imported on first use)."""
    if name in __all__:
        for sub in _SUBMODULES:
            module = importlib.import_module(f"{__name__}.{sub}")
            if name in vars(module):
                value = getattr(module, name)
                globals()[name] = value
                return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
