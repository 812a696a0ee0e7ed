"""The Grafana dashboard queries only series that the services and Triton export, by the labels they carry.

Every PromQL expression of deploy/grafana/dashboards/*.json is parsed (promql-parser), and each series it selects must
be registered by the services' own code: the names and label names come from prometheus_client's registry after
importing the three services' entry modules, so renaming a metric or a label in the code fails here. Triton's series
are the ones Triton 2.51 exports (the pinned image's version): TRITON_SERIES below, as scraped from the bundled
tritonserver 2.51 serving this repository, plus the GPU series its documentation lists, which exist only on a GPU.
"""

from __future__ import annotations

import importlib
import json
import re
from pathlib import Path
from typing import Any

import promql_parser
import pytest
import yaml

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
GRAFANA = ROOT / "deploy" / "grafana"
DASHBOARDS = sorted((GRAFANA / "dashboards").glob("*.json"))
SERVICE_MODULES = ("services.gateway", "services.feature_service", "services.filter_model")
# Series name -> label names, of Triton 2.51 (nv_inference_*: per model and version; request failures also by reason).
_PER_MODEL = frozenset({"model", "version"})
TRITON_SERIES: dict[str, frozenset[str]] = {
    "nv_inference_request_success": _PER_MODEL,
    "nv_inference_request_failure": _PER_MODEL | {"reason"},
    "nv_inference_count": _PER_MODEL,
    "nv_inference_exec_count": _PER_MODEL,
    "nv_inference_request_duration_us": _PER_MODEL,
    "nv_inference_queue_duration_us": _PER_MODEL,
    "nv_inference_compute_input_duration_us": _PER_MODEL,
    "nv_inference_compute_infer_duration_us": _PER_MODEL,
    "nv_inference_compute_output_duration_us": _PER_MODEL,
    "nv_inference_pending_request_count": _PER_MODEL,
    "nv_cpu_utilization": frozenset(),
    "nv_cpu_memory_total_bytes": frozenset(),
    "nv_cpu_memory_used_bytes": frozenset(),
    "nv_pinned_memory_pool_total_bytes": frozenset(),
    "nv_pinned_memory_pool_used_bytes": frozenset(),
    # GPU only (Triton's metrics documentation): labelled by the GPU's UUID.
    "nv_gpu_utilization": frozenset({"gpu_uuid"}),
    "nv_gpu_memory_total_bytes": frozenset({"gpu_uuid"}),
    "nv_gpu_memory_used_bytes": frozenset({"gpu_uuid"}),
    "nv_gpu_power_usage": frozenset({"gpu_uuid"}),
    "nv_gpu_power_limit": frozenset({"gpu_uuid"}),
    "nv_energy_consumption": frozenset({"gpu_uuid"}),
}
# Grafana's macros, replaced by a duration before parsing.
MACROS = re.compile(r"\$__(rate_interval|interval|range)\b|\$\{__(rate_interval|interval|range)\}")


def exported_series() -> dict[str, frozenset[str]]:
    """Every series name the services register, with the label names a query may use on it."""
    from prometheus_client import REGISTRY

    for module in SERVICE_MODULES:
        importlib.import_module(f"{module}.__main__")
    series: dict[str, frozenset[str]] = {}
    for collector, names in REGISTRY._collector_to_names.items():  # noqa: SLF001 - the registry's own index
        labels = frozenset(getattr(collector, "_labelnames", ()) or ())
        for name in names:
            series[name] = labels | ({"le"} if name.endswith("_bucket") else set())
    assert "scoring_gateway_events_total" in series, "the services' metrics must be registered by now"
    return series


def expressions(dashboard: dict[str, Any]) -> list[tuple[str, str]]:
    found = []
    for panel in dashboard["panels"]:
        for target in panel.get("targets", []):
            found.append((panel["title"], target["expr"]))
        for inner in panel.get("panels", []):
            found += [(inner["title"], t["expr"]) for t in inner.get("targets", [])]
    return found


def selectors(expr: str) -> list[tuple[str, set[str]]]:
    """(series name, label names it is filtered or grouped by) for every selector of `expr`; an aggregation's
    `by`/`without` labels count for the selectors inside it."""
    tree = promql_parser.parse(MACROS.sub("1m", expr))
    found: list[tuple[str, set[str]]] = []
    grouping: list[set[str]] = []

    def enter(node: Any) -> bool:
        if isinstance(node, promql_parser.AggregateExpr):
            grouping.append(set(node.modifier.labels) if node.modifier is not None else set())
        # A range selector's walk reaches its VectorSelector too: count each selector once, there.
        if isinstance(node, promql_parser.VectorSelector):
            matchers = {m.name for m in node.matchers.matchers if m.name != "__name__"}
            found.append((str(node.name), matchers.union(*grouping)))
        return True

    def leave(node: Any) -> bool:
        if isinstance(node, promql_parser.AggregateExpr):
            grouping.pop()
        return True

    promql_parser.walk(tree, pre_visit=enter, post_visit=leave)
    return found


