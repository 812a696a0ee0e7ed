"""How load is driven: the open-loop sender (unary, stream, batch, closed loop) and the saturated runs."""

from __future__ import annotations

import asyncio
import gc
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import grpc

from scoring.bench.fold import redis_account
from scoring.bench.recorder import CpuMeter, StepResult, _Recorder
from scoring.bench.workload import CHANNEL_OPTIONS, EventSource, Load, build_load
from scoring.replay import ANSWER_KINDS, replay_batches, replay_columns, replay_stream
from scoring.v1 import gateway_pb2_grpc


async def _send_on_schedule(
    load: Load, rec: _Recorder, send: Callable[[int], Awaitable[None] | None], max_lag_s: float
) -> None:
    """Sends each unit at its time (send may be sync or async); stops when more than max_lag_s behind."""
    units, t0, result = load.units, rec.t0, rec.r
    burst = 0
    k = 0
    while k < len(units):
        send_at = t0 + units[k][0]
        now = time.perf_counter()
        if now < send_at:
            burst = 0
            await asyncio.sleep(send_at - now)
            continue
        if now - send_at > max_lag_s:
            rec.error(units[k][1], len(load.due), "client:behind")
            break
        result.send_lag_us.record_value(max(1, int((now - send_at) * 1e6)))
        pending = send(k)
        if pending is not None:
            try:
                await pending
            except grpc.aio.AioRpcError as exc:
                rec.call_failed = exc.code().name
                rec.error(units[k][1], len(load.due), f"grpc:{exc.code().name}")
                break
        else:
            burst += 1
            if burst >= 32:  # sync sends (unary) must still let the answers in
                burst = 0
                await asyncio.sleep(0)
        k += 1
    result.messages = k
    result.send_elapsed_s = time.perf_counter() - t0


async def _run_streaming(channel: grpc.aio.Channel, load: Load, rec: _Recorder, max_lag_s: float,
                         drain_s: float, call_timeout_s: float, streams: int = 1) -> None:
    """One bidi call (or `streams` calls on the same channel, messages dealt round-robin)."""
    stub = gateway_pb2_grpc.GatewayStub(channel)
    batch = load.mode == "batch"
    method = stub.ScoreBatchStream if batch else stub.ScoreStream
    calls: list[Any] = [method(timeout=call_timeout_s) for _ in range(max(1, streams))]

    async def reader(call: Any) -> None:
        try:
            while True:
                message = await call.read()
                if message is grpc.aio.EOF:
                    return
                now = time.perf_counter()
                if batch:
                    for response in message.responses:
                        rec.response(response, now)
                else:
                    rec.response(message, now)
        except grpc.aio.AioRpcError as exc:
            rec.call_failed = exc.code().name

    reading = [asyncio.create_task(reader(call)) for call in calls]
    units = load.units
    n_calls = len(calls)

    def send(k: int) -> Awaitable[None]:
        _, start, end, message = units[k]
        rec.on_wire(start, end)
        return calls[k % n_calls].write(message)  # type: ignore[no-any-return]

    await _send_on_schedule(load, rec, send, max_lag_s)
    for call in calls:
        try:
            await call.done_writing()
        except grpc.aio.AioRpcError as exc:
            rec.call_failed = rec.call_failed or exc.code().name
    _, late = await asyncio.wait(reading, timeout=drain_s)
    for task in late:
        task.cancel()
    for call in calls:
        call.cancel()
    await asyncio.gather(*late, return_exceptions=True)


