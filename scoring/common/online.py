"""What the feature service asks of a scenario's online fold, and what a fold answers.

The feature service is scenario-agnostic: it hands each `FeatureRequest` to the fold of the scenario whose batch
the request carries (`Fold.request_field`), keeps the fold running when the caller gives up, and turns a fold's
exceptions into gRPC statuses. What the state is, which scripts keep it and how features are derived from it is
the scenario's (`scoring/scenarios/<name>/online.py`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from scoring.common.redis_state import StoreUnavailable
from scoring.common.schema import FeatureSchema
from scoring.v1 import features_pb2

__all__ = ["Fold", "Folded", "InvalidBatch", "StoreUnavailable"]


class InvalidBatch(ValueError):
    """The request's batch cannot be folded (INVALID_ARGUMENT); the message names the field."""


@dataclass(frozen=True)
class Folded:
    response: features_pb2.FeatureResponse
    events: int  # events in the request
    refolded: int | None = None  # a re-fold (fold only): how many of the events were folded now, not before


class Fold(Protocol):
    # The FeatureRequest field that holds this scenario's batch (`None`: the request's own top-level columns,
    # which are card transactions' for wire compatibility).
    request_field: str | None
    # Whether ReportLabels reaches this fold (one scenario takes the label reports of the API).
    takes_labels: bool
    # The features it computes (scoring.common.schema): what a release's models must have been trained on.
    schema: FeatureSchema

    async def warm_up(self) -> None: ...

    async def fold(self, request: features_pb2.FeatureRequest) -> Folded: ...

    async def close(self) -> None: ...
