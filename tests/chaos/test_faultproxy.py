"""The fault proxy on loopback, in-process: bytes pass unchanged, latency and jitter delay them in order, drops
reset connections, refusal resets new ones, and the control socket drives it all."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio

from scoring.faultproxy import FaultProxy, FaultProxyClient, FaultProxyError, parse_route

pytestmark = pytest.mark.chaos


async def _echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except ConnectionError:
        pass
    finally:
        writer.close()


@pytest_asyncio.fixture
async def proxy() -> AsyncIterator[FaultProxy]:
    server = await asyncio.start_server(_echo, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    proxy = FaultProxy(control=("127.0.0.1", 0))
    proxy.add_route("echo", ("127.0.0.1", 0), ("127.0.0.1", port), seed=1)
    await proxy.start()
    yield proxy
    await proxy.close()
    server.close()
    await server.wait_closed()


async def _connect(proxy: FaultProxy) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection(*proxy.routes["echo"].listen)


async def _round_trip(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, payload: bytes) -> bytes:
    writer.write(payload)
    await writer.drain()
    return await asyncio.wait_for(reader.readexactly(len(payload)), 10)


async def test_bytes_pass_unchanged_both_ways(proxy) -> None:
    reader, writer = await _connect(proxy)
    payload = bytes(range(256)) * 4096  # 1 MiB
    assert await _round_trip(reader, writer, payload) == payload
    writer.close()
    stats = proxy.routes["echo"].stats
    assert stats.accepted == 1 and stats.bytes_up == stats.bytes_down == len(payload)


async def test_latency_delays_each_direction(proxy) -> None:
    reader, writer = await _connect(proxy)
    await _round_trip(reader, writer, b"warm")
    proxy.routes["echo"].set(latency_ms=60)
    started = time.monotonic()
    await _round_trip(reader, writer, b"ping")
    assert time.monotonic() - started >= 0.12  # 60 ms up, 60 ms down
    proxy.routes["echo"].reset_faults()
    started = time.monotonic()
    await _round_trip(reader, writer, b"ping")
    assert time.monotonic() - started < 0.1
    writer.close()


async def test_jitter_never_reorders_bytes(proxy) -> None:
    proxy.routes["echo"].set(latency_ms=5, jitter_ms=5)
    reader, writer = await _connect(proxy)
    chunks = [f"{k:05d};".encode() for k in range(300)]
    for chunk in chunks:
        writer.write(chunk)
        await writer.drain()
        await asyncio.sleep(0)
    received = await asyncio.wait_for(reader.readexactly(sum(map(len, chunks))), 10)
    assert received == b"".join(chunks)
    writer.close()


async def test_drop_resets_open_connections_and_new_ones_work(proxy) -> None:
    reader, writer = await _connect(proxy)
    await _round_trip(reader, writer, b"hello")
    assert proxy.routes["echo"].drop() == 1
    with pytest.raises((ConnectionError, asyncio.IncompleteReadError)):
        await _round_trip(reader, writer, b"again")
    reader, writer = await _connect(proxy)
    assert await _round_trip(reader, writer, b"fresh") == b"fresh"
    writer.close()
    assert proxy.routes["echo"].stats.dropped == 1


async def test_refuse_resets_new_connections_until_cleared(proxy) -> None:
    proxy.routes["echo"].set(refuse=True)
    reader, writer = await _connect(proxy)
    with pytest.raises((ConnectionError, asyncio.IncompleteReadError)):
        await _round_trip(reader, writer, b"nope")
    proxy.routes["echo"].set(refuse=False)
    reader, writer = await _connect(proxy)
    assert await _round_trip(reader, writer, b"yes") == b"yes"
    writer.close()
    assert proxy.routes["echo"].stats.refused == 1


async def test_a_dead_upstream_resets_the_client() -> None:
    proxy = FaultProxy()
    route = proxy.add_route("dead", ("127.0.0.1", 0), ("127.0.0.1", 1))  # nothing listens on port 1
    await proxy.start()
    try:
        reader, writer = await asyncio.open_connection(*route.listen)
        with pytest.raises((ConnectionError, asyncio.IncompleteReadError)):
            await _round_trip(reader, writer, b"x")
        assert route.stats.upstream_failures == 1
    finally:
        await proxy.close()


async def test_the_control_socket_sets_drops_resets_and_reports(proxy) -> None:
    client = FaultProxyClient(proxy.control_address)
    assert await client.ping()
    faults = (await client.set("echo", latency_ms=30, jitter_ms=5))["faults"]
    assert faults == {"latency_ms": 30, "jitter_ms": 5, "refuse": False}
    reader, writer = await _connect(proxy)
    await _round_trip(reader, writer, b"x")
    assert await client.drop("echo") == 1
    await client.reset()
    status = await client.status()
    assert status["echo"]["faults"] == {"latency_ms": 0.0, "jitter_ms": 0.0, "refuse": False}
    assert status["echo"]["stats"]["dropped"] == 1
    with pytest.raises(FaultProxyError):
        await client.set("nowhere", latency_ms=1)
    with pytest.raises(FaultProxyError):
        await client.set("echo", latency_ms=-1)


def test_routes_parse() -> None:
    assert parse_route("triton=127.0.0.1:1>127.0.0.1:2") == ("triton", ("127.0.0.1", 1), ("127.0.0.1", 2))
    with pytest.raises(ValueError):
        parse_route("triton=127.0.0.1:1")
