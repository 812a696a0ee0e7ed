"""Triton Python-backend model that runs one ONNX file with ONNX Runtime on CPU.

Place in the graph: the `fraud_ensemble` fans FEATURES out to `fraud_gbt`, and FEATURES and SEQUENCE to
`fraud_seq`; on the local (pytriton binary) target both are this same file, told by the model config
`parameters` which ONNX inputs to feed and which ONNX output (and column) becomes the single Triton output:

- `onnx_inputs`: JSON object mapping each Triton input of the config to the ONNX input it feeds,
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
        self._output_name: str = config["output"][0]["name"]
        # Triton input name -> ONNX input name, in the config's input order.
        onnx_inputs: dict[str, str] = json.loads(params["onnx_inputs"])
        config_inputs = [i["name"] for i in config["input"]]
        if sorted(onnx_inputs) != sorted(config_inputs):
            raise pb_utils.TritonModelException(
                f"{self._model_name}: onnx_inputs {sorted(onnx_inputs)} do not match config inputs {config_inputs}"
            )
        self._inputs: list[tuple[str, str]] = [(name, onnx_inputs[name]) for name in config_inputs]
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
        if {onnx for _, onnx in self._inputs} != names:
            raise pb_utils.TritonModelException(
                f"{self._model_name}: ONNX inputs {sorted(names)} are not fed exactly by {self._inputs}"
            )
        outputs = {o.name for o in self._session.get_outputs()}
        if self._onnx_output not in outputs:
            raise pb_utils.TritonModelException(
                f"{self._model_name}: ONNX output {self._onnx_output!r} not in {sorted(outputs)}"
            )

        # ORT's first run allocates and plans (~50 ms here); paying it at load keeps it out of the first
        # real request's latency budget, and a model that cannot run fails the load instead of a request.
        warmup = {}
        for tensor in config["input"]:
            dims = [d if d > 0 else 1 for d in tensor["dims"]]
            if config.get("max_batch_size", 0) > 0:
                dims = [1, *dims]
            warmup[onnx_inputs[tensor["name"]]] = np.zeros(dims, dtype=np.float32)
        rows = next(iter(warmup.values())).shape[0]
        self._select(self._session.run([self._onnx_output], warmup)[0], rows)

    def _select(self, raw: np.ndarray, rows: int) -> np.ndarray:
        flat = np.asarray(raw).reshape(rows, -1)
        if self._column is not None:
            flat = flat[:, self._column : self._column + 1]
        elif flat.shape[1] != 1:
            raise ValueError(f"output {self._onnx_output!r} has {flat.shape[1]} values per row, expected 1")
        return np.ascontiguousarray(flat, dtype=np.float32)

    def execute(self, requests: list[Any]) -> list[Any]:
        # One list of arrays per input; Triton has already checked that a request's inputs share one batch
        # size, so the rows of every input line up after concatenation.
        per_input = [
            [pb_utils.get_input_tensor_by_name(r, name).as_numpy() for r in requests] for name, _ in self._inputs
        ]
        sizes = [a.shape[0] for a in per_input[0]]
        try:
            # The whole dynamic batch goes through ONE session run: per-request runs would pay the ORT
            # dispatch overhead once per request and throw away what the batcher assembled.
            feeds = {
                onnx: arrays[0] if len(arrays) == 1 else np.concatenate(arrays, axis=0)
                for (_, onnx), arrays in zip(self._inputs, per_input, strict=True)
            }
            raw = self._session.run([self._onnx_output], feeds)[0]
            scores = self._select(raw, sum(sizes))
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
