"""The checked-in stubs are what `make protos` generates from the current .proto files."""

from __future__ import annotations

from pathlib import Path

import pytest

from scoring import protos_gen

pytestmark = pytest.mark.unit


def test_generated_stubs_are_not_stale(tmp_path: Path) -> None:
    written = protos_gen.generate(tmp_path)
    checked_in = protos_gen.ROOT / "scoring" / "v1"
    assert {p.name for p in written} == {p.name for p in checked_in.iterdir() if p.is_file()}
    stale = [p.name for p in written if p.read_bytes() != (checked_in / p.name).read_bytes()]
    assert not stale, f"stale generated stubs {stale}: run `make protos`"
