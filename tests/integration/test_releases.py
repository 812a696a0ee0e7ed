"""Releases on the real stack: canary by customer, shadow scoring, flips without Triton loads, schema refusal.

A stack of its own on a copy of the test artifacts, so that its release store and Triton models never reach the
session's stack. Each candidate is made from a training output folder, as `scoring release create --from` does.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from collections import defaultdict
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
import pytest_asyncio
import tritonclient.grpc.aio as tritonclient
from google.protobuf.timestamp_pb2 import Timestamp

from scoring.common.schema import FeatureSchema
from scoring.v1 import gateway_pb2, gateway_pb2_grpc, releases_pb2, releases_pb2_grpc, types_pb2

pytestmark = pytest.mark.integration

CUSTOMERS = 2000
START_S = 1_530_000_000


@pytest_asyncio.fixture(scope="module")
async def release_stack(artifacts: Path, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[object]:
    from scoring.launcher import Ports, Stack, StackConfig

    root = tmp_path_factory.mktemp("releases")
    copy = root / "artifacts"
    shutil.copytree(artifacts, copy, ignore=shutil.ignore_patterns("logs", "triton_work", "releases",
                                                                   "fraud_ensemble_r*", "data"))
    config = StackConfig(artifacts=copy, ports=Ports.free(), env={"GATEWAY_BUDGET_MS": "3000"},
                         log_dir=root / "logs")
    async with Stack(config) as running:
        yield running


@pytest_asyncio.fixture(scope="module")
async def clients(release_stack: object) -> AsyncIterator[tuple[object, object]]:
    async with grpc.aio.insecure_channel(release_stack.gateway_address) as g, \
            grpc.aio.insecure_channel(release_stack.admin_address) as a:  # type: ignore[attr-defined]
        yield gateway_pb2_grpc.GatewayStub(g), releases_pb2_grpc.ReleasesStub(a)


def _source(release_stack: object, tmp: Path, name: str) -> Path:
    """A training output folder holding the stack's own models (a candidate's files; its Triton model is new)."""
    art = release_stack.config.artifacts  # type: ignore[attr-defined]
    out = tmp / name
    (out / "models").mkdir(parents=True)
    shutil.copytree(art / "models" / "filter", out / "models" / "filter")
    shutil.copytree(art / "models" / "ensemble", out / "models" / "ensemble")
    shutil.copyfile(art / "train_report.json", out / "train_report.json")
    return out


def _tx(i: int, customer: int, tag: str) -> types_pb2.Transaction:
    return types_pb2.Transaction(
        transaction_id=f"{tag}-{i}", customer_id=f"cust-{customer}", terminal_id=f"term-{i % 97}",
        amount=20.0 + (i * 7919) % 300, timestamp=Timestamp(seconds=START_S + i),
    )


async def _stream(gateway: object, tag: str, events: int) -> list[types_pb2.ScoreResponse]:
    """Every customer's events, in batches of 200, answered on one ScoreBatchStream."""
    txs = [_tx(i, i % CUSTOMERS, tag) for i in range(events)]

    async def requests():  # noqa: ANN202
        for lo in range(0, len(txs), 200):
            yield gateway_pb2.ScoreBatchRequest(transactions=txs[lo:lo + 200])

    replies = [r async for r in gateway.ScoreBatchStream(requests(), timeout=120)]  # type: ignore[attr-defined]
    answers = [a for r in replies for a in r.responses]
    assert len(answers) == events
    return answers


def _triton_loads(release_stack: object) -> int:
    log = Path(release_stack.config.logs) / "triton.log"  # type: ignore[attr-defined]
    return log.read_text().count("successfully loaded")


async def test_every_answer_names_the_champion_release(clients) -> None:
    gateway, admin = clients
    status = await admin.Status(releases_pb2.StatusRequest(), timeout=10)
    assert status.champion.startswith("fraud-") and status.mode == "none"
    answers = await _stream(gateway, "champ", 400)
    assert {a.release for a in answers} == {status.champion}
    assert not [a for a in answers if a.error.code], answers[0]


