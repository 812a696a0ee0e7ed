"""No input can poison state or answers: a stream mixing hostile values with normal events gets, for each event, a
finite score in [0, 1] or INVALID_ARGUMENT naming a field, and the normal events score exactly as they do when
streamed alone into a fresh state."""

from __future__ import annotations

import math
import random

import grpc
import pytest
from google.protobuf.timestamp_pb2 import Timestamp

from scoring.v1 import gateway_pb2, types_pb2

pytestmark = pytest.mark.integration

NORMAL = 300
T0 = 1_700_000_000
FIELDS = {"transaction_id", "customer_id", "terminal_id", "amount", "timestamp"}


def _normal(run: str) -> list[types_pb2.Transaction]:
    rng = random.Random(11)
    out = []
    for i in range(NORMAL):
        tx = types_pb2.Transaction(
            transaction_id=f"{run}-tx-{i}", customer_id=f"{run}-C{rng.randrange(25)}",
            terminal_id=f"{run}-T{rng.randrange(40)}", amount=round(rng.lognormvariate(3.5, 0.8), 2),
        )
        tx.timestamp.CopyFrom(Timestamp(seconds=T0 + 60 * i))
        out.append(tx)
    return out


def _hostile(rng: random.Random, n: int) -> types_pb2.Transaction:
    """One event with one or more hostile values, on entities of its own (a valid odd one is folded there)."""
    amount = rng.choice([1e308, math.inf, -math.inf, math.nan, -0.0, 5e-324, 1e-300, -1e-9, 1_000_000.5,
                         999_999.99, 0.0, 42.0])
    seconds = rng.choice([T0, 0, -1, -(2**62), 2**62, 946_684_799, 946_684_800, T0 + 3 * 86_400, 4_102_444_800])
    nanos = rng.choice([0, 999_999_999, 1_000_000_000, -1])
    txid = rng.choice([f"evil-tx-{n}", "", "x" * 300, f"evil\x00{n}", f"évil-{n}-✓", f"evil {n}", f"\u202eevil{n}"])
    customer = rng.choice(["evil-C1", "", "\n", "C" * 257, "évil-C2"])
    tx = types_pb2.Transaction(transaction_id=txid, customer_id=customer, terminal_id=f"evil-T{n % 3}", amount=amount)
    if rng.random() < 0.9:
        tx.timestamp.seconds, tx.timestamp.nanos = seconds, nanos
    return tx


async def _stream(gateway, transactions: list[types_pb2.Transaction]) -> list[types_pb2.ScoreResponse]:
    call = gateway.ScoreStream(iter(gateway_pb2.ScoreRequest(transaction=t) for t in transactions), timeout=120)
    return [r async for r in call]


async def test_hostile_values_are_refused_by_field_and_never_change_a_normal_events_score(gateway) -> None:
    rng = random.Random(5)
    mixed: list[types_pb2.Transaction] = []
    for i, tx in enumerate(_normal("mix")):
        mixed.append(tx)
        mixed.extend(_hostile(rng, 3 * i + k) for k in range(3))
    responses = await _stream(gateway, mixed)
    assert len(responses) == len(mixed), "every event, hostile or not, gets exactly one answer"

    refused = 0
    for r in responses:
        if r.HasField("error"):
            assert r.error.code == grpc.StatusCode.INVALID_ARGUMENT.value[0], r
            assert r.error.field.rsplit(".", 1)[-1] in FIELDS, r.error.field
            refused += 1
        else:
            assert math.isfinite(r.score) and 0.0 <= r.score <= 1.0, r
            assert math.isfinite(r.filter_score)
    assert refused > NORMAL, "most hostile events carry a value that must be refused"

    mixed_scores = {r.transaction_id.removeprefix("mix-"): r for r in responses if r.transaction_id.startswith("mix-")}
    alone = {r.transaction_id.removeprefix("solo-"): r for r in await _stream(gateway, _normal("solo"))}
    assert len(mixed_scores) == len(alone) == NORMAL
    for key, solo in alone.items():
        mixed_answer = mixed_scores[key]
        assert not solo.degraded and not mixed_answer.degraded, (solo, mixed_answer)
        # A healthy filter is always the one used, never the gateway's last resort.
        assert not solo.model_version.startswith("filter_fallback")
        assert mixed_answer.stage == solo.stage
        assert mixed_answer.score == pytest.approx(solo.score, rel=1e-5, abs=1e-7), key


async def test_a_unary_call_with_a_huge_amount_names_the_field(gateway) -> None:
    tx = _normal("huge")[0]
    tx.amount = 1e308
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await gateway.Score(gateway_pb2.ScoreRequest(transaction=tx), timeout=10)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "transaction.amount" in (caught.value.details() or "")
