"""Writer of the Triton model repository behind the last hop of the scoring graph.

gateway -> filter -> feature service (Redis) -> **Triton `fraud_ensemble`**. The feature service sends one
row of tabular features (FEATURES, FP32 [n_features]) and one event window (SEQUENCE, FP32
[seq_len, seq_features]) per event; the ensemble answers SCORE, P_GBT and P_SEQ (FP32 [1] each):

    FEATURES ------------+-> fraud_gbt (XGBoost ONNX)  -> P_GBT --+
                         |                                        +-> fraud_combiner -> SCORE
    FEATURES, SEQUENCE --+-> fraud_seq (sequence ONNX) -> P_SEQ --+     = w0*P_GBT + w1*P_SEQ

The sequence model reads both tensors: its LSTM runs over SEQUENCE and its head also sees FEATURES.

Two targets share the same ONNX files:

- ``local``: the CPU-only tritonserver bundled with nvidia-pytriton, which has no onnxruntime backend, so
  the ONNX files run inside Python-backend models (`triton_models/onnx_runner.py`) told by config
  `parameters` which ONNX inputs/output/column to use.
- ``container``: the official ``nvcr.io/nvidia/tritonserver`` image with the onnxruntime backend. That
  backend binds config tensor names to ONNX tensor names, so the writer wraps each graph with a thin
  adapter (Identity on each input, column pick / reshape + Cast on the output) that renames the tensors to
  the fixed Triton names; the trained nodes are untouched.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

# The contract's names (model, tensor) live with the config text that uses them; re-exported here.
from services.ensemble.triton_config import (
    COMBINER_MODEL,
    ENSEMBLE_MODEL,
    FEATURES_INPUT,
    GBT_MODEL,
    P_GBT_OUTPUT,
    P_SEQ_OUTPUT,
    SCHEDULED_ENSEMBLE_MODEL,
    SCORE_OUTPUT,
    SEQ_MODEL,
    SEQUENCE_INPUT,
    Tensor,
    ensemble_config,
    model_config,
)

if TYPE_CHECKING:
    import onnxruntime as ort

TARGETS = ("local", "container")

_MODEL_FILES = Path(__file__).resolve().parent / "triton_models"
ONNX_RUNNER_SOURCE = _MODEL_FILES / "onnx_runner.py"
COMBINER_SOURCE = _MODEL_FILES / "combiner.py"
FUSED_SOURCE = _MODEL_FILES / "fused_ensemble.py"

# What the exporters produce: onnxmltools' XGBoost converter names the class-probability output
# `probabilities` ([N, 2]); the sequence model (PyTorch LSTM export, services/ensemble/train.py) takes
# `features` and `sequence` and names its output `probability`.
_GBT_PROBA_OUTPUT = "probabilities"
_GBT_POSITIVE_COLUMN = 1
_SEQ_ONNX_FEATURES_INPUT = "features"
_SEQ_ONNX_SEQUENCE_INPUT = "sequence"
_SEQ_PROBA_OUTPUT = "probability"


@dataclass(frozen=True)
class OnnxBinding:
    """How a model's Triton tensors map onto one ONNX graph (what `onnx_runner.py` reads from parameters)."""

    # (Triton input, ONNX input) pairs, in the order of the model config's inputs.
    inputs: tuple[tuple[str, str], ...]
    onnx_output: str
    column: int | None  # column of a 2-D output to return; None: one value per row already

    @property
    def triton_inputs(self) -> tuple[str, ...]:
        return tuple(triton for triton, _ in self.inputs)


