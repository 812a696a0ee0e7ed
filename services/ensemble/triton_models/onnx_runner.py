"""Triton Python-backend model that runs one ONNX file with ONNX Runtime on CPU.

Place in the graph: the `fraud_ensemble` fans FEATURES out to `fraud_gbt` and SEQUENCE to `fraud_seq`; on the
local (pytriton binary) target both are this same file, told by the model config `parameters` which ONNX
input to feed and which ONNX output (and column) becomes the single Triton output:

- `onnx_input`: ONNX input name fed with the model's only Triton input,
- `onnx_output`: ONNX output name read back,
- `onnx_output_column`: optional column of a 2-D output (XGBoost via onnxmltools emits `probabilities`
  [N, 2]; class 1 is column 1); without it the output must hold one value per row ([N] or [N, 1]),
- `onnx_file` (default `model.onnx`) and `intra_op_threads` (default 1).

Imports only numpy, onnxruntime and triton_python_backend_utils: the stub runs it with the Python found on
PATH, which must carry those packages.
"""

from __future__ import annotations

import json
import os
from typing import Any

import numpy as np
import onnxruntime as ort
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    """One ONNX Runtime session per model instance; one session run per dynamic batch."""

    def initialize(self, args: dict[str, str]) -> None:
        config: dict[str, Any] = json.loads(args["model_config"])
        params = {key: value["string_value"] for key, value in config.get("parameters", {}).items()}
        self._model_name: str = args["model_name"]
        self._input_name: str = config["input"][0]["name"]
        self._output_name: str = config["output"][0]["name"]
        self._onnx_input: str = params["onnx_input"]
        self._onnx_output: str = params["onnx_output"]
        column = params.get("onnx_output_column", "").strip()
        self._column: int | None = int(column) if column else None

        options = ort.SessionOptions()
        # Triton already runs one instance per configured slot; letting ORT spawn a thread per core on
        # top of that oversubscribes the CPU and makes tail latency worse than the extra parallelism helps.
        options.intra_op_num_threads = int(params.get("intra_op_threads", "1"))
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        path = os.path.join(
            args["model_repository"], args["model_version"], params.get("onnx_file", "model.onnx")
        )
        self._session = ort.InferenceSession(path, sess_options=options, providers=["CPUExecutionProvider"])

        names = {i.name for i in self._session.get_inputs()}
        if self._onnx_input not in names:
            raise pb_utils.TritonModelException(
                f"{self._model_name}: ONNX input {self._onnx_input!r} not in {sorted(names)}"
            )
        outputs = {o.name for o in self._session.get_outputs()}
        if self._onnx_output not in outputs:
            raise pb_utils.TritonModelException(
                f"{self._model_name}: ONNX output {self._onnx_output!r} not in {sorted(outputs)}"
            )

        # ORT's first run allocates and plans (~50 ms here); paying it at load keeps it out of the first
        # real request's latency budget, and a model that cannot run fails the load instead of a request.
        dims = [d if d > 0 else 1 for d in config["input"][0]["dims"]]
        if config.get("max_batch_size", 0) > 0:
            dims = [1, *dims]
        warmup = np.zeros(dims, dtype=np.float32)
        self._select(self._session.run([self._onnx_output], {self._onnx_input: warmup})[0], warmup.shape[0])

    def _select(self, raw: np.ndarray, rows: int) -> np.ndarray:
        flat = np.asarray(raw).reshape(rows, -1)
        if self._column is not None:
            flat = flat[:, self._column : self._column + 1]
        elif flat.shape[1] != 1:
            raise ValueError(f"output {self._onnx_output!r} has {flat.shape[1]} values per row, expected 1")
        return np.ascontiguousarray(flat, dtype=np.float32)

    def execute(self, requests: list[Any]) -> list[Any]:
        arrays = [pb_utils.get_input_tensor_by_name(r, self._input_name).as_numpy() for r in requests]
        sizes = [a.shape[0] for a in arrays]
        try:
            # The whole dynamic batch goes through ONE session run: per-request runs would pay the ORT
            # dispatch overhead once per request and throw away what the batcher assembled.
            batch = arrays[0] if len(arrays) == 1 else np.concatenate(arrays, axis=0)
            raw = self._session.run([self._onnx_output], {self._onnx_input: batch})[0]
            scores = self._select(raw, batch.shape[0])
        except Exception as exc:  # any failure must become a per-request error, not a stub crash
            # One run serves every request in the batch, so a failure cannot be pinned on one of them.
            error = pb_utils.TritonError(f"{self._model_name}: onnxruntime run failed: {exc}")
            return [pb_utils.InferenceResponse(output_tensors=[], error=error) for _ in requests]

        responses = []
        offsets = np.cumsum([0, *sizes])
        for start, stop in zip(offsets[:-1], offsets[1:], strict=True):
            tensor = pb_utils.Tensor(self._output_name, scores[start:stop])
            responses.append(pb_utils.InferenceResponse(output_tensors=[tensor]))
        return responses

    def finalize(self) -> None:
        self._session = None
