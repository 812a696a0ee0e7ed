"""The release store: immutable, named sets of everything that decides a score, on disk.

A release pins the whole cascade of a scenario: the filter (its ONNX files and threshold), the ensemble's files and
the explicit Triton version they are served under, the feature schema the models were trained on, and the training
report. Layout (the same on a volume in compose and Kubernetes):

    <store>/<name>/manifest.json       what the release is (below); written last, so a folder without it is debris
    <store>/<name>/filter/             model.onnx, fallback.onnx, filter.json
    <store>/<name>/ensemble/           gbt.onnx, seq.onnx, blend.json (the stacker and the ONNX bindings)
    <store>/<name>/train_report.json
    <store>/audit.jsonl                every release event, append-only (`scoring.releases.audit`)
    <store>/routing.json               who serves what now (`scoring.releases.routing`)

The manifest lists the SHA-256 of every file; `verify` refuses a release whose files changed after creation.

Each release's ensemble is its own Triton model, `fraud_ensemble_r<version>`, with one explicit version
(`version_policy: specific`), made from the release's files when it is loaded (`materialise`): the store is the
source of truth, the repository a copy Triton reads. Not one model with a version folder per release: Triton 2.51
reloads every version of a model on any load call of it (measured here: new backend stubs for the champion's
version when a candidate's version folder was added and loaded, with either a `specific` or an `all` policy), and
that in-place reload is the memory and latency trouble releases must stay clear of.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from scoring.common.schema import FeatureSchema

MANIFEST = "manifest.json"
NAME_PATTERN = re.compile(r"^[a-z0-9][a-z0-9._-]{0,62}$")
FILTER_FILES = ("model.onnx", "fallback.onnx", "filter.json")
ENSEMBLE_FILES = ("gbt.onnx", "seq.onnx", "blend.json")
# Version 1 of the ensemble is the training run's own folder (`scoring train`); releases get 2 and up, so that
# retraining into the same artifacts never overwrites a version a release serves.
FIRST_RELEASE_VERSION = 2


class ReleaseError(ValueError):
    """A release that cannot be created, found or trusted; the message says which and why."""


@dataclass(frozen=True)
class Release:
    name: str
    scenario: str
    created_at: float
    created_by: str
    source: str
    filter_version: str
    threshold: float
    triton_model: str
    triton_version: int
    schema: FeatureSchema
    files: dict[str, str]
    root: Path

    @property
    def filter_dir(self) -> Path:
        return self.root / "filter"

    @property
    def ensemble_dir(self) -> Path:
        return self.root / "ensemble"

    @property
    def model_version(self) -> str:
        """What Triton answers as the served model ("name:version")."""
        return f"{self.triton_model}:{self.triton_version}"

    @property
    def triton_base(self) -> str:
        """The scenario's ensemble, whose config the release's model copies."""
        return self.triton_model.rsplit("_r", 1)[0]

    def report(self) -> dict[str, Any]:
        data: dict[str, Any] = json.loads((self.root / "train_report.json").read_text())
        return data

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "scenario": self.scenario,
            "created_at": self.created_at,
            "created_by": self.created_by,
            "source": self.source,
            "filter": {"version": self.filter_version, "threshold": self.threshold},
            "ensemble": {"triton_model": self.triton_model, "triton_version": self.triton_version},
            "feature_schema": self.schema.to_dict(),
            "files": self.files,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any], root: Path) -> Release:
        return cls(
            name=data["name"],
            scenario=data["scenario"],
            created_at=float(data["created_at"]),
            created_by=data["created_by"],
            source=data["source"],
            filter_version=str(data["filter"]["version"]),
            threshold=float(data["filter"]["threshold"]),
            triton_model=data["ensemble"]["triton_model"],
            triton_version=int(data["ensemble"]["triton_version"]),
            schema=FeatureSchema.from_dict(data["feature_schema"]),
            files=dict(data["files"]),
            root=root,
        )


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _blend(report: dict[str, Any], gbt: Path, seq: Path, schema: FeatureSchema) -> dict[str, Any]:
    """The fused ensemble's per-version parameters (`triton_models/fused_ensemble.py` reads them)."""
    from services.ensemble.repository import FEATURES_INPUT, inspect_gbt, inspect_seq

    n = len(schema.feature_names)
    gbt_binding = inspect_gbt(gbt, n)
    seq_binding = inspect_seq(seq, n, schema.sequence_length, len(schema.sequence_features))
    (gbt_input,) = [onnx for triton, onnx in gbt_binding.inputs if triton == FEATURES_INPUT]
    stacker = report["stacker"]
    return {
        "gbt_file": "gbt.onnx",
        "seq_file": "seq.onnx",
        "gbt_input": gbt_input,
        "gbt_output": gbt_binding.onnx_output,
        "gbt_column": str(gbt_binding.column if gbt_binding.column is not None else 0),
        "seq_inputs": json.dumps(dict(seq_binding.inputs)),
        "seq_output": seq_binding.onnx_output,
        "w_gbt": repr(float(stacker["w_gbt"])),
        "w_seq": repr(float(stacker["w_seq"])),
        "bias": repr(float(stacker["bias"])),
    }


