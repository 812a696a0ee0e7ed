"""Triton Python-backend model `market_ensemble`: XGBoost and the LSTM on a tick, the stacker, and the signal.

Place in the graph: the gateway's last stage for ticks calls `market_ensemble` (FEATURES [n_features], SEQUENCE
[seq_len, seq_features] -> PROBS [3]: p_down, p_flat, p_up; SIGNAL [1]: 0 down, 1 flat, 2 up). Both ONNX graphs
and the stacker run in one step, as the fused `fraud_ensemble` does, so a request pays one round trip between
Triton and the stub process. The decision rule lives with the models that it was tuned for: a move is signalled
when its probability is at least `tau` and above the other move's.

Config `parameters`: `gbt_file`, `seq_file` (ONNX files in the version folder), `stacker` (JSON: coef [3, 6],
intercept [3], over log p_gbt and log p_seq), `tau`. Imports only numpy, onnxruntime and
triton_python_backend_utils.
"""

from __future__ import annotations

import json
import os
from typing import Any

import numpy as np
import onnxruntime as ort
import triton_python_backend_utils as pb_utils


def _session(path: str) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    return ort.InferenceSession(path, sess_options=options, providers=["CPUExecutionProvider"])


def _probabilities(outputs: list[Any]) -> np.ndarray:
    probs = outputs[-1]
    if isinstance(probs, np.ndarray):
        return probs.astype(np.float64)
    return np.asarray([[row[c] for c in (0, 1, 2)] for row in probs], dtype=np.float64)


class TritonPythonModel:
    def initialize(self, args: dict[str, str]) -> None:
        config: dict[str, Any] = json.loads(args["model_config"])
        params = {key: value["string_value"] for key, value in config.get("parameters", {}).items()}
        self._model_name = args["model_name"]
        folder = os.path.join(args["model_repository"], args["model_version"])
        self._gbt = _session(os.path.join(folder, params["gbt_file"]))
        self._seq = _session(os.path.join(folder, params["seq_file"]))
        stacker = json.loads(params["stacker"])
        self._coef = np.asarray(stacker["coef"], np.float64)
        self._intercept = np.asarray(stacker["intercept"], np.float64)
        self._tau = float(params["tau"])
        dims = {t["name"]: [d if d > 0 else 1 for d in t["dims"]] for t in config["input"]}
        self._run({name: np.zeros([1, *shape], dtype=np.float32) for name, shape in dims.items()})

    def _run(self, inputs: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        features, sequence = inputs["FEATURES"], inputs["SEQUENCE"]
        p_gbt = _probabilities(self._gbt.run(None, {"features": features}))
        p_seq = _probabilities(self._seq.run(None, {"features": features, "sequence": sequence}))
        z = np.log(np.clip(np.concatenate([p_gbt, p_seq], axis=1), 1e-7, 1.0)) @ self._coef.T + self._intercept
        z -= z.max(axis=1, keepdims=True)
        p = np.exp(z)
        p /= p.sum(axis=1, keepdims=True)
        move = np.where(p[:, 2] >= p[:, 0], 2, 0)
        signal = np.where(np.maximum(p[:, 2], p[:, 0]) >= self._tau, move, 1)
        return np.ascontiguousarray(p, np.float32), np.ascontiguousarray(signal.reshape(-1, 1), np.float32)

    def execute(self, requests: list[Any]) -> list[Any]:
        per_input = {n: [pb_utils.get_input_tensor_by_name(r, n).as_numpy() for r in requests]
                     for n in ("FEATURES", "SEQUENCE")}
        sizes = [a.shape[0] for a in per_input["FEATURES"]]
        try:
            batch = {n: a[0] if len(a) == 1 else np.concatenate(a, axis=0) for n, a in per_input.items()}
            probs, signal = self._run(batch)
        except Exception as exc:  # a failure becomes a per-request error, never a stub crash
            error = pb_utils.TritonError(f"{self._model_name}: onnxruntime run failed: {exc}")
            return [pb_utils.InferenceResponse(output_tensors=[], error=error) for _ in requests]
        offsets = np.cumsum([0, *sizes])
        return [
            pb_utils.InferenceResponse(output_tensors=[
                pb_utils.Tensor("PROBS", probs[start:stop]), pb_utils.Tensor("SIGNAL", signal[start:stop])])
            for start, stop in zip(offsets[:-1], offsets[1:], strict=True)
        ]

    def finalize(self) -> None:
        self._gbt = None
        self._seq = None
