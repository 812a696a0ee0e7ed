"""The market scenario (ticks) on the real stack: ticks scored beside transactions, feed hygiene over gRPC, and the
parity of the feature service's per-symbol fold with the offline computation."""

from __future__ import annotations

import itertools

import grpc
import numpy as np
import pytest
from google.protobuf.timestamp_pb2 import Timestamp

from scoring.scenarios.market import features as MF
from scoring.scenarios.market.simulator import MarketConfig, simulate, with_feed_faults
from scoring.v1 import features_pb2, features_pb2_grpc, gateway_pb2, types_pb2

pytestmark = pytest.mark.integration
_symbols = itertools.count()
T0_US = 1_704_206_400_000_000  # 2024-01-02 14:40 UTC


def fresh_symbol() -> str:
    """State persists in the stack's Redis for the session: each test takes symbols no other test folds."""
    return f"T{next(_symbols):04d}"


def tick(symbol: str, sequence: int, *, tick_id: str | None = None, bid: float = 100.0, ask: float = 100.01,
         bid_size: float = 500.0, ask_size: float = 400.0, side: int = 0, last_price: float = 0.0,
         last_size: float = 0.0) -> types_pb2.MarketTick:
    ts = Timestamp()
    ts.FromMicroseconds(T0_US + sequence * 10_000)
    return types_pb2.MarketTick(
        tick_id=tick_id or f"{symbol}-{sequence}", symbol=symbol, sequence=sequence, timestamp=ts, bid_price=bid,
        bid_size=bid_size, ask_price=ask, ask_size=ask_size, last_price=last_price, last_size=last_size,
        last_side=side)


def request(t: types_pb2.MarketTick) -> gateway_pb2.ScoreRequest:
    return gateway_pb2.ScoreRequest(tick=t)


async def test_a_tick_gets_a_signal_class_probabilities_and_its_id(gateway) -> None:
    symbol = fresh_symbol()
    for seq in range(1, 5):
        answer = await gateway.Score(request(tick(symbol, seq)))
    assert answer.tick_id == f"{symbol}-4" and not answer.transaction_id
    assert answer.signal in (types_pb2.SIGNAL_DOWN, types_pb2.SIGNAL_FLAT, types_pb2.SIGNAL_UP)
    probs = (answer.p_down, answer.p_flat, answer.p_up)
    assert abs(sum(probs) - 1.0) < 1e-4 and min(probs) >= 0
    assert answer.score == pytest.approx(probs[answer.signal - 1], abs=1e-6)
    assert answer.stage in (types_pb2.STAGE_FILTER, types_pb2.STAGE_ENSEMBLE)
    assert not answer.degraded, answer.degraded_reason
    assert answer.model_version.startswith(("market_filter:", "market_ensemble:"))


async def test_a_duplicate_tick_is_answered_once_with_the_first_answer(gateway) -> None:
    symbol = fresh_symbol()
    for seq in (1, 2):
        await gateway.Score(request(tick(symbol, seq)))
    first = await gateway.Score(request(tick(symbol, 3, bid_size=900.0)))
    same_id = await gateway.Score(request(tick(symbol, 3, bid_size=900.0)))
    same_sequence = await gateway.Score(request(tick(symbol, 3, tick_id="another-id", bid_size=900.0)))
    for again in (same_id, same_sequence):
        assert (again.p_down, again.p_flat, again.p_up, again.signal) == (
            first.p_down, first.p_flat, first.p_up, first.signal)
    # The ring folded the tick once: the next tick is in sequence (no gap), and its features follow tick 3.
    after = await gateway.Score(request(tick(symbol, 4)))
    assert "sequence_gap" not in after.degraded_reason


async def test_a_gap_is_scored_and_flagged_and_an_older_sequence_is_refused(gateway) -> None:
    symbol = fresh_symbol()
    for seq in (1, 2, 3):
        await gateway.Score(request(tick(symbol, seq)))
    gap = await gateway.Score(request(tick(symbol, 7)))
    assert gap.degraded and "sequence_gap" in gap.degraded_reason
    assert gap.signal != types_pb2.SIGNAL_UNSPECIFIED
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await gateway.Score(request(tick(symbol, 5)))
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "tick.sequence" in refused.value.details()
    # In sequence again after the gap: nothing flagged.
    assert "sequence_gap" not in (await gateway.Score(request(tick(symbol, 8)))).degraded_reason


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"bid": 100.02, "ask": 100.01}, "tick.bid_price"),
        ({"bid": 0.0}, "tick.bid_price"),
        ({"ask_size": -1.0}, "tick.ask_size"),
        ({"bid_size": float("nan")}, "tick.bid_size"),
        ({"ask": float("inf")}, "tick.ask_price"),
        ({"side": 1, "last_price": 100.01, "last_size": 0.0}, "tick.last_size"),
    ],
)
async def test_a_bad_tick_gets_invalid_argument_naming_the_field(gateway, fields, field) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await gateway.Score(request(tick(fresh_symbol(), 1, **fields)))
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert field in refused.value.details()


async def test_a_locked_book_is_accepted(gateway) -> None:
    answer = await gateway.Score(request(tick(fresh_symbol(), 1, bid=100.0, ask=100.0)))
    assert answer.signal != types_pb2.SIGNAL_UNSPECIFIED and not answer.HasField("error")


