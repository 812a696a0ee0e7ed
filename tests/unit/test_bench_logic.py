"""The bench's pure logic: threshold choice, schedule, tick batching, accounting, pass criteria, reports."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from scoring import bench
from scoring.v1 import types_pb2

pytestmark = pytest.mark.unit

CURVE = [
    {"threshold": 0.0, "pass_rate": 1.0, "retention": 1.0},
    {"threshold": 0.01, "pass_rate": 0.10, "retention": 0.99},
    {"threshold": 0.02, "pass_rate": 0.061, "retention": 0.985},
    {"threshold": 0.03, "pass_rate": 0.059, "retention": 0.98},
    {"threshold": 0.5, "pass_rate": 0.01, "retention": 0.6},
]


def test_threshold_is_the_highest_whose_pass_rate_reaches_the_target() -> None:
    point = bench.choose_threshold(CURVE, 0.06)
    assert (point.threshold, point.pass_rate) == (0.02, 0.061)
    assert bench.choose_threshold(CURVE, 0.059).threshold == 0.03
    assert bench.choose_threshold(CURVE, 1.0).threshold == 0.0
    # Order of the curve does not matter.
    assert bench.choose_threshold(list(reversed(CURVE)), 0.06).threshold == 0.02


def test_threshold_unreachable_pass_rate_is_an_error() -> None:
    with pytest.raises(ValueError):
        bench.choose_threshold(CURVE[1:], 1.0)


def test_schedule_is_evenly_spaced_at_the_rate() -> None:
    due = bench.schedule(1000, 2.0)
    assert len(due) == 2000
    assert due[0] == 0.0
    np.testing.assert_allclose(np.diff(due), 1e-3)
    assert len(bench.schedule(3, 0.1)) == 1  # never empty
    with pytest.raises(ValueError):
        bench.schedule(0, 1.0)


def test_tick_groups_put_events_due_in_the_same_tick_together() -> None:
    due = bench.schedule(5000, 0.01)  # 50 events, 5 per 1 ms tick
    groups = bench.tick_groups(due, 0.001)
    assert len(groups) == 10
    assert all(e - s == 5 for s, e in groups)
    assert groups[0] == (0, 5) and groups[-1] == (45, 50)
    # Contiguous, in order, covering every event exactly once.
    assert [s for s, _ in groups[1:]] == [e for _, e in groups[:-1]]


def test_tick_groups_split_oversized_ticks_and_keep_lone_events() -> None:
    due = np.zeros(10)
    assert bench.tick_groups(due, 0.001, max_events=4) == [(0, 4), (4, 8), (8, 10)]
    slow = bench.schedule(100, 0.05)  # one event per 10 ms
    assert bench.tick_groups(slow, 0.001) == [(i, i + 1) for i in range(5)]
    assert bench.tick_groups(np.zeros(0), 0.001) == []


def test_parse_rates() -> None:
    assert bench.parse_rates("1000, 2000,3000") == [1000.0, 2000.0, 3000.0]
    with pytest.raises(ValueError):
        bench.parse_rates("1000,-5")


def _step(rate: float, *, p99_us: int = 2000, answered: int = 1000, ensemble: int = 100, errors: int = 0,
          degraded: int = 0, duration: float = 1.0) -> bench.StepResult:
    s = bench.StepResult(name=f"s{rate}", mode="batch", target_rate=rate, duration_s=duration)
    s.sent = s.on_wire = answered + errors
    s.answered = answered
    s.elapsed_s = duration
    for _ in range(answered):
        s.latency_us.record_value(p99_us)
    s.stages.update({"ensemble": ensemble, "filter": answered - ensemble})
    if errors:
        s.errors["event:UNAVAILABLE:x"] = errors
    if degraded:
        s.degraded["ensemble_timeout"] = degraded
    return s


def test_criteria_name_each_failure() -> None:
    criteria = bench.Criteria()
    assert criteria.check(_step(1000)) == []
    assert any("p99" in r for r in criteria.check(_step(1000, p99_us=12_000)))
    assert any("ensemble" in r for r in criteria.check(_step(1000, ensemble=40)))
    assert any("errors" in r for r in criteria.check(_step(1000, errors=5)))
    assert any("degraded" in r for r in criteria.check(_step(1000, degraded=20)))
    assert any("answered" in r for r in criteria.check(_step(2000)))  # 1000 answered in 1 s against 2000/s
    assert criteria.check(_step(1000, answered=0, ensemble=0)) == ["nothing answered"]


def test_highest_passing_rate_ignores_failed_steps_even_in_between() -> None:
    steps = [_step(500, answered=500, ensemble=50), _step(1000), _step(1500, p99_us=20_000),
             _step(2000, answered=2000, ensemble=200), _step(3000, answered=2000, ensemble=200)]
    for s in steps:
        s.judge(bench.Criteria())
    assert [s.passed for s in steps] == [True, True, False, True, False]
    assert bench.highest_passing(steps) == 2000
    assert bench.highest_passing(steps[2:3]) is None


def _frame(days: int = 10, per_day: int = 50) -> pd.DataFrame:
    n = days * per_day
    start = np.datetime64("2018-04-01T00:00:00")
    times = start + (np.arange(n) * (86_400 // per_day)).astype("timedelta64[s]")
    return pd.DataFrame({
        "TRANSACTION_ID": np.arange(n), "TX_DATETIME": times, "CUSTOMER_ID": np.arange(n) % 7,
        "TERMINAL_ID": np.arange(n) % 11, "TX_AMOUNT": np.linspace(1, 100, n), "TX_FRAUD": (np.arange(n) % 50 == 0),
    })


def test_event_source_starts_after_the_warm_days_and_wraps_forward_in_time() -> None:
    source = bench.EventSource(_frame(), warm_days=4)
    assert source.warm_end == 200
    rows, times = source.take(250)
    assert rows[0] == 200 and rows[-1] == 449
    rows, times2 = source.take(100)  # 50 left, then a second lap from the warm-up end
    assert rows[:50].tolist() == list(range(450, 500)) and rows[50:].tolist() == list(range(200, 250))
    assert np.all(np.diff(np.concatenate([times, times2])) > 0)  # event time never goes back
    txs = source.transactions(3, "p-")
    assert [t.transaction_id for t in txs] == ["p-0", "p-1", "p-2"]
    assert txs[0].customer_id.startswith("C") and txs[0].terminal_id.startswith("T")


def test_every_label_comes_due_when_the_label_arrival_model_says() -> None:
    source = bench.EventSource(_frame(days=20), warm_days=4, label_delay="fixed:2d")  # an event every 1728 s
    txs = source.transactions(100, "l-")  # rows 200..299: frauds at rows 200 and 250
    assert len(source.pending_labels) == 100  # genuine labels too, not only the frauds
    first = min(a for a, _, _ in source.pending_labels)
    assert source.due_labels(first - 1) == []
    assert source.due_labels(first) == [("l-0", True)]
    assert source.due_labels(first + 1728 * 10**6) == [("l-1", False)]
    assert txs[0].transaction_id == "l-0"
    # A fork hands out the same events without moving the original's cursor or touching its backlog.
    fork = source.fork()
    fork.transactions(10, "f-")
    assert source.cursor == 300 and fork.cursor == 310
    assert len(source.pending_labels) == 98
    assert all(not t.startswith("l-") for _, t, _ in fork.pending_labels)


def test_realistic_labels_come_due_out_of_event_order() -> None:
    source = bench.EventSource(_frame(days=20), warm_days=4)
    source.transactions(200, "r-")
    due = source.due_labels(10**18)
    assert len(due) == 200 and [t for t, _ in due] != [f"r-{i}" for i in range(200)]


def test_load_shapes_per_mode() -> None:
    source = bench.EventSource(_frame(), warm_days=4)
    unary = bench.build_load(source, "unary", 2000, 0.01, "u-")
    assert len(unary.units) == 20 and all(e - s == 1 for _, s, e, _ in unary.units)
    batch = bench.build_load(source, "batch", 2000, 0.01, "b-")
    assert len(batch.units) == 10
    assert sum(len(m.transactions) for *_, m in batch.units) == 20
    # A batch leaves when its last event is due.
    assert [u[0] for u in batch.units] == [batch.due[e - 1] for _, _, e, _ in batch.units]


def test_recorder_accounts_for_every_event_exactly_once() -> None:
    source = bench.EventSource(_frame(), warm_days=4)
    load = bench.build_load(source, "stream", 1000, 0.01, "r-")  # 10 events
    result = bench.StepResult(name="r", mode="stream", target_rate=1000, duration_s=0.01)
    rec = bench._Recorder(result, load, t0=100.0)
    rec.on_wire(0, 8)  # 8 sent, 2 never left
    ok = types_pb2.ScoreResponse(transaction_id="r-0", stage=types_pb2.STAGE_ENSEMBLE)
    rec.response(ok, 100.002)
    rec.response(ok, 100.003)  # duplicate
    rec.response(types_pb2.ScoreResponse(transaction_id="r-1", stage=types_pb2.STAGE_FILTER, degraded=True,
                                         degraded_reason="ensemble_timeout"), 100.004)
    bad = types_pb2.ScoreResponse(transaction_id="r-2", stage=types_pb2.STAGE_NONE, degraded_reason="rejected")
    bad.error.code = 8
    rec.response(bad, 100.005)
    rec.response(types_pb2.ScoreResponse(transaction_id="other-1"), 100.006)
    rec.error(3, 4, "grpc:UNAVAILABLE")
    rec.finish()
    assert result.sent == 10 and result.on_wire == 8
    assert result.answered == 2
    assert result.sent == result.answered + result.error_count
    assert result.errors == {"event:RESOURCE_EXHAUSTED:rejected": 1, "grpc:UNAVAILABLE": 1,
                             "client:no_answer": 4, "client:not_sent": 2}
    assert result.duplicates == 1 and result.unknown_ids == 1
    assert result.latency_us.get_total_count() == 2
    assert result.stages == {"ensemble": 1, "filter": 1}
    assert result.degraded == {"ensemble_timeout": 1}
    assert math.isclose(result.percentile_ms(50), 2.0, rel_tol=0.01)  # from r-0's scheduled time, 0.0 s


def test_reports_render_from_the_json_shape() -> None:
    steps = [_step(1000), _step(2000, p99_us=15_000)]
    for s in steps:
        s.judge(bench.Criteria())
        s.cpu = {"bench": 10.0, "gateway": 50.0, "others": 5.0, "machine": 65.0}
    result = {
        "command": "scoring bench", "date": "2026-01-01 00:00 UTC",
        "git": {"commit": "abc1234", "dirty": True, "changed_files": 2},
        "machine": {"cores": 2, "usable_cores": 2, "cpu_model": "Test CPU", "memory_gib": 4.0, "python": "3.11",
                    "grpcio": "1"},
        "loadavg_start": [0.1, 0.2, 0.3],
        "settings": {"budget_ms": 10.0, "duration_s": 1.0, "tick_ms": 1.0, "max_outstanding": 512,
                     "criteria": bench.Criteria().__dict__,
                     "filter_threshold": {"threshold": 0.02, "pass_rate": 0.061, "retention": 0.985,
                                          "min_pass_rate": 0.06},
                     "warm_up": {"days": 30, "events": 10, "labels_accepted": 1, "seconds": 1.0}},
        "steps": [s.to_dict() for s in steps],
        "summary": ["batch: highest passing rate 1,000 events/s"],
        "ceilings": {"feature_fold": {"batch": 250, "events_per_s": 7000.0}},
    }
    table = bench.format_table(result["steps"])
    assert "s1000" in table and "yes" in table and "no" in table
    markdown = bench.render_markdown(result)
    assert "abc1234" in markdown and "dirty" in markdown and "Test CPU" in markdown
    assert "| s2000 |" in markdown and "p99 15.0" in markdown
    assert "7,000 events/s" in markdown


def test_tracing_rounds_run_in_abba_order_so_a_drift_cancels() -> None:
    from scoring.bench import balanced_order

    assert balanced_order(2) == ["off", "on", "on", "off"]
    order = balanced_order(4)
    assert order.count("on") == order.count("off") == 4
    # A linear drift (run i adds i) gives both modes the same mean position.
    assert sum(i for i, m in enumerate(order) if m == "on") == sum(i for i, m in enumerate(order) if m == "off")
