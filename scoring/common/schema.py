"""The feature schema a model was trained on, and its hash: what a release pins and the feature service reports.

Two sides must agree on it: the models of a release (trained offline on the scenario's feature module) and the
running feature service (which folds events with its copy of the same module). A model is refused when the two
hashes differ, since a vector whose columns mean something else still scores, only wrongly.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class FeatureSchema:
    scenario: str
    # Bumped by hand when a feature's definition changes under the same name (a window, a unit, a default).
    definition_version: int
    feature_names: tuple[str, ...]
    sequence_features: tuple[str, ...]
    sequence_length: int

    @property
    def hash(self) -> str:
        canonical = json.dumps(
            [self.scenario, self.definition_version, list(self.feature_names), list(self.sequence_features),
             self.sequence_length],
            separators=(",", ":"),
        )
        return "sha256:" + hashlib.sha256(canonical.encode()).hexdigest()[:16]

    def to_dict(self) -> dict[str, Any]:
        return {
            "scenario": self.scenario,
            "definition_version": self.definition_version,
            "feature_names": list(self.feature_names),
            "sequence_features": list(self.sequence_features),
            "sequence_length": self.sequence_length,
            "hash": self.hash,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FeatureSchema:
        schema = cls(
            scenario=str(data["scenario"]),
            definition_version=int(data["definition_version"]),
            feature_names=tuple(data["feature_names"]),
            sequence_features=tuple(data["sequence_features"]),
            sequence_length=int(data["sequence_length"]),
        )
        if "hash" in data and data["hash"] != schema.hash:
            raise ValueError(f"feature schema: stored hash {data['hash']} does not match its fields ({schema.hash})")
        return schema


class SchemaMismatch(ValueError):
    """A model trained on other features than the running feature service computes."""

    def __init__(self, what: str, model_hash: str, service_hash: str) -> None:
        super().__init__(
            f"{what}: trained on feature schema {model_hash}, but the running feature service computes "
            f"{service_hash}; retrain on the current features or run the feature service the model was trained for"
        )
        self.model_hash = model_hash
        self.service_hash = service_hash
