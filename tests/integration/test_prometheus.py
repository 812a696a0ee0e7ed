"""Every service's Prometheus endpoint, scraped before and after scoring: the series move with the traffic."""

from __future__ import annotations

import asyncio
import urllib.request

import grpc
import pytest
from prometheus_client.parser import text_string_to_metric_families

from scoring.v1 import gateway_pb2, types_pb2

pytestmark = pytest.mark.integration


def _scrape(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    with urllib.request.urlopen(url, timeout=5) as reply:  # noqa: S310 - a local test endpoint
        text = reply.read().decode()
    samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def _total(samples: dict, name: str, **labels: str) -> float:
    return sum(v for (n, ls), v in samples.items() if n == name and all((k, v2) in ls for k, v2 in labels.items()))


async def test_every_metrics_endpoint_moves_when_events_are_scored(stack, gateway) -> None:
    urls = stack.metrics_urls
    before = {name: await asyncio.to_thread(_scrape, url) for name, url in urls.items()}

    events = []
    for i in range(40):
        tx = types_pb2.Transaction(
            transaction_id=f"met-{i}", customer_id=f"met-C{i % 4}", terminal_id="met-T1", amount=10.0 + i
        )
        tx.timestamp.FromSeconds(1_700_000_000 + i)
        events.append(gateway_pb2.ScoreBatchRequest(transactions=[tx]))
    answered = [r async for r in gateway.ScoreBatchStream(iter(events), timeout=60)]
    assert len(answered) == 40
    with pytest.raises(grpc.aio.AioRpcError) as bad:  # one bad event: counted as an error
        await gateway.Score(gateway_pb2.ScoreRequest(transaction=types_pb2.Transaction(amount=-1)), timeout=10)
    assert bad.value.code() == grpc.StatusCode.INVALID_ARGUMENT

    after = {name: await asyncio.to_thread(_scrape, url) for name, url in urls.items()}
    g0, g1 = before["gateway"], after["gateway"]
    assert _total(g1, "scoring_gateway_events_total") - _total(g0, "scoring_gateway_events_total") >= 40
    assert _total(g1, "scoring_gateway_event_latency_seconds_count") - _total(
        g0, "scoring_gateway_event_latency_seconds_count") >= 40
    assert _total(g1, "scoring_gateway_stage_latency_seconds_count", stage="features", outcome="ok") > _total(
        g0, "scoring_gateway_stage_latency_seconds_count", stage="features", outcome="ok")
    assert _total(g1, "scoring_gateway_batch_events_count") > _total(g0, "scoring_gateway_batch_events_count")
    assert _total(g1, "scoring_gateway_errors_total", code="INVALID_ARGUMENT") == _total(
        g0, "scoring_gateway_errors_total", code="INVALID_ARGUMENT") + 1
    for stage in ("features", "filter", "ensemble"):
        assert ("scoring_gateway_breaker_state", (("stage", stage),)) in g1
    assert ("scoring_gateway_fold_backlog_events", ()) in g1
    # One series per scenario's micro-batcher (the stack serves both).
    assert {("scoring_gateway_inflight_batches", (("scenario", s),)) for s in ("fraud", "market")} <= set(g1)
    assert ("scoring_gateway_queued_events", (("scenario", "fraud"),)) in g1

    f0, f1 = before["feature_service"], after["feature_service"]
    assert _total(f1, "scoring_features_events_total") - _total(f0, "scoring_features_events_total") >= 40
    assert _total(f1, "scoring_features_fold_seconds_count") > _total(f0, "scoring_features_fold_seconds_count")

    m0, m1 = before["filter_model"], after["filter_model"]
    assert _total(m1, "scoring_filter_rows_total", model="main") - _total(m0, "scoring_filter_rows_total",
                                                                          model="main") >= 40

    # Triton's own endpoint is there to be scraped too, with per-model request counts.
    assert _total(after["triton"], "nv_inference_request_success_total", model="fraud_ensemble") >= 1
