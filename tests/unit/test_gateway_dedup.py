"""The gateway's recent-answer cache: a re-sent id is answered once, bounded in time and size."""

from __future__ import annotations

import asyncio

import pytest

from scoring.scenarios.fraud.validation import Event, FieldError
from services.gateway.batcher import Outcome, Overloaded
from services.gateway.dedup import RecentAnswers

pytestmark = pytest.mark.unit

OK = Outcome(score=0.25, filter_score=0.2, stage=2, degraded_reason="", model_version="m:1", error="")
FAILED = Outcome(score=0.0, filter_score=0.0, stage=3, degraded_reason="", model_version="", error="x+y")


class FakeBatcher:
    def __init__(self) -> None:
        self.submitted: list[str] = []
        self.futures: list[asyncio.Future[Outcome]] = []
        self.overloaded = False

    def submit(self, event: Event, deadline: float) -> asyncio.Future[Outcome]:
        if self.overloaded:
            raise Overloaded("full")
        self.submitted.append(event.transaction_id)
        future: asyncio.Future[Outcome] = asyncio.get_running_loop().create_future()
        self.futures.append(future)
        return future


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def _event(txid: str, amount: float = 10.0) -> Event:
    return Event(transaction_id=txid, event_time_us=1, customer_id="C1", terminal_id="T1", amount=amount)


async def test_a_resent_id_gets_the_known_answer_without_a_second_scoring() -> None:
    inner = FakeBatcher()
    cache = RecentAnswers(inner, window_s=30, max_events=100)
    first = cache.submit(_event("a"), 1.0)
    inner.futures[0].set_result(OK)
    again = cache.submit(_event("a"), 2.0)
    assert again.done() and again.result() == OK == await first
    assert inner.submitted == ["a"] and cache.hits == 1


async def test_an_id_in_flight_is_joined() -> None:
    inner = FakeBatcher()
    cache = RecentAnswers(inner, window_s=30, max_events=100)
    first = cache.submit(_event("a"), 1.0)
    joined = cache.submit(_event("a"), 1.0)
    assert joined is first and not joined.done()
    inner.futures[0].set_result(OK)
    assert await joined == OK
    assert inner.submitted == ["a"]


async def test_an_id_reused_for_another_event_is_refused_on_its_field() -> None:
    cache = RecentAnswers(FakeBatcher(), window_s=30, max_events=100)
    cache.submit(_event("a", amount=10.0), 1.0)
    with pytest.raises(FieldError) as caught:
        cache.submit(_event("a", amount=11.0), 1.0)
    assert caught.value.field == "transaction_id"


async def test_error_answers_are_not_kept_so_a_retry_is_scored_again() -> None:
    inner = FakeBatcher()
    cache = RecentAnswers(inner, window_s=30, max_events=100)
    cache.submit(_event("a"), 1.0)
    inner.futures[0].set_result(FAILED)
    await asyncio.sleep(0)  # done callbacks run on the next loop turn
    retry = cache.submit(_event("a"), 2.0)
    assert inner.submitted == ["a", "a"] and retry is inner.futures[1]


async def test_overload_keeps_nothing() -> None:
    inner = FakeBatcher()
    cache = RecentAnswers(inner, window_s=30, max_events=100)
    inner.overloaded = True
    with pytest.raises(Overloaded):
        cache.submit(_event("a"), 1.0)
    inner.overloaded = False
    cache.submit(_event("a"), 1.0)
    assert inner.submitted == ["a"]


async def test_entries_expire_after_the_window() -> None:
    inner, clock = FakeBatcher(), Clock()
    cache = RecentAnswers(inner, window_s=30, max_events=100, clock=clock)
    cache.submit(_event("a"), 1.0)
    inner.futures[0].set_result(OK)
    clock.now += 31
    cache.submit(_event("a"), 1.0)
    assert inner.submitted == ["a", "a"]


async def test_memory_is_bounded_by_max_events_oldest_first() -> None:
    inner = FakeBatcher()
    cache = RecentAnswers(inner, window_s=30, max_events=3)
    for k in range(10):
        cache.submit(_event(f"e{k}"), 1.0)
        inner.futures[-1].set_result(OK)
    assert len(cache) == 3
    cache.submit(_event("e9"), 1.0)  # still known
    cache.submit(_event("e0"), 1.0)  # forgotten: scored again
    assert inner.submitted.count("e9") == 1 and inner.submitted.count("e0") == 2


def test_a_cache_needs_a_window_and_a_size() -> None:
    with pytest.raises(ValueError):
        RecentAnswers(FakeBatcher(), window_s=0, max_events=10)
