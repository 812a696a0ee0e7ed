"""The market scenario's container target: `market_ensemble` scheduled over Triton's onnxruntime backend.

The official `nvcr.io/nvidia/tritonserver` image (docker compose, Kubernetes) has no onnxruntime in its Python
backend, so the local target's one Python-backend model (`repository.py`, `triton_model.py`) becomes four models:

    FEATURES ------------+-> market_gbt (XGBoost ONNX)  -> P_GBT [3] --+
                         |                                             +-> market_stacker -> PROBS [3], SIGNAL [1]
    FEATURES, SEQUENCE --+-> market_seq (LSTM ONNX)     -> P_SEQ [3] --+

`market_ensemble` keeps the local model's name, inputs and outputs, so the gateway cannot tell the targets apart.
The trained graphs are served as they are, wrapped by `services.ensemble.repository.adapt_onnx` so that their
tensors carry the config's names. The stacker is an ONNX graph built here from ensemble.json; it computes in float64
as `triton_model.py` does, so that PROBS agree to float32 rounding and SIGNAL, a comparison with tau, agrees exactly.
Written into a repository folder beside fraud's models (`deploy/triton_repository.py`); only these four folders
are replaced.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from scoring.scenarios.market import features as MF
from scoring.scenarios.market.labels import DOWN, FLAT, UP
from scoring.scenarios.market.repository import FEATURES_INPUT, MODEL, PROBS_OUTPUT, SEQUENCE_INPUT, SIGNAL_OUTPUT
from services.ensemble.repository import adapt_onnx, inspect_gbt, inspect_seq
from services.ensemble.triton_config import Step, Tensor, model_config, scheduled_ensemble_config

GBT_MODEL = "market_gbt"
SEQ_MODEL = "market_seq"
STACKER_MODEL = "market_stacker"
P_GBT = "P_GBT"
P_SEQ = "P_SEQ"
MODELS = (GBT_MODEL, SEQ_MODEL, STACKER_MODEL, MODEL)
# A few dozen flops per row: one CPU instance keeps up on either device, as fraud's combiner does.
CPU_MODELS = frozenset({STACKER_MODEL})
N_CLASSES = 3
# What the image's ONNX Runtime (1.19) reads: IR version <= 10, ai.onnx opset <= 21.
_STACKER_OPSET = 17
_STACKER_IR_VERSION = 8
# The local model's floor under a probability before its log (triton_model.py, models.stack_inputs).
_LOG_FLOOR = 1e-7


def stacker_onnx(coef: np.ndarray, intercept: np.ndarray, tau: float) -> Any:
    """P_GBT, P_SEQ [N, 3] -> PROBS = softmax(log(clip([P_GBT, P_SEQ])) @ coef.T + intercept) [N, 3], and
    SIGNAL [N, 1] as `models.decide`: UP or DOWN, the likelier (UP on a tie), when its probability is >= tau, else
    FLAT; FP32 codes, as the local model answers."""
    from onnx import TensorProto, checker, helper, numpy_helper

    coef = np.asarray(coef, np.float64)
    intercept = np.asarray(intercept, np.float64)
    if coef.shape != (N_CLASSES, 2 * N_CLASSES) or intercept.shape != (N_CLASSES,):
        raise ValueError(f"stacker coef {coef.shape}, intercept {intercept.shape}: expected (3, 6) and (3,)")

    def const(name: str, value: Any, dtype: type) -> Any:
        return numpy_helper.from_array(np.asarray(value, dtype), name)

    initializers = [
        const("coef", coef, np.float64), const("intercept", intercept, np.float64),
        const("floor", _LOG_FLOOR, np.float64), const("one", 1.0, np.float64), const("tau", float(tau), np.float64),
        const("down_column", [DOWN], np.int64), const("up_column", [UP], np.int64),
        const("down_code", float(DOWN), np.float32), const("flat_code", float(FLAT), np.float32),
        const("up_code", float(UP), np.float32),
    ]
    nodes = [
        # The stacker's input order: the GBT's three log-probabilities, then the LSTM's.
        helper.make_node("Concat", [P_GBT, P_SEQ], ["joined"], axis=1),
        helper.make_node("Cast", ["joined"], ["joined64"], to=TensorProto.DOUBLE),
        helper.make_node("Clip", ["joined64", "floor", "one"], ["clipped"]),
        helper.make_node("Log", ["clipped"], ["logp"]),
        helper.make_node("Gemm", ["logp", "coef", "intercept"], ["logits"], transB=1),
        helper.make_node("Softmax", ["logits"], ["probs64"], axis=1),
        helper.make_node("Cast", ["probs64"], [PROBS_OUTPUT], to=TensorProto.FLOAT),
        helper.make_node("Gather", ["probs64", "down_column"], ["p_down"], axis=1),
        helper.make_node("Gather", ["probs64", "up_column"], ["p_up"], axis=1),
        helper.make_node("GreaterOrEqual", ["p_up", "p_down"], ["up_likelier"]),
        helper.make_node("Where", ["up_likelier", "up_code", "down_code"], ["move"]),
        helper.make_node("Max", ["p_up", "p_down"], ["p_move"]),
        helper.make_node("GreaterOrEqual", ["p_move", "tau"], ["signalled"]),
        helper.make_node("Where", ["signalled", "move", "flat_code"], [SIGNAL_OUTPUT]),
    ]
    graph = helper.make_graph(
        nodes, STACKER_MODEL,
        [helper.make_tensor_value_info(name, TensorProto.FLOAT, ["N", N_CLASSES]) for name in (P_GBT, P_SEQ)],
        [helper.make_tensor_value_info(PROBS_OUTPUT, TensorProto.FLOAT, ["N", N_CLASSES]),
         helper.make_tensor_value_info(SIGNAL_OUTPUT, TensorProto.FLOAT, ["N", 1])],
        initializers,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", _STACKER_OPSET)],
                              producer_name="scoring.scenarios.market.container")
    model.ir_version = _STACKER_IR_VERSION  # the onnx package's default is newer than the image's runtime reads
    checker.check_model(model)
    return model


def _check_class_output(path: Path, output: str) -> None:
    import onnxruntime as ort

    shapes = {o.name: o.shape for o in ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
              .get_outputs()}
    shape = shapes.get(output)
    if shape is None or len(shape) != 2 or (isinstance(shape[1], int) and shape[1] != N_CLASSES):
        raise ValueError(f"{path}: output {output!r} is {shape}, not class probabilities [N, {N_CLASSES}]")


def write_container_models(
    out_dir: Path, ensemble_dir: Path, *, gpu: bool = False, version: int = 1, max_batch_size: int = 4096,
    max_queue_delay_us: int = 200, default_timeout_us: int = 50_000, queue_policy: bool = True,
) -> Path:
    """Write market_gbt, market_seq, market_stacker and market_ensemble into `out_dir` (KIND_GPU for the trained
    graphs when `gpu`) from what training left in `ensemble_dir`; other entries of `out_dir` are left alone."""
    if version < 1:
        raise ValueError(f"version must be >= 1, got {version}")
    out_dir, ensemble_dir = Path(out_dir), Path(ensemble_dir)
    meta = json.loads((ensemble_dir / "ensemble.json").read_text())
    n_features, seq_dims = len(MF.FEATURE_NAMES), (MF.SEQ_LEN, len(MF.SEQ_FEATURE_NAMES))
    gbt_onnx, seq_onnx = ensemble_dir / "gbt.onnx", ensemble_dir / "seq.onnx"
    # All three class columns, where fraud's binding picks the positive one.
    gbt = replace(inspect_gbt(gbt_onnx, n_features), column=None)
    seq = inspect_seq(seq_onnx, n_features, *seq_dims)
    for path, binding in ((gbt_onnx, gbt), (seq_onnx, seq)):
        _check_class_output(path, binding.onnx_output)
    stacker = stacker_onnx(np.asarray(meta["stacker"]["coef"]), np.asarray(meta["stacker"]["intercept"]),
                           float(meta["tau"]))

    for model in MODELS:
        shutil.rmtree(out_dir / model, ignore_errors=True)
    common: dict[str, Any] = {"max_batch_size": max_batch_size, "max_queue_delay_us": max_queue_delay_us,
                              "default_timeout_us": default_timeout_us, "queue_policy": queue_policy}
    dims = {FEATURES_INPUT: (n_features,), SEQUENCE_INPUT: seq_dims}
    params = {"version": str(version), "ensemble_version": str(meta.get("version", ""))}
    for name, src, binding, output in ((GBT_MODEL, gbt_onnx, gbt, P_GBT), (SEQ_MODEL, seq_onnx, seq, P_SEQ)):
        adapt_onnx(src, out_dir / name / str(version) / "model.onnx", binding, triton_output=output,
                   width=N_CLASSES)
        (out_dir / name / "config.pbtxt").write_text(model_config(
            name=name, backend="onnxruntime", platform="onnxruntime_onnx",
            inputs=[Tensor(t, dims[t]) for t in binding.triton_inputs], outputs=[Tensor(output, (N_CLASSES,))],
            instance_kind="KIND_GPU" if gpu else "KIND_CPU", instance_count=None,
            params=params | {"source_onnx": src.name}, **common,
        ))

    import onnx

    (out_dir / STACKER_MODEL / str(version)).mkdir(parents=True)
    onnx.save(stacker, str(out_dir / STACKER_MODEL / str(version) / "model.onnx"))
    (out_dir / STACKER_MODEL / "config.pbtxt").write_text(model_config(
        name=STACKER_MODEL, backend="onnxruntime", platform="onnxruntime_onnx",
        inputs=[Tensor(P_GBT, (N_CLASSES,)), Tensor(P_SEQ, (N_CLASSES,))],
        outputs=[Tensor(PROBS_OUTPUT, (N_CLASSES,)), Tensor(SIGNAL_OUTPUT, (1,))],
        instance_kind="KIND_CPU", instance_count=1, params=params | {"tau": repr(float(meta["tau"]))}, **common,
    ))

    # Triton only loads an ensemble that has a (possibly empty) version folder.
    (out_dir / MODEL / str(version)).mkdir(parents=True)
    (out_dir / MODEL / "config.pbtxt").write_text(scheduled_ensemble_config(
        name=MODEL, max_batch_size=max_batch_size, version=version,
        inputs=[Tensor(FEATURES_INPUT, dims[FEATURES_INPUT]), Tensor(SEQUENCE_INPUT, dims[SEQUENCE_INPUT])],
        outputs=[Tensor(PROBS_OUTPUT, (N_CLASSES,)), Tensor(SIGNAL_OUTPUT, (1,))],
        steps=[
            Step(GBT_MODEL, gbt.triton_inputs, (P_GBT,)),
            Step(SEQ_MODEL, seq.triton_inputs, (P_SEQ,)),
            Step(STACKER_MODEL, (P_GBT, P_SEQ), (PROBS_OUTPUT, SIGNAL_OUTPUT)),
        ],
    ))
    return out_dir
