"""What users get is what the report claims: the test period's figures from the live gateway's answers equal
the offline evaluation of the exported models, with labels (genuine and fraudulent) reported as the realistic
label-arrival model delivers them, late and out of order."""

from __future__ import annotations

import numpy as np
import pytest

from scoring.scenarios.fraud.evaluate import METRICS, evaluate, format_evaluation

pytestmark = pytest.mark.integration


async def test_live_gateway_scores_agree_with_the_offline_evaluation(artifacts, stack) -> None:
    result = await evaluate(artifacts, gateway=stack.gateway_address, label_delays=("realistic",))
    entry = result["delays"]["realistic"]
    live = entry["live"]
    print(format_evaluation(result))

    # Every test event answered, none degraded (the session stack has a generous budget), no history missing.
    assert live["answered"] == result["test_transactions"] > 1000
    assert live["errors"] == {} and live["degraded"] == {}
    assert live["history_gaps"] == 0
    assert live["labels_accepted"] > live["answered"] and live["labels_unknown"] == 0
    # Both stages really decided some events, and the served versions are the trained ones.
    assert live["decided_by"]["filter"] > 0 and live["decided_by"]["ensemble"] > 0
    assert set(live["model_versions"]) == {"filter:1", "fraud_ensemble_r2:2"}

    # Event by event, the served score is the offline cascade's score (float32 rounding aside)...
    assert live["max_abs_score_diff"] < 1e-4
    assert live["events_differing"] == 0 and live["stage_differs"] == 0
    # ...so the figures agree, under both protocols.
    for protocol in ("all", "handbook"):
        for table in ("filter", "cascade"):
            for metric in METRICS:
                assert live["tables"][protocol][table][metric] == pytest.approx(
                    entry["offline"][protocol][table][metric], abs=1e-3
                )
    assert np.isclose(live["pass_rate"], entry["pass_rate"], atol=0.01)
    # The handbook's protocol drops the cards already known compromised: fewer events, some of them frauds.
    assert 0 < entry["test_events"]["handbook"] < entry["test_events"]["all"]


async def test_offline_evaluation_covers_each_label_delay_and_protocol(artifacts) -> None:
    result = await evaluate(artifacts, label_delays=("fixed:7d", "fixed:8d"))
    assert set(result["delays"]) == {"fixed:7d", "fixed:8d"}
    seven, eight = result["delays"]["fixed:7d"], result["delays"]["fixed:8d"]
    # A later label never adds information: the same models, scored on features that know less.
    assert seven["offline"]["all"]["ensemble"] != eight["offline"]["all"]["ensemble"]
    text = format_evaluation(result)
    assert "protocol handbook" in text and "label delay fixed:8d" in text and "served cascade AP (all, offline" in text