class ReleaseStore:
    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def path(self, name: str) -> Path:
        return self.root / name

    def names(self) -> list[str]:
        if not self.root.is_dir():
            return []
        return sorted(p.name for p in self.root.iterdir() if (p / MANIFEST).is_file())

    def get(self, name: str) -> Release:
        manifest = self.path(name) / MANIFEST
        if not NAME_PATTERN.match(name) or not manifest.is_file():
            known = ", ".join(self.names()) or "none"
            raise ReleaseError(f"release {name!r}: not in the store at {self.root} (releases: {known})")
        return Release.from_dict(json.loads(manifest.read_text()), manifest.parent)

    def all(self) -> list[Release]:
        return sorted((self.get(n) for n in self.names()), key=lambda r: (r.created_at, r.name))

    def verify(self, release: Release) -> None:
        """Every file as it was when the release was created (a release is immutable)."""
        for rel, digest in release.files.items():
            path = release.root / rel
            if not path.is_file():
                raise ReleaseError(f"release {release.name}: {rel} is missing")
            if _sha256(path) != digest:
                raise ReleaseError(f"release {release.name}: {rel} changed after the release was created")

    def create(self, name: str, source: Path, *, created_by: str, scenario: str = "fraud") -> Release:
        """A release from a training run's output folder (`scoring train --out DIR`): its models, report and
        feature schema. The Triton version is the next free one in this store."""
        if scenario != "fraud":
            raise ReleaseError(f"scenario {scenario!r}: releases are built for the fraud scenario only so far")
        if not NAME_PATTERN.match(name):
            raise ReleaseError(f"name: {name!r} is not a release name (lower-case letters, digits, '.', '_', '-'; "
                               "at most 63 characters, starting with a letter or digit)")
        if self.path(name).exists():
            raise ReleaseError(f"name: release {name!r} exists already (releases are immutable; pick a new name)")
        source = Path(source)
        report_path = source / "train_report.json"
        if not report_path.is_file():
            raise ReleaseError(f"source: {source} holds no train_report.json (not a `scoring train` output)")
        report = json.loads(report_path.read_text())
        if "feature_schema" not in report:
            raise ReleaseError(f"source: {report_path} names no feature schema (trained before releases existed): "
                               "retrain with `scoring train`")
        schema = FeatureSchema.from_dict(report["feature_schema"])
        filter_src, ensemble_src = source / "models" / "filter", source / "models" / "ensemble"
        missing = [str(p) for p in [*(filter_src / f for f in FILTER_FILES), ensemble_src / "gbt.onnx",
                                    ensemble_src / "lstm.onnx"] if not p.is_file()]
        if missing:
            raise ReleaseError(f"source: {source} lacks {', '.join(missing)}")
        filter_meta = json.loads((filter_src / "filter.json").read_text())
        if tuple(filter_meta["feature_names"]) != schema.feature_names:
            raise ReleaseError(f"source: the filter's features differ from the report's schema {schema.hash}")

        self.root.mkdir(parents=True, exist_ok=True)
        staging = self.root / f".staging-{name}-{os.getpid()}"
        shutil.rmtree(staging, ignore_errors=True)
        (staging / "filter").mkdir(parents=True)
        (staging / "ensemble").mkdir()
        for f in FILTER_FILES:
            shutil.copyfile(filter_src / f, staging / "filter" / f)
        shutil.copyfile(ensemble_src / "gbt.onnx", staging / "ensemble" / "gbt.onnx")
        shutil.copyfile(ensemble_src / "lstm.onnx", staging / "ensemble" / "seq.onnx")
        blend = _blend(report, staging / "ensemble" / "gbt.onnx", staging / "ensemble" / "seq.onnx", schema)
        (staging / "ensemble" / "blend.json").write_text(json.dumps(blend, indent=2))
        shutil.copyfile(report_path, staging / "train_report.json")
        files = {
            str(p.relative_to(staging)): _sha256(p) for p in sorted(staging.rglob("*")) if p.is_file()
        }
        used = [r.triton_version for r in self.all() if r.scenario == scenario]
        version = max([FIRST_RELEASE_VERSION - 1, *used]) + 1
        release = Release(
            name=name,
            scenario=scenario,
            created_at=time.time(),
            created_by=created_by,
            source=str(source.resolve()),
            filter_version=str(filter_meta["version"]),
            threshold=float(filter_meta["threshold"]),
            triton_model=f"fraud_ensemble_r{version}",
            triton_version=version,
            schema=schema,
            files=files,
            root=self.path(name),
        )
        (staging / MANIFEST).write_text(json.dumps(release.to_dict(), indent=2))
        os.replace(staging, self.path(name))
        return release


