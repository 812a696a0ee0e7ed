"""gRPC server bootstrap shared by every service: health checking, reflection, graceful shutdown.

A service builds its servicers, hands them to `GrpcServer`, and calls `serve()`. Health turns SERVING only
after the service's own `warm_up` coroutine has run (connections opened, scripts loaded, model run once), so
a health check that passes means the first request will be fast. On SIGTERM or SIGINT health turns
NOT_SERVING first (load balancers stop sending), then the server drains for `grace_s`.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import signal
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from scoring.common import telemetry

log = logging.getLogger(__name__)

# (servicer, add_to_server function, full service name from the generated descriptor)
Registration = tuple[Any, Callable[[Any, grpc.aio.Server], None], str]

SERVER_OPTIONS: list[tuple[str, Any]] = [
    ("grpc.max_receive_message_length", 64 * 1024 * 1024),
    ("grpc.max_send_message_length", 64 * 1024 * 1024),
    ("grpc.so_reuseport", 0),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.min_ping_interval_without_data_ms", 5000),
]


class GrpcServer:
    def __init__(
        self,
        name: str,
        address: str,
        registrations: Sequence[Registration],
        *,
        grace_s: float = 5.0,
        interceptors: Sequence[grpc.aio.ServerInterceptor] = (),
        warm_up: Callable[[], Awaitable[None]] | None = None,
        on_stop: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        self.name = name
        self.address = address
        self.grace_s = grace_s
        self.warm_up = warm_up
        self.on_stop = on_stop
        self.server = grpc.aio.server(interceptors=list(interceptors), options=SERVER_OPTIONS)
        self.health = health.aio.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
        names = [health_pb2.DESCRIPTOR.services_by_name["Health"].full_name, reflection.SERVICE_NAME]
        self.service_names: list[str] = []
        for servicer, add, full_name in registrations:
            add(servicer, self.server)
            names.append(full_name)
            self.service_names.append(full_name)
        reflection.enable_server_reflection(names, self.server)
        self.bound_port = 0
        self._stopping = asyncio.Event()

    async def _set_all(self, status: int) -> None:
        for service_name in ["", *self.service_names]:
            await self.health.set(service_name, status)

    async def start(self) -> int:
        self.bound_port = self.server.add_insecure_port(self.address)
        if self.bound_port == 0:
            raise RuntimeError(f"{self.name}: cannot bind {self.address}")
        await self._set_all(health_pb2.HealthCheckResponse.NOT_SERVING)
        await self.server.start()
        if self.warm_up is not None:
            await self.warm_up()
        # Everything loaded so far (libraries, models, channels) lives as long as the process: out of the
        # collector's way, so that a full collection scans only what requests allocate, not the whole heap.
        gc.collect()
        gc.freeze()
        await self._set_all(health_pb2.HealthCheckResponse.SERVING)
        host = self.address.rsplit(":", 1)[0]
        log.info("serving", extra={"address": f"{host}:{self.bound_port}", "services": self.service_names})
        return self.bound_port

    def request_stop(self) -> None:
        self._stopping.set()

    async def stop(self) -> None:
        await self.health.enter_graceful_shutdown()
        await self.server.stop(self.grace_s)
        if self.on_stop is not None:
            await self.on_stop()
        telemetry.shutdown_tracing()
        log.info("stopped")

    async def serve(self) -> None:
        """Starts, runs until SIGTERM/SIGINT, then stops gracefully."""
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.request_stop)
        await self.start()
        await self._stopping.wait()
        log.info("stopping", extra={"grace_s": self.grace_s})
        await self.stop()


def run_service(main: Callable[[], Coroutine[Any, Any, None]]) -> None:
    """Process entry for a service: one event loop (uvloop is not needed: grpc.aio runs its own poller)."""
    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        pass
