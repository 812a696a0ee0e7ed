"""What users get is what the report claims: the test period's figures from the live gateway's answers equal
the offline evaluation of the exported models."""

from __future__ import annotations

import numpy as np
import pytest

from scoring.evaluate import METRICS, evaluate, format_evaluation

pytestmark = pytest.mark.integration


async def test_live_gateway_scores_agree_with_the_offline_evaluation(artifacts, stack) -> None:
    result = await evaluate(artifacts, gateway=stack.gateway_address)
    live = result["live"]
    print(format_evaluation(result))

    # Every test event answered, none degraded (the session stack has a generous budget), no history missing.
    assert live["answered"] == result["test_transactions"] > 1000
    assert live["errors"] == {} and live["degraded"] == {}
    assert live["history_gaps"] == 0
    assert live["labels_accepted"] > 0 and live["labels_unknown"] == 0
    # Both stages really decided some events, and the served versions are the trained ones.
    assert live["decided_by"]["filter"] > 0 and live["decided_by"]["ensemble"] > 0
    assert set(live["model_versions"]) == {"filter:1", "fraud_ensemble:1"}

    # Event by event, the served score is the offline cascade's score (float32 rounding aside)...
    assert live["max_abs_score_diff"] < 1e-4
    assert live["events_differing"] == 0 and live["stage_differs"] == 0
    # ...so the figures agree, far inside the 0.01 the issue allows.
    for table in ("filter", "cascade"):
        for metric in METRICS:
            assert live["tables"][table][metric] == pytest.approx(result["offline"][table][metric], abs=1e-3)
    assert np.isclose(live["pass_rate"], result["pass_rate"], atol=0.01)