def _write_fused(
    out_dir: Path,
    gbt_onnx: Path,
    seq_onnx: Path,
    gbt: OnnxBinding,
    seq: OnnxBinding,
    stacker: tuple[float, float, float],
    version: int,
    features_dims: tuple[int, ...],
    sequence_dims: tuple[int, ...],
    common: dict[str, Any],
) -> None:
    """`fraud_ensemble` as one Python-backend step: the same ONNX files, inputs, outputs and blend."""
    version_dir = out_dir / ENSEMBLE_MODEL / str(version)
    version_dir.mkdir(parents=True)
    shutil.copyfile(gbt_onnx, version_dir / "gbt.onnx")
    shutil.copyfile(seq_onnx, version_dir / "seq.onnx")
    shutil.copyfile(FUSED_SOURCE, version_dir / "model.py")
    (gbt_input,) = [onnx for triton, onnx in gbt.inputs if triton == FEATURES_INPUT]
    params = {
        "version": str(version),
        "gbt_file": "gbt.onnx",
        "seq_file": "seq.onnx",
        "gbt_input": gbt_input,
        "gbt_output": gbt.onnx_output,
        "gbt_column": str(gbt.column if gbt.column is not None else 0),
        "seq_inputs": json.dumps(dict(seq.inputs)),
        "seq_output": seq.onnx_output,
        "w_gbt": repr(float(stacker[0])),
        "w_seq": repr(float(stacker[1])),
        "bias": repr(float(stacker[2])),
    }
    (out_dir / ENSEMBLE_MODEL / "config.pbtxt").write_text(
        model_config(
            name=ENSEMBLE_MODEL,
            backend="python",
            platform=None,
            inputs=[Tensor(FEATURES_INPUT, features_dims), Tensor(SEQUENCE_INPUT, sequence_dims)],
            outputs=[Tensor(n, (1,)) for n in (SCORE_OUTPUT, P_GBT_OUTPUT, P_SEQ_OUTPUT)],
            instance_kind="KIND_CPU",
            instance_count=1,
            params=params,
            **common,
        )
    )


def _check_static_dims(what: str, shape: Sequence[object], expected: Sequence[int]) -> None:
    # Exported shapes carry None/strings for dynamic axes; only concrete ints can contradict the config,
    # and catching that here beats a Triton load failure (or a wrong reshape) at serving time.
    trailing = list(shape)[1:]
    if len(trailing) != len(expected):
        raise ValueError(
            f"{what}: ONNX input shape {list(shape)} does not match [N, {', '.join(map(str, expected))}]"
        )
    for got, want in zip(trailing, expected, strict=True):
        if isinstance(got, int) and got != want:
            raise ValueError(
                f"{what}: ONNX input shape {list(shape)} does not match [N, {', '.join(map(str, expected))}]"
            )


def inspect_gbt(onnx_path: Path, n_features: int) -> OnnxBinding:
    """Binding for the XGBoost classifier converted by onnxmltools (`probabilities` [N, 2], column 1)."""
    session = _session(onnx_path)
    inputs = session.get_inputs()
    if len(inputs) != 1:
        raise ValueError(f"{onnx_path}: GBT ONNX must have exactly one input, got {[i.name for i in inputs]}")
    _check_static_dims(f"{onnx_path}", inputs[0].shape, (n_features,))
    binding_inputs = ((FEATURES_INPUT, inputs[0].name),)
    outputs = {o.name: o for o in session.get_outputs()}
    if _GBT_PROBA_OUTPUT in outputs:
        return OnnxBinding(binding_inputs, _GBT_PROBA_OUTPUT, _GBT_POSITIVE_COLUMN)
    # Some converters name it differently; a single [N, 2] output is unambiguous too.
    two_column = [o.name for o in outputs.values() if len(o.shape) == 2 and o.shape[1] == 2]
    if len(two_column) == 1:
        return OnnxBinding(binding_inputs, two_column[0], _GBT_POSITIVE_COLUMN)
    raise ValueError(f"{onnx_path}: no class-probability output ([N, 2]) among {sorted(outputs)}")


def inspect_seq(onnx_path: Path, n_features: int, seq_len: int, seq_features: int) -> OnnxBinding:
    """Binding for the sequence model: inputs `features` [N, n_features] and `sequence` [N, T, F], output
    `probability` [N, 1] or [N]."""
    session = _session(onnx_path)
    inputs = {i.name: i for i in session.get_inputs()}
    expected = {_SEQ_ONNX_FEATURES_INPUT: (n_features,), _SEQ_ONNX_SEQUENCE_INPUT: (seq_len, seq_features)}
    if set(inputs) != set(expected):
        raise ValueError(
            f"{onnx_path}: sequence ONNX inputs are {sorted(inputs)}, expected {sorted(expected)}"
            " (a model exported before the sequence model took the features too? run `scoring train` again)"
        )
    for name, dims in expected.items():
        _check_static_dims(f"{onnx_path} input {name!r}", inputs[name].shape, dims)
    binding_inputs = ((FEATURES_INPUT, _SEQ_ONNX_FEATURES_INPUT), (SEQUENCE_INPUT, _SEQ_ONNX_SEQUENCE_INPUT))
    outputs = [o.name for o in session.get_outputs()]
    if _SEQ_PROBA_OUTPUT in outputs:
        return OnnxBinding(binding_inputs, _SEQ_PROBA_OUTPUT, None)
    if len(outputs) == 1:
        return OnnxBinding(binding_inputs, outputs[0], None)
    raise ValueError(f"{onnx_path}: no {_SEQ_PROBA_OUTPUT!r} output among {outputs}")


