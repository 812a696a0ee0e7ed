from __future__ import annotations

import math

import pytest
from google.protobuf.timestamp_pb2 import Timestamp

from scoring.scenarios.fraud.validation import FieldError, validate
from scoring.v1 import types_pb2

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
        ({"amount": 1e308}, "transaction.amount"),
        ({"amount": 1_000_000.01}, "transaction.amount"),
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


def test_negative_zero_and_the_bounds_themselves_are_accepted_as_one_value() -> None:
    event = validate(make(amount=-0.0), now_s=NOW)
    assert event.amount == 0.0 and str(event.amount) == "0.0"
    validate(make(amount=1_000_000.0, seconds=0), now_s=NOW)


def test_limits_are_configurable() -> None:
    from scoring.scenarios.fraud.validation import Limits

    with pytest.raises(FieldError, match="GATEWAY_MAX_AMOUNT"):
        validate(make(amount=101.0), now_s=NOW, limits=Limits(max_amount=100.0))
    with pytest.raises(FieldError, match="GATEWAY_MIN_EVENT_TIME_S"):
        validate(make(seconds=946_684_799), now_s=NOW, limits=Limits(min_event_time_s=946_684_800))


@pytest.mark.parametrize("value", ["-1", "0", "abc", "nan", "inf", "", "1001"])
def test_a_malformed_or_excessive_budget_request_names_the_key(value: str) -> None:
    from services.gateway.budget import BUDGET_KEY, requested_budget_s

    with pytest.raises(FieldError) as caught:
        requested_budget_s([(BUDGET_KEY, value)], 0.010, 1.0)
    assert caught.value.field == "x-scoring-budget-ms"


def test_the_budget_is_the_one_asked_for_else_the_default() -> None:
    from services.gateway.budget import BUDGET_KEY, requested_budget_s

    assert requested_budget_s([("other", "5"), (BUDGET_KEY, "200")], 0.010, 1.0) == pytest.approx(0.2)
    assert requested_budget_s([(BUDGET_KEY, b"2.5")], 0.010, 1.0) == pytest.approx(0.0025)
    assert requested_budget_s(None, 0.010, 1.0) == 0.010


def test_a_client_deadline_shorter_than_the_budget_wins_and_a_longer_one_does_not() -> None:
    import time

    from services.gateway.budget import event_deadline

    now = time.monotonic()
    assert event_deadline(0.010, 2.0) - now == pytest.approx(0.010, abs=0.005)
    assert event_deadline(0.010, 0.004) - now == pytest.approx(0.004, abs=0.003)
    assert event_deadline(0.010, None) - now == pytest.approx(0.010, abs=0.005)


def test_columns_are_checked_row_by_row_with_the_messages_of_single_events() -> None:
    from scoring.scenarios.fraud.validation import validate_columns
    from scoring.v1 import gateway_pb2

    now_s = 1_700_000_000
    request = gateway_pb2.ColumnarScoreRequest(
        transaction_id=["ok", "", "neg", "nan", "old", "late", "big", "minus0"],
        event_time_us=[now_s * 10**6] * 4 + [-1, (now_s + 2 * 86_400) * 10**6, now_s * 10**6, now_s * 10**6],
        customer_id=["c"] * 8,
        terminal_id=["t"] * 8,
        amount=[1.0, 1.0, -1.0, float("nan"), 1.0, 1.0, 2e6, -0.0],
    )
    valid = validate_columns(request, now_s=now_s)
    assert {i: e.field for i, e in valid.errors.items()} == {
        1: "transaction_id[1]", 2: "amount[2]", 3: "amount[3]", 4: "event_time_us[4]", 5: "event_time_us[5]",
        6: "amount[6]",
    }
    assert str(valid.errors[2]) == "amount[2]: must not be negative"
    assert valid.rows.tolist() == [0, 7] and valid.transaction_id == ["ok", "minus0"]
    assert str(valid.amount[1]) == "0.0"  # -0.0 becomes 0.0, as for a single event


def test_a_column_of_another_length_fails_every_row_naming_it() -> None:
    from scoring.scenarios.fraud.validation import validate_columns
    from scoring.v1 import gateway_pb2

    request = gateway_pb2.ColumnarScoreRequest(transaction_id=["a", "b"], event_time_us=[1, 2], customer_id=["c"],
                                               terminal_id=["t", "t"], amount=[1.0, 1.0])
    valid = validate_columns(request)
    assert {e.field for e in valid.errors.values()} == {"customer_id"} and set(valid.errors) == {0, 1}
    assert len(valid.rows) == 0
