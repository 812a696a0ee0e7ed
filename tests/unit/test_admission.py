"""Admission control: the limit follows measured lateness, waiters are served in order, and no room is lost."""

from __future__ import annotations

import asyncio

import pytest

from services.gateway.admission import AdmissionLimit

pytestmark = pytest.mark.unit


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def _limit(**kw: object) -> tuple[AdmissionLimit, Clock]:
    clock = Clock()
    params: dict[str, object] = {"initial": 10, "minimum": 2, "maximum": 100, "increase": 2.0, "decrease": 0.5}
    params.update(kw)
    return AdmissionLimit(clock=clock, **params), clock  # type: ignore[arg-type]


def test_past_the_limit_nothing_more_is_admitted_until_room_frees() -> None:
    limit, _ = _limit()
    assert all(limit.try_acquire() for _ in range(10))
    assert not limit.try_acquire()
    limit.release()
    assert limit.try_acquire()
    assert limit.inside == 10


def test_an_empty_gateway_admits_a_request_larger_than_the_limit() -> None:
    limit, _ = _limit()
    assert limit.try_acquire(50)
    assert not limit.try_acquire(1)


def test_a_late_batch_cuts_the_limit_once_per_round() -> None:
    limit, clock = _limit()
    limit.observe(admitted_at=clock.now - 0.01, late=True, events=5)
    assert limit.limit == 5
    # A batch admitted before that cut was already inside: it says nothing about the new limit.
    clock.now += 0.001
    limit.observe(admitted_at=clock.now - 0.01, late=True, events=5)
    assert limit.limit == 5
    # One admitted after it does.
    limit.observe(admitted_at=clock.now, late=True, events=5)
    assert limit.limit == 2.5
    limit.observe(admitted_at=clock.now + 1, late=True, events=5)
    assert limit.limit == 2  # never below the minimum


def test_answers_in_time_grow_the_limit_only_while_it_is_in_use() -> None:
    limit, clock = _limit()
    limit.try_acquire()
    limit.observe(admitted_at=clock.now, late=False, events=10)
    assert limit.limit == 10  # one event inside of ten allowed: no evidence that more would be served in time
    for _ in range(8):
        limit.try_acquire()
    limit.observe(admitted_at=clock.now, late=False, events=10)
    assert limit.limit == pytest.approx(12.0)  # about `increase` events per limit's worth of answers


def test_the_limit_never_passes_its_maximum() -> None:
    limit, clock = _limit(maximum=11)
    for _ in range(10):
        limit.try_acquire()
    for _ in range(20):
        limit.observe(admitted_at=clock.now, late=False, events=10)
    assert limit.limit == 11


def test_a_late_answer_is_one_past_the_fraction_of_its_own_budget() -> None:
    limit, _ = _limit(latency_fraction=0.8)
    assert not limit.is_late(0.008, 0.010)
    assert limit.is_late(0.0081, 0.010)
    assert not limit.is_late(0.5, 1.0)  # a backfill's long budget is judged by its own budget


async def test_waiting_readers_are_admitted_in_order_as_room_frees() -> None:
    limit, _ = _limit(initial=2, minimum=1)
    assert limit.try_acquire(2)
    order: list[str] = []

    async def reader(name: str, n: int) -> None:
        await limit.acquire(n)
        order.append(name)

    first = asyncio.create_task(reader("first", 2))
    second = asyncio.create_task(reader("second", 1))
    await asyncio.sleep(0)
    # A newcomer does not overtake the waiters, even for one event that would fit.
    limit.release(1)
    assert not limit.try_acquire(1)
    await asyncio.sleep(0)
    assert order == []
    limit.release(1)
    await asyncio.sleep(0)
    assert order == ["first"]
    limit.release(2)
    await asyncio.wait_for(asyncio.gather(first, second), 1)
    assert order == ["first", "second"] and limit.inside == 1


async def test_a_cancelled_waiter_leaves_no_room_taken() -> None:
    limit, _ = _limit(initial=1, minimum=1)
    assert limit.try_acquire()
    waiter = asyncio.create_task(limit.acquire())
    await asyncio.sleep(0)
    waiter.cancel()
    await asyncio.gather(waiter, return_exceptions=True)
    limit.release()
    assert limit.inside == 0
    assert limit.try_acquire()


def test_quick_answers_without_a_stage_do_not_grow_the_limit() -> None:
    limit, clock = _limit()
    for _ in range(10):
        limit.try_acquire()
    limit.observe(admitted_at=clock.now, late=False, events=10, full=False)
    assert limit.limit == 10
