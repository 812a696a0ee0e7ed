"""Where the chaos harness injects its faults: local processes, or the containers of the compose stack.

Both targets give the same operations, by service name (`gateway`, `feature_service`, `filter_model`, `triton`,
`redis`):

- `crash` (kill -9) and `wait_back` (until the supervisor, or the container engine, has it healthy again);
- `pause` / `resume` (SIGSTOP/SIGCONT locally, the cgroup freezer through `docker pause` in containers: a hung
  process, not a dead one);
- `wipe_and_crash` for Redis (state loss: it comes back empty);
- `proxy()`: the control client of the fault proxy that sits between the gateway and its stages (latency, jitter,
  dropped connections), where the target has one;
- `memory_bytes`, `instance`, `state_keys` for the report.

`LocalTarget` drives a `scoring.launcher.Stack` (the tests use it). `ComposeTarget` drives a compose project through
the Docker SDK (`pip install 'scoring-graph[docker]'`); it needs a Docker engine, which the development machine and
CI of this project do not have, so its live test is skipped there.
"""

from __future__ import annotations

import asyncio
import signal
import time
from typing import Any, Protocol

from scoring.faultproxy import FaultProxyClient

SERVICES = ("gateway", "feature_service", "filter_model", "triton", "redis")


class FaultNotSupported(RuntimeError):
    """The target cannot inject this fault (for example, no fault proxy in front of the stage)."""


class ChaosTarget(Protocol):
    name: str

    def client_address(self, through_proxy: bool = False) -> str: ...
    def routes(self) -> set[str]: ...
    def proxy(self) -> FaultProxyClient: ...
    async def crash(self, service: str) -> Any: ...
    async def wait_back(self, service: str, token: Any, timeout_s: float) -> float: ...
    async def pause(self, service: str) -> None: ...
    async def resume(self, service: str) -> None: ...
    async def wipe_and_crash(self, service: str) -> Any: ...
    async def wait_all_up(self, timeout_s: float) -> None: ...
    async def memory_bytes(self, service: str) -> int | None: ...
    def instance(self, service: str) -> str: ...
    async def state_keys(self) -> int | None: ...


def _all_threads_stopped(pid: int) -> bool:
    import psutil

    try:
        return all(psutil.Process(t.id).status() == psutil.STATUS_STOPPED for t in psutil.Process(pid).threads())
    except psutil.NoSuchProcess:
        return True  # gone: nothing left to stop


class LocalTarget:
    """The local launcher's stack: children are signalled directly, the supervisor brings crashed ones back."""

    name = "local"

    def __init__(self, stack: Any) -> None:
        self.stack = stack

    def client_address(self, through_proxy: bool = False) -> str:
        if through_proxy:
            if "gateway" not in self.stack.fault_routes:
                raise FaultNotSupported("the stack has no fault route in front of the gateway")
            return str(self.stack.client_address)
        return str(self.stack.gateway_address)

    def routes(self) -> set[str]:
        return set(self.stack.fault_routes)

    def proxy(self) -> FaultProxyClient:
        if self.stack.fault_proxy_control is None:
            raise FaultNotSupported("the stack was started without fault routes (StackConfig.fault_routes)")
        return FaultProxyClient(self.stack.fault_proxy_control)

    def _child(self, service: str) -> Any:
        if service not in self.stack.children:
            raise FaultNotSupported(f"no local process {service!r} (external Redis?)")
        return self.stack.children[service]

    async def crash(self, service: str) -> int:
        child = self._child(service)
        restarts = int(child.restarts)
        self.stack.send_signal(service, signal.SIGKILL)
        # Reaped here or by the supervisor, whichever looks first.
        deadline = time.monotonic() + 10
        while child.alive() and child.restarts == restarts and time.monotonic() < deadline:
            await asyncio.sleep(0.005)
        return restarts

    async def wait_back(self, service: str, token: Any, timeout_s: float) -> float:
        if not self.stack.config.supervise:
            await self.stack.restart(service)
            return float(self.stack.children[service].ready_at)
        return float(await self.stack.wait_up(service, timeout_s, restarted_from=int(token)))

    async def pause(self, service: str) -> None:
        self.stack.send_signal(service, signal.SIGSTOP)
        # kill(2) returns before the stop takes hold: wait until every thread is seen stopped, so that "injected"
        # means the process can no longer read a byte (the report's `caught` counts events sent before that).
        pid = self._child(service).pid
        deadline = time.monotonic() + 2
        while not _all_threads_stopped(pid) and time.monotonic() < deadline:
            await asyncio.sleep(0.001)

    async def resume(self, service: str) -> None:
        self.stack.send_signal(service, signal.SIGCONT)

    async def wipe_and_crash(self, service: str) -> int:
        # The launcher's Redis keeps nothing on disk (--save "", no AOF): killed, it comes back empty.
        return await self.crash(service)

    async def wait_all_up(self, timeout_s: float) -> None:
        for name in self.stack.children:
            await self.stack.wait_up(name, timeout_s)

    async def memory_bytes(self, service: str) -> int | None:
        import psutil

        pid = self._child(service).pid
        try:
            return int(psutil.Process(pid).memory_info().rss) if pid else None
        except psutil.Error:
            return None

    def instance(self, service: str) -> str:
        return str(self._child(service).pid)

    async def state_keys(self) -> int | None:
        import redis.asyncio as redis

        client = redis.Redis.from_url(self.stack.redis_url, socket_timeout=2, socket_connect_timeout=2)
        try:
            return int(await client.dbsize())
        except (redis.RedisError, OSError):
            return None
        finally:
            await client.aclose()


