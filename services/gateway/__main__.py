"""Process entry of the gateway: `python -m services.gateway`."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import grpc

from scoring.common.logs import configure_logging
from scoring.common.metrics import serve_metrics
from scoring.common.server import GrpcServer, run_service
from scoring.common.telemetry import root_sampling_ratio, setup_tracing
from scoring.releases.gates import GateSpec
from scoring.releases.store import ReleaseStore
from scoring.scenarios import registry
from scoring.scenarios.fraud.last_resort import LastResort
from scoring.scenarios.fraud.validation import Limits
from scoring.v1 import gateway_pb2, gateway_pb2_grpc, releases_pb2_grpc
from services.gateway import tracing
from services.gateway.admin import ReleasesServicer
from services.gateway.admission import AdmissionLimit
from services.gateway.backlog import FoldBacklog
from services.gateway.batcher import MicroBatcher
from services.gateway.cascade import Cascade, StageShares
from services.gateway.class_cascade import ClassCascade
from services.gateway.dedup import RecentAnswers, Submitter
from services.gateway.releases import ReleaseManager
from services.gateway.server import GatewayServicer, Route
from services.gateway.settings import GatewaySettings
from services.gateway.stages import EnsembleClient, FeatureClient, FilterClient

ADMISSION_REFERENCE_BUDGET_MS = 10.0


async def main() -> None:
    settings = GatewaySettings()
    configure_logging("gateway", settings.log_level)
    # Before any server or channel: their interceptors come from it.
    setup_tracing("gateway", id_generator=tracing.ID_GENERATOR)
    tracing.configure_sampling(root_sampling_ratio())
    serve_metrics(settings.host, settings.metrics_port)
    features = FeatureClient(settings.features_address)
    filter_client = FilterClient(settings.filter_address)
    ensemble = EnsembleClient(settings.triton_address, settings.ensemble_model)
    budget_s = settings.budget_ms / 1e3
    backlog = FoldBacklog(features, max_events=settings.fold_backlog_events)
    edge = registry.edge(registry.DEFAULT.name)
    releases = None
    if settings.release_dir:
        releases = ReleaseManager(
            ReleaseStore(Path(settings.release_dir)), settings.triton_repository, settings.triton_address, features,
            filter_client, ensemble, n_features=edge.n_features, seq_shape=edge.seq_shape,
            gate=GateSpec(
                min_events=settings.gate_min_events, min_pairs=settings.gate_min_pairs,
                p99_ratio=settings.gate_p99_ratio, alert_rate_ratio=settings.gate_alert_rate_ratio,
                max_score_psi=settings.gate_max_score_psi, min_agreement=settings.gate_min_agreement,
            ),
            gate_interval_s=settings.gate_interval_s,
            step_min_s=settings.gate_step_min_s,
        )
    cascade = Cascade(
        features,
        filter_client,
        ensemble,
        budget_s,
        StageShares(settings.features_share, settings.filter_share, settings.ensemble_share),
        breaker_failures=settings.breaker_failures,
        breaker_reset_s=settings.breaker_reset_ms / 1e3,
        breaker_min_streak_s=settings.breaker_min_streak_ms / 1e3,
        unfiltered_max=settings.unfiltered_ensemble_max,
        backlog=backlog,
        # Loaded before the server starts: a gateway without its last resort would answer errors under load.
        last_resort=LastResort(settings.fallback_model_dir),
        edge=edge,
        releases=releases,
    )
    # The event counts are stated for a 10 ms budget and scale with it (Little's law: at the same service rate, a
    # budget k times longer holds k times more events in time), within the hard maximum.
    scale = max(1.0, settings.budget_ms / ADMISSION_REFERENCE_BUDGET_MS)
    maximum = settings.admission_max_events
    admission = AdmissionLimit(
        initial=min(maximum, round(settings.admission_initial_events * scale)),
        minimum=min(maximum, round(settings.admission_min_events * scale)),
        maximum=maximum,
        latency_fraction=settings.admission_latency_fraction,
        increase=settings.admission_increase,
        decrease=settings.admission_decrease,
    )

    def micro_batcher(of: Cascade, concat: Any = None, scenario: str = registry.DEFAULT.name) -> MicroBatcher:
        return MicroBatcher(
            of,
            max_batch=settings.max_batch_events,
            batch_wait_us=settings.batch_wait_us,
            max_inflight_batches=settings.max_inflight_batches,
            max_queued=settings.max_queued_events,
            features_inflight_batches=settings.features_inflight_batches,
            admission=admission,
            concat=concat,
            scenario=scenario,
        )

    batcher = micro_batcher(cascade)

    # The other scenarios: a cascade, a micro-batcher and a recent-answer cache each, behind the same admission.
    others: list[tuple[ClassCascade, MicroBatcher, EnsembleClient]] = []
    routes: dict[str, Route] = {}
    for name, model_dir in settings.scenario_model_dirs.items():
        scenario = registry.get(name)
        sv: Any = registry.serving(name, model_dir)
        other_ensemble = EnsembleClient(settings.triton_address, scenario.triton_model, classes=sv.classes)
        other_cascade = ClassCascade(
            sv, features, filter_client, other_ensemble, budget_s,
            StageShares(settings.features_share, settings.filter_share, settings.ensemble_share),
            breaker_failures=settings.breaker_failures,
            breaker_reset_s=settings.breaker_reset_ms / 1e3,
            breaker_min_streak_s=settings.breaker_min_streak_ms / 1e3,
            unfiltered_max=settings.unfiltered_ensemble_max,
        )
        other_batcher = micro_batcher(other_cascade, sv.concat_items, name)
        other_submitter: Submitter = other_batcher
        if settings.dedup_window_s > 0:
            other_submitter = RecentAnswers(other_batcher, window_s=settings.dedup_window_s,
                                            max_events=settings.dedup_max_events, key=sv.dedup_key,
                                            fingerprint=lambda event: ())
        routes[scenario.event_field] = Route(
            validate=sv.validate, event_id=sv.event_id, plain_id=sv.plain_id, entity=sv.entity, respond=sv.respond,
            error=sv.error, submitter=other_submitter,
        )
        others.append((other_cascade, other_batcher, other_ensemble))

    admin: grpc.aio.Server | None = None

    async def warm_up() -> None:
        nonlocal admin
        # Open every channel and run every model once, so the first client event is not the slow one.
        # Stages that are down are not waited for: the gateway serves degraded answers until they return.
        await cascade.warm_up()
        if releases is not None:
            # Every release the routing names is loaded and warmed before the first event; a champion trained on
            # other features than the feature service computes stops the gateway here.
            await releases.start(settings.release_bootstrap_dir)
            admin = grpc.aio.server()
            releases_pb2_grpc.add_ReleasesServicer_to_server(ReleasesServicer(releases), admin)
            address = f"{settings.admin_host}:{settings.admin_port}"
            if admin.add_insecure_port(address) == 0:
                raise RuntimeError(f"gateway admin: cannot bind {address}")
            await admin.start()
            logging.getLogger("gateway").info("admin serving", extra={"address": address})
        backlog.start()
        batcher.start()
        for other_cascade, other_batcher, _ in others:
            await other_cascade.warm_up()
            other_batcher.start()

    async def on_stop() -> None:
        if admin is not None:
            await admin.stop(1.0)
        await batcher.stop()
        for _, other_batcher, other_ensemble in others:
            await other_batcher.stop()
            await other_ensemble.close()
        await backlog.stop()
        if backlog.pending:
            logging.getLogger("gateway").warning("stopping with folds pending", extra={"events": backlog.pending})
        await features.close()
        await filter_client.close()
        await ensemble.close()
        if releases is not None:
            await releases.close()

    submitter: Submitter = batcher
    if settings.dedup_window_s > 0:
        submitter = RecentAnswers(batcher, window_s=settings.dedup_window_s, max_events=settings.dedup_max_events)
    servicer = GatewayServicer(
        submitter,
        features,
        budget_s=budget_s,
        max_inflight_per_stream=settings.max_inflight_per_stream,
        max_request_batch=settings.max_request_batch,
        admission=admission,
        max_budget_s=settings.max_budget_ms / 1e3,
        limits=Limits(max_amount=settings.max_amount, min_event_time_s=settings.min_event_time_s),
        max_group_events=settings.max_batch_events,
        routes=routes,
    )
    server = GrpcServer(
        "gateway",
        settings.address,
        [
            (
                servicer,
                gateway_pb2_grpc.add_GatewayServicer_to_server,
                gateway_pb2.DESCRIPTOR.services_by_name["Gateway"].full_name,
            )
        ],
        grace_s=settings.shutdown_grace_s,
        warm_up=warm_up,
        on_stop=on_stop,
    )
    await server.serve()


if __name__ == "__main__":
    run_service(main)
