"""The cascade's first stage: a small model run in-process with ONNX Runtime.

Two ONNX models: the main one (a few shallow trees) on the full feature vector, and a fallback (a logistic
regression) on the features an event carries by itself, used when the feature service is down. Each model's output
goes through its Platt scaling, fitted on validation data, so the filter's score is a probability on the same scale
as the ensemble's (`scoring.common.calibration`), and the threshold is on that scale.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort

from scoring.common.calibration import platt


class FilterInputError(ValueError):
    """The request's matrix does not match the model's input."""


@dataclass(frozen=True)
class FilterMeta:
    version: str
    threshold: float
    feature_names: list[str]
    fallback_features: list[int]
    # Platt scaling (a, b) of each model's output: "main", "fallback".
    calibration: dict[str, tuple[float, float]]

    @classmethod
    def load(cls, path: Path) -> FilterMeta:
        data = json.loads(path.read_text())
        if "calibration" not in data:
            raise ValueError(f"{path}: a filter trained before scores were calibrated (issue 15): retrain, make models")
        return cls(
            version=str(data["version"]),
            threshold=float(data["threshold"]),
            feature_names=list(data["feature_names"]),
            fallback_features=list(data["fallback_features"]),
            calibration={k: (float(a), float(b)) for k, (a, b) in data["calibration"].items()},
        )

    def calibrated(self, raw: np.ndarray, model: str) -> np.ndarray:
        """A model's raw class-1 output -> the served probability (float32)."""
        return platt(raw, *self.calibration[model]).astype(np.float32)


def _session(path: Path) -> ort.InferenceSession:
    options = ort.SessionOptions()
    # One thread: the filter runs on the event loop's thread for small batches; parallelism comes from batches.
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


class FilterModel:
    def __init__(self, model_dir: Path) -> None:
        self.meta = FilterMeta.load(model_dir / "filter.json")
        self.main = _session(model_dir / "model.onnx")
        self.fallback = _session(model_dir / "fallback.onnx")
        self.n_features = len(self.meta.feature_names)

    @property
    def version(self) -> str:
        return f"filter:{self.meta.version}"

    def predict(self, features: np.ndarray, *, self_contained_only: bool = False) -> np.ndarray:
        if features.ndim != 2 or features.shape[1] != self.n_features:
            raise FilterInputError(f"features: expected [rows, {self.n_features}], got {list(features.shape)}")
        if self_contained_only:
            session, x, model = self.fallback, features[:, self.meta.fallback_features], "fallback"
        else:
            session, x, model = self.main, features, "main"
        outputs = session.run(None, {session.get_inputs()[0].name: np.ascontiguousarray(x, dtype=np.float32)})
        return self.meta.calibrated(probability_of_positive(outputs), model)


def probability_of_positive(outputs: list[object]) -> np.ndarray:
    """Class-1 probability from a converted model's outputs (a tensor, or a list of dicts)."""
    probs = outputs[-1]
    if isinstance(probs, np.ndarray):
        # [n, 2] class probabilities, or one probability per row ([n, 1] or [n]).
        return (probs[:, 1] if probs.ndim == 2 and probs.shape[1] == 2 else probs.reshape(len(probs))).astype(
            np.float32
        )
    return np.asarray([row[1] for row in probs], dtype=np.float32)  # type: ignore[attr-defined]