async def _run_unary(channel: grpc.aio.Channel, load: Load, rec: _Recorder, max_lag_s: float, drain_s: float,
                     max_outstanding: int) -> None:
    stub = gateway_pb2_grpc.GatewayStub(channel)
    tasks: set[asyncio.Task[None]] = set()
    units = load.units

    async def one(k: int) -> None:
        _, i, end, message = units[k]
        try:
            response = await stub.Score(message)  # no deadline: the gateway would take it as the event's budget
        except grpc.aio.AioRpcError as exc:
            rec.error(i, end, f"grpc:{exc.code().name}")
            return
        rec.response(response, time.perf_counter())

    def send(k: int) -> None:
        _, i, end, _ = units[k]
        if len(tasks) >= max_outstanding:
            rec.error(i, end, "client:overflow")
            return
        rec.on_wire(i, end)
        task = asyncio.create_task(one(k))
        tasks.add(task)
        task.add_done_callback(tasks.discard)

    await _send_on_schedule(load, rec, send, max_lag_s)
    if tasks:
        _, pending = await asyncio.wait(set(tasks), timeout=drain_s)
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)


async def _run_closed_loop(channel: grpc.aio.Channel, load: Load, rec: _Recorder, max_lag_s: float,
                           drain_s: float) -> None:
    """Unary, one event in flight: each is sent at its time or when the previous answer came, whichever is
    later; the latency still counts from its scheduled time."""
    stub = gateway_pb2_grpc.GatewayStub(channel)
    units = load.units

    async def send(k: int) -> None:
        _, i, end, message = units[k]
        rec.on_wire(i, end)
        sent_at = time.perf_counter()
        try:
            response = await asyncio.wait_for(stub.Score(message), drain_s)
        except grpc.aio.AioRpcError as exc:
            rec.error(i, end, f"grpc:{exc.code().name}")
            return
        except TimeoutError:
            rec.error(i, end, "client:no_answer")
            return
        now = time.perf_counter()
        if not response.HasField("error"):
            rec.r.service_us.record_value(max(1, int((now - sent_at) * 1e6)))
        rec.response(response, now)

    await _send_on_schedule(load, rec, send, max_lag_s)


async def run_step(
    address: str,
    load: Load,
    *,
    name: str,
    rate: float,
    duration_s: float,
    closed_loop: bool = False,
    max_outstanding: int = 512,
    streams: int = 1,
    max_lag_s: float = 2.0,
    drain_s: float = 10.0,
    cpu: CpuMeter | None = None,
    lead_s: float = 0.05,
) -> StepResult:
    """Sends a prepared load to the gateway on its schedule and accounts for every event."""
    result = StepResult(name=name, mode=load.mode, target_rate=rate, duration_s=duration_s, closed_loop=closed_loop,
                        streams=1 if closed_loop or load.mode == "unary" else max(1, streams))
    async with grpc.aio.insecure_channel(address, options=CHANNEL_OPTIONS) as channel:
        await asyncio.wait_for(channel.channel_ready(), 10.0)
        gc.collect()
        gc.disable()  # no collector pauses inside the measurement (everything big was built beforehand)
        if cpu is not None:
            cpu.start()
        t0 = time.perf_counter() + lead_s
        rec = _Recorder(result, load, t0)
        try:
            if closed_loop:
                await _run_closed_loop(channel, load, rec, max_lag_s, drain_s)
            elif load.mode == "unary":
                await _run_unary(channel, load, rec, max_lag_s, drain_s, max_outstanding)
            else:
                await _run_streaming(channel, load, rec, max_lag_s, drain_s, duration_s + max_lag_s + drain_s + 30,
                                     streams)
        finally:
            gc.enable()
        # Until the last answer: the step's throughput window (the drain after it does not count).
        result.elapsed_s = (rec.last_answer if rec.last_answer > t0 else time.perf_counter()) - t0
        if cpu is not None:
            result.cpu = cpu.stop()
        rec.finish()
    return result


