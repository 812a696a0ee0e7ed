"""`make triton-repo`: the container target of the Triton model repository, for docker compose and Kubernetes.

The official `nvcr.io/nvidia/tritonserver` image serves the ONNX models with its `onnxruntime` backend (the local
target runs them in Python-backend models instead). This script reads what `scoring train` left in ARTIFACTS (the
ONNX files and, from train_report.json, the stacker's coefficients and the model version) and writes two repositories
with `services.ensemble.repository.write_repository`, the writer `scoring train` uses, and, when the market scenario
is trained (artifacts/models/market), its `market_ensemble` beside fraud's (`scoring.scenarios.market.container`):

    ARTIFACTS/triton_repository_container       KIND_CPU   compose's default profile, deploy/k8s (base)
    ARTIFACTS/triton_repository_container_gpu   KIND_GPU   compose's `gpu` profile, deploy/k8s/overlays/gpu

Both are written without a queue policy, as `scoring train` writes them: with one, Triton 2.51's dynamic batcher
(the pinned image's version) can hold a request until its 500 ms idle poll; the gateway enforces every deadline.

    python deploy/triton_repository.py [--artifacts artifacts]
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script from a checkout: import the project's own packages
    sys.path.insert(0, str(ROOT))

from scoring.scenarios import registry  # noqa: E402
from scoring.scenarios.fraud import features as F  # noqa: E402
from scoring.scenarios.market.container import MODELS as MARKET_MODELS  # noqa: E402
from scoring.scenarios.market.container import write_container_models  # noqa: E402
from services.ensemble.repository import write_repository  # noqa: E402

# Target folder under ARTIFACTS -> whether its ONNX models run on the GPU. deploy/compose and deploy/k8s name these.
CONTAINER_REPOSITORIES = {
    "triton_repository_container": False,
    "triton_repository_container_gpu": True,
}
GBT_ONNX = Path("models/ensemble/gbt.onnx")
SEQ_ONNX = Path("models/ensemble/lstm.onnx")
MARKET_ENSEMBLE_DIR = Path("models/market/ensemble")


def build(artifacts: Path, gbt_onnx: Path | None = None, seq_onnx: Path | None = None) -> dict[str, Path]:
    """Write every container repository under `artifacts`; returns {folder name: path}."""
    report_path = artifacts / "train_report.json"
    if not report_path.is_file():
        raise SystemExit(f"{report_path} not found: train first (`make models` or `scoring train --out {artifacts}`)")
    report = json.loads(report_path.read_text())
    if "stacker" not in report:
        raise SystemExit(f"{report_path}: trained before the ensemble's stacker (issue 15); retrain (make models)")
    stacker = report["stacker"]
    market = registry.MARKET in registry.available(artifacts)
    written = {}
    for name, gpu in CONTAINER_REPOSITORIES.items():
        written[name] = write_repository(
            artifacts / name,
            gbt_onnx or artifacts / GBT_ONNX,
            seq_onnx or artifacts / SEQ_ONNX,
            n_features=len(F.FEATURE_NAMES),
            seq_len=F.SEQ_LEN,
            seq_features=len(F.SEQ_FEATURE_NAMES),
            stacker=(float(stacker["w_gbt"]), float(stacker["w_seq"]), float(stacker["bias"])),
            version=int(report["version"]),
            target="container",
            gpu=gpu,
            queue_policy=False,
        )
        if market:
            write_container_models(artifacts / name, artifacts / MARKET_ENSEMBLE_DIR, gpu=gpu, queue_policy=False)
        else:  # a market model left by an earlier run would be served beside models it was not trained with
            for model in MARKET_MODELS:
                shutil.rmtree(artifacts / name / model, ignore_errors=True)
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="write the container-target Triton model repositories")
    parser.add_argument("--artifacts", type=Path, default=Path("artifacts"))
    args = parser.parse_args(argv)
    scenarios = ", ".join(s.name for s in registry.available(args.artifacts)) or "fraud"
    for name, path in build(args.artifacts).items():
        print(f"wrote {path} ({'KIND_GPU' if CONTAINER_REPOSITORIES[name] else 'KIND_CPU'}; {scenarios})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
