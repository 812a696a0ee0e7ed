"""Every environment variable a service reads, and every port, agrees between the settings classes, docker compose,
Kubernetes and the local launcher.

The variable names and defaults come from the pydantic settings classes themselves (every services/*/settings.py),
so a setting added to a class and forgotten in deploy/ fails here. Containers differ from the defaults only where
CONTAINER_VALUES says so, with the reason.
"""

from __future__ import annotations

import importlib
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import AliasChoices, TypeAdapter

from scoring.common.settings import ServiceSettings

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "deploy" / "compose" / "docker-compose.yml"
K8S_BASE = ROOT / "deploy" / "k8s" / "base"
OVERRIDES_CONFIGMAP = "scoring-overrides"
INTERPOLATION = re.compile(r"^\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*):-(?P<default>[^}]*)\}$")
# What every Python service's OpenTelemetry SDK reads (scoring/common/telemetry.py); the same in compose and k8s.
OTEL_VARIABLES = {"OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_SERVICE_NAME", "OTEL_TRACES_SAMPLER", "OTEL_TRACES_SAMPLER_ARG"}

# (settings class name, field) -> the value containers run with instead of the local default, and why.
CONTAINER_VALUES: dict[tuple[str, str], tuple[Any, str]] = {
    ("GatewaySettings", "host"): ("0.0.0.0", "listen beyond the container's loopback"),
    ("FeatureSettings", "host"): ("0.0.0.0", "listen beyond the container's loopback"),
    ("FilterSettings", "host"): ("0.0.0.0", "listen beyond the container's loopback"),
    ("GatewaySettings", "features_address"): ("feature-service:50052", "the feature service's DNS name"),
    ("GatewaySettings", "filter_address"): ("filter-model:50053", "the filter's DNS name"),
    ("GatewaySettings", "triton_address"): ("triton:8001", "Triton's DNS name"),
    ("FeatureSettings", "redis_url"): ("redis://redis:6379/0", "Redis's DNS name"),
    ("FilterSettings", "model_dir"): (Path("/models/filter"), "where compose mounts and k8s copies the model files"),
    ("GatewaySettings", "fallback_model_dir"): (Path("/models/filter"), "the same filter files, for the last resort"),
    ("FilterSettings", "scenario_model_dirs"): ({"market": Path("/models/market/filter")},
                                                "every other scenario's filter, mounted and copied as fraud's is"),
    ("GatewaySettings", "scenario_model_dirs"): ({"market": Path("/models/market/filter")},
                                                 "the same filter files, for those scenarios' last resort"),
    ("GatewaySettings", "release_dir"): ("", "releases serve the local target's fused Triton model; the container "
                                             "target's (onnxruntime backend) is not built yet"),
}
# The variables naming the other scenarios' filter folders, which compose, k8s and the launcher set alike.
SCENARIO_DIR_VARIABLES = {"filter-model": "FILTER_SCENARIO_MODEL_DIRS", "gateway": "GATEWAY_SCENARIO_MODEL_DIRS"}


@dataclass(frozen=True)
class EnvSetting:
    """One field of a settings class, seen from the environment."""

    field: str
    names: tuple[str, ...]  # every variable that sets it, in pydantic's order of priority
    default: Any
    annotation: Any


def env_settings(cls: type[ServiceSettings]) -> list[EnvSetting]:
    prefix = str(cls.model_config.get("env_prefix", ""))
    found = []
    for name, info in cls.model_fields.items():
        alias = info.validation_alias
        if isinstance(alias, AliasChoices):
            names = tuple(str(choice).upper() for choice in alias.choices if isinstance(choice, str))
        elif isinstance(alias, str):
            names = (alias.upper(),)
        else:
            names = (f"{prefix}{name}".upper(),)
        found.append(EnvSetting(name, names, info.default, info.annotation))
    return found


def settings_classes() -> dict[str, type[ServiceSettings]]:
    """{'services.<name>': its settings class} for every services/*/settings.py."""
    found = {}
    for path in sorted((ROOT / "services").glob("*/settings.py")):
        module = importlib.import_module(f"services.{path.parent.name}.settings")
        classes = [
            c for c in vars(module).values()
            if isinstance(c, type) and issubclass(c, ServiceSettings) and c.__module__ == module.__name__
        ]
        assert len(classes) == 1, f"{path}: expected one ServiceSettings subclass, found {classes}"
        found[f"services.{path.parent.name}"] = classes[0]
    return found


def load_compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE_FILE.read_text())


