"""The market scenario's container target (scoring/scenarios/market/container.py) on the trained test models.

Triton's onnxruntime backend is not in this project's tritonserver (the pytriton build has none), so the container
repository is checked as tests/triton_checks.py checks fraud's, and its maths by running the ONNX files that Triton
would run, step by step as the ensemble's config wires them, with ONNX Runtime: on real feature rows of the market
simulation they must answer what the local target's Python model (triton_model.py, run here with a stand-in for
triton_python_backend_utils) answers, PROBS to float32 rounding and SIGNAL exactly.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
import sys
import types
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from scoring.scenarios import registry
from scoring.scenarios.market import container
from scoring.scenarios.market import features as MF
from scoring.scenarios.market import models as MM
from scoring.scenarios.market.repository import write_model
from scoring.scenarios.market.simulator import MarketConfig, simulate
from tests.conftest import TEST_MARKET
from tests.helpers import load_module
from tests.triton_checks import parse_config, repository_problems

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
ROWS = 400


@pytest.fixture(scope="module")
def ensemble_dir(artifacts: Path) -> Path:
    return artifacts / "models" / "market" / "ensemble"


@pytest.fixture(scope="module")
def rows() -> tuple[np.ndarray, np.ndarray]:
    """Feature rows and tick sequences of the test simulation's generator (same seed, fewer ticks), spread over
    every symbol and the start of their windows."""
    frame = simulate(MarketConfig(n_symbols=8, ticks_per_symbol=800, seed=TEST_MARKET.seed))
    features, sequences, status = MF.compute_offline(frame)
    served = np.flatnonzero((status == MF.FOLDED) | (status == MF.GAP))
    pick = served[np.linspace(0, len(served) - 1, ROWS).astype(int)]
    return features[pick], sequences[pick]


def run_ensemble(repository: Path, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """market_ensemble as Triton schedules it: each step's ONNX file fed from the tensors its input_map names."""
    import onnxruntime as ort

    tensors = dict(inputs)
    ensemble = parse_config(repository / container.MODEL / "config.pbtxt")
    for step in ensemble.ensemble_scheduling.step:
        path = repository / step.model_name / str(step.model_version) / "model.onnx"
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        names = [o.name for o in session.get_outputs()]
        results = session.run(names, {model: tensors[outer] for model, outer in step.input_map.items()})
        for name, value in zip(names, results, strict=True):
            tensors[step.output_map[name]] = value
    return {t.name: tensors[t.name] for t in ensemble.output}


def local_model(repository: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    """The local target's market_ensemble, initialised as Triton's Python backend would from its config.pbtxt."""
    monkeypatch.setitem(sys.modules, "triton_python_backend_utils", types.ModuleType("triton_python_backend_utils"))
    folder = repository / container.MODEL
    spec = importlib.util.spec_from_file_location("local_market_model", folder / "1" / "model.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    config = parse_config(folder / "config.pbtxt")
    model_config = {
        "parameters": {key: {"string_value": value.string_value} for key, value in config.parameters.items()},
        "input": [{"name": t.name, "dims": list(t.dims)} for t in config.input],
    }
    model = module.TritonPythonModel()
    model.initialize({"model_config": json.dumps(model_config), "model_name": container.MODEL,
                      "model_repository": str(folder), "model_version": "1"})
    return model


@pytest.mark.parametrize("gpu", [False, True])
def test_the_container_repository_is_one_triton_can_load(ensemble_dir, tmp_path, gpu) -> None:
    repository = container.write_container_models(tmp_path / "repo", ensemble_dir, gpu=gpu, queue_policy=False)
    assert sorted(p.name for p in repository.iterdir()) == sorted(container.MODELS)
    assert repository_problems(repository, gpu, required=[container.MODEL]) == []
    ensemble = parse_config(repository / container.MODEL / "config.pbtxt")
    local = parse_config(write_model(tmp_path / "local", ensemble_dir) / container.MODEL / "config.pbtxt")
    # What the gateway sees is the same on both targets.
    for field in ("input", "output"):
        assert [(t.name, t.data_type, list(t.dims)) for t in getattr(ensemble, field)] == [
            (t.name, t.data_type, list(t.dims)) for t in getattr(local, field)]
    assert ensemble.max_batch_size == local.max_batch_size
    for name in (container.GBT_MODEL, container.SEQ_MODEL):
        leaf = parse_config(repository / name / "config.pbtxt")
        assert leaf.platform == "onnxruntime_onnx" and leaf.HasField("dynamic_batching"), name


def test_the_container_ensemble_answers_what_the_local_model_answers(ensemble_dir, rows, tmp_path,
                                                                     monkeypatch) -> None:
    features, sequences = rows
    repository = container.write_container_models(tmp_path / "repo", ensemble_dir)
    served = run_ensemble(repository, {"FEATURES": features, "SEQUENCE": sequences})
    local_probs, local_signal = local_model(write_model(tmp_path / "local", ensemble_dir), monkeypatch)._run(
        {"FEATURES": features, "SEQUENCE": sequences})
    assert served["PROBS"].shape == (ROWS, 3) and served["PROBS"].dtype == np.float32
    assert served["SIGNAL"].shape == (ROWS, 1) and served["SIGNAL"].dtype == np.float32
    np.testing.assert_allclose(served["PROBS"], local_probs, rtol=0, atol=1e-5)
    np.testing.assert_array_equal(served["SIGNAL"], local_signal)
    # The decision rule of training, on the served probabilities, and a sample that exercises it.
    tau = json.loads((ensemble_dir / "ensemble.json").read_text())["tau"]
    np.testing.assert_array_equal(served["SIGNAL"][:, 0], MM.decide(served["PROBS"].astype(np.float64), tau))
    assert len(np.unique(served["SIGNAL"])) >= 2, "the rows should give more than one signal"


def test_the_stacker_signals_the_likelier_move_from_tau_on_and_up_on_a_tie() -> None:
    import onnxruntime as ort

    # Identity-like stacker on the GBT's log-probabilities: PROBS is the GBT's distribution.
    coef = np.hstack([np.eye(3), np.zeros((3, 3))])
    session = ort.InferenceSession(container.stacker_onnx(coef, np.zeros(3), 0.35).SerializeToString(),
                                   providers=["CPUExecutionProvider"])
    p_gbt = np.array([[0.4, 0.2, 0.4], [0.45, 0.3, 0.25], [0.3, 0.5, 0.2], [0.1, 0.3, 0.6]], np.float32)
    probs, signal = session.run(None, {"P_GBT": p_gbt, "P_SEQ": np.full_like(p_gbt, 1 / 3)})
    np.testing.assert_allclose(probs, p_gbt, atol=1e-6)
    assert signal[:, 0].tolist() == [2.0, 0.0, 1.0, 2.0]


def test_make_triton_repo_adds_the_market_models_only_when_the_market_is_trained(artifacts, tmp_path) -> None:
    copy = tmp_path / "artifacts"
    for part in ("models", "train_report.json"):
        (shutil.copytree if (artifacts / part).is_dir() else shutil.copyfile)(artifacts / part, copy / part)
    builder = load_module(ROOT / "deploy" / "triton_repository.py")
    builder.build(copy)
    for name, gpu in builder.CONTAINER_REPOSITORIES.items():
        assert repository_problems(copy / name, gpu, required=["fraud_ensemble", container.MODEL]) == [], name
    shutil.rmtree(copy / registry.MARKET.filter_dir)
    for name in builder.build(copy):
        left = {p.name for p in (copy / name).iterdir()}
        assert "fraud_ensemble" in left and not left & set(container.MODELS), name
