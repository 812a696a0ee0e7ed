"""The circuit breaker's state machine, on a fake clock."""

from __future__ import annotations

import pytest

from services.gateway.breaker import CLOSED, HALF_OPEN, OPEN, CircuitBreaker


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_opens_after_consecutive_failures_only() -> None:
    breaker = CircuitBreaker("x", failures=3, reset_s=1.0, clock=Clock())
    breaker.failure()
    breaker.failure()
    breaker.success()  # the run of failures is broken
    breaker.failure()
    breaker.failure()
    assert breaker.state == CLOSED and breaker.allow()
    breaker.failure()
    assert breaker.state == OPEN and not breaker.allow()
    assert breaker.opened_count == 1


def test_half_open_lets_one_probe_through_and_its_outcome_decides() -> None:
    clock = Clock()
    breaker = CircuitBreaker("x", failures=1, reset_s=1.0, clock=clock)
    breaker.failure()
    clock.now += 0.99
    assert not breaker.allow()
    clock.now += 0.02
    assert breaker.state == HALF_OPEN
    assert breaker.allow()  # the probe
    assert not breaker.allow()  # everyone else waits for its outcome
    breaker.failure()
    assert breaker.state == OPEN and not breaker.allow()
    clock.now += 1.0
    assert breaker.allow()
    breaker.success()
    assert breaker.state == CLOSED and breaker.allow() and breaker.allow()


def test_rejects_nonsense_settings() -> None:
    with pytest.raises(ValueError):
        CircuitBreaker("x", failures=0)


def test_a_short_burst_of_failures_is_a_slow_moment_not_a_dead_stage() -> None:
    clock = Clock()
    breaker = CircuitBreaker("x", failures=3, reset_s=1.0, min_streak_s=0.1, clock=clock)
    for _ in range(5):  # the batches in flight all miss their share at once
        breaker.failure()
    assert breaker.state == CLOSED
    clock.now += 0.05
    breaker.success()
    for _ in range(3):
        breaker.failure()
        clock.now += 0.06
    breaker.failure()  # still failing 0.18 s into the streak: the stage is down
    assert breaker.state == OPEN


def test_a_probe_that_ends_without_an_answer_lets_the_next_caller_probe() -> None:
    clock = Clock()
    breaker = CircuitBreaker("x", failures=1, reset_s=1.0, clock=clock)
    breaker.failure()
    clock.now += 1.0
    assert breaker.allow()  # the probe
    assert not breaker.allow()  # one probe at a time
    breaker.abandon()  # cancelled, or an exception that is not the stage's answer
    assert breaker.state == HALF_OPEN and breaker.allow()
    breaker.success()
    assert breaker.state == CLOSED


def test_the_cascade_gives_up_a_probe_whose_call_raises_something_else() -> None:
    import asyncio

    from services.gateway.cascade import Cascade

    clock = Clock()
    breaker = CircuitBreaker("ensemble", failures=1, reset_s=1.0, clock=clock)
    breaker.failure()
    clock.now += 1.0
    cascade = Cascade.__new__(Cascade)
    cascade.breakers = {"ensemble": breaker}

    async def cancelled(timeout_s: float) -> None:
        raise asyncio.CancelledError

    async def run() -> None:
        with pytest.raises(asyncio.CancelledError):
            await cascade._call("ensemble", 0.01, cancelled)

    asyncio.run(run())
    assert breaker.allow(), "the abandoned probe must not keep the circuit open"
