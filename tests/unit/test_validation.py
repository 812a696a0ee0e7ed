from __future__ import annotations

import math

import pytest
from google.protobuf.timestamp_pb2 import Timestamp

from scoring.v1 import types_pb2
from services.gateway.validation import FieldError, validate

pytestmark = pytest.mark.unit
NOW = 1_800_000_000.0


def make(**overrides: object) -> types_pb2.Transaction:
    fields = {"transaction_id": "t", "customer_id": "c", "terminal_id": "m", "amount": 1.5}
    fields.update(overrides)
    seconds = fields.pop("seconds", 1_500_000_000)
    t = types_pb2.Transaction(**fields)
    if seconds is not None:
        t.timestamp.CopyFrom(Timestamp(seconds=seconds, nanos=250_000))
    return t


def test_valid_transaction_becomes_an_event_in_microseconds() -> None:
    event = validate(make(), now_s=NOW)
    assert event.event_time_us == 1_500_000_000_000_250
    assert (event.transaction_id, event.customer_id, event.terminal_id, event.amount) == ("t", "c", "m", 1.5)


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"transaction_id": ""}, "transaction.transaction_id"),
        ({"transaction_id": "x" * 257}, "transaction.transaction_id"),
        ({"customer_id": "a\nb"}, "transaction.customer_id"),
        ({"terminal_id": ""}, "transaction.terminal_id"),
        ({"amount": math.nan}, "transaction.amount"),
        ({"amount": -math.inf}, "transaction.amount"),
        ({"amount": -1.0}, "transaction.amount"),
        ({"seconds": None}, "transaction.timestamp"),
        ({"seconds": -10}, "transaction.timestamp"),
        ({"seconds": int(NOW) + 86_401}, "transaction.timestamp"),
    ],
)
def test_bad_fields_are_named(overrides: dict[str, object], field: str) -> None:
    with pytest.raises(FieldError) as caught:
        validate(make(**overrides), now_s=NOW)
    assert caught.value.field == field


def test_zero_amount_and_a_day_ahead_are_accepted() -> None:
    validate(make(amount=0.0, seconds=int(NOW) + 86_000), now_s=NOW)


def test_prefix_names_the_position_in_a_batch() -> None:
    with pytest.raises(FieldError) as caught:
        validate(make(amount=-1.0), prefix="transactions[3]", now_s=NOW)
    assert caught.value.field == "transactions[3].amount"