def compose_environment(service: dict[str, Any]) -> dict[str, str | None]:
    env = service.get("environment", {})
    if isinstance(env, list):
        pairs = (item.split("=", 1) if "=" in item else (item, None) for item in env)
        env = {key: value for key, value in pairs}
    return {key: None if value is None else str(value) for key, value in env.items()}


def resolve(name: str, value: str | None) -> tuple[str | None, list[str]]:
    """The value a container gets when the shell sets nothing: a literal, or the default of `${NAME:-default}`."""
    if value is None:
        return None, []
    match = INTERPOLATION.match(value)
    if match is None:
        return (value, []) if "$" not in value else (value, [f"{name}: unsupported interpolation {value!r}"])
    if match["name"] != name:
        return match["default"], [f"{name} reads ${{{match['name']}}}: a shell variable of another name"]
    return match["default"], []


def python_services(compose: dict[str, Any]) -> dict[str, str]:
    """{compose service: 'services.<name>' it runs}, for the services built from the repository's Dockerfile."""
    return {
        name: service["command"][-1]
        for name, service in compose["services"].items()
        if str(service.get("command", [""])[-1]).startswith("services.")
    }


def render_kustomize(path: Path) -> list[dict[str, Any]]:
    kubectl = Path(sys.executable).parent / "kubectl"
    out = subprocess.run([str(kubectl), "kustomize", str(path)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return [doc for doc in yaml.safe_load_all(out.stdout) if doc]


def k8s_containers(docs: list[dict[str, Any]]) -> dict[str, tuple[dict[str, Any], dict[str, Any]]]:
    """{'services.<name>': (Deployment, its container)} for the Deployments running a Python service."""
    found = {}
    for doc in docs:
        if doc["kind"] != "Deployment":
            continue
        for container in doc["spec"]["template"]["spec"]["containers"]:
            args = container.get("args") or [""]
            if str(args[-1]).startswith("services."):
                found[args[-1]] = (doc, container)
    return found


def k8s_environment(container: dict[str, Any]) -> dict[str, Any]:
    return {entry["name"]: entry for entry in container.get("env", [])}


def parse(annotation: Any, value: str) -> Any:
    import json
    import typing

    # pydantic-settings reads a complex field (a dict, a list) from the environment as JSON.
    if (typing.get_origin(annotation) or annotation) in (dict, list, set, tuple):
        value = json.loads(value)
    return TypeAdapter(annotation).validate_python(value)


def _host_port(address: str) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    return host, int(port)


# ---- the checks (each returns what is wrong; the negative controls below prove they can fail) ----


def compose_problems(cls: type[ServiceSettings], env: dict[str, str | None]) -> list[str]:
    """What in one compose service's environment disagrees with its settings class."""
    problems: list[str] = []
    read = {name for s in env_settings(cls) for name in s.names}
    prefix = str(cls.model_config.get("env_prefix", ""))
    for key in env:
        if key.startswith(prefix) and key not in read:
            problems.append(f"{key} is set but {cls.__name__} reads no such variable")
    resolved = {}
    for key, value in env.items():
        resolved[key], errors = resolve(key, value)
        problems += errors
    for setting in env_settings(cls):
        missing = [name for name in setting.names if name not in env]
        if missing:
            problems.append(f"{cls.__name__}.{setting.field}: {', '.join(missing)} missing")
            continue
        valued = [name for name in setting.names if resolved[name] is not None]
        if setting.default is None:
            if valued:
                problems.append(f"{', '.join(valued)}: default is unset, so it must stay unset (a bare key)")
            continue
        if len(valued) != 1:
            problems.append(f"{cls.__name__}.{setting.field}: exactly one of {setting.names} carries the value")
            continue
        raw = resolved[valued[0]]
        assert raw is not None
        try:
            value = parse(setting.annotation, raw)
        except ValueError as exc:
            problems.append(f"{valued[0]}={raw!r} does not parse as {setting.annotation}: {exc}")
            continue
        expected, _why = CONTAINER_VALUES.get((cls.__name__, setting.field), (setting.default, ""))
        if value != expected:
            problems.append(f"{valued[0]}={raw!r} but {cls.__name__}.{setting.field} should be {expected!r} here")
        if (cls.__name__, setting.field) in CONTAINER_VALUES and INTERPOLATION.match(env[valued[0]] or ""):
            problems.append(f"{valued[0]} is wiring: a literal, not overridable from the shell")
    return problems


def k8s_problems(compose_env: dict[str, str | None], k8s_env: dict[str, Any]) -> list[str]:
    """What in one Deployment's env differs from the same service's compose environment."""
    problems = []
    if set(compose_env) != set(k8s_env):
        problems.append(
            f"names differ: only in compose {sorted(set(compose_env) - set(k8s_env))}, "
            f"only in k8s {sorted(set(k8s_env) - set(compose_env))}"
        )
    for name in sorted(set(compose_env) & set(k8s_env)):
        value, _ = resolve(name, compose_env[name])
        entry = k8s_env[name]
        if value is None:
            ref = entry.get("valueFrom", {}).get("configMapKeyRef", {})
            if ref != {"name": OVERRIDES_CONFIGMAP, "key": name, "optional": True}:
                problems.append(f"{name}: unset in compose, so k8s must read it from an optional {OVERRIDES_CONFIGMAP}")
        elif entry.get("value") != value:
            problems.append(f"{name}: compose {value!r}, k8s {entry.get('value')!r}")
    return problems


# ---- the tests ----


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return load_compose()


@pytest.fixture(scope="module")
def k8s() -> list[dict[str, Any]]:
    return render_kustomize(K8S_BASE)


def test_every_service_with_settings_runs_in_compose_and_in_kubernetes(compose, k8s) -> None:
    modules = set(settings_classes())
    assert modules == {"services.feature_service", "services.filter_model", "services.gateway"}
    assert set(python_services(compose).values()) == modules
    assert set(k8s_containers(k8s)) == modules


@pytest.mark.parametrize("module", ["services.gateway", "services.feature_service", "services.filter_model"])
def test_compose_sets_every_setting_to_its_default_or_a_declared_container_value(compose, module) -> None:
    cls = settings_classes()[module]
    (service,) = [name for name, runs in python_services(compose).items() if runs == module]
    assert compose_problems(cls, compose_environment(compose["services"][service])) == []


@pytest.mark.parametrize("module", ["services.gateway", "services.feature_service", "services.filter_model"])
def test_kubernetes_env_has_the_same_names_and_values_as_compose(compose, k8s, module) -> None:
    (service,) = [name for name, runs in python_services(compose).items() if runs == module]
    _, container = k8s_containers(k8s)[module]
    assert k8s_problems(compose_environment(compose["services"][service]), k8s_environment(container)) == []


def test_compose_environment_fed_to_the_settings_classes_gives_the_expected_values(compose, monkeypatch) -> None:
    """pydantic itself reads the compose environment: catches a name that only looks right."""
    for service, module in python_services(compose).items():
        cls = settings_classes()[module]
        for setting in env_settings(cls):
            for name in setting.names:
                monkeypatch.delenv(name, raising=False)
        for name, value in compose_environment(compose["services"][service]).items():
            resolved, _ = resolve(name, value)
            if resolved is not None:
                monkeypatch.setenv(name, resolved)
        loaded = cls()
        for setting in env_settings(cls):
            expected, _why = CONTAINER_VALUES.get((cls.__name__, setting.field), (setting.default, ""))
            assert getattr(loaded, setting.field) == expected, f"{service}: {setting.field}"


def test_addresses_name_a_service_of_compose_and_kubernetes_on_its_port(compose, k8s) -> None:
    classes = settings_classes()
    ports = {
        "feature-service": classes["services.feature_service"].model_fields["port"].default,
        "filter-model": classes["services.filter_model"].model_fields["port"].default,
        "triton": _triton_ports(compose["services"]["triton"]["command"])["grpc"],
        "redis": 6379,
    }
    env = compose_environment(compose["services"]["gateway"]) | compose_environment(
        compose["services"]["feature-service"]
    )
    targets = [_host_port(str(env[name])) for name in
               ("GATEWAY_FEATURES_ADDRESS", "GATEWAY_FILTER_ADDRESS", "GATEWAY_TRITON_ADDRESS")]
    targets.append(_host_port(str(env["REDIS_URL"]).removeprefix("redis://").split("/")[0]))
    k8s_services = {d["metadata"]["name"]: d for d in k8s if d["kind"] == "Service"}
    compose_names = set(compose["services"]) | {
        alias for s in compose["services"].values()
        for net in (s.get("networks") or {}).values() if isinstance(net, dict) for alias in net.get("aliases", [])
    }
    for host, port in targets:
        assert port == ports[host], f"{host}:{port}, but it listens on {ports[host]}"
        assert host in compose_names
        assert port in [p["port"] for p in k8s_services[host]["spec"]["ports"]], f"k8s Service {host} lacks {port}"


def _triton_ports(argv: list[str]) -> dict[str, int]:
    flags = dict(arg.removeprefix("--").split("=", 1) for arg in argv if arg.startswith("--") and "=" in arg)
    return {"http": int(flags["http-port"]), "grpc": int(flags["grpc-port"]), "metrics": int(flags["metrics-port"])}


def test_every_port_agrees_between_settings_compose_kubernetes_prometheus_and_the_launcher(compose, k8s) -> None:
    from scoring.launcher import Ports

    defaults = Ports()
    classes = settings_classes()
    launcher = {
        "services.gateway": (defaults.gateway, defaults.gateway_metrics),
        "services.feature_service": (defaults.features, defaults.features_metrics),
        "services.filter_model": (defaults.filter, defaults.filter_metrics),
    }
    prometheus = yaml.safe_load((ROOT / "deploy" / "prometheus" / "prometheus.yml").read_text())
    scraped = {t for job in prometheus["scrape_configs"] for c in job["static_configs"] for t in c["targets"]}
    k8s_services = {d["metadata"]["name"]: d for d in k8s if d["kind"] == "Service"}
    deployments = k8s_containers(k8s)
    for service, module in python_services(compose).items():
        cls = classes[module]
        prefix = str(cls.model_config["env_prefix"])
        grpc_port = cls.model_fields["port"].default
        metrics_port = cls.model_fields["metrics_port"].default
        env = compose_environment(compose["services"][service])
        assert (int(str(env[f"{prefix}PORT"])), int(str(env[f"{prefix}METRICS_PORT"]))) == (grpc_port, metrics_port)
        assert launcher[module] == (grpc_port, metrics_port)
        assert f"{service}:{metrics_port}" in scraped
        assert compose["services"][service]["healthcheck"]["test"][-1] == f"127.0.0.1:{grpc_port}"
        deployment, container = deployments[module]
        assert deployment["metadata"]["name"] == service
        container_ports = {p["name"]: p["containerPort"] for p in container["ports"]}
        assert container_ports == {"grpc": grpc_port, "metrics": metrics_port}
        for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
            assert container[probe]["grpc"]["port"] == grpc_port, f"{service} {probe}"
        annotations = deployment["spec"]["template"]["metadata"]["annotations"]
        assert annotations["prometheus.io/port"] == str(metrics_port)
        assert {p["name"]: p["port"] for p in k8s_services[service]["spec"]["ports"]} == container_ports
    # Triton and Redis: the launcher's ports are the containers' ports.
    for argv in (compose["services"]["triton"]["command"], _k8s_triton_args(k8s)):
        assert _triton_ports(argv) == {
            "http": defaults.triton_http, "grpc": defaults.triton_grpc, "metrics": defaults.triton_metrics
        }
    assert f"triton:{defaults.triton_metrics}" in scraped
    assert [p["port"] for p in k8s_services["redis"]["spec"]["ports"]] == [defaults.redis]


def _k8s_triton_args(k8s: list[dict[str, Any]]) -> list[str]:
    (deployment,) = [d for d in k8s if d["kind"] == "Deployment" and d["metadata"]["name"] == "triton"]
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    return list(container["args"])


def test_the_launcher_sets_only_variables_the_services_read_with_the_same_ports(compose, monkeypatch) -> None:
    from scoring.launcher import Stack, StackConfig

    monkeypatch.delenv("REDIS_URL", raising=False)
    read = {name for cls in settings_classes().values() for s in env_settings(cls) for name in s.names}
    prefixes = tuple(str(cls.model_config["env_prefix"]) for cls in settings_classes().values()) + ("REDIS_URL",)
    before = dict(__import__("os").environ)
    env = Stack(StackConfig()).service_env()
    set_by_launcher = {k: v for k, v in env.items() if before.get(k) != v}
    unknown = sorted(k for k in set_by_launcher if k.startswith(prefixes) and k not in read)
    assert unknown == [], f"the launcher sets variables no service reads: {unknown}"
    compose_env: dict[str, str | None] = {}
    for service in python_services(compose):
        compose_env |= compose_environment(compose["services"][service])
    for name, value in set_by_launcher.items():
        if name.endswith("_PORT"):
            assert value == compose_env[name], name
        elif name.endswith("_ADDRESS"):
            assert _host_port(value)[1] == _host_port(str(compose_env[name]))[1], name


def test_containers_serve_every_scenario_the_launcher_serves_from_the_same_artifacts_folders(
    compose, k8s, tmp_path, monkeypatch
) -> None:
    """With every scenario trained, `scoring up` names the same scenarios; a container's folder is the artifacts
    folder's path under /, as fraud's /models/filter is artifacts/models/filter."""
    import json

    from scoring.launcher import Stack, StackConfig
    from scoring.scenarios import registry

    for scenario in registry.SCENARIOS.values():
        (tmp_path / scenario.filter_dir).mkdir(parents=True)
        (tmp_path / scenario.filter_dir / "filter.json").write_text("{}")
    for variable in SCENARIO_DIR_VARIABLES.values():
        monkeypatch.delenv(variable, raising=False)
    launcher = Stack(StackConfig(artifacts=tmp_path)).service_env()
    deployments = {d["metadata"]["name"]: c for _, (d, c) in k8s_containers(k8s).items()}
    for service, variable in SCENARIO_DIR_VARIABLES.items():
        served = json.loads(str(compose_environment(compose["services"][service])[variable]))
        local = json.loads(launcher[variable])
        assert set(served) == set(local) == {s.name for s in registry.SCENARIOS.values() if s is not registry.DEFAULT}
        for name, folder in served.items():
            assert Path(folder) == Path("/") / registry.get(name).filter_dir == Path("/") / Path(
                local[name]).relative_to(tmp_path.resolve()), f"{service}: {name}"
        assert json.loads(k8s_environment(deployments[service])[variable]["value"]) == served


def test_stop_grace_periods_outlast_the_services_shutdown_grace(compose, k8s) -> None:
    deployments = k8s_containers(k8s)
    for service, module in python_services(compose).items():
        cls = settings_classes()[module]
        env = compose_environment(compose["services"][service])
        grace = float(str(env[f"{cls.model_config['env_prefix']}SHUTDOWN_GRACE_S"]))
        assert _seconds(compose["services"][service]["stop_grace_period"]) > grace
        deployment, container = deployments[module]
        pause = float(container["lifecycle"]["preStop"]["exec"]["command"][-1])
        assert deployment["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] > grace + pause


def _seconds(duration: str) -> float:
    match = re.fullmatch(r"(\d+)(s|m)", duration)
    assert match, duration
    return float(match[1]) * (60 if match[2] == "m" else 1)


def test_tracing_goes_to_jaeger_from_every_service_and_from_triton(compose, k8s) -> None:
    names = set()
    for service in python_services(compose):
        env = compose_environment(compose["services"][service])
        assert OTEL_VARIABLES <= set(env), service
        assert env["OTEL_EXPORTER_OTLP_ENDPOINT"] == "http://jaeger:4317"
        names.add(env["OTEL_SERVICE_NAME"])
    assert len(names) == len(python_services(compose)), "OTEL_SERVICE_NAME must tell the services apart"
    jaeger = {d["metadata"]["name"]: d for d in k8s if d["kind"] == "Service"}["jaeger"]
    assert {4317, 4318} <= {p["port"] for p in jaeger["spec"]["ports"]}
    for argv in (compose["services"]["triton"]["command"], _k8s_triton_args(k8s)):
        assert "--trace-config=mode=opentelemetry" in argv
        assert "--trace-config=opentelemetry,url=http://jaeger:4318/v1/traces" in argv
        # Triton traces every request carrying a sampled context (the gateway's decision); rate=0 keeps it from
        # starting unparented traces of its own (Triton's trace.md, "OpenTelemetry Context Propagation").
        assert "--trace-config=rate=0" in argv and "--trace-config=level=TIMESTAMPS" in argv


# ---- negative controls: the checks above do fail on drift ----


def test_a_setting_added_to_a_class_and_forgotten_in_compose_is_reported(compose) -> None:
    from services.gateway.settings import GatewaySettings

    class Extended(GatewaySettings):
        new_knob_ms: float = 3.0

    env = compose_environment(compose["services"]["gateway"])
    assert any("GATEWAY_NEW_KNOB_MS missing" in p for p in compose_problems(Extended, env))


def test_a_changed_default_a_misspelt_name_and_a_k8s_mismatch_are_reported(compose, k8s) -> None:
    from services.gateway.settings import GatewaySettings

    env = compose_environment(compose["services"]["gateway"])
    changed = env | {"GATEWAY_BUDGET_MS": "${GATEWAY_BUDGET_MS:-12}"}
    assert any("GATEWAY_BUDGET_MS" in p for p in compose_problems(GatewaySettings, changed))
    misspelt = env | {"GATEWAY_BUDGET_MSS": "10"}
    assert any("GATEWAY_BUDGET_MSS" in p for p in compose_problems(GatewaySettings, misspelt))
    _, container = k8s_containers(k8s)["services.gateway"]
    k8s_env = k8s_environment(container)
    k8s_env["GATEWAY_MAX_BATCH_EVENTS"] = {"name": "GATEWAY_MAX_BATCH_EVENTS", "value": "128"}
    assert any("GATEWAY_MAX_BATCH_EVENTS" in p for p in k8s_problems(env, k8s_env))
