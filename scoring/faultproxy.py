"""A TCP fault proxy on loopback: latency, jitter and dropped connections between the gateway and one stage.

The chaos harness routes the gateway's connection to a stage (or a client's connection to the gateway) through one
`Route` of this proxy and turns faults on and off while traffic flows:

- latency and jitter: every chunk read from either side is held `latency_ms` +/- `jitter_ms` (uniform) before it is
  passed on, in order (a chunk never overtakes an earlier one, as on a real TCP path); a bounded queue per direction
  pushes back on the sender instead of buffering without limit;
- dropped connections: `drop()` resets every open connection at once (SO_LINGER 0: the peer sees a reset, as when a
  middlebox or a node dies), and `refuse` resets every new connection as soon as it is accepted, until cleared.

Hand-written rather than Toxiproxy: Toxiproxy is a Go server that would have to be fetched as a binary, and the
proxy needs only what asyncio streams give. It runs as a child of the local launcher
(`python -m scoring.faultproxy --control 127.0.0.1:PORT --route NAME=LISTEN>UPSTREAM ...`) and is driven over a
JSON-lines control socket (`FaultProxyClient`); tests can also run `FaultProxy` in-process.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import random
import signal
import socket
import struct
from dataclasses import asdict, dataclass, field
from typing import Any

log = logging.getLogger(__name__)

CHUNK = 64 * 1024
# Chunks held per direction before the proxy stops reading from the sender (TCP flow control does the rest).
QUEUE_CHUNKS = 256


def parse_address(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    if not host or not port.isdigit():
        raise ValueError(f"bad address {text!r}: want HOST:PORT")
    return host, int(port)


@dataclass
class Faults:
    latency_ms: float = 0.0
    jitter_ms: float = 0.0
    # New connections are reset as soon as they are accepted; turning it on also drops the open ones.
    refuse: bool = False

    def validate(self) -> None:
        if self.latency_ms < 0 or self.jitter_ms < 0:
            raise ValueError("latency_ms and jitter_ms must not be negative")

    @property
    def active(self) -> bool:
        return bool(self.latency_ms or self.jitter_ms or self.refuse)


@dataclass
class RouteStats:
    accepted: int = 0
    refused: int = 0
    dropped: int = 0
    upstream_failures: int = 0
    bytes_up: int = 0  # client -> upstream
    bytes_down: int = 0  # upstream -> client


def _reset(writer: asyncio.StreamWriter) -> None:
    """Closes the socket with a TCP reset (SO_LINGER 0) rather than a graceful FIN."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


class _Connection:
    def __init__(self, route: Route, client: asyncio.StreamWriter, upstream: asyncio.StreamWriter) -> None:
        self.route = route
        self.client = client
        self.upstream = upstream
        self.tasks: list[asyncio.Task[None]] = []

    def reset(self) -> None:
        _reset(self.client)
        _reset(self.upstream)
        for task in self.tasks:
            task.cancel()