def _session(onnx_path: Path) -> ort.InferenceSession:
    # onnxruntime (a serving dependency) rather than onnx: loading the file here also proves the runtime
    # that will serve it accepts its opsets, before Triton finds out at load time.
    import onnxruntime as ort

    if not onnx_path.is_file():
        raise FileNotFoundError(f"ONNX model not found: {onnx_path}")
    return ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])


def adapt_onnx(src: Path, dst: Path, binding: OnnxBinding, *, triton_output: str, width: int = 1) -> None:
    """Write `src` to `dst` with I/O renamed to the Triton names and the output shaped [N, width] FP32.

    `width` is 1 for one probability per row (fraud's models: a picked column, or [N] / [N, 1] already) and the
    class count for a model whose whole probability vector is served (the market scenario's, [N, 3]).

    Each ONNX input of `binding.inputs` is renamed to its Triton input. Needed for the onnxruntime backend
    (container target), which maps config tensors to ONNX tensors by name and shape. The original nodes
    are kept; only Identity/Gather/Reshape/Cast are added around them.
    """
    try:
        import onnx
        from onnx import TensorProto, helper, numpy_helper
    except ImportError as exc:  # pragma: no cover - depends on the installed extras
        raise RuntimeError(
            "target='container' needs the `onnx` package (extra `train`) to adapt the graphs"
        ) from exc
    import numpy as np

    model = onnx.load(str(src))
    graph = model.graph
    if not any(o.name == binding.onnx_output for o in graph.output):
        raise ValueError(f"{src}: no graph output {binding.onnx_output!r}")
    if width < 1 or (binding.column is not None and width != 1):
        raise ValueError(f"width {width} with column {binding.column}: a picked column is one value per row")
    triton_names = binding.triton_inputs
    if len(set(triton_names)) != len(triton_names) or triton_output in triton_names:
        raise ValueError(f"duplicate Triton tensor names: inputs {list(triton_names)}, output {triton_output!r}")
    graph_names = (
        {t for n in graph.node for t in (*n.input, *n.output)}
        | {i.name for i in graph.initializer}
        | {i.name for i in graph.input}
    )

    identities = []
    for triton_input, onnx_input in binding.inputs:
        position = next((k for k, i in enumerate(graph.input) if i.name == onnx_input), None)
        if position is None:
            raise ValueError(f"{src}: no graph input {onnx_input!r}")
        if triton_input == onnx_input:
            continue  # already named as Triton expects
        if triton_input in graph_names:
            raise ValueError(f"{src}: Triton input name {triton_input!r} is already a tensor of the graph")
        # Feed the old input name from an Identity instead of renaming it: nested subgraphs (Loop/Scan bodies
        # of an exported LSTM) may refer to it by name and would otherwise need rewriting too.
        original = graph.input[position]
        new_input = onnx.ValueInfoProto()
        new_input.CopyFrom(original)
        new_input.name = triton_input
        graph.input.remove(original)
        graph.input.insert(position, new_input)
        identities.append(helper.make_node("Identity", [triton_input], [onnx_input]))
    # ONNX requires topological node order, so the Identities go first and the output nodes last.
    for node in reversed(identities):
        graph.node.insert(0, node)

    # Adapter tensor names must not collide with the graph's (an already adapted graph included).
    taken = {t for n in graph.node for t in (*n.input, *n.output)} | {i.name for i in graph.initializer}

    def fresh(base: str) -> str:
        name, n = f"triton_adapter_{base}", 0
        while name in taken:
            n += 1
            name = f"triton_adapter_{base}_{n}"
        taken.add(name)
        return name

    nodes = []
    picked = binding.onnx_output
    if binding.column is not None:
        column, picked = fresh("column"), fresh("picked")
        graph.initializer.append(numpy_helper.from_array(np.array([binding.column], np.int64), column))
        nodes.append(helper.make_node("Gather", [binding.onnx_output, column], [picked], axis=1))
    shape, reshaped = fresh("shape"), fresh("reshaped")
    graph.initializer.append(numpy_helper.from_array(np.array([-1, width], np.int64), shape))
    nodes.append(helper.make_node("Reshape", [picked, shape], [reshaped]))
    nodes.append(helper.make_node("Cast", [reshaped], [triton_output], to=TensorProto.FLOAT))
    graph.node.extend(nodes)

    # Only the renamed tensor stays a graph output: the onnxruntime backend rejects a config that omits a
    # model output such as onnxmltools' `label`.
    del graph.output[:]
    graph.output.append(helper.make_tensor_value_info(triton_output, TensorProto.FLOAT, ["N", width]))
    if not any(op.domain in ("", "ai.onnx") for op in model.opset_import):
        # onnxmltools' XGBoost graphs import only ai.onnx.ml; the adapter nodes need the default domain.
        model.opset_import.append(helper.make_opsetid("", 13))

    onnx.checker.check_model(model)
    dst.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(dst))