class ComposeTarget:
    """The containers of a compose project, through the Docker SDK.

    Compose labels containers with their project and service; the mapping from our service names to compose service
    names is `services` (default: the same name, or with '-' for '_', as deploy/compose/docker-compose.yml has them,
    and `triton-gpu` for Triton on a GPU host). Docker ignores a container's restart policy after a
    `docker kill`, so after a crash this target starts the container again itself if the engine has not within
    `restart_grace_s`, as the policy would. Latency and dropped connections need the fault proxy in the compose
    graph (the gateway's stage addresses pointing at it); give its control address as `proxy_control`.
    """

    name = "compose"

    def __init__(
        self,
        project: str,
        gateway_address: str,
        *,
        services: dict[str, str] | None = None,
        proxy_control: str | None = None,
        proxied_gateway_address: str | None = None,
        restart_grace_s: float = 2.0,
        client: Any = None,
    ) -> None:
        if client is None:
            import docker

            client = docker.from_env()
        self.client = client
        self.project = project
        self.gateway_address = gateway_address
        self.services = services or {}
        self.proxy_control = proxy_control
        self.proxied_gateway_address = proxied_gateway_address
        self.restart_grace_s = restart_grace_s

    def client_address(self, through_proxy: bool = False) -> str:
        if through_proxy:
            if self.proxied_gateway_address is None:
                raise FaultNotSupported("no proxied gateway address given (proxied_gateway_address)")
            return self.proxied_gateway_address
        return self.gateway_address

    def routes(self) -> set[str]:
        return set()

    def proxy(self) -> FaultProxyClient:
        if self.proxy_control is None:
            raise FaultNotSupported("this compose stack has no fault proxy (give proxy_control)")
        return FaultProxyClient(self.proxy_control)

    def _container(self, service: str) -> Any:
        if service in self.services:
            names = [self.services[service]]
        else:  # deploy/compose names services with '-', and Triton on a GPU host is "triton-gpu"
            names = [service, service.replace("_", "-"), *(["triton-gpu"] if service == "triton" else [])]
        for name in names:
            found = self.client.containers.list(all=True, filters={"label": [
                f"com.docker.compose.project={self.project}", f"com.docker.compose.service={name}"]})
            if found:
                return found[0]
        raise FaultNotSupported(f"no container for service {service!r} in compose project {self.project!r}")

    async def _call(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        return await asyncio.to_thread(fn, *args, **kwargs)

    async def crash(self, service: str) -> str:
        container = self._container(service)
        started = str(container.attrs.get("State", {}).get("StartedAt", ""))
        await self._call(container.kill, signal="SIGKILL")
        return started

    async def wait_back(self, service: str, token: Any, timeout_s: float) -> float:
        deadline = time.monotonic() + timeout_s
        down_since = time.monotonic()
        while time.monotonic() < deadline:
            container = self._container(service)
            await self._call(container.reload)
            state = container.attrs.get("State", {})
            running = state.get("Running", False) and not state.get("Paused", False)
            if running and str(state.get("StartedAt", "")) != str(token):
                health = state.get("Health")
                if health is None or health.get("Status") == "healthy":
                    return time.monotonic()
            elif not running and not state.get("Restarting", False) \
                    and time.monotonic() - down_since > self.restart_grace_s:
                await self._call(container.start)
                down_since = time.monotonic()
            await asyncio.sleep(0.1)
        raise TimeoutError(f"{service} not back within {timeout_s:.0f} s")

    async def pause(self, service: str) -> None:
        await self._call(self._container(service).pause)

    async def resume(self, service: str) -> None:
        await self._call(self._container(service).unpause)

    async def wipe_and_crash(self, service: str) -> str:
        container = self._container(service)
        # FLUSHALL is persisted like any write (RDB or AOF), so the restarted Redis starts empty.
        await self._call(container.exec_run, ["redis-cli", "FLUSHALL"])
        return str(await self.crash(service))

    async def wait_all_up(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        for service in SERVICES:
            while True:
                container = self._container(service)
                await self._call(container.reload)
                state = container.attrs.get("State", {})
                health = state.get("Health")
                if state.get("Running") and not state.get("Paused") and (
                        health is None or health.get("Status") == "healthy"):
                    break
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{service} not up within {timeout_s:.0f} s")
                await asyncio.sleep(0.2)

    async def memory_bytes(self, service: str) -> int | None:
        stats = await self._call(self._container(service).stats, stream=False)
        usage = stats.get("memory_stats", {}).get("usage")
        return int(usage) if usage is not None else None

    def instance(self, service: str) -> str:
        container = self._container(service)
        return f"{container.id}@{container.attrs.get('State', {}).get('StartedAt', '')}"

    async def state_keys(self) -> int | None:
        result = await self._call(self._container("redis").exec_run, ["redis-cli", "DBSIZE"])
        output = result.output if hasattr(result, "output") else result[1]
        try:
            return int(bytes(output).strip())
        except ValueError:
            return None


def engine_available() -> bool:
    """Whether a Docker engine answers (the compose target's live test runs only then)."""
    try:
        import docker
    except ImportError:
        return False
    try:
        client = docker.from_env(timeout=3)
        return bool(client.ping())
    except Exception:  # no socket, no permission, engine down: all mean "not here"
        return False
