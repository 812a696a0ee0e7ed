"""An event's budget: what the client asks for (x-scoring-budget-ms, capped) and its deadline."""

from __future__ import annotations

import math
import time
from collections.abc import Sequence

from scoring.common.errors import FieldError

# Per call (unary) or per stream: the budget the client asks for, in milliseconds, up to GATEWAY_MAX_BUDGET_MS.
BUDGET_KEY = "x-scoring-budget-ms"


def requested_budget_s(metadata: Sequence[tuple[str, str | bytes]] | None, default_s: float, max_s: float) -> float:
    """The budget asked for with x-scoring-budget-ms, else the default; FieldError naming the key if malformed."""
    for key, value in metadata or ():
        if key != BUDGET_KEY:
            continue
        text = value.decode("ascii", "replace") if isinstance(value, bytes) else value
        try:
            ms = float(text)
        except ValueError:
            ms = math.nan
        if not math.isfinite(ms) or ms <= 0:
            raise FieldError(BUDGET_KEY, f"must be a positive number of milliseconds, got {text!r}")
        if ms > max_s * 1e3:
            raise FieldError(BUDGET_KEY, f"{ms:g} ms is above the cap of {max_s * 1e3:g} ms (GATEWAY_MAX_BUDGET_MS)")
        return ms / 1e3
    return default_s


def event_deadline(budget_s: float, client_remaining_s: float | None) -> float:
    """min(the client's deadline, the budget): a client's deadline is its patience, not a request to be slow."""
    if client_remaining_s is not None and client_remaining_s < budget_s:
        budget_s = max(0.0, client_remaining_s)
    return time.monotonic() + budget_s
