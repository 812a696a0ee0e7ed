"""The whole graph on real parts: gateway, feature service on Redis, filter, Triton ensemble, over gRPC."""

from __future__ import annotations

import asyncio
import math
import time

import grpc
import numpy as np
import pytest
from google.protobuf.timestamp_pb2 import Timestamp
from google.rpc import code_pb2, error_details_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from grpc_status import rpc_status

from scoring.v1 import gateway_pb2, types_pb2

pytestmark = pytest.mark.integration

NOW_S = int(time.time())


def tx(txid: str = "t-1", *, customer: str = "c-1", terminal: str = "m-1", amount: float = 42.5,
       seconds: int | None = 1_530_000_000, nanos: int = 0) -> types_pb2.Transaction:
    message = types_pb2.Transaction(transaction_id=txid, customer_id=customer, terminal_id=terminal, amount=amount)
    if seconds is not None:
        message.timestamp.CopyFrom(Timestamp(seconds=seconds, nanos=nanos))
    return message


async def test_score_returns_a_score_in_unit_interval_from_the_deciding_stage(gateway) -> None:
    response = await gateway.Score(gateway_pb2.ScoreRequest(transaction=tx("unary-1")), timeout=10)
    assert response.transaction_id == "unary-1"
    assert 0.0 <= response.score <= 1.0
    assert response.stage in (types_pb2.STAGE_FILTER, types_pb2.STAGE_ENSEMBLE)
    assert not response.degraded, response.degraded_reason
    assert response.model_version.split(":")[0] in ("filter", "fraud_ensemble")
    assert 0.0 <= response.filter_score <= 1.0


async def test_stream_of_1000_gets_exactly_1000_answers_with_the_right_ids(gateway) -> None:
    rng = np.random.default_rng(3)
    sent = [
        tx(f"s-{i}", customer=f"sc-{i % 50}", terminal=f"st-{i % 80}",
           amount=float(rng.choice([rng.gamma(2, 25), rng.uniform(220, 900)], p=[0.8, 0.2])),
           seconds=1_530_000_000 + 37 * i)
        for i in range(1000)
    ]

    async def requests():
        for t in sent:
            yield gateway_pb2.ScoreRequest(transaction=t)

    answers = [r async for r in gateway.ScoreStream(requests(), timeout=60)]
    ids = [a.transaction_id for a in answers]
    assert len(answers) == 1000
    assert sorted(ids) == sorted(t.transaction_id for t in sent)
    assert all(not a.HasField("error") for a in answers)
    assert all(0.0 <= a.score <= 1.0 for a in answers)
    stages = {a.stage for a in answers}
    # The filter's trained threshold passes a share of events on: the ensemble decides some of them.
    assert types_pb2.STAGE_ENSEMBLE in stages, "no event reached the Triton ensemble"
    assert types_pb2.STAGE_FILTER in stages
    ensemble = [a for a in answers if a.stage == types_pb2.STAGE_ENSEMBLE]
    assert {a.model_version for a in ensemble} == {"fraud_ensemble_r2:2"}
    # Every answer names the release that scored it: here the first release, made from the training output.
    assert len({a.release for a in answers}) == 1 and answers[0].release.startswith("fraud-")


BAD_INPUTS = [
    (tx(""), "transaction.transaction_id"),
    (tx(customer=""), "transaction.customer_id"),
    (tx(terminal=""), "transaction.terminal_id"),
    (tx(amount=math.nan), "transaction.amount"),
    (tx(amount=math.inf), "transaction.amount"),
    (tx(amount=-0.01), "transaction.amount"),
    (tx(seconds=None), "transaction.timestamp"),
    (tx(seconds=-1), "transaction.timestamp"),
    (tx(seconds=NOW_S + 2 * 86_400), "transaction.timestamp"),
]


@pytest.mark.parametrize(("transaction", "field"), BAD_INPUTS, ids=[f for _, f in BAD_INPUTS])
async def test_score_refuses_bad_input_with_invalid_argument_naming_the_field(gateway, transaction, field) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await gateway.Score(gateway_pb2.ScoreRequest(transaction=transaction), timeout=10)
    error = caught.value
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert field in error.details()
    status = rpc_status.from_call(error)
    assert status is not None and status.code == code_pb2.INVALID_ARGUMENT
    violations = error_details_pb2.BadRequest()
    assert status.details[0].Unpack(violations)
    assert violations.field_violations[0].field == field


