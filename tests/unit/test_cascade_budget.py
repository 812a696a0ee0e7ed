"""How the cascade splits an event's budget between stages: shares, carried over when a stage is quick."""

from __future__ import annotations

import pytest

from services.gateway.cascade import Cascade, StageShares
from services.gateway.stages import StageError


def _cascade() -> Cascade:
    return Cascade(None, None, None, budget_s=0.010, shares=StageShares(0.3, 0.2, 0.45))  # type: ignore[arg-type]


def test_first_stage_gets_its_share_of_the_events_budget() -> None:
    now = 1000.0
    timeout = _cascade()._stage_timeout(0.3, 0.010, now, now + 0.010, now=now)
    assert timeout == pytest.approx(0.003, abs=1e-9)
    # A client deadline of 100 ms makes the shares ten times larger.
    assert _cascade()._stage_timeout(0.3, 0.100, now, now + 0.100, now=now) == pytest.approx(0.030, abs=1e-9)


def test_a_quick_stage_leaves_its_unused_share_to_the_next() -> None:
    now = 1000.0
    # Features answered in 1 ms of their 3: the filter may use its 2 ms plus the 2 ms left over.
    timeout = _cascade()._stage_timeout(0.5, 0.010, now - 0.001, now + 0.009, now=now)
    assert timeout == pytest.approx(0.004, abs=1e-9)


def test_never_past_the_deadline_and_never_a_useless_sliver() -> None:
    now = 1000.0
    # Queued for 8 ms of 10: the last stage gets what is left, not its cumulative mark.
    assert _cascade()._stage_timeout(0.95, 0.010, now, now + 0.002, now=now) == pytest.approx(0.002, abs=1e-9)
    with pytest.raises(StageError, match="budget_exhausted"):
        _cascade()._stage_timeout(0.95, 0.010, now, now + 0.00005, now=now)
