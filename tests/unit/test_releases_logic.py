"""Release logic without processes: schema hashes, the canary's salted hash, routing state, audit log, comparison."""

from __future__ import annotations

import json

import numpy as np
import pytest

from scoring.common.schema import FeatureSchema
from scoring.releases.audit import AuditLog
from scoring.releases.compare import PairedWindow
from scoring.releases.routing import Routing, RoutingFile, entity_fraction, on_candidate, validate_steps
from scoring.releases.store import ReleaseError, ReleaseStore
from scoring.scenarios.fraud import features as F
from scoring.scenarios.market import features as MF


def test_schema_hash_changes_with_names_order_and_definition_version() -> None:
    base = F.SCHEMA
    assert base.hash.startswith("sha256:") and base.hash != MF.SCHEMA.hash
    reordered = FeatureSchema(base.scenario, base.definition_version, tuple(reversed(base.feature_names)),
                              base.sequence_features, base.sequence_length)
    bumped = FeatureSchema(base.scenario, base.definition_version + 1, base.feature_names, base.sequence_features,
                           base.sequence_length)
    assert len({base.hash, reordered.hash, bumped.hash}) == 3
    assert FeatureSchema.from_dict(base.to_dict()) == base
    tampered = base.to_dict() | {"definition_version": 9}
    with pytest.raises(ValueError, match="does not match"):
        FeatureSchema.from_dict(tampered)


def test_canary_hash_is_stable_per_salt_nested_across_steps_and_near_its_fraction() -> None:
    entities = [f"cust-{i}" for i in range(20_000)]
    at_5 = on_candidate("salt-a", entities, 0.05)
    at_25 = on_candidate("salt-a", entities, 0.25)
    assert (on_candidate("salt-a", entities, 0.05) == at_5).all()
    assert not (at_5 & ~at_25).any()  # an entity on the candidate at 5% is still on it at 25%
    assert abs(at_5.mean() - 0.05) < 0.006 and abs(at_25.mean() - 0.25) < 0.012
    other = on_candidate("salt-b", entities, 0.25)
    assert 0.03 < (other & at_25).mean() < 0.09  # another salt picks another set (independent: ~6.25%)
    assert on_candidate("s", entities[:3], 0.0).sum() == 0 and on_candidate("s", entities[:3], 1.0).all()
    assert 0.0 <= entity_fraction("s", "x") < 1.0


def test_steps_must_be_increasing_fractions() -> None:
    assert validate_steps(()) == (0.01, 0.05, 0.25, 0.5, 1.0)
    for bad in ((0.5, 0.1), (0.0, 0.5), (0.5, 1.5), (0.1, 0.1)):
        with pytest.raises(ValueError, match="steps"):
            validate_steps(bad)


def test_routing_survives_a_rewrite_and_keeps_its_salt(tmp_path) -> None:
    file = RoutingFile(tmp_path / "routing.json")
    assert file.read() is None
    routing = Routing(champion="a").changed("canary", candidate="b", mode="canary", steps=(0.1, 1.0), step=0)
    file.write(routing)
    back = file.read()
    assert back == routing and back.fraction == pytest.approx(0.1) and back.live() == ["a", "b"]
    data = json.loads((tmp_path / "routing.json").read_text())
    data["fraud"]["mode"] = "sideways"
    (tmp_path / "routing.json").write_text(json.dumps(data))
    with pytest.raises(ValueError, match="mode"):
        file.read()


def test_audit_log_appends_and_answers_which_release_served_when(tmp_path) -> None:
    audit = AuditLog(tmp_path / "audit.jsonl")
    audit.append("promoted", "a", by="test", champion="a")
    first = audit.read()[0].at
    audit.append("promoted", "b", by="test", champion="b", previous="a")
    audit.append("rolled_back", "b", by="gate", champion="a", reason="alert rate")
    events = audit.read()
    assert [e.event for e in events] == ["promoted", "promoted", "rolled_back"]
    assert audit.serving_at(first) == "a" and audit.serving_at(events[1].at) == "b"
    assert audit.serving_at(events[2].at) == "a" and audit.serving_at(first - 1) == ""
    with pytest.raises(ValueError, match="event"):
        audit.append("deleted", "a", by="test")


