"""ScoreColumnsStream, the columnar batch RPC, against the real stack: it answers exactly as ScoreBatchStream does
for the same events (bad rows included), and re-sent ids get their earlier answers across both paths."""

from __future__ import annotations

import uuid

import grpc
import pytest
from google.protobuf.timestamp_pb2 import Timestamp
from google.rpc import code_pb2

from scoring.replay import column_responses, columns
from scoring.scenarios.fraud import simulator
from scoring.v1 import gateway_pb2, gateway_pb2_grpc, types_pb2

pytestmark = pytest.mark.integration
BAD = {7: "amount", 19: "customer_id", 33: "timestamp"}


def events(prefix: str, n: int = 240) -> list[types_pb2.Transaction]:
    """A simulated day (customers with several events, so the features are not all empty), under `prefix`."""
    frame = simulator.simulate(simulator.SimulationConfig(n_customers=60, n_terminals=40, n_days=3, seed=5))
    out = []
    for row in frame.head(n).itertuples():
        time_us = int(row.TX_DATETIME.value // 1000)
        out.append(types_pb2.Transaction(
            transaction_id=f"{prefix}{row.TRANSACTION_ID}",
            timestamp=Timestamp(seconds=time_us // 1_000_000, nanos=(time_us % 1_000_000) * 1000),
            customer_id=f"{prefix}C{row.CUSTOMER_ID}", terminal_id=f"{prefix}T{row.TERMINAL_ID}",
            amount=float(row.TX_AMOUNT),
        ))
    for tx in out[::10]:
        tx.amount = 400.0  # large amounts are the simulator's first fraud pattern: the filter passes them on
    out[7].amount = -1.0
    out[19].customer_id = ""
    out[33].timestamp.seconds = 4_000_000_000
    return out


def comparable(response: types_pb2.ScoreResponse) -> tuple[object, ...]:
    return (round(response.score, 12), round(response.filter_score, 12), response.stage, response.degraded,
            response.degraded_reason, response.model_version, response.error.code)


async def test_columns_answer_exactly_as_score_batch_stream(stack) -> None:
    tag = uuid.uuid4().hex[:6]
    as_messages, as_columns = events(f"m{tag}-"), events(f"k{tag}-")
    async with grpc.aio.insecure_channel(stack.gateway_address) as channel:
        stub = gateway_pb2_grpc.GatewayStub(channel)

        async def batches():
            for lo in range(0, len(as_messages), 80):
                yield gateway_pb2.ScoreBatchRequest(transactions=as_messages[lo : lo + 80])

        requests = [columns(as_columns[lo : lo + 80]) for lo in range(0, len(as_columns), 80)]

        async def column_requests():
            for request in requests:
                yield request

        by_messages = [r for reply in [x async for x in stub.ScoreBatchStream(batches(), timeout=60)]
                       for r in reply.responses]
        replies = [x async for x in stub.ScoreColumnsStream(column_requests(), timeout=60)]
    by_columns = [r for request, reply in zip(requests, replies, strict=True) for r in column_responses(request, reply)]
    assert len(by_messages) == len(by_columns) == len(as_messages)
    assert [comparable(r) for r in by_columns] == [comparable(r) for r in by_messages]
    assert sum(r.stage == types_pb2.STAGE_ENSEMBLE for r in by_columns) > 0  # the heavy stage took part
    # Bad rows: the same refusal, the field named by column and row.
    for row, column in BAD.items():
        assert by_columns[row].error.code == code_pb2.INVALID_ARGUMENT
        expected = "event_time_us" if column == "timestamp" else column
        assert by_columns[row].error.field == f"{expected}[{row % 80}]"
        assert by_messages[row].error.field == f"transactions[{row % 80}].{column}"
    assert sum(1 for r in by_columns if r.error.code) == len(BAD)


async def test_re_sent_columns_get_their_first_answers_on_any_rpc(stack) -> None:
    tag = uuid.uuid4().hex[:6]
    txs = events(f"r{tag}-", 60)
    request = columns(txs)
    async with grpc.aio.insecure_channel(stack.gateway_address) as channel:
        stub = gateway_pb2_grpc.GatewayStub(channel)

        async def twice():
            yield request
            yield request

        first, second = [column_responses(request, reply) async for reply in  # type: ignore[misc]
                         stub.ScoreColumnsStream(twice(), timeout=60)]
        assert [comparable(r) for r in second] == [comparable(r) for r in first]
        # The same id on the unary path: the answer the columns got.
        unary = await stub.Score(gateway_pb2.ScoreRequest(transaction=txs[3]), timeout=30)
        assert comparable(unary) == comparable(first[3])
        # An id re-used for another event is refused, naming its row; the other rows are answered.
        reused = columns([txs[0], txs[1]])
        reused.amount[1] = txs[1].amount + 1.0
        (reply,) = [r async for r in stub.ScoreColumnsStream(iter_one(reused), timeout=30)]
        answers = column_responses(reused, reply)
        assert comparable(answers[0]) == comparable(first[0])
        assert answers[1].error.code == code_pb2.INVALID_ARGUMENT and answers[1].error.field == "transaction_id[1]"


async def test_a_malformed_columnar_request_fails_every_row_naming_the_column(stack) -> None:
    request = gateway_pb2.ColumnarScoreRequest(
        transaction_id=["a", "b"], event_time_us=[1_600_000_000_000_000], customer_id=["c", "c"],
        terminal_id=["t", "t"], amount=[1.0, 2.0],
    )
    async with grpc.aio.insecure_channel(stack.gateway_address) as channel:
        stub = gateway_pb2_grpc.GatewayStub(channel)
        (reply,) = [r async for r in stub.ScoreColumnsStream(iter_one(request), timeout=30)]
        (empty,) = [r async for r in stub.ScoreColumnsStream(iter_one(gateway_pb2.ColumnarScoreRequest()), timeout=30)]
    assert list(reply.error_rows) == [0, 1]
    assert {e.field for e in reply.errors} == {"event_time_us"}
    assert list(empty.error_rows) == [0] and empty.errors[0].code == code_pb2.INVALID_ARGUMENT


async def iter_one(request):
    yield request