async def test_canary_at_10_percent_scores_each_customer_by_one_release_and_keeps_the_set_after_a_restart(
    release_stack, clients, tmp_path
) -> None:
    gateway, admin = clients
    champion = (await admin.Status(releases_pb2.StatusRequest(), timeout=10)).champion
    source = _source(release_stack, tmp_path, "canary-run")
    info = await admin.Create(releases_pb2.CreateReleaseRequest(name="canary-b", source=str(source), by="test"),
                              timeout=60)
    assert info.triton_model != "fraud_ensemble" and info.role == "stored"
    status = await admin.Canary(releases_pb2.CanaryRequest(name="canary-b", steps=[0.10], by="test"), timeout=180)
    assert status.mode == "canary" and status.canary_fraction == pytest.approx(0.10)

    def by_customer(answers: list[types_pb2.ScoreResponse]) -> dict[int, set[str]]:
        seen: dict[int, set[str]] = defaultdict(set)
        for a in answers:
            seen[int(a.transaction_id.split("-")[1]) % CUSTOMERS].add(a.release)
        return seen

    first = by_customer(await _stream(gateway, "canA", 3 * CUSTOMERS))
    assert all(len(releases) == 1 for releases in first.values())
    on_candidate = {c for c, r in first.items() if r == {"canary-b"}}
    share = len(on_candidate) / CUSTOMERS
    print(f"canary 10%: {len(on_candidate)} of {CUSTOMERS} customers on the candidate ({share:.1%})")
    assert 0.08 <= share <= 0.12
    assert {r for rs in first.values() for r in rs} == {champion, "canary-b"}

    await release_stack.restart("gateway")
    again = by_customer(await _stream(gateway, "canB", 3 * CUSTOMERS))
    assert all(len(releases) == 1 for releases in again.values())
    assert {c for c, r in again.items() if r == {"canary-b"}} == on_candidate

    # Promote and roll back: routing only, no Triton load call; answers follow at once.
    loads = _triton_loads(release_stack)
    started = time.monotonic()
    status = await admin.Promote(releases_pb2.ReleaseRequest(name="canary-b", by="test"), timeout=10)
    assert (status.champion, status.previous, status.mode) == ("canary-b", champion, "none")
    assert {a.release for a in await _stream(gateway, "promoted", 200)} == {"canary-b"}
    status = await admin.Rollback(releases_pb2.RollbackRequest(by="test", reason="test"), timeout=10)
    assert status.champion == champion
    assert {a.release for a in await _stream(gateway, "rolled", 200)} == {champion}
    print(f"promote + rollback + 400 events: {time.monotonic() - started:.2f} s")
    assert _triton_loads(release_stack) == loads

    audit = [json.loads(line) for line in
             (release_stack.config.artifacts / "releases" / "audit.jsonl").read_text().splitlines()]
    assert [e["event"] for e in audit if e["release"] == "canary-b"] == [
        "created", "canary_step", "promoted", "rolled_back"]
    await admin.Retire(releases_pb2.ReleaseRequest(name="canary-b", by="test"), timeout=60)


async def test_a_release_trained_on_another_feature_schema_is_refused_with_both_hashes(
    release_stack, clients, tmp_path
) -> None:
    _, admin = clients
    source = _source(release_stack, tmp_path, "other-schema")
    report = json.loads((source / "train_report.json").read_text())
    schema = FeatureSchema.from_dict(report["feature_schema"])
    other = FeatureSchema(schema.scenario, schema.definition_version + 1, schema.feature_names,
                          schema.sequence_features, schema.sequence_length)
    report["feature_schema"] = other.to_dict()
    (source / "train_report.json").write_text(json.dumps(report))
    await admin.Create(releases_pb2.CreateReleaseRequest(name="other-schema", source=str(source)), timeout=60)
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await admin.Shadow(releases_pb2.ReleaseRequest(name="other-schema"), timeout=60)
    print(f"refused: {refused.value.code().name}: {refused.value.details()}")
    assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert other.hash in refused.value.details() and schema.hash in refused.value.details()
    status = await admin.Status(releases_pb2.StatusRequest(), timeout=10)
    assert status.mode == "none" and not status.candidate


def _stub_pids(model: str) -> list[int]:
    out = subprocess.run(["ps", "-eww", "-o", "pid,args"], capture_output=True, text=True, check=True).stdout
    return [int(line.split()[0]) for line in out.splitlines()
            if "triton_python_backend_stub" in line and f"/{model}/" in line]


async def test_shadow_reports_paired_figures_and_its_killed_models_leave_the_answers_whole(
    release_stack, clients, tmp_path
) -> None:
    gateway, admin = clients
    champion = (await admin.Status(releases_pb2.StatusRequest(), timeout=10)).champion
    source = _source(release_stack, tmp_path, "shadow-run")
    info = await admin.Create(releases_pb2.CreateReleaseRequest(name="shadow-b", source=str(source)), timeout=60)
    await admin.Shadow(releases_pb2.ReleaseRequest(name="shadow-b", by="test"), timeout=180)
    answers = await _stream(gateway, "shA", 3000)
    assert {a.release for a in answers} == {champion}

    deadline = time.monotonic() + 30
    while True:
        figures = json.loads((await admin.Status(releases_pb2.StatusRequest(), timeout=10)).detail_json)["shadow"]
        if figures.get("pairs", 0) >= 1000 or time.monotonic() > deadline:
            break
    print("shadow comparison:", json.dumps(figures, indent=1))
    assert figures["shadow"] == "shadow-b" and figures["pairs"] >= 1000
    # The same files as the champion's: the shadow agrees with it (a check that the pairs are the same events).
    assert figures["agreement"] == 1.0 and figures["abs_difference_p99"] < 1e-6

    # Its backend stubs killed, and the model unloaded behind the gateway's back: Triton restarts a killed stub by
    # itself, so the unload is what keeps every shadow call failing for the rest of the test.
    pids = _stub_pids(info.triton_model)
    assert pids, "no backend stub for the shadow's model"
    for pid in pids:
        os.kill(pid, signal.SIGKILL)
    triton = tritonclient.InferenceServerClient(release_stack.triton_address)  # type: ignore[attr-defined]
    try:
        await triton.unload_model(info.triton_model)
    finally:
        await triton.close()
    failed_before = figures["shadow_failed_batches"]
    killed = await _stream(gateway, "shB", 3000)
    assert {a.release for a in killed} == {champion}
    assert not [a for a in killed if a.error.code or a.degraded], [a for a in killed if a.degraded][:3]
    figures = json.loads((await admin.Status(releases_pb2.StatusRequest(), timeout=10)).detail_json)["shadow"]
    print(f"shadow killed: {figures['shadow_failed_batches'] - failed_before} shadow batches failed; "
          f"{len(killed)} answers, none degraded")
    assert figures["shadow_failed_batches"] > failed_before
    await admin.Rollback(releases_pb2.RollbackRequest(by="test", reason="shadow test over"), timeout=10)