async def test_one_stream_of_mixed_events_is_answered_once_each(gateway) -> None:
    symbol = fresh_symbol()
    ts = Timestamp()
    ts.FromMicroseconds(T0_US)
    events = []
    for i in range(60):
        if i % 3 == 0:
            events.append(gateway_pb2.ScoreRequest(transaction=types_pb2.Transaction(
                transaction_id=f"mixed-tx-{i}", timestamp=ts, customer_id="mixed-c", terminal_id="mixed-t",
                amount=12.5)))
        else:
            events.append(request(tick(symbol, i + 1)))

    async def batches():
        for lo in range(0, len(events), 20):
            yield gateway_pb2.ScoreBatchRequest(events=events[lo : lo + 20])

    answers = [r async for batch in gateway.ScoreBatchStream(batches()) for r in batch.responses]
    assert len(answers) == len(events)
    for sent, answer in zip(events, answers, strict=True):
        assert not answer.HasField("error"), answer.error
        if sent.WhichOneof("event") == "transaction":
            assert answer.transaction_id == sent.transaction.transaction_id and not answer.tick_id
        else:
            assert answer.tick_id == sent.tick.tick_id and answer.signal != types_pb2.SIGNAL_UNSPECIFIED

    # Ticks of a symbol sent one a message on ScoreStream: each answered once, by its id.
    stream_symbol = fresh_symbol()
    sent_ids = [f"{stream_symbol}-{s}" for s in range(1, 41)]

    async def one_by_one():
        for s in range(1, 41):
            yield request(tick(stream_symbol, s))

    got = [r.tick_id async for r in gateway.ScoreStream(one_by_one())]
    assert sorted(got) == sorted(sent_ids)


async def test_the_feature_service_folds_ticks_as_the_offline_computation_does(feature_address) -> None:
    """Parity: a faulty feed (duplicates, gaps, reorders) through the running feature service, against
    `features.compute_offline` over the same rows, on one Redis and on a Redis Cluster."""
    frame = simulate(MarketConfig(n_symbols=12, ticks_per_symbol=300, seed=int(feature_address.rsplit(":")[-1])))
    frame["symbol"] = "P" + feature_address.rsplit(":")[-1] + frame["symbol"]
    feed = with_feed_faults(frame, duplicates=0.03, gaps=0.03, reorders=0.03, seed=3)
    expected, expected_seq, status = MF.compute_offline(feed)
    raw = MF.raw_matrix(feed)
    got, got_seq, got_status = [], [], []
    async with grpc.aio.insecure_channel(feature_address) as channel:
        stub = features_pb2_grpc.FeatureServiceStub(channel)
        for lo in range(0, len(feed), 64):
            part = raw[:, lo : lo + 64]
            columns = features_pb2.TickColumns(
                tick_id=feed["tick_id"].astype(str).tolist()[lo : lo + 64],
                symbol=feed["symbol"].tolist()[lo : lo + 64],
                sequence=part[MF.RAW["sequence"]].astype(np.int64).tolist(),
                event_time_us=part[MF.RAW["time_us"]].astype(np.int64).tolist(),
                **{c: part[MF.RAW[c]].tolist() for c in ("bid_price", "bid_size", "ask_price", "ask_size",
                                                         "last_price", "last_size")},
                last_side=part[MF.RAW["last_side"]].astype(np.int32).tolist(),
            )
            reply = await stub.UpdateAndGet(features_pb2.FeatureRequest(ticks=columns), timeout=30)
            got.append(np.frombuffer(reply.features, "<f4").reshape(reply.rows, -1))
            got_seq.append(np.frombuffer(reply.sequences, "<f4").reshape(reply.rows, reply.seq_len, -1))
            got_status.append(np.asarray(reply.fold_status))
    got_status_all = np.concatenate(got_status)
    assert (got_status_all == status).all()
    assert set(np.unique(status)) == {MF.FOLDED, MF.GAP, MF.DUPLICATE, MF.STALE}
    keep = status != MF.STALE
    np.testing.assert_allclose(np.concatenate(got)[keep], expected[keep], rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(np.concatenate(got_seq)[keep], expected_seq[keep], rtol=1e-6, atol=1e-6)


async def test_the_live_cascade_gives_the_offline_answer_tick_for_tick(stack, artifacts) -> None:
    """The live evaluation on a reduced size: the test part's first ticks through the gateway give the offline
    cascade's class probabilities (within 1e-4) and signals, every one in full."""
    from scoring.scenarios.market.evaluate_live import evaluate_live

    result = await evaluate_live(artifacts, stack.gateway_address, max_ticks=2500, budget_ms=3000)
    assert result["degraded_or_errors"] == 0, result["problems"]
    assert result["max_probability_difference"] <= 1e-4
    assert result["signals_differing"] == 0
    assert all(abs(v) <= 1e-9 for v in result["live_minus_offline"].values())


async def test_the_bench_s_tick_step_answers_every_tick_and_reports_its_figures(stack) -> None:
    """`make bench`'s tick mode against the real stack, one short low-rate step: every tick answered, the figures
    it prints are there and in range (their values are the machine's and are judged in the bench, not here)."""
    from scoring.bench.ticks import format_tick_sweep, format_window_ab, tick_sweep, window_rebuild_ab

    sweep = await tick_sweep(stack.gateway_address, "bench-test", rates=(100.0,), duration_s=1.0)
    (step,) = sweep["steps"]
    assert step["ticks"] == step["answered"] == 100 and step["errors"] == 0 and step["rpc_error"] == ""
    assert 0 < step["p50_ms"] <= step["p99_ms"] and 0.0 <= step["full_share"] <= 1.0
    assert "ticks (market, ScoreBatchStream" in format_tick_sweep(sweep)
    ab = window_rebuild_ab(sizes=(8,), repeat=2)
    assert ab["8"]["by_tick"] > 0 and ab["8"]["arrays"] > 0 and "A/B" in format_window_ab(ab)
