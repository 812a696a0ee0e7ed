"""What Triton would refuse, or serve wrongly, in a container-target model repository (the official image's
onnxruntime backend and ensemble scheduling); shared by tests/unit/test_deploy_triton.py (fraud's models) and
tests/unit/test_market_container.py (the market scenario's).

Every config.pbtxt parses with Triton's own `model_config.proto` (from tritonclient: an unknown key is an error),
every ensemble's steps name models that are there and read only tensors written before them with the dims they
expect, and each ONNX file loads in ONNX Runtime with its config's tensor names and shapes and opsets the image's
runtime reads.
"""

from __future__ import annotations

import ast
from collections.abc import Collection
from pathlib import Path
from typing import Any

import numpy as np
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2

from scoring.scenarios.market.container import CPU_MODELS as MARKET_CPU_MODELS
from services.ensemble.repository import ENSEMBLE_MODEL

# Triton's compatibility matrix (triton-inference-server/server, docs/introduction/compatibility.md): release 24.10
# is Triton 2.51.0 with ONNX Runtime 1.19.2, which reads ONNX IR version <= 10 and opsets ai.onnx <= 21,
# ai.onnx.ml <= 4 (ONNX 1.16's).
ORT_MAX_IR_VERSION = 10
ORT_MAX_OPSET = {"": 21, "ai.onnx": 21, "ai.onnx.ml": 4}
# onnxruntime-backend models that the writers keep on the CPU whatever the repository's device.
CPU_MODELS = frozenset(MARKET_CPU_MODELS)
# Outputs that are class codes (the market scenario's signal: down, flat, up); every other output is a probability.
CODED_OUTPUTS = {"SIGNAL": (0.0, 1.0, 2.0)}


def parse_config(path: Path) -> model_config_pb2.ModelConfig:
    config = model_config_pb2.ModelConfig()
    text_format.Parse(path.read_text(), config)  # raises ParseError on any key Triton's proto does not have
    return config


def repository_problems(repository: Path, gpu: bool, required: Collection[str] = (ENSEMBLE_MODEL,)) -> list[str]:
    """What is wrong in a container-target repository: every ensemble in it is checked, `required` must be there."""
    problems: list[str] = []
    configs = {}
    for folder in sorted(p for p in repository.iterdir() if p.is_dir()):
        config = parse_config(folder / "config.pbtxt")
        if config.name != folder.name:
            problems.append(f"{folder.name}: config names {config.name!r}")
        configs[folder.name] = config
    missing = [name for name in required if name not in configs]
    if missing:
        return [f"no {', '.join(missing)} in {repository}"]
    problems += [f"{name}: not an ensemble" for name in required if configs[name].platform != "ensemble"]
    for name, config in configs.items():
        if config.platform == "ensemble":
            problems += ensemble_problems(repository, name, configs, gpu)
    return problems


def ensemble_problems(repository: Path, name: str, configs: dict[str, Any], gpu: bool) -> list[str]:
    import onnx
    import onnxruntime as ort

    problems: list[str] = []
    ensemble = configs[name]
    if not (repository / name / "1").is_dir():
        problems.append(f"{name}: an ensemble without a version folder")
    dims = {t.name: list(t.dims) for t in ensemble.input}
    available = set(dims)
    for step in ensemble.ensemble_scheduling.step:
        model = configs.get(step.model_name)
        version_dir = repository / step.model_name / str(step.model_version)
        if model is None or not version_dir.is_dir():
            problems.append(f"{name} names {step.model_name} v{step.model_version}, which is not there")
            continue
        inputs = {t.name: list(t.dims) for t in model.input}
        outputs = {t.name: list(t.dims) for t in model.output}
        if set(step.input_map) != set(inputs) or set(step.output_map) != set(outputs):
            problems.append(f"{step.model_name}: step maps {dict(step.input_map)} / {dict(step.output_map)}")
        for model_tensor, ensemble_tensor in step.input_map.items():
            if ensemble_tensor not in available:
                problems.append(f"{step.model_name} reads {ensemble_tensor} before any step writes it")
            elif dims.get(ensemble_tensor, inputs.get(model_tensor)) != inputs.get(model_tensor):
                problems.append(f"{step.model_name}.{model_tensor} dims {inputs.get(model_tensor)}")
        for model_tensor, ensemble_tensor in step.output_map.items():
            available.add(ensemble_tensor)
            dims.setdefault(ensemble_tensor, outputs.get(model_tensor))
        kinds = [model_config_pb2.ModelInstanceGroup.Kind.Name(g.kind) for g in model.instance_group]
        if model.backend == "onnxruntime":
            device = "KIND_GPU" if gpu and step.model_name not in CPU_MODELS else "KIND_CPU"
            if kinds != [device]:
                problems.append(f"{step.model_name}: instance kinds {kinds}, gpu={gpu}")
            problems += onnx_problems(version_dir / "model.onnx", model, onnx, ort)
        elif model.backend == "python":
            source = version_dir / "model.py"
            classes = [n.name for n in ast.walk(ast.parse(source.read_text())) if isinstance(n, ast.ClassDef)]
            if "TritonPythonModel" not in classes:
                problems.append(f"{source}: no TritonPythonModel")
        else:
            problems.append(f"{step.model_name}: unexpected backend {model.backend!r}")
    for tensor in ensemble.output:
        if tensor.name not in available:
            problems.append(f"{name}: output {tensor.name} is produced by no step")
        elif dims[tensor.name] != list(tensor.dims):
            problems.append(f"{name}: output {tensor.name} dims {list(tensor.dims)}, its step's {dims[tensor.name]}")
    return problems


def onnx_problems(path: Path, config: Any, onnx: Any, ort: Any) -> list[str]:
    problems = []
    model = onnx.load(str(path))
    if model.ir_version > ORT_MAX_IR_VERSION:
        problems.append(f"{path}: IR version {model.ir_version} > {ORT_MAX_IR_VERSION} (ONNX Runtime 1.19)")
    for opset in model.opset_import:
        limit = ORT_MAX_OPSET.get(opset.domain)
        if limit is None or opset.version > limit:
            problems.append(f"{path}: opset {opset.domain or 'ai.onnx'} {opset.version} beyond ONNX Runtime 1.19")
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    # The onnxruntime backend binds config tensors to ONNX tensors by name, batch dimension first.
    inputs = {i.name: i.shape for i in session.get_inputs()}
    expected = {t.name: list(t.dims) for t in config.input}
    if set(inputs) != set(expected) or any(len(inputs[n]) != len(d) + 1 for n, d in expected.items()):
        return problems + [f"{path}: inputs {inputs}, config {expected}"]
    if [o.name for o in session.get_outputs()] != [t.name for t in config.output]:
        return problems + [f"{path}: outputs {[o.name for o in session.get_outputs()]}"]
    batch = 7
    rng = np.random.default_rng(1)
    feeds = {n: rng.normal(size=(batch, *d)).astype(np.float32) for n, d in expected.items()}
    for tensor, result in zip(config.output, session.run(None, feeds), strict=True):
        shape = (batch, *tensor.dims)
        if result.shape != shape or result.dtype != np.float32:
            problems.append(f"{path}: {tensor.name} {result.shape} {result.dtype}, config {list(shape)} float32")
        elif tensor.name in CODED_OUTPUTS:
            if not np.all(np.isin(result, CODED_OUTPUTS[tensor.name])):
                problems.append(f"{path}: {tensor.name} holds {sorted(set(result.ravel()))}, not class codes")
        elif not np.all((result >= 0) & (result <= 1)):
            problems.append(f"{path}: {tensor.name} holds values outside [0, 1], not probabilities")
    return problems
