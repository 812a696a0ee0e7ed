"""Triton Python-backend model `fraud_combiner`: the last step of the `fraud_ensemble`.

Place in the graph: after `fraud_gbt` (P_GBT) and `fraud_seq` (P_SEQ) have scored the same rows, this step
stacks them into the SCORE returned to the gateway: SCORE = sigmoid(w_gbt * logit(P_GBT) + w_seq * logit(P_SEQ) +
bias), a logistic regression fitted on validation data (so SCORE is a calibrated probability), with `w_gbt`,
`w_seq` and `bias` read from the model config `parameters` so refitting needs no code change.
It is a Python-backend model on every target (the official container image ships numpy for it too).
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import triton_python_backend_utils as pb_utils


def _logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(p.astype(np.float64), 1e-7, 1.0 - 1e-7)
    return np.log(p / (1.0 - p))


def stack(p_gbt: np.ndarray, p_seq: np.ndarray, w_gbt: float, w_seq: float, bias: float) -> np.ndarray:
    """The stacker: a logistic regression on both models' logits, fitted on validation data (a probability)."""
    return 1.0 / (1.0 + np.exp(-(w_gbt * _logit(p_gbt) + w_seq * _logit(p_seq) + bias)))


class TritonPythonModel:
    """The stacker over the two model probabilities, vectorised over the whole dynamic batch."""

    def initialize(self, args: dict[str, str]) -> None:
        config: dict[str, Any] = json.loads(args["model_config"])
        params = {key: value["string_value"] for key, value in config.get("parameters", {}).items()}
        self._stacker = (float(params["w_gbt"]), float(params["w_seq"]), float(params["bias"]))

    def execute(self, requests: list[Any]) -> list[Any]:
        p_gbt = [pb_utils.get_input_tensor_by_name(r, "P_GBT").as_numpy() for r in requests]
        p_seq = [pb_utils.get_input_tensor_by_name(r, "P_SEQ").as_numpy() for r in requests]
        sizes = [a.shape[0] for a in p_gbt]
        # One numpy expression for the whole batch, for the same reason the ONNX runner does one ORT run.
        score = stack(np.concatenate(p_gbt, axis=0), np.concatenate(p_seq, axis=0), *self._stacker)
        score = np.ascontiguousarray(score, dtype=np.float32)

        responses = []
        offsets = np.cumsum([0, *sizes])
        for start, stop in zip(offsets[:-1], offsets[1:], strict=True):
            tensor = pb_utils.Tensor("SCORE", score[start:stop])
            responses.append(pb_utils.InferenceResponse(output_tensors=[tensor]))
        return responses