def write_repository(
    out_dir: Path,
    gbt_onnx: Path,
    seq_onnx: Path,
    *,
    n_features: int,
    seq_len: int,
    seq_features: int,
    stacker: tuple[float, float, float] = (0.5, 0.5, 0.0),
    version: int = 1,
    target: str = "local",
    gpu: bool = False,
    max_batch_size: int = 4096,
    max_queue_delay_us: int = 200,
    default_timeout_us: int = 50_000,
    queue_policy: bool = True,
    fused: bool | None = None,
) -> Path:
    """Write the model repository into `out_dir` and return `out_dir`.

    `fused` (default: on the local target) makes `fraud_ensemble` one Python-backend model that runs both ONNX
    files and the blend in one step (`triton_models/fused_ensemble.py`), and writes the scheduled graph beside it
    as `fraud_ensemble_scheduled`; otherwise `fraud_ensemble` is the scheduled graph.

    The four model folders are replaced wholesale (other entries of `out_dir` are left alone) so a rewrite
    with another `version` never leaves a stale version folder that Triton's "latest" policy would pick.

    `queue_policy=False` drops the `default_queue_policy` block (and with it per-request queue timeouts).
    An escape hatch for what the pytriton build (Triton 2.51) does with any timeout policy: the dynamic
    batcher stops prefetching payloads, and a request that arrives while the model's instance is busy can
    sit until the batcher's 500 ms idle poll, then be rejected once past its timeout. Without the policy
    no such stall was seen (0 bursts in 100).
    """
    if target not in TARGETS:
        raise ValueError(f"target must be one of {TARGETS}, got {target!r}")
    if gpu and target == "local":
        raise ValueError("gpu=True needs target='container': the local pytriton binary serves on CPU only")
    if version < 1:
        raise ValueError(f"version must be >= 1, got {version}")
    for label, value in (
        ("n_features", n_features),
        ("seq_len", seq_len),
        ("seq_features", seq_features),
        ("max_batch_size", max_batch_size),
    ):
        if value < 1:
            raise ValueError(f"{label} must be >= 1, got {value}")
    if max_queue_delay_us < 0 or default_timeout_us < 0:
        raise ValueError("max_queue_delay_us and default_timeout_us must be >= 0")
    if len(stacker) != 3:
        raise ValueError(f"stacker must hold (w_gbt, w_seq, bias), got {stacker!r}")

    out_dir = Path(out_dir)
    gbt_binding = inspect_gbt(Path(gbt_onnx), n_features)
    seq_binding = inspect_seq(Path(seq_onnx), n_features, seq_len, seq_features)

    out_dir.mkdir(parents=True, exist_ok=True)
    if fused is None:
        fused = target == "local"
    if fused and target != "local":
        raise ValueError("fused=True is for the local target: the container target schedules the onnxruntime backend")
    for model in (GBT_MODEL, SEQ_MODEL, COMBINER_MODEL, ENSEMBLE_MODEL, SCHEDULED_ENSEMBLE_MODEL):
        shutil.rmtree(out_dir / model, ignore_errors=True)

    common: dict[str, Any] = {
        "max_batch_size": max_batch_size,
        "max_queue_delay_us": max_queue_delay_us,
        "default_timeout_us": default_timeout_us,
        "queue_policy": queue_policy,
    }
    input_dims = {FEATURES_INPUT: (n_features,), SEQUENCE_INPUT: (seq_len, seq_features)}
    onnx_models = (
        (GBT_MODEL, Path(gbt_onnx), gbt_binding, P_GBT_OUTPUT),
        (SEQ_MODEL, Path(seq_onnx), seq_binding, P_SEQ_OUTPUT),
    )
    for name, src, binding, output_name in onnx_models:
        tensors_in = [Tensor(t, input_dims[t]) for t in binding.triton_inputs]
        version_dir = out_dir / name / str(version)
        version_dir.mkdir(parents=True)
        params = {"version": str(version)}
        if target == "local":
            shutil.copyfile(src, version_dir / "model.onnx")
            shutil.copyfile(ONNX_RUNNER_SOURCE, version_dir / "model.py")
            params |= {
                # Triton input name -> ONNX input name, one entry per input of the config.
                "onnx_inputs": json.dumps(dict(binding.inputs)),
                "onnx_output": binding.onnx_output,
                "intra_op_threads": "1",
            }
            if binding.column is not None:
                params["onnx_output_column"] = str(binding.column)
            config = model_config(
                name=name,
                backend="python",
                platform=None,
                inputs=tensors_in,
                outputs=[Tensor(output_name, (1,))],
                instance_kind="KIND_CPU",
                instance_count=1,
                params=params,
                **common,
            )
        else:
            adapt_onnx(src, version_dir / "model.onnx", binding, triton_output=output_name)
            params["source_onnx"] = src.name
            config = model_config(
                name=name,
                backend="onnxruntime",
                platform="onnxruntime_onnx",
                inputs=tensors_in,
                outputs=[Tensor(output_name, (1,))],
                instance_kind="KIND_GPU" if gpu else "KIND_CPU",
                instance_count=None,
                params=params,
                **common,
            )
        (out_dir / name / "config.pbtxt").write_text(config)

    combiner_dir = out_dir / COMBINER_MODEL / str(version)
    combiner_dir.mkdir(parents=True)
    shutil.copyfile(COMBINER_SOURCE, combiner_dir / "model.py")
    w_gbt, w_seq, bias = (float(w) for w in stacker)
    (out_dir / COMBINER_MODEL / "config.pbtxt").write_text(
        model_config(
            name=COMBINER_MODEL,
            backend="python",
            platform=None,
            inputs=[Tensor(P_GBT_OUTPUT, (1,)), Tensor(P_SEQ_OUTPUT, (1,))],
            outputs=[Tensor(SCORE_OUTPUT, (1,))],
            # The blend is a handful of flops per row: one CPU instance keeps up on either target.
            instance_kind="KIND_CPU",
            instance_count=1,
            params={"version": str(version), "w_gbt": repr(w_gbt), "w_seq": repr(w_seq), "bias": repr(bias)},
            **common,
        )
    )

    # Triton only loads an ensemble that has a (possibly empty) version folder.
    scheduled = SCHEDULED_ENSEMBLE_MODEL if fused else ENSEMBLE_MODEL
    (out_dir / scheduled / str(version)).mkdir(parents=True)
    (out_dir / scheduled / "config.pbtxt").write_text(
        ensemble_config(
            max_batch_size=max_batch_size,
            version=version,
            n_features=n_features,
            seq_len=seq_len,
            seq_features=seq_features,
            name=scheduled,
        )
    )
    if fused:
        _write_fused(out_dir, gbt_onnx, seq_onnx, gbt_binding, seq_binding, (w_gbt, w_seq, bias), version,
                     (n_features,), (seq_len, seq_features), common)
    return out_dir