def query_problems(expr: str, known: dict[str, frozenset[str]]) -> list[str]:
    problems = []
    try:
        used = selectors(expr)
    except ValueError as exc:
        return [f"does not parse: {exc}"]
    if not used:
        problems.append("selects no series")
    for name, labels in used:
        if name not in known:
            problems.append(f"{name} is exported by no service")
        elif labels - known[name] - {"job", "instance"}:
            problems.append(f"{name} has no label {sorted(labels - known[name] - {'job', 'instance'})}")
    return problems


@pytest.fixture(scope="module")
def known() -> dict[str, frozenset[str]]:
    return exported_series() | dict(TRITON_SERIES)


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.name)
def test_every_query_selects_exported_series_by_labels_they_carry(path: Path, known) -> None:
    dashboard = json.loads(path.read_text())
    found = expressions(dashboard)
    assert len(found) >= 20
    problems = [f"{title}: {expr}: {p}" for title, expr in found for p in query_problems(expr, known)]
    assert problems == []


def test_the_query_check_reports_unknown_series_labels_and_syntax(known) -> None:
    assert query_problems("sum(rate(scoring_gateway_events_total[$__rate_interval]))", known) == []
    assert query_problems("rate(scoring_gateway_event_total[5m])", known) == [
        "scoring_gateway_event_total is exported by no service"
    ]
    assert query_problems("sum by (step) (rate(scoring_gateway_events_total[5m]))", known) == [
        "scoring_gateway_events_total has no label ['step']"
    ]
    assert query_problems('scoring_gateway_breaker_state{stag="features"}', known)
    assert query_problems("sum(rate(scoring_gateway_events_total[5m])", known)[0].startswith("does not parse")


def test_the_dashboard_covers_each_stage_the_cascade_and_triton() -> None:
    (path,) = [p for p in DASHBOARDS if p.name == "scoring-graph.json"]
    dashboard = json.loads(path.read_text())
    queried = {name for _, expr in expressions(dashboard) for name, _ in selectors(expr)}
    required = {
        "scoring_gateway_stage_latency_seconds_bucket",  # per-stage p50/p99
        "scoring_gateway_event_latency_seconds_bucket",
        "scoring_gateway_events_total",  # throughput, events by deciding stage
        "scoring_filter_passed_total", "scoring_filter_rows_total",  # cascade pass rate
        "scoring_gateway_degraded_total",
        "scoring_gateway_errors_total",
        "scoring_gateway_breaker_state",
        "scoring_gateway_batch_events_bucket",
        "scoring_features_fold_seconds_bucket",
        "scoring_filter_predict_seconds_bucket",
        "nv_inference_request_success", "nv_inference_queue_duration_us", "nv_inference_exec_count",
    }
    assert required <= queried, sorted(required - queried)
    quantiles = set(re.findall(r"histogram_quantile\((0\.\d+)", path.read_text()))
    assert {"0.5", "0.99"} <= quantiles


def test_panels_have_unique_ids_fit_the_grid_and_use_the_provisioned_datasource() -> None:
    provisioned = yaml.safe_load((GRAFANA / "provisioning" / "datasources" / "datasources.yml").read_text())
    uids = {d["uid"]: d for d in provisioned["datasources"]}
    for path in DASHBOARDS:
        dashboard = json.loads(path.read_text())
        assert dashboard["uid"] and dashboard["title"]
        ids = [p["id"] for p in dashboard["panels"]]
        assert len(ids) == len(set(ids))
        for panel in dashboard["panels"]:
            grid = panel["gridPos"]
            assert 0 <= grid["x"] and grid["x"] + grid["w"] <= 24 and grid["h"] > 0
        (variable,) = [v for v in dashboard["templating"]["list"] if v["type"] == "datasource"]
        assert variable["query"] == "prometheus" and variable["current"]["value"] in uids
        for panel in dashboard["panels"]:
            for source in [panel.get("datasource")] + [t.get("datasource") for t in panel.get("targets", [])]:
                if source is not None:
                    assert source["uid"] in (f"${{{variable['name']}}}", *uids), panel["title"]


def test_grafana_provisioning_matches_the_compose_stack() -> None:
    compose = yaml.safe_load((ROOT / "deploy" / "compose" / "docker-compose.yml").read_text())
    grafana = compose["services"]["grafana"]
    mounts = dict(v.rsplit(":", 1)[0].split(":", 1) for v in grafana["volumes"] if v.startswith(".."))
    assert mounts["../grafana/provisioning"] == "/etc/grafana/provisioning"
    providers = yaml.safe_load((GRAFANA / "provisioning" / "dashboards" / "dashboards.yml").read_text())
    (provider,) = providers["providers"]
    assert mounts["../grafana/dashboards"] == provider["options"]["path"]
    home = Path(grafana["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"])
    assert home.parent.as_posix() == provider["options"]["path"] and (GRAFANA / "dashboards" / home.name).is_file()
    datasources = {d["uid"]: d for d in yaml.safe_load(
        (GRAFANA / "provisioning" / "datasources" / "datasources.yml").read_text())["datasources"]}
    prometheus_port = next(p for p in compose["services"]["prometheus"]["ports"]).rsplit(":", 1)[1]
    assert datasources["prometheus"]["url"] == f"http://prometheus:{prometheus_port}"
    assert datasources["jaeger"]["url"] == "http://jaeger:16686"
