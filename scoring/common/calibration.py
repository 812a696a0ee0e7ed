"""Score scales: every served score is a probability, whichever stage of the cascade gave it.

Each stage's raw model output is mapped by a logistic regression fitted on validation data (training code,
`scenarios.fraud.pipeline`): the filter's by Platt scaling on its logit, the ensemble's two models by a stacker on both
logits. These are the serving-side maps, numpy only; Triton's models carry their own copy of `stack`
(`services/ensemble/triton_models/`), as a model file there must be self-contained.
"""

from __future__ import annotations

import numpy as np

_EPS = 1e-7


def logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(np.asarray(p, dtype=np.float64), _EPS, 1.0 - _EPS)
    return np.log(p / (1.0 - p))


def sigmoid(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-z))


def platt(p: np.ndarray, a: float, b: float) -> np.ndarray:
    """Platt scaling: sigmoid(a * logit(p) + b)."""
    return sigmoid(a * logit(p) + b)


def stack(p_gbt: np.ndarray, p_seq: np.ndarray, w_gbt: float, w_seq: float, bias: float) -> np.ndarray:
    """The ensemble's stacker: sigmoid(w_gbt * logit(p_gbt) + w_seq * logit(p_seq) + bias)."""
    return sigmoid(w_gbt * logit(p_gbt) + w_seq * logit(p_seq) + bias)
