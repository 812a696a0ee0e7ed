"""Training and ONNX export of the filter (train extra only; never imported at serving time).

A standardised logistic regression on the full feature vector, and a fallback on the features an event carries
by itself (used while the feature service is down).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from skl2onnx import to_onnx
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler

from scoring import features as F


def _fit(x: np.ndarray, y: np.ndarray) -> Pipeline:
    model = make_pipeline(StandardScaler(), LogisticRegression(C=1.0, max_iter=2000))
    model.fit(x, y)
    return model


def _export(model: Pipeline, n_features: int, path: Path) -> None:
    onx = to_onnx(
        model,
        np.zeros((1, n_features), dtype=np.float32),
        options={id(model.steps[-1][1]): {"zipmap": False}},
        target_opset=17,
    )
    path.write_bytes(onx.SerializeToString())


def fallback_columns() -> list[int]:
    return [F.FEATURE_NAMES.index(name) for name in F.SELF_CONTAINED_FEATURES]


def train_filter(x: np.ndarray, y: np.ndarray) -> tuple[Pipeline, Pipeline]:
    return _fit(x, y), _fit(x[:, fallback_columns()], y)


def export_filter(
    main: Pipeline, fallback: Pipeline, out_dir: Path, *, threshold: float, version: str
) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    _export(main, len(F.FEATURE_NAMES), out_dir / "model.onnx")
    _export(fallback, len(F.SELF_CONTAINED_FEATURES), out_dir / "fallback.onnx")
    meta = {
        "version": version,
        "threshold": threshold,
        "feature_names": list(F.FEATURE_NAMES),
        "fallback_features": fallback_columns(),
    }
    (out_dir / "filter.json").write_text(json.dumps(meta, indent=2))
