"""Prometheus metrics: one HTTP endpoint per service (prometheus_client), names prefixed `scoring_`.

The endpoint runs in prometheus_client's own daemon thread, so a scrape never waits on the service's event loop.
"""

from __future__ import annotations

import logging

from prometheus_client import start_http_server

log = logging.getLogger(__name__)

# Latency buckets around a 10 ms budget: fine below it, coarse above.
LATENCY_BUCKETS_S = (
    0.0005, 0.001, 0.002, 0.003, 0.004, 0.005, 0.006, 0.008, 0.010, 0.0125, 0.015, 0.02, 0.03, 0.05, 0.1, 0.25, 1.0,
)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 4096)


def serve_metrics(host: str, port: int) -> None:
    """Starts the /metrics endpoint; port 0 leaves it off."""
    if port <= 0:
        return
    start_http_server(port, addr=host)
    log.info("metrics", extra={"address": f"http://{host}:{port}/metrics"})
