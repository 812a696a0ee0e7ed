"""Integration test of the Triton ensemble stage (feature service -> **Triton fraud_ensemble**).

Trains two tiny real models (XGBoost -> onnxmltools, LogisticRegression over the features and the flattened
event window -> skl2onnx wrapped to take `features` [N, n] and `sequence` [N, T, F], as the LSTM export
does), writes the local repository, starts the real tritonserver
bundled with nvidia-pytriton through `python -m services.ensemble.triton`, and checks the ensemble over
gRPC against onnxruntime run directly in the test. A fast part checks that both targets' configs parse.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import pytest_asyncio
import tritonclient.grpc.aio as grpcclient
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2
from tritonclient.utils import InferenceServerException

from services.ensemble.repository import (
    COMBINER_MODEL,
    ENSEMBLE_MODEL,
    GBT_MODEL,
    SCHEDULED_ENSEMBLE_MODEL,
    SEQ_MODEL,
    OnnxBinding,
    adapt_onnx,
    write_repository,
)
from services.ensemble.triton import wait_ready

pytestmark = pytest.mark.integration

REPO_ROOT = Path(__file__).resolve().parents[2]
N_FEATURES = 15
SEQ_LEN = 8
SEQ_FEATURES = 4
STACKER = (0.7, 0.3, -0.4)  # w_gbt, w_seq, bias of the logistic stacker
VERSION = 2  # not 1, so a default version cannot pass for the configured one
READY_TIMEOUT_S = 120.0
# Queue timeout of the live server's models. Larger than the 50 ms default on purpose: with any queue policy
# Triton 2.51 stops prefetching payloads, and a request that arrives while an instance is busy can wait out
# the dynamic batcher's 500 ms idle poll (about 1 burst in 30 on this 2-core box) and be rejected. The
# override path (clients may only shorten it) is still exercised by the timeout test below.
LIVE_DEFAULT_TIMEOUT_US = 2_000_000
# Draining waits for in-flight requests; an ensemble request rejected by a composing model's queue policy
# stays counted as in flight in Triton 2.51, so the default 30 s drain would always run out in teardown.
EXIT_TIMEOUT_S = 3


@dataclass(frozen=True)
class OnnxModels:
    gbt: Path
    seq: Path


def _gbt_onnx(path: Path, rng: np.random.Generator) -> Path:
    import onnxmltools
    import xgboost
    from onnxmltools.convert.common.data_types import FloatTensorType

    x = rng.normal(size=(2000, N_FEATURES)).astype(np.float32)
    y = (x[:, 0] + 0.5 * x[:, 3] - x[:, 7] + 0.3 * rng.normal(size=len(x)) > 0).astype(np.int64)
    model = xgboost.XGBClassifier(n_estimators=20, max_depth=3, learning_rate=0.3)
    model.fit(x, y)
    # Opset 15 is the highest the installed onnxmltools XGBoost converter supports.
    onx = onnxmltools.convert_xgboost(
        model, initial_types=[("features", FloatTensorType([None, N_FEATURES]))], target_opset=15
    )
    path.write_bytes(onx.SerializeToString())
    return path


def _seq_onnx(path: Path, rng: np.random.Generator, *, with_features: bool = True) -> Path:
    """A fitted LogisticRegression on [features, flattened window], wrapped to the LSTM export's interface
    (`features` [N, n], `sequence` [N, T, F] -> `probability`). `with_features=False`: the older
    sequence-only interface, which the writer must reject."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper
    from skl2onnx import convert_sklearn
    from skl2onnx.common.data_types import FloatTensorType
    from sklearn.linear_model import LogisticRegression

    seq_dim = SEQ_LEN * SEQ_FEATURES
    n_feat = N_FEATURES if with_features else 0
    f = rng.normal(size=(2000, N_FEATURES)).astype(np.float32)
    x = rng.normal(size=(2000, SEQ_LEN, SEQ_FEATURES)).astype(np.float32)
    logit = x[:, :, 0].mean(axis=1) * 3 + x[:, -1, 2] + 0.3 * rng.normal(size=len(x))
    if with_features:
        logit += f[:, 1] - 0.5 * f[:, 4]
    y = (logit > 0).astype(np.int64)
    flat = np.concatenate([f[:, :n_feat], x.reshape(len(x), seq_dim)], axis=1)
    clf = LogisticRegression(max_iter=500).fit(flat, y)
    onx = convert_sklearn(
        clf,
        initial_types=[("flat", FloatTensorType([None, n_feat + seq_dim]))],
        options={id(clf): {"zipmap": False}},
        target_opset={"": 15, "ai.onnx.ml": 3},
    )
    graph = onx.graph
    old_input = graph.input[0]
    graph.input.remove(old_input)
    graph.initializer.extend(
        [
            numpy_helper.from_array(np.array([-1, seq_dim], np.int64), "flat_shape"),
            numpy_helper.from_array(np.array(1, np.int64), "positive_class"),
        ]
    )
    sequence = helper.make_tensor_value_info("sequence", TensorProto.FLOAT, ["N", SEQ_LEN, SEQ_FEATURES])
    if with_features:
        # Inputs in the order of the LSTM export: features, then sequence.
        graph.input.insert(0, helper.make_tensor_value_info("features", TensorProto.FLOAT, ["N", N_FEATURES]))
        graph.input.insert(1, sequence)
        graph.node.insert(0, helper.make_node("Reshape", ["sequence", "flat_shape"], ["flat_sequence"]))
        graph.node.insert(1, helper.make_node("Concat", ["features", "flat_sequence"], [old_input.name], axis=1))
    else:
        graph.input.insert(0, sequence)
        graph.node.insert(0, helper.make_node("Reshape", ["sequence", "flat_shape"], [old_input.name]))
    # Scalar index: the output is [N], the squeezed variant of the LSTM export's [N, 1].
    graph.node.append(
        helper.make_node("Gather", ["probabilities", "positive_class"], ["probability"], axis=1)
    )
    del graph.output[:]
    graph.output.append(helper.make_tensor_value_info("probability", TensorProto.FLOAT, ["N"]))
    onnx.checker.check_model(onx)
    path.write_bytes(onx.SerializeToString())
    return path


