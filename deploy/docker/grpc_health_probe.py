"""gRPC health probe baked into the services' image: the docker compose health check of each Python service.

    python /app/grpc_health_probe.py ADDRESS [--service NAME] [--timeout-s SECONDS]

Exits 0 when the server at ADDRESS answers `grpc.health.v1.Health/Check` with SERVING, and 1 otherwise (NOT_SERVING
while it warms up or drains, unreachable, too slow). Every service reports SERVING only after its warm-up (Redis
scripts loaded, models run once), so a healthy container is one that can score. Kubernetes does not use this file:
its probes speak gRPC health natively.
"""

from __future__ import annotations

import argparse
import sys

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc


def check(address: str, service: str = "", timeout_s: float = 2.0) -> tuple[bool, str]:
    """(serving, what to print): one Check call with a deadline."""
    with grpc.insecure_channel(address) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        try:
            reply = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=timeout_s)
        except grpc.RpcError as exc:
            code = exc.code() if isinstance(exc, grpc.Call) else None
            return False, f"{address}: {code.name if code else 'error'}: {exc}"
    status = health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)
    return reply.status == health_pb2.HealthCheckResponse.SERVING, f"{address}: {status}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="gRPC health check (grpc.health.v1) of one server")
    parser.add_argument("address", help="host:port, e.g. 127.0.0.1:50051")
    parser.add_argument("--service", default="", help="service name to check; empty: the whole server")
    parser.add_argument("--timeout-s", type=float, default=2.0)
    args = parser.parse_args(argv)
    serving, message = check(args.address, args.service, args.timeout_s)
    print(message, flush=True)  # docker keeps the last output in `docker inspect` health logs
    return 0 if serving else 1


if __name__ == "__main__":
    sys.exit(main())
