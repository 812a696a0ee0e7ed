"""The container target of the Triton model repository and the Triton image it runs in.

`make triton-repo` (deploy/triton_repository.py) is run here on small ONNX models shaped like the exporters' (always)
and its output in artifacts/ is checked too (when a training run left one): every model that an ensemble names
exists with its version folder and its files, every config.pbtxt parses with Triton's own `model_config.proto`
(from tritonclient: an unknown key is an error), tensors agree from step to step, and each ONNX file loads in ONNX
Runtime with the config's tensor names and shapes (tests/triton_checks.py; the market scenario's models are checked
on real trained models in test_market_container.py). The pinned image's ONNX Runtime must read the files' IR version
and opsets, and every tritonserver flag that compose and Kubernetes pass must exist in Triton 2.51 (the image's
version, the same as the tritonserver binary that the nvidia-pytriton wheel bundles).
"""

from __future__ import annotations

import importlib.util
import json
import re
import subprocess
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from google.protobuf import text_format

from scoring.scenarios.fraud import features as F
from services.ensemble.repository import ENSEMBLE_MODEL
from tests.triton_checks import onnx_problems, parse_config, repository_problems

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "artifacts"
# Release 24.10 is Triton 2.51.0 (with ONNX Runtime 1.19.2: tests/triton_checks.py), also the bundled local binary's
# version, so the config keys and flags that the local target runs with are the image's.
TRITON_IMAGE = "nvcr.io/nvidia/tritonserver:24.10-py3"
N_FEATURES, SEQ_LEN, SEQ_FEATURES = len(F.FEATURE_NAMES), F.SEQ_LEN, len(F.SEQ_FEATURE_NAMES)


