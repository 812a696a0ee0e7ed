"""The same-shape floor: the real gateway in front of three trivial stage services that do no work.

`python -m scoring.bench.floor ROLE --port P` serves one stage's API (features, filter or triton: the same gRPC
services and messages as the graph's, answers of the right shape, all zeros) in a process of its own, as the
graph's stages are. `Floor` starts the three and a gateway process pointed at them with the stack's settings, so
that the bench drives the floor exactly as it drives the graph: the same hops, processes, micro-batching,
admission and cascade code. What the graph costs above the floor is the stages' work (Redis, the models).
The filter passes every 20th row on to the "ensemble", about the graph's share.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from scoring.scenarios.fraud import features as F
from scoring.v1 import features_pb2, features_pb2_grpc, filter_pb2, filter_pb2_grpc

PASS_EVERY = 20


class _Features(features_pb2_grpc.FeatureServiceServicer):
    async def UpdateAndGet(self, request: Any, context: Any) -> Any:
        n = len(request.transaction_id)
        return features_pb2.FeatureResponse(
            rows=n,
            features=bytes(4 * n * len(F.FEATURE_NAMES)),
            feature_names=list(F.FEATURE_NAMES),
            sequences=bytes(4 * n * F.SEQ_LEN * len(F.SEQ_FEATURE_NAMES)),
            seq_len=F.SEQ_LEN,
            seq_feature_count=len(F.SEQ_FEATURE_NAMES),
        )

    async def ReportLabels(self, request: Any, context: Any) -> Any:
        return features_pb2.LabelAck(accepted=len(request.labels))


class _Filter(filter_pb2_grpc.FilterModelServicer):
    def __init__(self) -> None:
        self._rows = 0

    async def Predict(self, request: Any, context: Any) -> Any:
        start, self._rows = self._rows, self._rows + request.rows
        scores = ((start + np.arange(request.rows)) % PASS_EVERY == 0).astype("<f4")
        return filter_pb2.FilterResponse(scores=scores.tobytes(), threshold=0.5, model_version="floor:1")


def _triton_servicer() -> Any:
    from tritonclient.grpc import service_pb2, service_pb2_grpc

    class Triton(service_pb2_grpc.GRPCInferenceServiceServicer):  # type: ignore[misc]
        async def ModelInfer(self, request: Any, context: Any) -> Any:
            rows = int(request.inputs[0].shape[0]) if request.inputs else 0
            output = service_pb2.ModelInferResponse.InferOutputTensor(name="SCORE", datatype="FP32", shape=[rows, 1])
            return service_pb2.ModelInferResponse(
                model_name=request.model_name,
                model_version="1",
                outputs=[output],
                raw_output_contents=[bytes(4 * rows)],
            )

    return Triton(), service_pb2_grpc.add_GRPCInferenceServiceServicer_to_server, "inference.GRPCInferenceService"


def _registration(role: str) -> Any:
    if role == "features":
        return _Features(), features_pb2_grpc.add_FeatureServiceServicer_to_server, "scoring.v1.FeatureService"
    if role == "filter":
        return _Filter(), filter_pb2_grpc.add_FilterModelServicer_to_server, "scoring.v1.FilterModel"
    return _triton_servicer()


async def _serve(role: str, port: int) -> None:
    from scoring.common.server import GrpcServer

    await GrpcServer(f"floor_{role}", f"127.0.0.1:{port}", [_registration(role)], grace_s=1.0).serve()


@dataclass
class Floor:
    gateway: str  # the floor gateway's address
    pids: dict[str, int]  # its four processes, for CPU accounting


@asynccontextmanager
async def floor(env: dict[str, str], log_dir: Path, ready_timeout_s: float = 60.0) -> AsyncIterator[Floor]:
    """Starts the three trivial stages and a gateway in front of them (settings from `env`, the stack's)."""
    from scoring.launcher import Child, free_port, grpc_serving

    ports = {role: free_port() for role in ("features", "filter", "triton")}
    gateway = f"127.0.0.1:{free_port()}"
    children = [
        Child(f"floor_{role}", [sys.executable, "-m", "scoring.bench.floor", role, "--port", str(port)],
              {**env, "OTEL_SDK_DISABLED": "true"}, log_dir / f"floor_{role}.log")
        for role, port in ports.items()
    ]
    gateway_env = {
        **env,
        "GATEWAY_PORT": gateway.rsplit(":", 1)[1],
        "GATEWAY_METRICS_PORT": "0",
        "GATEWAY_FEATURES_ADDRESS": f"127.0.0.1:{ports['features']}",
        "GATEWAY_FILTER_ADDRESS": f"127.0.0.1:{ports['filter']}",
        "GATEWAY_TRITON_ADDRESS": f"127.0.0.1:{ports['triton']}",
        "OTEL_SDK_DISABLED": "true",
    }
    children.append(Child("floor_gateway", [sys.executable, "-m", "services.gateway"], gateway_env,
                          log_dir / "floor_gateway.log"))
    try:
        for child, address in zip(children, [*(f"127.0.0.1:{p}" for p in ports.values()), gateway], strict=True):
            child.start()
            deadline = asyncio.get_running_loop().time() + ready_timeout_s
            while not await grpc_serving(address):
                if not child.alive() or asyncio.get_running_loop().time() > deadline:
                    raise RuntimeError(f"{child.name} did not start:\n{child.log_tail()}")
                await asyncio.sleep(0.1)
        yield Floor(gateway, {c.name: c.pid for c in children if c.pid is not None})
    finally:
        for child in reversed(children):
            if child.alive() and child.process is not None:
                child.process.terminate()
                try:
                    child.process.wait(10)
                except Exception:
                    child.process.kill()


def main() -> None:
    parser = argparse.ArgumentParser(description="one trivial stage of the same-shape floor")
    parser.add_argument("role", choices=["features", "filter", "triton"])
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    os.environ.setdefault("OTEL_SDK_DISABLED", "true")
    from scoring.common.server import run_service

    run_service(lambda: _serve(args.role, args.port))


if __name__ == "__main__":
    main()
