"""Training of the market-ticks scenario: simulate, compute features and labels, split in time, fit the cascade,
export it, and write what the services load (train extra only).

    <out>/models/market/filter/    model.onnx (shallow trees), filter.json (threshold, fallback regression)
    <out>/models/market/ensemble/  gbt.onnx, seq.onnx, ensemble.json (stacker, tau)
    <out>/triton_repository/market_ensemble/
    <out>/market_report.json       figures of validation and test (`scoring.scenarios.market.evaluate`)

The split is in event time, per symbol, with a gap before each part, so that no label (which looks k ticks ahead)
of one part is computed from the next part's prices: train 60%, validation 15%, test the last 21% of each
symbol's ticks.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from scoring.scenarios.market import features as MF
from scoring.scenarios.market import labels as ML
from scoring.scenarios.market import models as MM
from scoring.scenarios.market.simulator import MarketConfig, simulate

REPORT = "market_report.json"
_HERE = Path(__file__).resolve().parent


@dataclass(frozen=True)
class MarketTrainConfig:
    n_symbols: int = 100
    ticks_per_symbol: int = 6_000
    seed: int = 1
    horizon: int = 10  # the served label horizon (ticks); evaluation also reports the others of labels.HORIZONS
    keep_moves: float = 0.95  # the filter keeps at least this share of the ensemble's correct up/down signals
    gbt_trees: int = 200
    lstm_epochs: int = 4


def source_fingerprint() -> str:
    """Hash of the code that decides what the market models are: changing it retrains on `--if-missing`."""
    import hashlib

    digest = hashlib.sha256()
    for name in ("simulator.py", "features.py", "labels.py", "models.py", "pipeline.py", "evaluate.py",
                 "repository.py", "triton_model.py"):
        digest.update((_HERE / name).read_bytes())
    return digest.hexdigest()[:16]


def artifacts_current(out: Path, config: MarketTrainConfig) -> bool:
    report = out / REPORT
    if not report.exists():
        return False
    data = json.loads(report.read_text())
    return bool(data.get("fingerprint") == source_fingerprint() and data.get("config") == asdict(config)
                and (out / "triton_repository" / "market_ensemble").is_dir())


def model_dirs(out: Path) -> tuple[Path, Path]:
    return out / "models" / "market" / "filter", out / "models" / "market" / "ensemble"


def split_masks(frame: pd.DataFrame) -> dict[str, np.ndarray]:
    """Each symbol's ticks split by their position in its own time: the simulated symbols are independent and tick
    at rates ten times apart, so one wall-clock cut would leave the test part to the slowest symbols."""
    position = frame.groupby("symbol", sort=False).cumcount().to_numpy()
    count = frame.groupby("symbol", sort=False)["sequence"].transform("size").to_numpy()
    frac = position / np.maximum(count - 1, 1)
    return {"train": frac < 0.60, "validation": (frac >= 0.62) & (frac < 0.77), "test": frac >= 0.79}


@dataclass
class Dataset:
    frame: pd.DataFrame
    features: np.ndarray
    sequences: np.ndarray
    labels: dict[int, np.ndarray]  # horizon -> labels
    parts: dict[str, np.ndarray]  # part -> bool mask (labelled rows only)
    alpha: pd.Series


def build_dataset(config: MarketTrainConfig) -> Dataset:
    frame = simulate(MarketConfig(n_symbols=config.n_symbols, ticks_per_symbol=config.ticks_per_symbol,
                                  seed=config.seed))
    features, sequences, _ = MF.compute_offline(frame)
    masks = split_masks(frame)
    # alpha from the training part only: test labels use no statistic of the test days.
    alpha = ML.half_spreads(frame.loc[masks["train"]])
    labels = {k: ML.labels(frame, k, alpha) for k in sorted({config.horizon, *ML.HORIZONS})}
    labelled = labels[config.horizon] != ML.NO_LABEL
    parts = {name: mask & labelled for name, mask in masks.items()}
    return Dataset(frame, features, sequences, labels, parts, alpha)


def choose_filter_threshold(p_move: np.ndarray, correct_moves: np.ndarray, keep: float) -> float:
    """The largest threshold on the filter's move probability that still passes `keep` of the ticks on which the
    ensemble gives a correct up/down signal (validation data)."""
    caught = np.sort(p_move[correct_moves])
    if len(caught) == 0:
        return 0.0
    return float(caught[int(np.floor((1.0 - keep) * len(caught)))])


def format_report(report: dict[str, Any]) -> str:
    from scoring.scenarios.market.evaluate import format_evaluation

    return "\n".join([
        f"market: {report['rows']['train']:,} training ticks; filter threshold {report['filter_threshold']:.3f} "
        f"(passes {report['validation']['filter_pass_rate']:.1%} of validation ticks), tau {report['tau']:.3f}; "
        f"{report['timings']['total_s']:.0f} s",
        format_evaluation(report["evaluation"]),
    ])


def train(out: Path, config: MarketTrainConfig = MarketTrainConfig()) -> dict[str, Any]:
    started = time.perf_counter()
    laps: dict[str, float] = {}
    data = build_dataset(config)
    laps["data_s"] = time.perf_counter() - started
    y = data.labels[config.horizon]
    tr, va = data.parts["train"], data.parts["validation"]
    x, s = data.features, data.sequences
    filter_dir, ensemble_dir = model_dirs(out)

    t0 = time.perf_counter()
    gbt = MM.train_trees(x[tr], y[tr], n_estimators=config.gbt_trees, max_depth=6, learning_rate=0.1,
                         seed=config.seed)
    lstm = MM.train_lstm(x[tr], s[tr], y[tr], seed=config.seed, epochs=config.lstm_epochs)
    filt = MM.train_trees(x[tr], y[tr], n_estimators=40, max_depth=3, learning_rate=0.2, seed=config.seed)
    fallback_cols = MF.self_contained_columns()
    fallback = MM.Linear.of(MM.train_logistic(x[tr][:, fallback_cols], y[tr]))
    laps["fit_s"] = time.perf_counter() - t0

    MM.export_trees(gbt, x.shape[1], ensemble_dir / "gbt.onnx")
    MM.export_lstm(lstm, x.shape[1], MF.SEQ_LEN, len(MF.SEQ_FEATURE_NAMES), ensemble_dir / "seq.onnx")
    MM.export_trees(filt, x.shape[1], filter_dir / "model.onnx")

    # Everything after this point uses the exported ONNX graphs: the figures are those of the served models.
    from scoring.scenarios.market.evaluate import Served

    served = Served.from_files(filter_dir / "model.onnx", ensemble_dir / "gbt.onnx", ensemble_dir / "seq.onnx")
    p_gbt_va, p_seq_va = served.gbt(x[va]), served.seq(x[va], s[va])
    stacker = MM.fit_stacker(p_gbt_va, p_seq_va, y[va])
    p_ens_va = stacker.predict(MM.stack_inputs(p_gbt_va, p_seq_va))
    tau = MM.choose_tau(p_ens_va, y[va])
    signal_va = MM.decide(p_ens_va, tau)
    correct_moves = (signal_va != ML.FLAT) & (signal_va == y[va])
    p_move_va = 1.0 - served.filter(x[va])[:, ML.FLAT]
    threshold = choose_filter_threshold(p_move_va, correct_moves, config.keep_moves)
    filter_tau = MM.choose_tau(served.filter(x[va]), y[va])
    fallback_tau = MM.choose_tau(fallback.predict(x[va][:, fallback_cols]), y[va])

    version = time.strftime("%Y%m%d%H%M%S")
    filter_dir.mkdir(parents=True, exist_ok=True)
    (filter_dir / "filter.json").write_text(json.dumps({
        "scenario": "market",
        "version": version,
        "threshold": threshold,
        "tau": filter_tau,
        "feature_names": list(MF.FEATURE_NAMES),
        "fallback_features": fallback_cols,
        "fallback": fallback.to_json() | {"tau": fallback_tau},
        "classes": list(ML.CLASS_NAMES),
    }, indent=2))
    (ensemble_dir / "ensemble.json").write_text(json.dumps({
        "version": version, "stacker": stacker.to_json(), "tau": tau, "horizon": config.horizon,
    }, indent=2))

    from scoring.scenarios.market.evaluate import evaluate_offline
    from scoring.scenarios.market.repository import write_model

    write_model(out / "triton_repository", ensemble_dir, queue_policy=False)  # no queue policy: as fraud's
    report: dict[str, Any] = {
        "scenario": "market",
        "fingerprint": source_fingerprint(),
        "config": asdict(config),
        "version": version,
        "feature_schema": MF.SCHEMA.to_dict(),  # what a release pins
        "rows": {name: int(mask.sum()) for name, mask in data.parts.items()},
        "class_share_test": np.bincount(y[data.parts["test"]], minlength=3).tolist(),
        "filter_threshold": threshold,
        "tau": tau,
        "validation": {"ensemble_macro_f1": MM.macro_f1(y[va], signal_va),
                       "filter_pass_rate": float((p_move_va >= threshold).mean())},
    }
    report["evaluation"] = evaluate_offline(out, data, config, served_models=served)
    laps["total_s"] = time.perf_counter() - started
    report["timings"] = laps
    (out / REPORT).write_text(json.dumps(report, indent=2))
    return report
