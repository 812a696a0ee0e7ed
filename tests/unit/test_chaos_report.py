"""The chaos harness's accounting and report, its fault list, and the compose target against a fake Docker SDK."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

import pytest

from scoring.chaos.client import FULL, UNANSWERED, Ledger
from scoring.chaos.experiment import build_report, format_table
from scoring.chaos.faults import STANDARD_FAULTS, parse_fault
from scoring.chaos.targets import ComposeTarget, FaultNotSupported
from scoring.v1 import types_pb2

pytestmark = pytest.mark.unit


def _response(txid: str, reason: str = "", error: bool = False) -> types_pb2.ScoreResponse:
    response = types_pb2.ScoreResponse(transaction_id=txid, score=0.5, stage=types_pb2.STAGE_ENSEMBLE,
                                       degraded=bool(reason) or error, degraded_reason=reason)
    if error:
        response.error.CopyFrom(types_pb2.EventError(code=14, message=f"no stage could score the event: {reason}"))
        response.degraded_reason = reason.split("+")[0]  # as the gateway: the first reason, the error in full
    return response


def test_the_ledger_takes_the_first_answer_and_counts_any_other_as_a_duplicate() -> None:
    ledger = Ledger()
    ledger.add("a", 1.0)
    ledger.add("b", 1.0)
    assert ledger.sent(0, 1.0) is False and ledger.sent(0, 2.0) is True
    assert ledger.answer(_response("a"), 2.5) == 0
    assert ledger.answer(_response("a", "filter_timeout"), 2.6) is None
    assert ledger.answer(_response("zzz"), 2.7) is None
    assert (ledger.duplicates, ledger.unknown_ids, ledger.answered, ledger.resent) == (1, 1, 1, 1)
    assert ledger.status == [FULL, UNANSWERED]
    with pytest.raises(ValueError):
        ledger.add("a", 3.0)


def _ledger(rows: list[tuple[float, float | None, str]]) -> Ledger:
    """(due, answered_at or None, '' full | reason | 'error:reason')"""
    ledger = Ledger()
    for k, (due, at, how) in enumerate(rows):
        i = ledger.add(f"e{k}", due)
        ledger.sent(i, due)
        if at is None:
            continue
        if how.startswith("error:"):
            ledger.answer(_response(f"e{k}", how[6:], error=True), at)
        else:
            ledger.answer(_response(f"e{k}", how), at)
    return ledger


def test_the_report_splits_phases_counts_losses_and_measures_recovery() -> None:
    fault = parse_fault("kill:triton")
    rows = [(t / 10, t / 10 + 0.01, "") for t in range(10)]  # before: 0.0 .. 0.9
    rows += [(1.0 + t / 10, 1.0 + t / 10 + 0.02, "ensemble_unavailable") for t in range(10)]  # during
    rows += [(2.0, None, "")]  # lost
    rows += [(2.1, 2.2, "ensemble_circuit_open"), (2.2, 2.25, "features_timeout")]  # after, still degraded
    rows += [(2.3 + t / 10, 2.3 + t / 10 + 0.01, "") for t in range(15)]  # after: full for 1.4 s
    report = build_report(fault, "local", 10.0, _ledger(rows), fault_at=1.0, back_at=2.0, stable_s=1.0)
    assert (report.sent, report.answered, report.lost) == (38, 37, 1)
    assert report.events == {"before": 10, "during": 10, "after": 18}
    assert report.degraded_during == {"ensemble_unavailable": 10}
    assert report.unexpected_reasons == {"features_timeout": 1}
    assert report.recover_s == pytest.approx(0.2)  # the last degraded event was due 0.2 s after the service was back
    assert report.p99_ms["during"] == pytest.approx(20, abs=0.1)
    assert report.down_s == pytest.approx(1.0)


def test_a_stream_still_degraded_at_the_end_has_not_recovered() -> None:
    rows = [(0.0, 0.01, ""), (1.0, 1.01, "filter_timeout"), (2.0, 2.01, ""), (2.5, 2.51, "filter_timeout"),
            (2.9, 2.91, "")]
    report = build_report(parse_fault("pause:filter_model"), "local", 1.0, _ledger(rows), 0.5, 2.0, stable_s=1.0)
    assert report.recover_s is None and not report.recovered


def test_errors_are_answers_but_counted_apart_and_block_recovery() -> None:
    rows = [(0.0, 0.01, ""), (1.0, 1.5, "error:budget_exhausted"), (2.0, 2.01, "")]
    report = build_report(parse_fault("pause:gateway"), "local", 1.0, _ledger(rows), 0.5, 1.5, stable_s=0.5)
    assert report.errors == {"14:budget_exhausted": 1} and report.lost == 0
    assert report.recover_s == 0.0  # the error was due during the fault


def test_the_table_has_a_row_per_experiment_and_the_reasons() -> None:
    rows = [(0.0, 0.01, ""), (1.0, 1.02, "filter_unavailable"), (3.0, 3.01, "")]
    report = build_report(parse_fault("kill:filter_model"), "local", 1.0, _ledger(rows), 0.5, 2.0, stable_s=0.5)
    text = format_table([report])
    assert "| kill -9 filter_model" in text and "filter_unavailable 1" in text
    assert text.splitlines()[0].startswith("| fault")


def test_faults_parse_and_the_standard_set_is_valid() -> None:
    for text in STANDARD_FAULTS:
        parse_fault(text)
    latency = parse_fault("latency:triton:400:100")
    assert (latency.latency_ms, latency.jitter_ms, latency.timed, latency.primary) == (400, 100, True,
                                                                                       "ensemble_timeout")
    assert parse_fault("kill:feature_service").primary == "features_unavailable"
    assert not parse_fault("kill:gateway").timed and parse_fault("kill:gateway").primary is None
    assert parse_fault("redis-empty").reasons >= {"features_unavailable", "features_circuit_open"}
    client = parse_fault("client-drop:0.5:50")
    assert client.through_proxy and client.route == "gateway" and client.every_s == 0.5
    for bad in ("explode:triton", "kill", "nonsense"):
        with pytest.raises(ValueError):
            parse_fault(bad)


class FakeContainer:
    def __init__(self, service: str) -> None:
        self.service = service
        self.id = f"id-{service}"
        self.calls: list[tuple[str, Any]] = []
        self.attrs: dict[str, Any] = {"State": {"Running": True, "StartedAt": "t0", "Health": {"Status": "healthy"}}}

    def kill(self, signal: str) -> None:
        self.calls.append(("kill", signal))
        self.attrs["State"] = {"Running": False, "StartedAt": "t0"}

    def start(self) -> None:
        self.calls.append(("start", None))
        self.attrs["State"] = {"Running": True, "StartedAt": "t1", "Health": {"Status": "healthy"}}

    def reload(self) -> None:
        pass

    def pause(self) -> None:
        self.calls.append(("pause", None))

    def unpause(self) -> None:
        self.calls.append(("unpause", None))

    def exec_run(self, cmd: list[str]) -> Any:
        self.calls.append(("exec", cmd))
        return SimpleNamespace(exit_code=0, output=b"42\n")

    def stats(self, stream: bool) -> dict[str, Any]:
        return {"memory_stats": {"usage": 3 * 2**20}}


class FakeDocker:
    def __init__(self, services: list[str]) -> None:
        self.by_service = {s: FakeContainer(s) for s in services}
        self.containers = self
        self.filters: list[Any] = []

    def list(self, all: bool, filters: dict[str, list[str]]) -> list[FakeContainer]:
        self.filters.append(filters)
        labels = dict(label.split("=", 1) for label in filters["label"])
        assert labels["com.docker.compose.project"] == "scoring-graph"
        found = self.by_service.get(labels["com.docker.compose.service"])
        return [found] if found else []


def test_the_compose_target_drives_containers_through_the_docker_sdk() -> None:
    docker = FakeDocker(["gateway", "feature-service", "filter-model", "triton-gpu", "redis"])
    target = ComposeTarget("scoring-graph", "127.0.0.1:50051", client=docker, restart_grace_s=0.0)

    async def scenario() -> None:
        token = await target.crash("feature_service")  # compose names it feature-service
        container = docker.by_service["feature-service"]
        assert container.calls == [("kill", "SIGKILL")]
        # Docker ignores the restart policy after a kill: the target starts it, as the policy would.
        await target.wait_back("feature_service", token, timeout_s=5)
        assert ("start", None) in container.calls
        await target.pause("triton")  # Triton on a GPU host
        await target.resume("triton")
        assert docker.by_service["triton-gpu"].calls == [("pause", None), ("unpause", None)]
        await target.wipe_and_crash("redis")
        assert docker.by_service["redis"].calls[:2] == [("exec", ["redis-cli", "FLUSHALL"]), ("kill", "SIGKILL")]
        assert await target.state_keys() == 42
        assert await target.memory_bytes("gateway") == 3 * 2**20

    asyncio.run(scenario())
    with pytest.raises(FaultNotSupported):
        target.proxy()
    with pytest.raises(FaultNotSupported):
        target.client_address(through_proxy=True)


def test_errors_are_expected_only_where_the_cascade_design_gives_them() -> None:
    rows = [(0.0, 0.01, ""), (1.0, 1.1, "error:filter_timeout+ensemble_capacity"), (3.0, 3.01, "")]
    filter_down = build_report(parse_fault("pause:filter_model"), "local", 1.0, _ledger(rows), 0.5, 2.0, 0.5)
    assert filter_down.errors == {"14:filter_timeout+ensemble_capacity": 1} and not filter_down.unexpected_errors
    triton_down = build_report(parse_fault("kill:triton"), "local", 1.0, _ledger(rows), 0.5, 2.0, 0.5)
    assert triton_down.unexpected_errors == {"14:filter_timeout+ensemble_capacity": 1}
    assert parse_fault("pause:gateway").error_expected("budget_exhausted+budget_exhausted")
    assert parse_fault("pause:gateway").error_expected("features_timeout+budget_exhausted")
    assert not parse_fault("pause:gateway").error_expected("features_unavailable+budget_exhausted")
    assert not parse_fault("pause:gateway").error_expected("features_timeout+filter_error")
    assert not parse_fault("kill:gateway").error_expected("budget_exhausted")
    assert parse_fault("pause:redis").error_expected("features_timeout+filter_timeout")
    assert not parse_fault("client-drop").error_expected("filter_timeout")
