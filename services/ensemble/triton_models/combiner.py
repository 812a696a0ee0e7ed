"""Triton Python-backend model `fraud_combiner`: the last step of the `fraud_ensemble`.

Place in the graph: after `fraud_gbt` (P_GBT) and `fraud_seq` (P_SEQ) have scored the same rows, this step
blends them into the SCORE returned to the feature service/gateway: SCORE = w_gbt * P_GBT + w_seq * P_SEQ,
with `w_gbt` / `w_seq` read from the model config `parameters` so re-weighting needs no code change.
It is a Python-backend model on every target (the official container image ships numpy for it too).
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    """Weighted sum of the two model probabilities, vectorised over the whole dynamic batch."""

    def initialize(self, args: dict[str, str]) -> None:
        config: dict[str, Any] = json.loads(args["model_config"])
        params = {key: value["string_value"] for key, value in config.get("parameters", {}).items()}
        self._w_gbt = np.float32(float(params["w_gbt"]))
        self._w_seq = np.float32(float(params["w_seq"]))

    def execute(self, requests: list[Any]) -> list[Any]:
        p_gbt = [pb_utils.get_input_tensor_by_name(r, "P_GBT").as_numpy() for r in requests]
        p_seq = [pb_utils.get_input_tensor_by_name(r, "P_SEQ").as_numpy() for r in requests]
        sizes = [a.shape[0] for a in p_gbt]
        # One numpy expression for the whole batch, for the same reason the ONNX runner does one ORT run.
        score = self._w_gbt * np.concatenate(p_gbt, axis=0) + self._w_seq * np.concatenate(p_seq, axis=0)
        score = np.ascontiguousarray(score, dtype=np.float32)

        responses = []
        offsets = np.cumsum([0, *sizes])
        for start, stop in zip(offsets[:-1], offsets[1:], strict=True):
            tensor = pb_utils.Tensor("SCORE", score[start:stop])
            responses.append(pb_utils.InferenceResponse(output_tensors=[tensor]))
        return responses
