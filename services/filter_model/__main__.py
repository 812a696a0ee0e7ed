"""Process entry of the filter model service: `python -m services.filter_model`."""

from __future__ import annotations

import numpy as np

from scoring.common.logs import configure_logging
from scoring.common.metrics import serve_metrics
from scoring.common.server import GrpcServer, run_service
from scoring.common.telemetry import setup_tracing
from scoring.scenarios import registry
from scoring.v1 import filter_pb2, filter_pb2_grpc
from services.filter_model.model import FilterModel
from services.filter_model.server import FilterServicer
from services.filter_model.settings import FilterSettings


async def main() -> None:
    settings = FilterSettings()
    configure_logging("filter_model", settings.log_level)
    setup_tracing("filter_model")  # before any server or channel: their interceptors come from it
    serve_metrics(settings.host, settings.metrics_port)
    model = FilterModel(settings.model_dir)
    threshold = model.meta.threshold if settings.threshold is None else settings.threshold
    others = {name: registry.filter_model(name, path) for name, path in settings.scenario_model_dirs.items()}
    thresholds = {name: settings.scenario_thresholds.get(name, m.threshold) for name, m in others.items()}  # type: ignore[attr-defined]

    async def warm_up() -> None:
        # The first ONNX Runtime run allocates; pay it before health says SERVING.
        zeros = np.zeros((8, model.n_features), dtype=np.float32)
        model.predict(zeros)
        model.predict(zeros, self_contained_only=True)
        for other in others.values():
            z = np.zeros((8, other.n_features), dtype=np.float32)  # type: ignore[attr-defined]
            other.predict(z)  # type: ignore[attr-defined]
            other.predict(z, self_contained_only=True)  # type: ignore[attr-defined]

    server = GrpcServer(
        "filter_model",
        settings.address,
        [
            (
                FilterServicer(model, threshold, settings.inline_max_rows, others, thresholds,
                               default_scenario=registry.DEFAULT.name, release_dir=settings.release_dir,
                               threshold_override=settings.threshold),
                filter_pb2_grpc.add_FilterModelServicer_to_server,
                filter_pb2.DESCRIPTOR.services_by_name["FilterModel"].full_name,
            )
        ],
        grace_s=settings.shutdown_grace_s,
        warm_up=warm_up,
    )
    await server.serve()


if __name__ == "__main__":
    run_service(main)
