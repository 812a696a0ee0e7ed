"""A circuit breaker per downstream stage, so a dead or hung stage costs microseconds per batch, not a timeout.

Hand-written because it sits on the hot path of an asyncio event loop and needs only a few comparisons: the
maintained breakers (pybreaker, aiobreaker) wrap calls in their own exception and storage machinery.

closed --(`failures` failures in a row, over at least `min_streak_s`)--> open --(`reset_s` later)--> half-open:
one probe batch goes through; its success closes the circuit, its failure opens it again for another `reset_s`.

The streak must also last `min_streak_s`: under a tight budget a busy machine can make the few batches in
flight miss their share together, and that is a slow moment, not a dead stage. A stage that is down or hung
fails every call for as long as it is, so it still opens the circuit after `min_streak_s`.
"""

from __future__ import annotations

import time
from collections.abc import Callable

CLOSED, OPEN, HALF_OPEN = "closed", "open", "half_open"


class CircuitBreaker:
    def __init__(
        self,
        name: str,
        *,
        failures: int = 3,
        reset_s: float = 0.25,
        min_streak_s: float = 0.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if failures < 1 or reset_s <= 0:
            raise ValueError("a breaker needs failures >= 1 and reset_s > 0")
        self.name = name
        self.failures = failures
        self.reset_s = reset_s
        self.min_streak_s = min_streak_s
        self._streak_start = 0.0
        self._clock = clock
        self._state = CLOSED
        self._in_a_row = 0
        self._opened_at = 0.0
        self._probing = False
        self.opened_count = 0

    @property
    def state(self) -> str:
        if self._state == OPEN and self._clock() - self._opened_at >= self.reset_s:
            return HALF_OPEN
        return self._state

    def allow(self) -> bool:
        """Whether a call may go to the stage now. In half-open, only one caller (the probe) gets True."""
        state = self.state
        if state == CLOSED:
            return True
        if state == HALF_OPEN and not self._probing:
            self._state = HALF_OPEN
            self._probing = True
            return True
        return False

    def abandon(self) -> None:
        """A call ended without saying anything about the stage (cancelled, or a bug on our side): if it was the
        half-open probe, the next caller probes instead, or the circuit would stay open for good."""
        self._probing = False

    def success(self) -> None:
        self._state = CLOSED
        self._in_a_row = 0
        self._probing = False

    def failure(self) -> None:
        now = self._clock()
        if self._in_a_row == 0:
            self._streak_start = now
        self._in_a_row += 1
        long_enough = now - self._streak_start >= self.min_streak_s
        if self._state == HALF_OPEN or (self._in_a_row >= self.failures and long_enough):
            if self._state != OPEN:
                self.opened_count += 1
            self._state = OPEN
            self._opened_at = now
            self._probing = False