async def saturated_throughput(gateway: str, source: EventSource, prefix: str, *, seconds: float = 8.0,
                               batch: int = 200, window: int = 16) -> dict[str, Any]:
    """Closed loop on ScoreBatchStream: `window` batches of `batch` events always outstanding; the events answered
    per second (scored, degraded or not; errors counted apart) is the stack's throughput at saturation."""
    n_messages = max(window * 4, int(seconds * 40_000 / batch))  # more than any rate this machine reaches
    load = build_load(source, "batch", rate=batch * 100.0, duration_s=n_messages / 100.0, prefix=prefix, tick_s=0.01)
    messages = [unit[3] for unit in load.units]
    answered = errors = 0
    room = asyncio.Semaphore(window)
    stop_at = 0.0

    async with grpc.aio.insecure_channel(gateway, options=CHANNEL_OPTIONS) as channel:
        call = gateway_pb2_grpc.GatewayStub(channel).ScoreBatchStream(timeout=seconds + 60)
        started = time.perf_counter()
        stop_at = started + seconds

        async def write() -> None:
            for message in messages:
                await room.acquire()
                if time.perf_counter() >= stop_at:
                    break
                await call.write(message)
            await call.done_writing()

        writer = asyncio.create_task(write())
        last = started
        while True:
            reply = await call.read()
            if reply is grpc.aio.EOF:
                break
            last = time.perf_counter()
            if last <= stop_at:
                for response in reply.responses:
                    if response.HasField("error") and response.error.code:
                        errors += 1
                    else:
                        answered += 1
            room.release()
        await writer
    elapsed = min(last, stop_at) - started
    return {"seconds": round(elapsed, 2), "batch": batch, "window": window, "answered": answered,
            "errors": errors, "events_per_s": round(answered / elapsed, 1) if elapsed > 0 else 0.0}


async def saturated_replay(gateway: str, source: EventSource, prefix: str, events: int = 50_000,
                           batch: int = 500, redis_url: str | None = None, cpu: CpuMeter | None = None,
                           modes: Sequence[str] = ("stream", "batch", "columns"),
                           budget_ms: float | None = None) -> dict[str, Any]:
    """A client replaying history as fast as the gateway takes it: on ScoreStream (one event a message), on
    ScoreBatchStream and on ScoreColumnsStream (batches of `batch`), at the stack's own budget or at `budget_ms`.
    Admission sets the pace; what counts is the answered rate and the share of full answers (target: 99%, 0
    errors), and what each process spent per answered event (CPU, and Redis's own accounting)."""
    out: dict[str, Any] = {"events": events, "batch_size": batch, "budget_ms": budget_ms}
    for mode in modes:
        transactions = source.transactions(events, f"{prefix}{mode}-")
        redis_before = await redis_account(redis_url) if redis_url else None
        if cpu is not None:
            cpu.start()
        if mode == "stream":
            got = await replay_stream(gateway, transactions, 0, timeout_s=900, budget_ms=budget_ms)
        elif mode == "batch":
            got = await replay_batches(gateway, transactions, batch, timeout_s=900, budget_ms=budget_ms)
        else:
            got = await replay_columns(gateway, transactions, batch, timeout_s=900, budget_ms=budget_ms)
        usage = cpu.stop() if cpu is not None else {}
        answered = max(got.answered, 1)
        out[mode] = {
            "answered": got.answered, "lost": got.sent - got.answered, "duplicates": got.duplicates,
            "seconds": round(got.elapsed_s, 2), "events_per_s": round(got.answered / max(got.elapsed_s, 1e-9), 1),
            "answers": {k: got.kinds[k] for k in ANSWER_KINDS},
            "full_share": round(got.kinds["full"] / answered, 5),
            "ensemble_share": round(got.stages.get("ensemble", 0) / answered, 5),
            "errors": sum(got.errors.values()),
        }
        if usage:
            # Percent of one core over the replay -> microseconds of CPU per answered event, per process.
            per_event = {name: round(pct / 100 * got.elapsed_s / answered * 1e6, 1) for name, pct in usage.items()
                         if name not in ("machine", "others")}
            stack = sum(v for k, v in per_event.items() if k != "bench")
            out[mode]["cpu_us_per_event"] = {**per_event, "stack": round(stack, 1)}
        if redis_before is not None and redis_url:
            cpu_after, _ = await redis_account(redis_url)
            out[mode]["redis_cpu_us_per_event"] = round(1e6 * (cpu_after - redis_before[0]) / answered, 1)
        await asyncio.sleep(1.0)
    return out
