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
