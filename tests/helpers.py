"""Small helpers shared by test modules (fixtures live in conftest.py)."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any


def load_module(path: Path) -> Any:
    """A script that is not part of a package (deploy/*.py), imported from its path."""
    spec = importlib.util.spec_from_file_location(f"deploy_{path.stem}", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
