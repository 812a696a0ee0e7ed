"""The scenarios a stack serves, found by name or by the kind of event: the one place that lists them.

A scenario is a package under `scoring/scenarios/` holding what is specific to it (event validation, simulator,
features, labels, models, evaluation). The services ask this registry for what they need of a scenario (the
feature service its online fold, the filter its model folder, the gateway its validation and its Triton model) and
name no scenario themselves. Card fraud's online fold (the Lua scripts and the gateway's fraud cascade) still lives
in the services; moving it behind this registry is the next step.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Final


@dataclass(frozen=True)
class Scenario:
    name: str
    # The field of `ScoreRequest.event` that carries this scenario's events, and its id field.
    event_field: str
    id_field: str
    # The Triton model of its ensemble, and where training writes its filter (relative to the artifacts folder).
    triton_model: str
    filter_dir: str
    # The entity whose state the events fold into (canary and dedup keys use it).
    entity_field: str


FRAUD: Final = Scenario("fraud", "transaction", "transaction_id", "fraud_ensemble", "models/filter", "customer_id")
MARKET: Final = Scenario("market", "tick", "tick_id", "market_ensemble", "models/market/filter", "symbol")
SCENARIOS: Final = {s.name: s for s in (FRAUD, MARKET)}
BY_EVENT_FIELD: Final = {s.event_field: s for s in SCENARIOS.values()}
DEFAULT: Final = FRAUD


def get(name: str) -> Scenario:
    try:
        return SCENARIOS[name]
    except KeyError:
        raise KeyError(f"unknown scenario {name!r}; known: {', '.join(SCENARIOS)}") from None


def available(artifacts: Path) -> list[Scenario]:
    """The scenarios whose models are trained in `artifacts`."""
    return [s for s in SCENARIOS.values() if (artifacts / s.filter_dir / "filter.json").is_file()]


def filter_model(name: str, model_dir: Path) -> object:
    """The filter service's model of a scenario other than the default (`predict(features, self_contained_only)`
    -> class probabilities [n, classes], `threshold`, `version`, `n_features`)."""
    if get(name) is MARKET:
        from scoring.scenarios.market.serving import MarketFilter

        return MarketFilter(model_dir)
    raise KeyError(f"scenario {name!r} has no filter of its own kind")


def serving(name: str, filter_dir: Path) -> object:
    """The gateway's view of a multi-class scenario (`services.gateway.class_cascade.Serving` and the edge:
    validate, event_id, respond, error, concat_items, dedup_key)."""
    if get(name) is MARKET:
        from scoring.scenarios.market.serving import MarketServing

        return MarketServing(filter_dir)
    raise KeyError(f"scenario {name!r} is served by the gateway's own cascade")
