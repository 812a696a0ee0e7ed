"""The services are scenario-agnostic where the issue draws the line: none imports a scenario's feature definitions
or another scenario's modules; they reach scenarios through the registry."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from scoring.scenarios import registry

pytestmark = pytest.mark.unit
SERVICES = Path(__file__).resolve().parents[2] / "services"


def _imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
    return names


def test_no_service_imports_a_scenario_s_features_or_the_market_scenario() -> None:
    offending = {}
    for path in sorted(SERVICES.rglob("*.py")):
        bad = {m for m in _imports(path)
               if m.startswith("scoring.scenarios.market") or m.endswith(".features") and "scenarios" in m}
        if bad:
            offending[str(path.relative_to(SERVICES))] = sorted(bad)
    assert offending == {}


def test_the_registry_gives_every_scenario_a_fold_and_the_default_an_edge() -> None:
    for scenario in registry.SCENARIOS.values():
        # A scenario's plug-ins are named by path: a new scenario is a folder and a line here, no service changed.
        paths = [scenario.online, scenario.edge] if scenario is registry.DEFAULT else [
            scenario.online, scenario.filter, scenario.serving]
        for path in paths:
            module, name = path.split(":")
            assert module.startswith(f"scoring.scenarios.{scenario.name}."), path
            assert hasattr(__import__(module, fromlist=[name]), name), path
    edge = registry.edge(registry.DEFAULT.name)
    assert edge.n_features > 0 and len(edge.seq_shape) == 2
    with pytest.raises(KeyError):
        registry.edge(registry.MARKET.name)
