"""`scoring train --data` as a user runs it: a file in the handbook's six columns trains every model, and a bad
file is refused with a message that names the problem, never a stack trace."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from scoring.scenarios.fraud.simulator import SimulationConfig, simulate

pytestmark = pytest.mark.integration
HANDBOOK = ["TRANSACTION_ID", "TX_DATETIME", "CUSTOMER_ID", "TERMINAL_ID", "TX_AMOUNT", "TX_FRAUD"]


def _train(data: Path, out: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        # Fraud only: the user's file is transactions; `--scenario all` would also simulate and train the market
        # scenario at full size (most of this test's former 148 s).
        [sys.executable, "-m", "scoring.cli", "train", "--scenario", "fraud", "--data", str(data), "--out", str(out)],
        capture_output=True, text=True, timeout=600,
    )


@pytest.fixture(scope="module")
def handbook_csv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Another seed than any the project trains on, written with the handbook's columns only, as CSV."""
    frame = simulate(SimulationConfig(n_customers=250, n_terminals=500, n_days=70, seed=23))
    path = tmp_path_factory.mktemp("data") / "transactions.csv"
    frame[HANDBOOK].to_csv(path, index=False)
    return path


def test_a_file_with_only_the_handbooks_columns_trains(handbook_csv: Path, tmp_path: Path) -> None:
    done = _train(handbook_csv, tmp_path / "artifacts")
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads((tmp_path / "artifacts" / "train_report.json").read_text())
    assert report["rows"] == sum(1 for _ in handbook_csv.open()) - 1
    assert (tmp_path / "artifacts" / "triton_repository" / "fraud_ensemble" / "config.pbtxt").is_file()
    assert (tmp_path / "artifacts" / "models" / "filter" / "model.onnx").is_file()
    assert report["evaluation"]["cascade"]["auc_roc"] > 0.7


def test_a_bad_file_is_refused_with_the_problem_and_the_row(handbook_csv: Path, tmp_path: Path) -> None:
    lines = handbook_csv.read_text().splitlines()
    fields = lines[5].split(",")
    fields[HANDBOOK.index("TX_AMOUNT")] = "-3.5"
    lines[5] = ",".join(fields)
    bad = tmp_path / "bad.csv"
    bad.write_text("\n".join(lines) + "\n")
    done = _train(bad, tmp_path / "artifacts")
    assert done.returncode == 2
    assert "TX_AMOUNT" in done.stderr and "negative" in done.stderr and "Traceback" not in done.stderr
    assert not (tmp_path / "artifacts" / "train_report.json").exists()