@pytest.fixture(scope="module")
def onnx_models(tmp_path_factory: pytest.TempPathFactory) -> OnnxModels:
    out = tmp_path_factory.mktemp("onnx")
    rng = np.random.default_rng(7)
    return OnnxModels(gbt=_gbt_onnx(out / "gbt.onnx", rng), seq=_seq_onnx(out / "seq.onnx", rng))


def _reference(models: OnnxModels, features: np.ndarray, sequence: np.ndarray) -> tuple[np.ndarray, ...]:
    """(score, p_gbt, p_seq) computed with onnxruntime directly, each [N]."""
    gbt = ort.InferenceSession(str(models.gbt), providers=["CPUExecutionProvider"])
    seq = ort.InferenceSession(str(models.seq), providers=["CPUExecutionProvider"])
    p_gbt = gbt.run(["probabilities"], {"features": features})[0][:, 1]
    p_seq = seq.run(["probability"], {"features": features, "sequence": sequence})[0].reshape(-1)
    def logit(p: np.ndarray) -> np.ndarray:
        p = np.clip(p.astype(np.float64), 1e-7, 1 - 1e-7)
        return np.log(p / (1 - p))

    w_gbt, w_seq, bias = STACKER
    return 1 / (1 + np.exp(-(w_gbt * logit(p_gbt) + w_seq * logit(p_seq) + bias))), p_gbt, p_seq


def _inputs(features: np.ndarray, sequence: np.ndarray) -> list[grpcclient.InferInput]:
    f = grpcclient.InferInput("FEATURES", list(features.shape), "FP32")
    f.set_data_from_numpy(features)
    s = grpcclient.InferInput("SEQUENCE", list(sequence.shape), "FP32")
    s.set_data_from_numpy(sequence)
    return [f, s]