async def test_score_refuses_a_request_without_transaction(gateway) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await gateway.Score(gateway_pb2.ScoreRequest(), timeout=10)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "transaction" in caught.value.details()


async def test_historical_and_near_future_timestamps_are_scored(gateway) -> None:
    for i, seconds in enumerate([86_400 * 365 * 5, NOW_S - 86_400 * 3000, NOW_S + 3600]):
        response = await gateway.Score(gateway_pb2.ScoreRequest(transaction=tx(f"old-{i}", seconds=seconds)))
        assert 0.0 <= response.score <= 1.0


async def test_stream_answers_bad_events_with_their_error_and_scores_the_others(gateway) -> None:
    good = [tx(f"mix-{i}", seconds=1_530_000_000 + i) for i in range(20)]
    bad = [t for t, _ in BAD_INPUTS]
    bad[0] = tx("", amount=1.0)
    for i, t in enumerate(bad):
        if t.transaction_id:
            t.transaction_id = f"bad-{i}"
    order = [x for pair in zip(good, bad + [None] * (len(good) - len(bad)), strict=True) for x in pair if x]

    async def requests():
        for t in order:
            yield gateway_pb2.ScoreRequest(transaction=t)

    answers = [r async for r in gateway.ScoreStream(requests(), timeout=30)]
    assert len(answers) == len(order)
    errors = [a for a in answers if a.HasField("error")]
    scored = [a for a in answers if not a.HasField("error")]
    assert sorted(a.transaction_id for a in scored) == sorted(t.transaction_id for t in good)
    assert len(errors) == len(bad)
    assert {e.error.field for e in errors} == {f for _, f in BAD_INPUTS}
    assert all(e.error.code == code_pb2.INVALID_ARGUMENT for e in errors)


async def test_batch_stream_answers_each_batch_in_order_with_per_event_errors(gateway) -> None:
    batches = [
        gateway_pb2.ScoreBatchRequest(transactions=[tx(f"b0-{i}", seconds=1_530_000_000 + i) for i in range(64)]),
        gateway_pb2.ScoreBatchRequest(),
        gateway_pb2.ScoreBatchRequest(transactions=[tx("b2-0"), tx("b2-1", amount=-5), tx("b2-2")]),
        gateway_pb2.ScoreBatchRequest(transactions=[tx(f"b3-{i}") for i in range(4097)]),
    ]

    async def requests():
        for b in batches:
            yield b

    replies = [r async for r in gateway.ScoreBatchStream(requests(), timeout=60)]
    assert len(replies) == 4
    assert [r.transaction_id for r in replies[0].responses] == [f"b0-{i}" for i in range(64)]
    assert all(not r.HasField("error") for r in replies[0].responses)
    assert replies[1].responses[0].error.field == "transactions"
    assert [r.transaction_id for r in replies[2].responses] == ["b2-0", "b2-1", "b2-2"]
    assert replies[2].responses[1].error.field == "transactions[1].amount"
    assert not replies[2].responses[0].HasField("error") and not replies[2].responses[2].HasField("error")
    assert len(replies[3].responses) == 4097
    assert all(r.error.field == "transactions" for r in replies[3].responses)


async def test_every_service_reports_serving_and_gateway_lists_its_api(stack) -> None:
    for name, address in stack.addresses.items():
        async with grpc.aio.insecure_channel(address) as channel:
            reply = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5)
            assert reply.status == health_pb2.HealthCheckResponse.SERVING, name
    async with grpc.aio.insecure_channel(stack.gateway_address) as channel:
        stub = reflection_pb2_grpc.ServerReflectionStub(channel)

        async def ask():
            yield reflection_pb2.ServerReflectionRequest(list_services="")

        async for reply in stub.ServerReflectionInfo(ask()):
            names = {s.name for s in reply.list_services_response.service}
            assert "scoring.v1.Gateway" in names
            assert "grpc.health.v1.Health" in names
            break


async def test_concurrent_unary_calls_are_all_answered(gateway) -> None:
    calls = [gateway.Score(gateway_pb2.ScoreRequest(transaction=tx(f"c-{i}", seconds=1_530_000_000 + i)))
             for i in range(200)]
    answers = await asyncio.gather(*calls)
    assert sorted(a.transaction_id for a in answers) == sorted(f"c-{i}" for i in range(200))