def materialise(release: Release, repository: Path) -> Path:
    """The release's Triton model in `repository`: the scenario's ensemble config under the release's model name
    with its one version pinned, and a version folder of the store's files. Idempotent: a model already holding
    the same files is left alone, so a serving version is never rewritten under Triton."""
    from services.ensemble.repository import FUSED_SOURCE

    base_config = repository / release.triton_base / "config.pbtxt"
    if not base_config.is_file():
        raise ReleaseError(f"release {release.name}: {base_config} is missing (the repository `scoring train` writes)")
    text = re.sub(r'(?m)^name: .*$', f'name: "{release.triton_model}"', base_config.read_text())
    text = re.sub(r"(?m)^version_policy.*\n", "", text)
    text += f"version_policy: {{ specific: {{ versions: [ {release.triton_version} ] }} }}\n"
    model_dir = repository / release.triton_model
    wanted = {f: release.ensemble_dir / f for f in ENSEMBLE_FILES} | {"model.py": FUSED_SOURCE}
    version_dir = model_dir / str(release.triton_version)
    current = (model_dir / "config.pbtxt").is_file() and (model_dir / "config.pbtxt").read_text() == text
    if current and version_dir.is_dir() and all(
        (version_dir / f).is_file() and _sha256(version_dir / f) == _sha256(src) for f, src in wanted.items()
    ):
        return model_dir
    staging = model_dir.with_name(f".{model_dir.name}.{os.getpid()}.tmp")
    shutil.rmtree(staging, ignore_errors=True)
    (staging / str(release.triton_version)).mkdir(parents=True)
    for f, src in wanted.items():
        shutil.copyfile(src, staging / str(release.triton_version) / f)
    (staging / "config.pbtxt").write_text(text)
    shutil.rmtree(model_dir, ignore_errors=True)
    os.replace(staging, model_dir)
    return model_dir


def remove_model(release: Release, repository: Path) -> None:
    """Deletes a retired release's Triton model folder (after Triton unloaded it), so a restart does not load it."""
    shutil.rmtree(repository / release.triton_model, ignore_errors=True)


def reset(artifacts: Path) -> None:
    """Forgets the releases of a training output folder that is being trained again (`scoring train --out DIR`):
    what the folder serves is its new models, so its store starts over from them (the gateway makes the first
    release again). Releases meant to outlive a retraining are made from training runs in other folders."""
    shutil.rmtree(Path(artifacts) / "releases", ignore_errors=True)
    repository = Path(artifacts) / "triton_repository"
    if repository.is_dir():
        for model in repository.glob("fraud_ensemble_r*"):
            shutil.rmtree(model, ignore_errors=True)