class Route:
    """One listening port forwarding to one upstream, with its own faults."""

    def __init__(self, name: str, listen: tuple[str, int], upstream: tuple[str, int], *, seed: int = 0) -> None:
        self.name = name
        self.listen = listen
        self.upstream = upstream
        self.faults = Faults()
        self.stats = RouteStats()
        self._rng = random.Random(seed)
        self._connections: set[_Connection] = set()
        self._server: asyncio.Server | None = None

    @property
    def address(self) -> str:
        return f"{self.listen[0]}:{self.listen[1]}"

    @property
    def open_connections(self) -> int:
        return len(self._connections)

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._handle, self.listen[0], self.listen[1], reuse_address=True)
        if self.listen[1] == 0:
            self.listen = (self.listen[0], int(self._server.sockets[0].getsockname()[1]))

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        self.drop()
        if self._server is not None:
            await self._server.wait_closed()

    def set(self, **changes: Any) -> Faults:
        faults = Faults(**{**asdict(self.faults), **changes})
        faults.validate()
        self.faults = faults
        if faults.refuse:
            self.drop()
        log.info("faults set", extra={"route": self.name, **asdict(faults)})
        return faults

    def reset_faults(self) -> None:
        self.set(**asdict(Faults()))

    def drop(self) -> int:
        """Resets every open connection; returns how many there were."""
        connections = list(self._connections)
        for connection in connections:
            connection.reset()
        self._connections.difference_update(connections)
        self.stats.dropped += len(connections)
        return len(connections)

    def _delay_s(self) -> float:
        faults = self.faults
        if not faults.latency_ms and not faults.jitter_ms:
            return 0.0
        jitter = self._rng.uniform(-faults.jitter_ms, faults.jitter_ms) if faults.jitter_ms else 0.0
        return max(0.0, faults.latency_ms + jitter) / 1e3

    async def _handle(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        if self.faults.refuse:
            self.stats.refused += 1
            _reset(client_writer)
            return
        try:
            upstream_reader, upstream_writer = await asyncio.open_connection(*self.upstream)
        except OSError:
            # The upstream is down: the client sees its connection reset, as it would see a refusal.
            self.stats.upstream_failures += 1
            _reset(client_writer)
            return
        self.stats.accepted += 1
        connection = _Connection(self, client_writer, upstream_writer)
        self._connections.add(connection)
        up = asyncio.create_task(self._pipe(client_reader, upstream_writer, "bytes_up"))
        down = asyncio.create_task(self._pipe(upstream_reader, client_writer, "bytes_down"))
        connection.tasks = [up, down]
        try:
            await asyncio.gather(up, down)
        except (asyncio.CancelledError, ConnectionError, OSError):
            pass
        finally:
            if connection in self._connections:
                self._connections.discard(connection)
                connection.reset()

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, counter: str) -> None:
        """Copies one direction; each chunk waits for its release time, in order."""
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue(QUEUE_CHUNKS)

        async def deliver() -> None:
            while True:
                release, data = await queue.get()
                if not data:
                    if writer.can_write_eof():
                        with contextlib.suppress(OSError):
                            writer.write_eof()
                    return
                wait = release - loop.time()
                if wait > 0:
                    await asyncio.sleep(wait)
                writer.write(data)
                await writer.drain()

        delivering = asyncio.create_task(deliver())
        last_release = 0.0
        try:
            while True:
                data = await reader.read(CHUNK)
                if delivering.done():  # the other side is gone: raise its error (or stop after its EOF)
                    delivering.result()
                    return
                # Order is kept: a chunk is released no earlier than the one before it.
                last_release = max(last_release, loop.time() + self._delay_s())
                if queue.full():
                    put = asyncio.ensure_future(queue.put((last_release, data)))
                    await asyncio.wait({put, delivering}, return_when=asyncio.FIRST_COMPLETED)
                    if not put.done():
                        put.cancel()
                        delivering.result()
                        return
                else:
                    queue.put_nowait((last_release, data))
                if not data:
                    break
                setattr(self.stats, counter, getattr(self.stats, counter) + len(data))
            await delivering
        finally:
            delivering.cancel()

    def status(self) -> dict[str, Any]:
        return {
            "listen": self.address,
            "upstream": f"{self.upstream[0]}:{self.upstream[1]}",
            "faults": asdict(self.faults),
            "open_connections": self.open_connections,
            "stats": asdict(self.stats),
        }


