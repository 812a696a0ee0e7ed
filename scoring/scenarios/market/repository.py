"""The market scenario's model in the Triton repository: `market_ensemble`, beside `fraud_ensemble`.

One Python-backend model on the local target (`triton_model.py`), with dynamic batching and the same queue policy
as fraud's, written into the repository folder that `services.ensemble.repository` writes fraud's models into;
only its own folder is replaced.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from scoring.scenarios.market import features as MF
from services.ensemble.triton_config import Tensor, model_config

MODEL = "market_ensemble"
FEATURES_INPUT = "FEATURES"
SEQUENCE_INPUT = "SEQUENCE"
PROBS_OUTPUT = "PROBS"
SIGNAL_OUTPUT = "SIGNAL"
SOURCE = Path(__file__).resolve().parent / "triton_model.py"


def write_model(out_dir: Path, ensemble_dir: Path, *, version: int = 1, max_batch_size: int = 4096,
                max_queue_delay_us: int = 200, default_timeout_us: int = 50_000, queue_policy: bool = True) -> Path:
    meta = json.loads((ensemble_dir / "ensemble.json").read_text())
    shutil.rmtree(out_dir / MODEL, ignore_errors=True)
    version_dir = out_dir / MODEL / str(version)
    version_dir.mkdir(parents=True)
    shutil.copyfile(ensemble_dir / "gbt.onnx", version_dir / "gbt.onnx")
    shutil.copyfile(ensemble_dir / "seq.onnx", version_dir / "seq.onnx")
    shutil.copyfile(SOURCE, version_dir / "model.py")
    (out_dir / MODEL / "config.pbtxt").write_text(model_config(
        name=MODEL, backend="python", platform=None, max_batch_size=max_batch_size,
        inputs=[Tensor(FEATURES_INPUT, (len(MF.FEATURE_NAMES),)),
                Tensor(SEQUENCE_INPUT, (MF.SEQ_LEN, len(MF.SEQ_FEATURE_NAMES)))],
        outputs=[Tensor(PROBS_OUTPUT, (3,)), Tensor(SIGNAL_OUTPUT, (1,))],
        instance_kind="KIND_CPU", instance_count=1, max_queue_delay_us=max_queue_delay_us,
        default_timeout_us=default_timeout_us, queue_policy=queue_policy,
        params={"version": str(version), "gbt_file": "gbt.onnx", "seq_file": "seq.onnx",
                "stacker": json.dumps(meta["stacker"]), "tau": repr(float(meta["tau"]))},
    ))
    return out_dir