def load_builder() -> Any:
    path = ROOT / "deploy" / "triton_repository.py"
    spec = importlib.util.spec_from_file_location("deploy_triton_repository", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def synthetic_onnx(folder: Path) -> tuple[Path, Path]:
    """Stand-ins with the exporters' tensor names: XGBoost via onnxmltools (`probabilities` [N, 2] and `label`)
    and the sequence model via torch (`features`, `sequence` -> `probability` [N, 1])."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    folder.mkdir(parents=True, exist_ok=True)

    def save(graph: onnx.GraphProto, path: Path, opset: int) -> Path:
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
        model.ir_version = 8  # what the real exports carry
        onnx.checker.check_model(model)
        onnx.save(model, str(path))
        return path

    gbt = helper.make_graph(
        [
            helper.make_node("MatMul", ["input", "w"], ["logits"]),
            helper.make_node("Softmax", ["logits"], ["probabilities"], axis=1),
            helper.make_node("ArgMax", ["probabilities"], ["label"], axis=1, keepdims=0),
        ],
        "gbt",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", N_FEATURES])],
        [
            helper.make_tensor_value_info("label", TensorProto.INT64, ["N"]),
            helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["N", 2]),
        ],
        [numpy_helper.from_array(rng.normal(size=(N_FEATURES, 2)).astype(np.float32), "w")],
    )
    width = N_FEATURES + SEQ_LEN * SEQ_FEATURES
    seq = helper.make_graph(
        [
            helper.make_node("Flatten", ["sequence"], ["flat"], axis=1),
            helper.make_node("Concat", ["features", "flat"], ["x"], axis=1),
            helper.make_node("MatMul", ["x", "w"], ["z"]),
            helper.make_node("Sigmoid", ["z"], ["probability"]),
        ],
        "seq",
        [
            helper.make_tensor_value_info("features", TensorProto.FLOAT, ["N", N_FEATURES]),
            helper.make_tensor_value_info("sequence", TensorProto.FLOAT, ["N", SEQ_LEN, SEQ_FEATURES]),
        ],
        [helper.make_tensor_value_info("probability", TensorProto.FLOAT, ["N", 1])],
        [numpy_helper.from_array(rng.normal(size=(width, 1)).astype(np.float32) * 0.1, "w")],
    )
    return save(gbt, folder / "gbt.onnx", 15), save(seq, folder / "lstm.onnx", 17)


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """What `make triton-repo` writes, from stand-in models and a training report."""
    artifacts = tmp_path_factory.mktemp("artifacts")
    synthetic_onnx(artifacts / "models" / "ensemble")
    report = {"version": 1, "stacker": {"w_gbt": 0.3, "w_seq": 0.7, "bias": -1.5}}
    (artifacts / "train_report.json").write_text(json.dumps(report))
    return dict(load_builder().build(artifacts))


REPOSITORIES = [("triton_repository_container", False), ("triton_repository_container_gpu", True)]


@pytest.mark.parametrize("name,gpu", REPOSITORIES)
def test_make_triton_repo_writes_a_repository_triton_can_load(built, name, gpu) -> None:
    assert repository_problems(built[name], gpu) == []
    combiner = parse_config(built[name] / "fraud_combiner" / "config.pbtxt")
    stacker = {p: float(v.string_value) for p, v in combiner.parameters.items() if p in ("w_gbt", "w_seq", "bias")}
    assert stacker == pytest.approx({"w_gbt": 0.3, "w_seq": 0.7, "bias": -1.5}), "the stacker comes from the report"


def test_the_repository_check_finds_a_missing_model_and_an_unknown_key(built, tmp_path) -> None:
    import shutil

    copy = tmp_path / "repo"
    shutil.copytree(built["triton_repository_container"], copy)
    shutil.rmtree(copy / "fraud_seq")
    assert any("fraud_seq" in p for p in repository_problems(copy, gpu=False))
    config = copy / "fraud_gbt" / "config.pbtxt"
    gbt = parse_config(config)
    config.write_text(config.read_text() + "max_queue_delay_us: 5\n")
    with pytest.raises(text_format.ParseError):
        parse_config(config)
    # An export with a newer opset or IR version than the image's ONNX Runtime reads is refused here, not in Triton.
    import onnx
    import onnxruntime as ort

    path = copy / "fraud_gbt" / "1" / "model.onnx"
    model = onnx.load(str(path))
    for opset in model.opset_import:
        if opset.domain == "":
            opset.version = 22
    model.ir_version = 11
    onnx.save(model, str(path))
    problems = onnx_problems(path, gbt, onnx, ort)
    assert any("IR version 11" in p for p in problems) and any("ai.onnx 22" in p for p in problems)


@pytest.mark.parametrize("name,gpu", REPOSITORIES)
def test_the_repository_in_artifacts_is_one_triton_can_load(name, gpu) -> None:
    repository = ARTIFACTS / name
    if not (repository / ENSEMBLE_MODEL).is_dir():
        pytest.skip(f"no {repository}: `make triton-repo` writes it (after training)")
    assert repository_problems(repository, gpu) == []


def test_compose_and_kubernetes_run_the_pinned_triton_image() -> None:
    compose = yaml.safe_load((ROOT / "deploy" / "compose" / "docker-compose.yml").read_text())
    assert compose["services"]["triton"]["image"] == TRITON_IMAGE
    assert compose["services"]["triton-gpu"]["image"] == TRITON_IMAGE
    manifest = list(yaml.safe_load_all((ROOT / "deploy" / "k8s" / "base" / "triton.yaml").read_text()))
    (deployment,) = [d for d in manifest if d["kind"] == "Deployment"]
    assert [c["image"] for c in deployment["spec"]["template"]["spec"]["containers"]] == [TRITON_IMAGE]


def tritonserver_flags() -> set[str]:
    from services.ensemble.triton import find_triton

    paths = find_triton()
    out = subprocess.run(
        [str(paths.binary), "--help"], env={"LD_LIBRARY_PATH": str(paths.libs_dir)},
        capture_output=True, text=True, timeout=60,
    )
    flags = set(re.findall(r"^\s+(--[a-z0-9-]+)", out.stdout + out.stderr, re.M))
    assert "--model-repository" in flags, out.stdout + out.stderr
    return flags


def test_every_tritonserver_flag_of_compose_and_kubernetes_exists_in_triton_2_51() -> None:
    compose = yaml.safe_load((ROOT / "deploy" / "compose" / "docker-compose.yml").read_text())
    manifest = list(yaml.safe_load_all((ROOT / "deploy" / "k8s" / "base" / "triton.yaml").read_text()))
    (deployment,) = [d for d in manifest if d["kind"] == "Deployment"]
    argvs = [compose["services"]["triton"]["command"], compose["services"]["triton-gpu"]["command"],
             deployment["spec"]["template"]["spec"]["containers"][0]["args"]]
    known = tritonserver_flags()
    assert "--no-such-flag" not in known
    for argv in argvs:
        assert argv[0] == "tritonserver"
        used = {arg.split("=", 1)[0] for arg in argv[1:]}
        assert used <= known, f"unknown to Triton 2.51: {sorted(used - known)}"
        # --trace-config: global settings are level, rate, count, mode; the rest belong to a mode.
        for arg in argv:
            if arg.startswith("--trace-config="):
                setting = arg.split("=", 1)[1]
                assert setting.split("=")[0] in ("level", "rate", "count", "mode") or setting.startswith(
                    "opentelemetry,"), arg
