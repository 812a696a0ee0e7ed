"""Releases on the real stack: canary by customer, shadow scoring, flips without Triton loads, schema refusal.

A stack of its own on a copy of the test artifacts, so that its release store and Triton models never reach the
session's stack. Each candidate is made from a training output folder, as `scoring release create --from` does.
"""

from __future__ import annotations

import asyncio
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
# The gate of this stack: small samples and short steps, so that a canary walks in tens of seconds.
GATE_MIN_EVENTS = 600
GATE_STEP_MIN_S = 1.0


@pytest_asyncio.fixture(scope="module")
async def release_stack(artifacts: Path, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[object]:
    from scoring.launcher import Ports, Stack, StackConfig

    root = tmp_path_factory.mktemp("releases")
    copy = root / "artifacts"
    shutil.copytree(artifacts, copy, ignore=shutil.ignore_patterns("logs", "triton_work", "releases",
                                                                   "fraud_ensemble_r*"))
    env = {"GATEWAY_BUDGET_MS": "3000", "GATEWAY_GATE_MIN_EVENTS": str(GATE_MIN_EVENTS),
           "GATEWAY_GATE_MIN_PAIRS": "300", "GATEWAY_GATE_STEP_MIN_S": str(GATE_STEP_MIN_S),
           "GATEWAY_GATE_INTERVAL_S": "0.5"}
    config = StackConfig(artifacts=copy, ports=Ports.free(), env=env, log_dir=root / "logs")
    async with Stack(config) as running:
        yield running


@pytest_asyncio.fixture(scope="module")
async def clients(release_stack: object) -> AsyncIterator[tuple[object, object]]:
    async with grpc.aio.insecure_channel(release_stack.gateway_address) as g, \
            grpc.aio.insecure_channel(release_stack.admin_address) as a:  # type: ignore[attr-defined]
        yield gateway_pb2_grpc.GatewayStub(g), releases_pb2_grpc.ReleasesStub(a)


@pytest.fixture(scope="module")
def source(release_stack: object) -> object:
    """The simulation's own transactions (realistic amounts, customers and terminals), in time order."""
    from scoring.bench.workload import EventSource

    return EventSource.from_artifacts(release_stack.config.artifacts, warm_days=8)  # type: ignore[attr-defined]


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

    first = by_customer(await _stream(gateway, "canA", 2 * CUSTOMERS))
    assert all(len(releases) == 1 for releases in first.values())
    on_candidate = {c for c, r in first.items() if r == {"canary-b"}}
    share = len(on_candidate) / CUSTOMERS
    print(f"canary 10%: {len(on_candidate)} of {CUSTOMERS} customers on the candidate ({share:.1%})")
    assert 0.08 <= share <= 0.12
    assert {r for rs in first.values() for r in rs} == {champion, "canary-b"}

    await release_stack.restart("gateway")
    again = by_customer(await _stream(gateway, "canB", 2 * CUSTOMERS))
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
    answers = await _stream(gateway, "shA", 2000)
    assert {a.release for a in answers} == {champion}

    deadline = time.monotonic() + 30
    while True:
        figures = json.loads((await admin.Status(releases_pb2.StatusRequest(), timeout=10)).detail_json)["shadow"]
        if figures.get("pairs", 0) >= 800 or time.monotonic() > deadline:
            break
    print("shadow comparison:", json.dumps(figures, indent=1))
    assert figures["shadow"] == "shadow-b" and figures["pairs"] >= 800
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
    killed = await _stream(gateway, "shB", 1600)
    assert {a.release for a in killed} == {champion}
    assert not [a for a in killed if a.error.code or a.degraded], [a for a in killed if a.degraded][:3]
    figures = json.loads((await admin.Status(releases_pb2.StatusRequest(), timeout=10)).detail_json)["shadow"]
    print(f"shadow killed: {figures['shadow_failed_batches'] - failed_before} shadow batches failed; "
          f"{len(killed)} answers, none degraded")
    assert figures["shadow_failed_batches"] > failed_before
    await admin.Rollback(releases_pb2.RollbackRequest(by="test", reason="shadow test over"), timeout=10)


class _Stream:
    """A client streaming the simulation's transactions in batches until stopped, counting what came back."""

    def __init__(self, gateway: object, tag: str, source: object) -> None:
        self.gateway, self.tag, self.source = gateway, tag, source
        self.sent = self.answered = self.errors = 0
        self.releases: dict[str, int] = defaultdict(int)
        self._stop = False

    async def run(self) -> None:
        async def requests():  # noqa: ANN202
            i = 0
            while not self._stop:
                batch = self.source.transactions(100, f"{self.tag}{i}-")  # type: ignore[attr-defined]
                i += 100
                self.sent += len(batch)
                yield gateway_pb2.ScoreBatchRequest(transactions=batch)
                await asyncio.sleep(0.02)

        async for reply in self.gateway.ScoreBatchStream(requests(), timeout=300):  # type: ignore[attr-defined]
            for a in reply.responses:
                self.answered += 1
                self.errors += bool(a.error.code)
                self.releases[a.release] += 1

    def stop(self) -> None:
        self._stop = True


async def _status(admin: object) -> tuple[releases_pb2.ReleaseStatus, dict]:
    status = await admin.Status(releases_pb2.StatusRequest(), timeout=10)  # type: ignore[attr-defined]
    return status, json.loads(status.detail_json)


async def _until(admin: object, done, timeout_s: float) -> tuple[releases_pb2.ReleaseStatus, dict]:  # noqa: ANN001
    deadline = time.monotonic() + timeout_s
    while True:
        status, detail = await _status(admin)
        if done(status) or time.monotonic() > deadline:
            return status, detail
        await asyncio.sleep(0.25)


def _audit(release_stack: object, name: str) -> list[dict]:
    path = release_stack.config.artifacts / "releases" / "audit.jsonl"  # type: ignore[attr-defined]
    return [e for e in map(json.loads, path.read_text().splitlines()) if e["release"] == name]


async def test_a_gate_with_too_few_events_is_inconclusive_and_does_not_promote(
    release_stack, clients, tmp_path
) -> None:
    gateway, admin = clients
    champion = (await _status(admin))[0].champion
    source = _source(release_stack, tmp_path, "few-run")
    await admin.Create(releases_pb2.CreateReleaseRequest(name="few", source=str(source)), timeout=60)
    await admin.Canary(releases_pb2.CanaryRequest(name="few", steps=[0.5, 1.0]), timeout=180)
    await _stream(gateway, "few", 200)  # far under GATEWAY_GATE_MIN_EVENTS of each release
    status, detail = await _until(admin, lambda s: False, 3 * GATE_STEP_MIN_S)
    print("too few events:", detail["gate"]["state"], detail["gate"]["reasons"])
    assert detail["gate"]["state"] == "inconclusive" and "too few events" in detail["gate"]["reasons"][0]
    assert (status.mode, status.step, status.champion) == ("canary", 0, champion)
    await admin.Rollback(releases_pb2.RollbackRequest(reason="test over"), timeout=10)


async def test_a_bad_candidate_is_rolled_back_by_the_gate_with_every_event_answered(
    release_stack, clients, source, tmp_path
) -> None:
    gateway, admin = clients
    champion = (await _status(admin))[0].champion
    run_dir = _source(release_stack, tmp_path, "bad-run")
    # Scores shifted at both stages: the filter's calibration (more events pass it, each scored higher) and the
    # ensemble's stacker (the events it scores land near 1).
    report = json.loads((run_dir / "train_report.json").read_text())
    report["stacker"]["bias"] += 6.0
    (run_dir / "train_report.json").write_text(json.dumps(report))
    meta = json.loads((run_dir / "models" / "filter" / "filter.json").read_text())
    meta["calibration"]["main"][1] += 3.0
    (run_dir / "models" / "filter" / "filter.json").write_text(json.dumps(meta))
    await admin.Create(releases_pb2.CreateReleaseRequest(name="bad", source=str(run_dir)), timeout=60)
    stream = _Stream(gateway, "bad", source)
    task = asyncio.ensure_future(stream.run())
    try:
        await asyncio.sleep(1.0)
        started = time.time()
        await admin.Canary(releases_pb2.CanaryRequest(name="bad", steps=[0.25, 0.5, 1.0], by="test"), timeout=180)
        status, detail = await _until(admin, lambda s: s.mode == "none", 120)
    finally:
        stream.stop()
        await task
    rolled = [e for e in _audit(release_stack, "bad") if e["event"] == "rolled_back"]
    assert status.mode == "none" and status.champion == champion and rolled, detail
    gate = rolled[0]["detail"]["gate"]
    print(f"bad candidate rolled back by {rolled[0]['by']} {rolled[0]['at'] - started:.1f} s after the canary "
          f"began: {gate['reasons']}; candidate {gate['figures']['candidate']}, champion "
          f"{gate['figures']['champion']}, score PSI {gate['figures']['score_psi']:.3f}")
    ratio = gate["figures"]["candidate"]["alert_rate"] / max(gate["figures"]["champion"]["alert_rate"], 1e-9)
    print(f"alert rate {ratio:.1f}x the champion's")
    assert rolled[0]["by"] == "gate" and any("alert rate" in r for r in gate["reasons"])
    assert stream.answered == stream.sent and stream.errors == 0
    print(f"stream: {stream.sent} sent, {stream.answered} answered, by release {dict(stream.releases)}")


async def test_a_good_candidate_walks_every_step_and_is_promoted(release_stack, clients, source, tmp_path) -> None:
    gateway, admin = clients
    champion = (await _status(admin))[0].champion
    run_dir = _source(release_stack, tmp_path, "good-run")
    await admin.Create(releases_pb2.CreateReleaseRequest(name="good", source=str(run_dir)), timeout=60)
    stream = _Stream(gateway, "good", source)
    task = asyncio.ensure_future(stream.run())
    try:
        await asyncio.sleep(1.0)
        await admin.Canary(releases_pb2.CanaryRequest(name="good", steps=[0.25, 0.5, 1.0], by="test"), timeout=180)
        status, detail = await _until(admin, lambda s: s.mode == "none", 240)
    finally:
        stream.stop()
        await task
    events = _audit(release_stack, "good")
    walk = [(e["event"], e["detail"].get("fraction"), e["by"]) for e in events]
    print("canary walk:", walk)
    assert status.champion == "good" and status.previous == champion, (detail, walk)
    assert [w[:2] for w in walk] == [("created", None), ("canary_step", 0.25), ("canary_step", 0.5),
                                     ("canary_step", 1.0), ("promoted", None)]
    assert all(by == "gate" for event, _, by in walk[2:])
    assert stream.answered == stream.sent and stream.errors == 0
    await admin.Rollback(releases_pb2.RollbackRequest(reason="back to the first champion"), timeout=10)


async def test_release_flips_under_load_make_no_triton_load_and_end_on_the_champion(
    release_stack, clients, source
) -> None:
    from scoring.bench.flips import release_flips

    _, admin = clients
    champion = (await _status(admin))[0].champion
    flips = await release_flips(release_stack, source, "t", cycles=5, duration_s=3.0)
    print("flips:", flips)
    assert flips["triton_loads_during_flips"] == 0
    assert flips["champion_before"] == flips["champion_after"] == champion
    assert flips["answered_flipping"] > 0 and flips["answered_steady"] > 0


async def test_a_release_trained_with_another_seed_is_shadowed_and_compared(
    release_stack, clients, source, tmp_path
) -> None:
    """The comparison table of two really different models: the second trained on seed 8, the champion on 7."""
    from dataclasses import replace

    from scoring.scenarios.fraud.pipeline import train
    from tests.conftest import TEST_TRAIN

    gateway, admin = clients
    champion = (await _status(admin))[0].champion
    run_dir = tmp_path / "seed-8"
    config = replace(TEST_TRAIN, simulation=replace(TEST_TRAIN.simulation, seed=8))
    await asyncio.to_thread(train, run_dir, config)
    await admin.Create(releases_pb2.CreateReleaseRequest(name="seed-8", source=str(run_dir), by="test"), timeout=60)
    await admin.Shadow(releases_pb2.ReleaseRequest(name="seed-8", by="test"), timeout=180)
    stream = _Stream(gateway, "seed8", source)
    task = asyncio.ensure_future(stream.run())
    try:
        _, detail = await _until(admin, lambda s: json.loads(s.detail_json)["shadow"].get("pairs", 0) >= 3000, 120)
    finally:
        stream.stop()
        await task
    figures = detail["shadow"]
    print("shadow comparison, seed 8 against the champion (seed 7):")
    for key, value in figures.items():
        print(f"  {key:<28} {value:.4f}" if isinstance(value, float) else f"  {key:<28} {value}")
    assert figures["pairs"] >= 3000 and figures["shadow"] == "seed-8" and figures["champion"] == champion
    assert 0.0 < figures["abs_difference_p99"] and 0.5 < figures["agreement"] < 1.0
    assert stream.answered == stream.sent and stream.errors == 0 and set(stream.releases) == {champion}
    await admin.Rollback(releases_pb2.RollbackRequest(by="test", reason="comparison done"), timeout=10)
