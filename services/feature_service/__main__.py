"""Process entry of the feature service: `python -m services.feature_service`."""

from __future__ import annotations

from scoring.common.logs import configure_logging
from scoring.common.metrics import serve_metrics
from scoring.common.redis_state import RedisClients
from scoring.common.server import GrpcServer, run_service
from scoring.common.telemetry import setup_tracing
from scoring.scenarios import registry
from scoring.v1 import features_pb2, features_pb2_grpc
from services.feature_service.server import FeatureServicer
from services.feature_service.settings import FeatureSettings


async def main() -> None:
    settings = FeatureSettings()
    configure_logging("feature_service", settings.log_level)
    setup_tracing("feature_service")  # before any server or channel: their interceptors come from it
    serve_metrics(settings.host, settings.metrics_port)
    # One set of clients (one Redis or a Redis Cluster) for every scenario's fold; state needs no trained model,
    # so every registered scenario is folded.
    clients = RedisClients.connect(
        settings.redis_url,
        timeout_s=settings.redis_timeout_s,
        max_connections=settings.redis_max_connections,
        state_ttl_s=settings.state_ttl_s,
        labels_timeout_s=settings.labels_timeout_s,
        cluster=settings.redis_cluster,
        shards=settings.redis_shards,
    )
    folds = registry.online_folds(clients)

    async def warm_up() -> None:
        for fold in folds:
            await fold.warm_up()

    async def stop() -> None:
        for fold in folds:
            await fold.close()
        await clients.close()

    server = GrpcServer(
        "feature_service",
        settings.address,
        [
            (
                FeatureServicer(folds),
                features_pb2_grpc.add_FeatureServiceServicer_to_server,
                features_pb2.DESCRIPTOR.services_by_name["FeatureService"].full_name,
            )
        ],
        grace_s=settings.shutdown_grace_s,
        warm_up=warm_up,
        on_stop=stop,
    )
    await server.serve()


if __name__ == "__main__":
    run_service(main)
