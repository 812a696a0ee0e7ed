"""`scoring bench` against the session stack: a very short step per mode, checked for accounting, not timing."""

from __future__ import annotations

import json
import os
import time

import pytest

from scoring import bench

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def source(artifacts) -> bench.EventSource:
    return bench.EventSource.from_artifacts(artifacts, warm_days=8)


@pytest.fixture(scope="module")
def tag() -> str:
    # Fresh ids on every run: the session's Redis may already know earlier runs' transactions.
    return f"tb{os.getpid()}t{time.time_ns() % 10**9}"


async def test_warm_up_folds_the_first_days_and_their_labels(stack, source, tag) -> None:
    warm = await bench.warm_features(stack.addresses["feature_service"], source, f"{tag}w")
    assert warm.events == source.warm_end > 0
    assert warm.labels_sent > 0 and warm.labels_accepted == warm.labels_sent
    assert warm.features is not None and warm.features.shape[0] > 0


@pytest.mark.parametrize("mode", ["unary", "stream", "batch"])
async def test_short_step_accounts_for_every_event(stack, source, tag, mode, tmp_path) -> None:
    # 20 ms ticks: about 6 events per ScoreBatchStream message at 300/s.
    load = bench.build_load(source, mode, 300, 1.0, f"{tag}{mode}-", tick_s=0.02)
    cpu = bench.CpuMeter({name: c.pid for name, c in stack.children.items() if c.pid})
    step = await bench.run_step(stack.gateway_address, load, name=f"{mode}@300", rate=300, duration_s=1.0, cpu=cpu)
    step.judge(bench.Criteria())

    assert step.sent == 300
    assert step.sent == step.answered + step.error_count
    assert step.on_wire + step.errors["client:overflow"] + step.errors["client:behind"] \
        + step.errors["client:not_sent"] == step.sent
    assert step.latency_us.get_total_count() == step.answered
    assert sum(step.stages.values()) == step.answered
    assert step.answered > 0
    assert step.duplicates == 0 and step.unknown_ids == 0
    if mode == "batch":
        assert step.messages == len(load.units) < step.on_wire
    assert "gateway" in step.cpu and "machine" in step.cpu

    data = step.to_dict()
    result = {"steps": [data]}
    path = tmp_path / "bench.json"
    bench.write_outputs(result, path, None)
    back = json.loads(path.read_text())["steps"][0]
    assert back["sent"] == back["answered"] + sum(back["errors"].values()) == 300
    assert back["latency_count"] == back["answered"]
    assert set(back["latency_ms"]) == {"p50", "p90", "p99", "p99.9", "max"}


async def test_closed_loop_keeps_one_event_in_flight(stack, source, tag) -> None:
    load = bench.build_load(source, "unary", 100, 0.5, f"{tag}closed-")
    step = await bench.run_step(stack.gateway_address, load, name="closed", rate=100, duration_s=0.5,
                                closed_loop=True)
    assert step.sent == 50 == step.answered + step.error_count
    assert step.latency_us.get_total_count() == step.answered > 0


async def test_labels_of_sent_events_are_reported_once_due(stack, source) -> None:
    # Everything sent so far (the warm-up's late labels, the steps'), as if 61 days of event time passed: past the
    # realistic label-arrival model's longest delay (60 days).
    pending = len(source.pending_labels)
    count = bench.LabelCount()
    later = source.next_time_us() + 61 * 86_400_000_000
    await bench.report_due_labels(stack.gateway_address, source, count, now_us=later)
    assert count.sent == pending > 0
    assert count.accepted == count.sent  # the feature service knew every one of them
    assert not source.pending_labels
