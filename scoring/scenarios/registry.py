"""The scenarios a stack serves, found by name or by the kind of event: the one place that lists them.

A scenario is a package under `scoring/scenarios/` holding what is specific to it (event validation, simulator,
features, labels, models, evaluation). The services ask this registry for what they need of a scenario (the
feature service its online fold, the filter its model folder, the gateway its validation and its Triton model) and
name no scenario themselves. The gateway's cascade of card fraud (binary, with its columnar API) still lives in
`services/gateway`; the market scenario's multi-class cascade is scenario-agnostic (`class_cascade`).
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

if TYPE_CHECKING:
    from scoring.common.online import Fold
    from scoring.common.redis_state import RedisClients


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
    # "module:Class" of its online fold (`scoring.common.online.Fold`), built from the feature service's clients.
    online: str
    # "module:Class" of what the gateway's binary cascade needs of its events (shapes, features an event carries
    # by itself); empty for a multi-class scenario, whose view is `serving`.
    edge: str = ""
    # A multi-class scenario's "module:Class" for the filter service's model and the gateway's view (both built
    # from the scenario's filter folder); empty for the default scenario, which the services serve on their own.
    filter: str = ""
    serving: str = ""


FRAUD: Final = Scenario("fraud", "transaction", "transaction_id", "fraud_ensemble", "models/filter", "customer_id",
                        "scoring.scenarios.fraud.online:FraudFold", "scoring.scenarios.fraud.serving:FraudEdge")
MARKET: Final = Scenario("market", "tick", "tick_id", "market_ensemble", "models/market/filter", "symbol",
                         "scoring.scenarios.market.online:MarketFold",
                         filter="scoring.scenarios.market.serving:MarketFilter",
                         serving="scoring.scenarios.market.serving:MarketServing")
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


def _load(path: str) -> Any:
    module, name = path.split(":")
    return getattr(importlib.import_module(module), name)


def online_folds(clients: RedisClients) -> list[Fold]:
    """Every scenario's online fold, sharing the feature service's Redis clients."""
    return [_load(s.online)(clients) for s in SCENARIOS.values()]


def edge(name: str) -> Any:
    """The binary cascade's view of a scenario's events (`services.gateway.cascade.Cascade`)."""
    scenario = get(name)
    if not scenario.edge:
        raise KeyError(f"scenario {name!r} is not served by the binary cascade")
    return _load(scenario.edge)()


def filter_model(name: str, model_dir: Path) -> object:
    """The filter service's model of a scenario other than the default (`predict(features, self_contained_only)`
    -> class probabilities [n, classes], `threshold`, `version`, `n_features`, `pass_score`)."""
    scenario = get(name)
    if not scenario.filter:
        raise KeyError(f"scenario {name!r} has no filter of its own kind")
    return _load(scenario.filter)(model_dir)


def serving(name: str, filter_dir: Path) -> object:
    """The gateway's view of a multi-class scenario (`services.gateway.class_cascade.Serving` and the edge:
    validate, event_id, respond, error, concat_items, dedup_key)."""
    scenario = get(name)
    if not scenario.serving:
        raise KeyError(f"scenario {name!r} is served by the gateway's own cascade")
    return _load(scenario.serving)(filter_dir)
