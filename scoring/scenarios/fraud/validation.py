"""Validation of client input at the edge: the one place where a field can be refused.

`validate` returns a plain `Event` or raises `FieldError` naming the field path, which the servicer turns into
INVALID_ARGUMENT (unary) or a per-event error response (streams); `validate_columns` does the same checks for a
columnar batch at once.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import numpy as np

from scoring.common.errors import MAX_ID_LENGTH, FieldError, check_id
from scoring.v1 import gateway_pb2, types_pb2

__all__ = ["MAX_ID_LENGTH", "FieldError", "Event", "Limits", "validate", "validate_columns"]

MAX_FUTURE_S = 86_400


@dataclass(frozen=True, slots=True)
class Limits:
    """The plausible range of each numeric field: outside it an event is refused, so no value can reach the
    entities' state or the models that would turn it into a non-finite or meaningless score."""

    # The simulated data's largest amount is about 2,000; real card payments above a million are not scored here.
    max_amount: float = 1_000_000.0
    # 1970-01-01: replaying history is normal use (market data goes back decades); a deployment may raise it.
    min_event_time_s: int = 0
    max_future_s: int = MAX_FUTURE_S


DEFAULT_LIMITS = Limits()


@dataclass(frozen=True, slots=True)
class Event:
    transaction_id: str
    event_time_us: int
    customer_id: str
    terminal_id: str
    amount: float


_check_id = check_id


def validate(
    tx: types_pb2.Transaction,
    prefix: str = "transaction",
    now_s: float | None = None,
    limits: Limits = DEFAULT_LIMITS,
) -> Event:
    _check_id(tx.transaction_id, f"{prefix}.transaction_id")
    _check_id(tx.customer_id, f"{prefix}.customer_id")
    _check_id(tx.terminal_id, f"{prefix}.terminal_id")
    if not math.isfinite(tx.amount):
        raise FieldError(f"{prefix}.amount", "must be finite")
    if tx.amount < 0:
        raise FieldError(f"{prefix}.amount", "must not be negative")
    if tx.amount > limits.max_amount:
        raise FieldError(f"{prefix}.amount", f"above the maximum of {limits.max_amount:g} (GATEWAY_MAX_AMOUNT)")
    if not tx.HasField("timestamp"):
        raise FieldError(f"{prefix}.timestamp", "is required (event time)")
    ts = tx.timestamp
    if ts.seconds < limits.min_event_time_s:
        raise FieldError(
            f"{prefix}.timestamp", f"is before {limits.min_event_time_s} s since the epoch (GATEWAY_MIN_EVENT_TIME_S)"
        )
    if not 0 <= ts.nanos < 1_000_000_000:
        raise FieldError(f"{prefix}.timestamp", "nanos out of range")
    now_s = time.time() if now_s is None else now_s
    if ts.seconds > now_s + limits.max_future_s:
        raise FieldError(f"{prefix}.timestamp", f"is more than {limits.max_future_s} s in the future")
    return Event(
        transaction_id=tx.transaction_id,
        event_time_us=ts.seconds * 1_000_000 + ts.nanos // 1000,
        customer_id=tx.customer_id,
        terminal_id=tx.terminal_id,
        amount=float(tx.amount) + 0.0,  # -0.0 becomes 0.0: one value, one state
    )


@dataclass(frozen=True)
class ValidColumns:
    """The rows of a columnar request that passed, as arrays, and the error of each row that did not."""

    rows: np.ndarray  # int64 indices of the valid rows, ascending
    transaction_id: list[str]
    event_time_us: np.ndarray  # int64
    customer_id: list[str]
    terminal_id: list[str]
    amount: np.ndarray  # float64
    errors: dict[int, FieldError]


_COLUMNS = ("transaction_id", "event_time_us", "customer_id", "terminal_id", "amount")


def validate_columns(
    request: gateway_pb2.ColumnarScoreRequest, now_s: float | None = None, limits: Limits = DEFAULT_LIMITS
) -> ValidColumns:
    """The checks of `validate`, per row of a columnar request (the numbers over arrays), with the same messages;
    a field is named by its column and row, `amount[3]`. A column of another length than transaction_id fails
    every row, naming that column."""
    n = len(request.transaction_id)
    errors: dict[int, FieldError] = {}
    for name in _COLUMNS[1:]:
        if len(getattr(request, name)) != n:
            error = FieldError(name, f"has {len(getattr(request, name))} values for {n} transaction ids")
            return ValidColumns(np.zeros(0, np.int64), [], np.zeros(0, np.int64), [], [], np.zeros(0), {
                i: error for i in range(n)})
    ids, customers, terminals = list(request.transaction_id), list(request.customer_id), list(request.terminal_id)
    for column, values in (("transaction_id", ids), ("customer_id", customers), ("terminal_id", terminals)):
        for i, value in enumerate(values):
            if i in errors:
                continue
            try:
                _check_id(value, f"{column}[{i}]")
            except FieldError as exc:
                errors[i] = exc
    amount = np.asarray(request.amount, dtype=np.float64) + 0.0  # -0.0 becomes 0.0: one value, one state
    time_us = np.asarray(request.event_time_us, dtype=np.int64)
    now_s = time.time() if now_s is None else now_s
    checks = (
        ("amount", ~np.isfinite(amount), "must be finite"),
        ("amount", amount < 0, "must not be negative"),
        ("amount", amount > limits.max_amount, f"above the maximum of {limits.max_amount:g} (GATEWAY_MAX_AMOUNT)"),
        ("event_time_us", time_us < limits.min_event_time_s * 1_000_000,
         f"is before {limits.min_event_time_s} s since the epoch (GATEWAY_MIN_EVENT_TIME_S)"),
        ("event_time_us", time_us > int((now_s + limits.max_future_s) * 1_000_000),
         f"is more than {limits.max_future_s} s in the future"),
    )
    with np.errstate(invalid="ignore"):
        for column, bad, message in checks:
            for i in np.flatnonzero(bad).tolist():
                errors.setdefault(i, FieldError(f"{column}[{i}]", message))
    if not errors:
        rows = np.arange(n, dtype=np.int64)
        return ValidColumns(rows, ids, time_us, customers, terminals, amount, errors)
    keep = np.ones(n, dtype=bool)
    keep[list(errors)] = False
    rows = np.flatnonzero(keep)
    return ValidColumns(
        rows,
        [ids[i] for i in rows],
        time_us[rows],
        [customers[i] for i in rows],
        [terminals[i] for i in rows],
        amount[rows],
        errors,
    )
