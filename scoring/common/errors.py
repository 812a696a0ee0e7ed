"""Errors shared by the services and the scenarios' edge code."""

from __future__ import annotations


class FieldError(ValueError):
    """Bad client input, naming the field path (`transaction.amount`, `tick.sequence`): INVALID_ARGUMENT."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.description = message
