"""Errors shared by the services and the scenarios' edge code."""

from __future__ import annotations


class FieldError(ValueError):
    """Bad client input, naming the field path (`transaction.amount`, `tick.sequence`): INVALID_ARGUMENT."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.description = message


MAX_ID_LENGTH = 256


def check_id(value: str, field: str) -> None:
    """An id or name as the edge accepts it: not empty, at most MAX_ID_LENGTH characters, printable."""
    if not value:
        raise FieldError(field, "must not be empty")
    if len(value) > MAX_ID_LENGTH:
        raise FieldError(field, f"longer than {MAX_ID_LENGTH} characters")
    if not value.isprintable():
        raise FieldError(field, "must be printable text")