def _rows(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    features = rng.normal(size=(n, N_FEATURES)).astype(np.float32)
    sequence = rng.normal(size=(n, SEQ_LEN, SEQ_FEATURES)).astype(np.float32)
    return features, sequence


def _parse_config(path: Path) -> model_config_pb2.ModelConfig:
    return text_format.Parse(path.read_text(), model_config_pb2.ModelConfig())


# --------------------------------------------------------------------------- fast: configs and adapters


@pytest.mark.parametrize("target", ["local", "container"])
def test_repository_configs_parse(onnx_models: OnnxModels, tmp_path: Path, target: str) -> None:
    repo = write_repository(
        tmp_path / "repo",
        onnx_models.gbt,
        onnx_models.seq,
        n_features=N_FEATURES,
        seq_len=SEQ_LEN,
        seq_features=SEQ_FEATURES,
        stacker=STACKER,
        version=VERSION,
        target=target,
        gpu=target == "container",
    )
    # On the local target fraud_ensemble is one fused Python step and the scheduled graph sits beside it.
    scheduled = SCHEDULED_ENSEMBLE_MODEL if target == "local" else ENSEMBLE_MODEL
    models = (GBT_MODEL, SEQ_MODEL, COMBINER_MODEL, ENSEMBLE_MODEL) + ((scheduled,) if target == "local" else ())
    configs = {m: _parse_config(repo / m / "config.pbtxt") for m in models}
    for name, config in configs.items():
        assert config.name == name
        assert config.max_batch_size == 4096
        assert config.parameters["version"].string_value == str(VERSION)
        assert (repo / name / str(VERSION)).is_dir()

    io = {
        m: ([(t.name, list(t.dims)) for t in c.input], [(t.name, list(t.dims)) for t in c.output])
        for m, c in configs.items()
    }
    assert io[GBT_MODEL] == ([("FEATURES", [N_FEATURES])], [("P_GBT", [1])])
    assert io[SEQ_MODEL] == (
        [("FEATURES", [N_FEATURES]), ("SEQUENCE", [SEQ_LEN, SEQ_FEATURES])],
        [("P_SEQ", [1])],
    )
    assert io[COMBINER_MODEL] == ([("P_GBT", [1]), ("P_SEQ", [1])], [("SCORE", [1])])
    for name in {ENSEMBLE_MODEL, scheduled}:
        assert io[name] == (
            [("FEATURES", [N_FEATURES]), ("SEQUENCE", [SEQ_LEN, SEQ_FEATURES])],
            [("SCORE", [1]), ("P_GBT", [1]), ("P_SEQ", [1])],
        )
    for name in (GBT_MODEL, SEQ_MODEL, COMBINER_MODEL):
        for t in (*configs[name].input, *configs[name].output):
            assert t.data_type == model_config_pb2.TYPE_FP32
        batching = configs[name].dynamic_batching
        assert batching.max_queue_delay_microseconds == 200
        policy = batching.default_queue_policy
        assert policy.timeout_action == model_config_pb2.ModelQueuePolicy.REJECT
        assert policy.default_timeout_microseconds == 50_000
        assert policy.allow_timeout_override

    ensemble = configs[scheduled]
    assert ensemble.platform == "ensemble"
    assert [s.model_name for s in ensemble.ensemble_scheduling.step] == [GBT_MODEL, SEQ_MODEL, COMBINER_MODEL]
    assert all(s.model_version == VERSION for s in ensemble.ensemble_scheduling.step)
    # Both ensemble inputs reach the sequence model; the GBT only gets FEATURES.
    steps = {s.model_name: s for s in ensemble.ensemble_scheduling.step}
    assert dict(steps[SEQ_MODEL].input_map) == {"FEATURES": "FEATURES", "SEQUENCE": "SEQUENCE"}
    assert dict(steps[SEQ_MODEL].output_map) == {"P_SEQ": "P_SEQ"}
    assert dict(steps[GBT_MODEL].input_map) == {"FEATURES": "FEATURES"}
    combiner = configs[COMBINER_MODEL]
    assert combiner.backend == "python"
    assert tuple(float(combiner.parameters[k].string_value) for k in ("w_gbt", "w_seq", "bias")) == STACKER

    if target == "local":
        fused = configs[ENSEMBLE_MODEL]
        assert (fused.backend, fused.platform) == ("python", "")
        for name in ("model.py", "gbt.onnx", "seq.onnx"):
            assert (repo / ENSEMBLE_MODEL / str(VERSION) / name).is_file()
        assert tuple(float(fused.parameters[k].string_value) for k in ("w_gbt", "w_seq", "bias")) == STACKER
        assert fused.parameters["gbt_column"].string_value == "1"
        assert json.loads(fused.parameters["seq_inputs"].string_value) == {"FEATURES": "features",
                                                                          "SEQUENCE": "sequence"}
        for name in (GBT_MODEL, SEQ_MODEL):
            config = configs[name]
            assert config.backend == "python"
            assert [(g.kind, g.count) for g in config.instance_group] == [
                (model_config_pb2.ModelInstanceGroup.KIND_CPU, 1)
            ]
            assert (repo / name / str(VERSION) / "model.py").is_file()
        assert configs[GBT_MODEL].parameters["onnx_output"].string_value == "probabilities"
        assert configs[GBT_MODEL].parameters["onnx_output_column"].string_value == "1"
        assert json.loads(configs[GBT_MODEL].parameters["onnx_inputs"].string_value) == {"FEATURES": "features"}
        assert json.loads(configs[SEQ_MODEL].parameters["onnx_inputs"].string_value) == {
            "FEATURES": "features",
            "SEQUENCE": "sequence",
        }
        assert "onnx_output_column" not in configs[SEQ_MODEL].parameters
    else:
        for name in (GBT_MODEL, SEQ_MODEL):
            config = configs[name]
            assert (config.platform, config.backend) == ("onnxruntime_onnx", "onnxruntime")
            assert [g.kind for g in config.instance_group] == [model_config_pb2.ModelInstanceGroup.KIND_GPU]
            assert not (repo / name / str(VERSION) / "model.py").exists()


def test_container_onnx_adapter_matches_source(onnx_models: OnnxModels, tmp_path: Path) -> None:
    """The onnxruntime backend binds by tensor name: the adapted graphs must expose the Triton names."""
    repo = write_repository(
        tmp_path / "repo",
        onnx_models.gbt,
        onnx_models.seq,
        n_features=N_FEATURES,
        seq_len=SEQ_LEN,
        seq_features=SEQ_FEATURES,
        stacker=STACKER,
        target="container",
        gpu=False,
    )
    assert [g.kind for g in _parse_config(repo / GBT_MODEL / "config.pbtxt").instance_group] == [
        model_config_pb2.ModelInstanceGroup.KIND_CPU
    ]
    features, sequence = _rows(np.random.default_rng(1), 33)
    _, p_gbt, p_seq = _reference(onnx_models, features, sequence)
    for model, feed, expected, out in (
        (GBT_MODEL, {"FEATURES": features}, p_gbt, "P_GBT"),
        (SEQ_MODEL, {"FEATURES": features, "SEQUENCE": sequence}, p_seq, "P_SEQ"),
    ):
        session = ort.InferenceSession(
            str(repo / model / "1" / "model.onnx"), providers=["CPUExecutionProvider"]
        )
        assert sorted(i.name for i in session.get_inputs()) == sorted(feed)
        assert [o.name for o in session.get_outputs()] == [out]
        got = session.run(None, feed)[0]
        assert got.shape == (33, 1) and got.dtype == np.float32
        np.testing.assert_allclose(got[:, 0], expected, atol=1e-6)

    # The [N, 1] output variant of the sequence export goes through the same adapter.
    wide = tmp_path / "seq_n1.onnx"
    adapt_onnx(
        onnx_models.seq,
        wide,
        OnnxBinding((("features_in", "features"), ("sequence_in", "sequence")), "probability", None),
        triton_output="probability_n1",
    )
    again = tmp_path / "seq_n1_again.onnx"
    adapt_onnx(
        wide,
        again,
        # An input already named as wanted is left as it is.
        OnnxBinding((("FEATURES", "features_in"), ("sequence_in", "sequence_in")), "probability_n1", None),
        triton_output="P_SEQ",
    )
    got = ort.InferenceSession(str(again), providers=["CPUExecutionProvider"]).run(
        None, {"FEATURES": features, "sequence_in": sequence}
    )[0]
    np.testing.assert_allclose(got[:, 0], p_seq, atol=1e-6)

    # A Triton name that is already a tensor of the graph would be fed twice: refused.
    with pytest.raises(ValueError, match="already a tensor"):
        adapt_onnx(
            onnx_models.seq,
            tmp_path / "clash.onnx",
            OnnxBinding((("features", "sequence"),), "probability", None),
            triton_output="P_SEQ",
        )


def test_queue_policy_can_be_left_out(onnx_models: OnnxModels, tmp_path: Path) -> None:
    repo = write_repository(
        tmp_path / "repo",
        onnx_models.gbt,
        onnx_models.seq,
        n_features=N_FEATURES,
        seq_len=SEQ_LEN,
        seq_features=SEQ_FEATURES,
        queue_policy=False,
        max_queue_delay_us=500,
    )
    for name in (GBT_MODEL, SEQ_MODEL, COMBINER_MODEL):
        batching = _parse_config(repo / name / "config.pbtxt").dynamic_batching
        assert batching.max_queue_delay_microseconds == 500
        assert not batching.HasField("default_queue_policy")


def test_write_repository_rejects_mismatched_dims(onnx_models: OnnxModels, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="does not match"):
        write_repository(
            tmp_path / "repo",
            onnx_models.gbt,
            onnx_models.seq,
            n_features=14,
            seq_len=SEQ_LEN,
            seq_features=SEQ_FEATURES,
        )
    with pytest.raises(ValueError, match="target"):
        write_repository(
            tmp_path / "repo",
            onnx_models.gbt,
            onnx_models.seq,
            n_features=N_FEATURES,
            seq_len=SEQ_LEN,
            seq_features=SEQ_FEATURES,
            target="cloud",
        )
    with pytest.raises(ValueError, match="input 'sequence'.*does not match"):
        write_repository(
            tmp_path / "repo",
            onnx_models.gbt,
            onnx_models.seq,
            n_features=N_FEATURES,
            seq_len=SEQ_LEN,
            seq_features=SEQ_FEATURES + 1,
        )


def test_write_repository_rejects_sequence_only_model(onnx_models: OnnxModels, tmp_path: Path) -> None:
    """A sequence model exported before it took the features too cannot be served by this ensemble."""
    old = _seq_onnx(tmp_path / "seq_only.onnx", np.random.default_rng(5), with_features=False)
    with pytest.raises(ValueError, match=r"inputs are \['sequence'\], expected \['features', 'sequence'\]"):
        write_repository(
            tmp_path / "repo",
            onnx_models.gbt,
            old,
            n_features=N_FEATURES,
            seq_len=SEQ_LEN,
            seq_features=SEQ_FEATURES,
        )
    assert not (tmp_path / "repo").exists()


# --------------------------------------------------------------------------- real tritonserver


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass(frozen=True)
class Server:
    url: str
    models: OnnxModels
    log: Path
    ready_s: float


def _stop(proc: subprocess.Popen[bytes]) -> None:
    """Terminate, wait, kill: the server runs in its own process group so its backend stubs die with it."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=EXIT_TIMEOUT_S + 10)
            return
        except subprocess.TimeoutExpired:
            pass
    # Also reached when tritonserver already exited: stubs it left behind share its process group.
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=10)


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def triton_server(
    onnx_models: OnnxModels, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Server]:
    work = tmp_path_factory.mktemp("triton")
    repo = write_repository(
        work / "repo",
        onnx_models.gbt,
        onnx_models.seq,
        n_features=N_FEATURES,
        seq_len=SEQ_LEN,
        seq_features=SEQ_FEATURES,
        stacker=STACKER,
        version=VERSION,
        default_timeout_us=LIVE_DEFAULT_TIMEOUT_US,
    )
    grpc_port, http_port, metrics_port = _free_port(), _free_port(), _free_port()
    log = work / "tritonserver.log"
    argv = [
        sys.executable,
        "-m",
        "services.ensemble.triton",
        "--model-repository",
        str(repo),
        "--work-dir",
        str(work),
        "--grpc-port",
        str(grpc_port),
        "--http-port",
        str(http_port),
        "--metrics-port",
        str(metrics_port),
        "--",
        f"--exit-timeout-secs={EXIT_TIMEOUT_S}",
    ]
    with log.open("wb") as log_file:
        started = time.monotonic()
        proc = subprocess.Popen(
            argv, cwd=REPO_ROOT, stdout=log_file, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        url = f"127.0.0.1:{grpc_port}"
        try:
            await wait_ready(url, READY_TIMEOUT_S, alive=lambda: proc.poll() is None)
        except (TimeoutError, RuntimeError):
            print(log.read_text(errors="replace")[-6000:])
            raise
        ready_s = time.monotonic() - started
        print(
            f"\ntritonserver ready in {ready_s:.2f}s (exec + model load, {len(list(repo.iterdir()))} models)"
        )
        yield Server(url=url, models=onnx_models, log=log, ready_s=ready_s)
    finally:
        _stop(proc)


@pytest_asyncio.fixture(loop_scope="session")
async def client(triton_server: Server) -> AsyncIterator[grpcclient.InferenceServerClient]:
    c = grpcclient.InferenceServerClient(triton_server.url)
    try:
        yield c
    finally:
        await c.close()


def _outputs(result: grpcclient.InferResult) -> dict[str, np.ndarray]:
    return {name: result.as_numpy(name) for name in ("SCORE", "P_GBT", "P_SEQ")}


@pytest.mark.asyncio(loop_scope="session")
@pytest.mark.parametrize("model", [ENSEMBLE_MODEL, SCHEDULED_ENSEMBLE_MODEL])
async def test_ensemble_batch_of_64_matches_onnxruntime(
    triton_server: Server, client: grpcclient.InferenceServerClient, model: str
) -> None:
    """The fused local fraud_ensemble and the scheduled graph beside it answer the same as ONNX Runtime."""
    features, sequence = _rows(np.random.default_rng(2), 64)
    score, p_gbt, p_seq = _reference(triton_server.models, features, sequence)
    result = await client.infer(model, _inputs(features, sequence), client_timeout=30)
    out = _outputs(result)
    for name, expected in (("SCORE", score), ("P_GBT", p_gbt), ("P_SEQ", p_seq)):
        assert out[name].shape == (64, 1) and out[name].dtype == np.float32
        np.testing.assert_allclose(out[name][:, 0], expected, atol=1e-5, err_msg=name)
    response = result.get_response()
    assert response.model_name == model
    assert response.model_version == str(VERSION)
    # The signal is real: the blended score is not a constant.
    assert float(np.std(out["SCORE"])) > 0.05


@pytest.mark.asyncio(loop_scope="session")
async def test_inputs_with_different_row_counts_are_rejected(
    triton_server: Server, client: grpcclient.InferenceServerClient
) -> None:
    """fraud_seq joins FEATURES and SEQUENCE row by row; Triton must refuse rows that cannot line up."""
    features, _ = _rows(np.random.default_rng(5), 4)
    _, sequence = _rows(np.random.default_rng(6), 3)
    with pytest.raises(InferenceServerException, match="batch size"):
        await client.infer(ENSEMBLE_MODEL, _inputs(features, sequence), client_timeout=30)
    # The server still answers well-formed requests.
    features, sequence = _rows(np.random.default_rng(7), 3)
    result = await client.infer(ENSEMBLE_MODEL, _inputs(features, sequence), client_timeout=30)
    np.testing.assert_allclose(
        result.as_numpy("SCORE")[:, 0], _reference(triton_server.models, features, sequence)[0], atol=1e-5
    )


@pytest.mark.asyncio(loop_scope="session")
@pytest.mark.parametrize("model", [ENSEMBLE_MODEL, SCHEDULED_ENSEMBLE_MODEL])
async def test_concurrent_small_requests_are_batched_and_correct(
    triton_server: Server, client: grpcclient.InferenceServerClient, model: str
) -> None:
    rng = np.random.default_rng(3)
    batches = [_rows(rng, 4) for _ in range(8)]

    async def timed(call: Awaitable[grpcclient.InferResult]) -> tuple[grpcclient.InferResult, float]:
        started = time.monotonic()
        return await call, time.monotonic() - started

    # The local fraud_ensemble is one fused model (its own dynamic batcher); the scheduled graph's batching shows in
    # its first step. Both must merge concurrent requests.
    counted = ENSEMBLE_MODEL if model == ENSEMBLE_MODEL else GBT_MODEL
    before = await client.get_inference_statistics(counted, as_json=True)
    timed_results = await asyncio.gather(
        *(timed(client.infer(model, _inputs(f, s), client_timeout=30)) for f, s in batches)
    )
    results = [r for r, _ in timed_results]
    after = await client.get_inference_statistics(counted, as_json=True)
    for (features, sequence), result in zip(batches, results, strict=True):
        score, p_gbt, p_seq = _reference(triton_server.models, features, sequence)
        out = _outputs(result)
        np.testing.assert_allclose(out["SCORE"][:, 0], score, atol=1e-5)
        np.testing.assert_allclose(out["P_GBT"][:, 0], p_gbt, atol=1e-5)
        np.testing.assert_allclose(out["P_SEQ"][:, 0], p_seq, atol=1e-5)

    def counts(stats: dict) -> tuple[int, int]:
        model = stats["model_stats"][0]
        return int(model.get("inference_count", 0)), int(model.get("execution_count", 0))

    (inf0, exe0), (inf1, exe1) = counts(before), counts(after)
    latencies_ms = sorted(round(latency * 1000, 1) for _, latency in timed_results)
    print(
        f"\n{counted}: {inf1 - inf0} rows in {exe1 - exe0} executions for 8 concurrent requests of 4 rows;"
        f" latencies ms {latencies_ms}"
    )
    assert inf1 - inf0 == 32
    assert 1 <= exe1 - exe0 <= 8


@pytest.mark.asyncio(loop_scope="session")
async def test_too_small_timeouts_fail_cleanly(
    triton_server: Server, client: grpcclient.InferenceServerClient
) -> None:
    features, sequence = _rows(np.random.default_rng(4), 4)

    # Triton queue-policy override (microseconds). Below max_queue_delay_us the batcher holds a lone request
    # past its deadline, so it is always rejected there. Not 1 us: an ensemble request whose composing
    # request expires while the ensemble is still fanning out (a ~1 us budget) wedges every later inference
    # of Triton 2.51 (readiness still says ready); 100 us was rejected cleanly 100 times out of 100.
    started = time.monotonic()
    with pytest.raises(InferenceServerException) as queue_error:
        await client.infer(ENSEMBLE_MODEL, _inputs(features, sequence), timeout=100, client_timeout=10)
    print(f"\nqueue timeout: {queue_error.value} after {time.monotonic() - started:.3f}s")
    assert time.monotonic() - started < 5
    assert "timeout" in str(queue_error.value).lower()

    # gRPC deadline (seconds) shorter than any round trip. The client enforces it best-effort: about 1 call in
    # 100 with a 0.1 ms deadline still gets its answer here. What the caller relies on is that the call ends
    # quickly either way: DEADLINE_EXCEEDED, or a correct answer.
    outcomes = []
    for _ in range(5):
        started = time.monotonic()
        try:
            result = await client.infer(ENSEMBLE_MODEL, _inputs(features, sequence), client_timeout=1e-4)
        except InferenceServerException as exc:
            assert "deadline" in str(exc).lower(), str(exc)
            outcomes.append("deadline")
        else:
            np.testing.assert_allclose(
                result.as_numpy("SCORE")[:, 0],
                _reference(triton_server.models, features, sequence)[0],
                atol=1e-5,
            )
            outcomes.append("answered")
        assert time.monotonic() - started < 5
    print(f"client deadline 0.1 ms, 5 calls: {outcomes}")
    assert "deadline" in outcomes

    # The server is still healthy afterwards.
    result = await client.infer(ENSEMBLE_MODEL, _inputs(features, sequence), client_timeout=30)
    np.testing.assert_allclose(
        result.as_numpy("SCORE")[:, 0], _reference(triton_server.models, features, sequence)[0], atol=1e-5
    )