@dataclass
class FaultProxy:
    """Several routes and the JSON-lines control socket that drives them."""

    routes: dict[str, Route] = field(default_factory=dict)
    control: tuple[str, int] | None = None
    _control_server: asyncio.Server | None = None

    def add_route(self, name: str, listen: tuple[str, int], upstream: tuple[str, int], seed: int = 0) -> Route:
        if name in self.routes:
            raise ValueError(f"route {name!r} defined twice")
        route = Route(name, listen, upstream, seed=seed)
        self.routes[name] = route
        return route

    async def start(self) -> None:
        for route in self.routes.values():
            await route.start()
        if self.control is not None:
            self._control_server = await asyncio.start_server(
                self._serve_control, self.control[0], self.control[1], reuse_address=True
            )
            if self.control[1] == 0:
                self.control = (self.control[0], int(self._control_server.sockets[0].getsockname()[1]))

    async def close(self) -> None:
        if self._control_server is not None:
            self._control_server.close()
            await self._control_server.wait_closed()
        for route in self.routes.values():
            await route.close()

    @property
    def control_address(self) -> str:
        if self.control is None:
            raise RuntimeError("no control socket")
        return f"{self.control[0]}:{self.control[1]}"

    def _route(self, request: dict[str, Any]) -> Route:
        name = request.get("route")
        if name not in self.routes:
            raise ValueError(f"unknown route {name!r}; routes: {', '.join(sorted(self.routes))}")
        return self.routes[str(name)]

    def handle(self, request: dict[str, Any]) -> dict[str, Any]:
        """One control request -> its reply (also used in-process)."""
        op = request.get("op")
        if op == "ping":
            return {"ok": True}
        if op == "status":
            return {"ok": True, "routes": {name: route.status() for name, route in self.routes.items()}}
        if op == "set":
            route = self._route(request)
            changes = {k: request[k] for k in ("latency_ms", "jitter_ms", "refuse") if k in request}
            return {"ok": True, "faults": asdict(route.set(**changes))}
        if op == "drop":
            return {"ok": True, "dropped": self._route(request).drop()}
        if op == "reset":
            routes = [self._route(request)] if request.get("route") else list(self.routes.values())
            for route in routes:
                route.reset_faults()
            return {"ok": True}
        raise ValueError(f"unknown op {op!r}")

    async def _serve_control(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while line := await reader.readline():
                try:
                    reply = self.handle(json.loads(line))
                except (ValueError, TypeError) as exc:
                    reply = {"ok": False, "error": str(exc)}
                writer.write(json.dumps(reply).encode() + b"\n")
                await writer.drain()
        except ConnectionError:
            pass
        finally:
            writer.close()


class FaultProxyError(RuntimeError):
    pass


class FaultProxyClient:
    """Drives a fault proxy over its control socket (one short connection per request)."""

    def __init__(self, address: str, timeout_s: float = 5.0) -> None:
        self.address = parse_address(address)
        self.timeout_s = timeout_s

    async def call(self, op: str, **fields: Any) -> dict[str, Any]:
        async def exchange() -> dict[str, Any]:
            reader, writer = await asyncio.open_connection(*self.address)
            try:
                writer.write(json.dumps({"op": op, **fields}).encode() + b"\n")
                await writer.drain()
                line = await reader.readline()
            finally:
                writer.close()
                with contextlib.suppress(ConnectionError):
                    await writer.wait_closed()
            if not line:
                raise FaultProxyError(f"fault proxy at {self.address} closed the connection")
            reply: dict[str, Any] = json.loads(line)
            return reply

        reply = await asyncio.wait_for(exchange(), self.timeout_s)
        if not reply.get("ok"):
            raise FaultProxyError(str(reply.get("error")))
        return reply

    async def ping(self) -> bool:
        try:
            await self.call("ping")
        except (OSError, TimeoutError, FaultProxyError):
            return False
        return True

    async def set(self, route: str, *, latency_ms: float | None = None, jitter_ms: float | None = None,
                  refuse: bool | None = None) -> dict[str, Any]:
        changes = {k: v for k, v in (("latency_ms", latency_ms), ("jitter_ms", jitter_ms), ("refuse", refuse))
                   if v is not None}
        return await self.call("set", route=route, **changes)

    async def drop(self, route: str) -> int:
        return int((await self.call("drop", route=route))["dropped"])

    async def reset(self, route: str | None = None) -> None:
        await self.call("reset", **({"route": route} if route else {}))

    async def status(self) -> dict[str, Any]:
        routes: dict[str, Any] = (await self.call("status"))["routes"]
        return routes


def parse_route(text: str) -> tuple[str, tuple[str, int], tuple[str, int]]:
    """NAME=LISTEN_HOST:PORT>UPSTREAM_HOST:PORT"""
    name, _, rest = text.partition("=")
    listen, _, upstream = rest.partition(">")
    if not name or not listen or not upstream:
        raise ValueError(f"bad route {text!r}: want NAME=HOST:PORT>HOST:PORT")
    return name, parse_address(listen), parse_address(upstream)


async def _serve(args: argparse.Namespace) -> None:
    proxy = FaultProxy(control=parse_address(args.control))
    for i, text in enumerate(args.route):
        name, listen, upstream = parse_route(text)
        proxy.add_route(name, listen, upstream, seed=args.seed + i)
    await proxy.start()
    log.info("serving", extra={"control": proxy.control_address,
                               "routes": {n: r.status()["listen"] for n, r in proxy.routes.items()}})
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await proxy.close()


def main(argv: list[str] | None = None) -> None:
    from scoring.common.logs import configure_logging

    parser = argparse.ArgumentParser(prog="python -m scoring.faultproxy", description=__doc__.splitlines()[0])
    parser.add_argument("--control", required=True, metavar="HOST:PORT", help="JSON-lines control socket")
    parser.add_argument("--route", action="append", default=[], metavar="NAME=HOST:PORT>HOST:PORT")
    parser.add_argument("--seed", type=int, default=0, help="seed of the jitter")
    parser.add_argument("--log-level", default="INFO")
    args = parser.parse_args(argv)
    configure_logging("faultproxy", args.log_level)
    asyncio.run(_serve(args))


if __name__ == "__main__":
    main()