def test_paired_window_figures() -> None:
    window = PairedWindow(capacity=1000)
    assert window.figures(0.5, 0.5) == {"pairs": 0, "pairs_seen": 0, "shadow_failed_batches": 0,
                                        "shadow_skipped_batches": 0}
    rng = np.random.default_rng(1)
    primary = rng.random(1500)
    window.add([f"e{i}" for i in range(1500)], primary, primary + 0.1)  # shifted, same order
    f = window.figures(0.9, 0.9)
    assert f["pairs"] == 1000 and f["pairs_seen"] == 1500
    assert f["mean_difference"] == pytest.approx(0.1, abs=0.01) and f["abs_difference_p50"] == pytest.approx(0.1)
    assert f["alert_rate_shadow"] > f["alert_rate_champion"] and f["top_k_overlap"] == 1.0
    assert 0.85 < f["agreement"] < 0.95  # the shifted scores cross 0.9 about 10% more often


def test_store_refuses_bad_names_duplicates_missing_sources_and_changed_files(tmp_path) -> None:
    store = ReleaseStore(tmp_path / "releases")
    with pytest.raises(ReleaseError, match="name"):
        store.create("../escape", tmp_path, created_by="test")
    with pytest.raises(ReleaseError, match="train_report"):
        store.create("ok", tmp_path, created_by="test")
    with pytest.raises(ReleaseError, match="not in the store"):
        store.get("nothing")
    with pytest.raises(ReleaseError, match="not in the store"):
        store.get("../../etc")


def _window(n: int, alert_share: float, latency_ms: float = 5.0, degraded: float = 0.0, seed: int = 0):
    from scoring.releases.gates import ReleaseWindow

    rng = np.random.default_rng(seed)
    w = ReleaseWindow()
    score = np.where(rng.random(n) < alert_share, 0.9, rng.random(n) * 0.05)
    w.add(np.full(n, latency_ms / 1e3), score, rng.random(n) < degraded, np.zeros(n, dtype=bool), 0.5)
    return w


def test_gate_is_inconclusive_on_too_few_events_and_never_passes_on_no_data() -> None:
    from scoring.releases.gates import GateSpec, judge

    spec = GateSpec(min_events=1000, min_pairs=100)
    verdict = judge(spec, _window(5000, 0.02), _window(300, 0.02), {"pairs": 1000, "agreement": 1.0})
    assert verdict.state == "inconclusive" and "too few events" in verdict.reasons[0]
    assert judge(spec, _window(0, 0.0), _window(0, 0.0), {}).state == "inconclusive"
    verdict = judge(spec, _window(5000, 0.02), _window(2000, 0.02, seed=1), {"pairs": 10, "agreement": 1.0})
    assert verdict.state == "inconclusive" and "shadow pairs" in verdict.reasons[0]


def test_gate_passes_a_like_candidate_and_fails_on_each_bound_naming_it() -> None:
    from scoring.releases.gates import GateSpec, judge

    spec = GateSpec(min_events=1000, min_pairs=100)
    shadow = {"pairs": 1000, "agreement": 0.99}
    champion = _window(5000, 0.02)
    assert judge(spec, champion, _window(2000, 0.02, seed=1), shadow).state == "pass"
    cases = {
        "alert rate": _window(2000, 0.20, seed=1),
        "p99": _window(2000, 0.02, latency_ms=50.0, seed=1),
        "degraded rate": _window(2000, 0.02, degraded=0.2, seed=1),
    }
    for needle, candidate in cases.items():
        verdict = judge(spec, champion, candidate, shadow)
        assert verdict.state == "fail" and any(needle in r for r in verdict.reasons), (needle, verdict)
    verdict = judge(spec, champion, _window(2000, 0.02, seed=1), {"pairs": 1000, "agreement": 0.5})
    assert verdict.state == "fail" and "agreement" in verdict.reasons[0]
    shifted = judge(spec, champion, _window(2000, 0.20, seed=1), shadow)
    assert shifted.figures["score_psi"] > 0.2 and any("PSI" in r for r in shifted.reasons)


def test_a_like_candidate_with_few_alerts_by_chance_is_not_failed() -> None:
    """The case seen live: 7 alerts in 1,024 candidate events against the champion's 48 in 3,452 (1.4%)."""
    from scoring.releases.gates import GateSpec, ReleaseWindow, judge

    def window(n: int, alerts: int) -> ReleaseWindow:
        w = ReleaseWindow()
        score = np.zeros(n)
        score[:alerts] = 0.9
        w.add(np.full(n, 0.005), score, np.zeros(n, dtype=bool), np.zeros(n, dtype=bool), 0.5)
        return w

    spec = GateSpec(min_events=1000, min_pairs=100)
    shadow = {"pairs": 1000, "agreement": 0.99}
    assert judge(spec, window(3452, 48), window(1024, 7), shadow).state == "pass"
    ten_times = judge(spec, window(3452, 48), window(1024, 140), shadow)
    assert ten_times.state == "fail" and any("alert rate" in r for r in ten_times.reasons)
