"""`scoring evaluate`: the handbook's test protocol, offline from the exported models and live through the gateway.

Offline: the test period's features computed from the Parquet file, scored by the exported ONNX files (the
files Triton and the filter serve, not the in-memory models of training), and the cascade rebuilt from them.

Live: the same test period replayed through a running gateway (`ScoreBatchStream`), preceded by enough
history for every window and sequence to be complete, with each day's confirmed frauds reported through the
gateway's `ReportLabels` after that day, as a bank would. The figures are computed from the scores the gateway
returned, so what users get is checked against what the report claims.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import onnxruntime as ort
import pandas as pd

from scoring import features as F
from scoring import simulator
from scoring.metrics import score_table
from scoring.replay import budget_metadata, transaction
from scoring.v1 import gateway_pb2, gateway_pb2_grpc, types_pb2
from services.filter_model.model import FilterModel, probability_of_positive

# Le Borgne et al., Reproducible Machine Learning for Credit Card Fraud Detection, chapter 7 summary, test set:
# (AUC ROC, average precision, card precision@100).
HANDBOOK = {
    "logistic regression": (0.868, 0.623, 0.297),
    "xgboost": (0.869, 0.687, 0.303),
    "lstm": (0.876, 0.665, 0.297),
}
METRICS = ("auc_roc", "average_precision", "card_precision@100")
# Days replayed before the test period: the longest window (30 d) + the label delay (7 d) + room for the
# recent-event sequences of customers who buy rarely. At the default size, 45 days leave no test event whose
# inputs differ from those computed on the full history (`history_gaps` counts them on each run).
HISTORY_DAYS = 45


@dataclass
class Offline:
    frame: pd.DataFrame  # the test period
    scores: dict[str, np.ndarray]
    threshold: float


def run_onnx(path: Path, features: np.ndarray, sequences: np.ndarray) -> np.ndarray:
    """Class-1 probability from an exported model, feeding each graph input by its name."""
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    feeds = {}
    for graph_input in session.get_inputs():
        if "seq" in graph_input.name.lower():
            feeds[graph_input.name] = np.ascontiguousarray(sequences, dtype=np.float32)
        elif "feat" in graph_input.name.lower():
            feeds[graph_input.name] = np.ascontiguousarray(features, dtype=np.float32)
        else:
            raise ValueError(f"{path}: cannot tell what to feed input {graph_input.name!r}")
    return probability_of_positive(session.run(None, feeds)).astype(np.float64)


def test_mask(frame: pd.DataFrame, period: tuple[int, int]) -> np.ndarray:
    days = frame["TX_TIME_DAYS"].to_numpy()
    return np.asarray((days >= period[0]) & (days < period[1]))


def offline_scores(
    artifacts: Path, frame: pd.DataFrame, report: dict[str, Any], computed: tuple[np.ndarray, np.ndarray] | None = None
) -> Offline:
    """`computed`: the frame's offline features and sequences, when the caller has them already."""
    feats, seqs = computed if computed is not None else F.compute_offline(frame)
    te = test_mask(frame, tuple(report["periods"]["test"]))
    x, s = feats[te], seqs[te]
    filter_model = FilterModel(artifacts / "models" / "filter")
    p_filter = filter_model.predict(x).astype(np.float64)
    p_gbt = run_onnx(artifacts / "models" / "ensemble" / "gbt.onnx", x, s)
    p_seq = run_onnx(artifacts / "models" / "ensemble" / "lstm.onnx", x, s)
    w = float(report["combiner_weight_gbt"])
    p_ens = w * p_gbt + (1.0 - w) * p_seq
    threshold = filter_model.meta.threshold
    return Offline(
        frame=frame.loc[te],
        scores={
            "filter": p_filter,
            "xgboost": p_gbt,
            "lstm": p_seq,
            "ensemble": p_ens,
            "cascade": np.where(p_filter >= threshold, p_ens, p_filter),
        },
        threshold=threshold,
    )


def history_gaps(
    frame: pd.DataFrame, period: tuple[int, int], history_days: int, full: tuple[np.ndarray, np.ndarray]
) -> int:
    """Test events whose features, computed from `history_days` of history only, differ from the full history's
    (`full`: the features and sequences computed on the whole frame)."""
    full_f, full_s = full
    days = frame["TX_TIME_DAYS"].to_numpy()
    sub = frame.loc[days >= period[0] - history_days].reset_index(drop=True)
    sub_f, sub_s = F.compute_offline(sub)
    te_full, te_sub = test_mask(frame, period), test_mask(sub, period)
    n = int(te_full.sum())
    diff = np.maximum(
        np.abs(full_f[te_full] - sub_f[te_sub]).max(axis=1),
        np.abs(full_s[te_full] - sub_s[te_sub]).reshape(n, -1).max(axis=1),
    )
    return int((diff > 1e-5).sum())


@dataclass
class Live:
    score: np.ndarray
    filter_score: np.ndarray
    stage: Counter[str] = field(default_factory=Counter)
    degraded: Counter[str] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)
    versions: Counter[str] = field(default_factory=Counter)
    stage_codes: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int8))
    replayed: int = 0
    labels_accepted: int = 0
    labels_unknown: int = 0
    elapsed_s: float = 0.0


async def live_scores(
    address: str,
    frame: pd.DataFrame,
    period: tuple[int, int],
    *,
    history_days: int = HISTORY_DAYS,
    batch_size: int = 256,
    window_batches: int = 4,
    namespace: str | None = None,
    budget_ms: float | None = None,
) -> Live:
    """Replays history + test period through the gateway, a day at a time, and returns the test period's scores.

    Identifiers get a fresh namespace, so the replay builds its own entity state even on a gateway that has
    served other traffic. After each day, that day's frauds are reported through `ReportLabels`: a label is
    only needed once its transaction is older than the label delay, so reporting it then is exact.
    """
    prefix = namespace if namespace is not None else f"ev{uuid.uuid4().hex[:8]}-"
    days = frame["TX_TIME_DAYS"].to_numpy()
    part = frame.loc[(days >= period[0] - history_days) & (days < period[1])].reset_index(drop=True)
    part_days = part["TX_TIME_DAYS"].to_numpy()
    time_us = F.frame_time_us(part)
    ids = part["TRANSACTION_ID"].to_numpy()
    customers, terminals = part["CUSTOMER_ID"].to_numpy(), part["TERMINAL_ID"].to_numpy()
    amounts, frauds = part["TX_AMOUNT"].to_numpy(), part["TX_FRAUD"].to_numpy()
    te = test_mask(part, period)
    test_row = np.full(len(part), -1)
    test_row[te] = np.arange(int(te.sum()))
    live = Live(score=np.full(int(te.sum()), np.nan), filter_score=np.full(int(te.sum()), np.nan),
                stage_codes=np.zeros(int(te.sum()), np.int8))
    started = time.perf_counter()

    def tx(i: int) -> types_pb2.Transaction:
        t = transaction(int(ids[i]), int(time_us[i]), int(customers[i]), int(terminals[i]), float(amounts[i]))
        t.transaction_id = prefix + t.transaction_id
        t.customer_id = prefix + t.customer_id
        t.terminal_id = prefix + t.terminal_id
        return t

    async with grpc.aio.insecure_channel(address) as channel:
        stub = gateway_pb2_grpc.GatewayStub(channel)
        for day in np.unique(part_days):
            rows = np.flatnonzero(part_days == day)
            await _replay_day(stub, rows, tx, test_row, live, batch_size, window_batches, budget_ms)
            fraud_rows = rows[frauds[rows] == 1]
            if len(fraud_rows):
                ack = await stub.ReportLabels(
                    gateway_pb2.ReportLabelsRequest(
                        labels=[types_pb2.LabelReport(transaction_id=f"{prefix}{ids[i]}", fraud=True)
                                for i in fraud_rows]
                    ),
                    timeout=30,
                )
                live.labels_accepted += ack.accepted
                live.labels_unknown += ack.unknown
    live.elapsed_s = time.perf_counter() - started
    return live


async def _replay_day(
    stub: gateway_pb2_grpc.GatewayStub,
    rows: np.ndarray,
    tx: Any,
    test_row: np.ndarray,
    live: Live,
    batch_size: int,
    window_batches: int,
    budget_ms: float | None = None,
) -> None:
    batches = [rows[i : i + batch_size] for i in range(0, len(rows), batch_size)]
    # A bounded window of batches in flight: within the gateway's per-stream bound, and answers stay in order.
    window = asyncio.Semaphore(window_batches)

    async def requests():  # noqa: ANN202
        for batch in batches:
            await window.acquire()
            yield gateway_pb2.ScoreBatchRequest(transactions=[tx(int(i)) for i in batch])

    call = stub.ScoreBatchStream(requests(), timeout=600, metadata=budget_metadata(budget_ms))
    answered = 0
    async for reply in call:
        batch = batches[answered]
        answered += 1
        window.release()
        if len(reply.responses) != len(batch):
            raise RuntimeError(f"gateway answered {len(reply.responses)} events for a batch of {len(batch)}")
        for i, response in zip(batch, reply.responses, strict=True):
            live.replayed += 1
            j = test_row[i]
            if j < 0:
                continue
            if response.HasField("error"):
                live.errors[response.error.field or response.degraded_reason or str(response.error.code)] += 1
                continue
            live.score[j] = response.score
            live.filter_score[j] = response.filter_score
            live.stage_codes[j] = response.stage
            live.stage[types_pb2.Stage.Name(response.stage).removeprefix("STAGE_").lower()] += 1
            live.versions[response.model_version] += 1
            if response.degraded:
                live.degraded[response.degraded_reason] += 1
    if answered != len(batches):
        raise RuntimeError(f"gateway answered {answered} of {len(batches)} batches")


async def evaluate(
    artifacts: Path, *, gateway: str | None = None, history_days: int = HISTORY_DAYS, budget_ms: float | None = None
) -> dict[str, Any]:
    """Offline evaluation, and the live one when a gateway address is given; `budget_ms` is asked of the gateway
    for every replayed event (x-scoring-budget-ms), so that what is measured is the models, not the machine."""
    report = json.loads((artifacts / "train_report.json").read_text())
    frame = simulator.read_parquet(artifacts / "data" / "transactions.parquet")
    period = (int(report["periods"]["test"][0]), int(report["periods"]["test"][1]))
    computed = F.compute_offline(frame)
    offline = offline_scores(artifacts, frame, report, computed)
    y = offline.frame["TX_FRAUD"].to_numpy()
    result: dict[str, Any] = {
        "test_period_days": list(period),
        "test_transactions": int(len(offline.frame)),
        "test_frauds": int(y.sum()),
        "filter_threshold": offline.threshold,
        "pass_rate": float((offline.scores["filter"] >= offline.threshold).mean()),
        "recall_retention": _retention(offline, report),
        "offline": {name: score_table(offline.frame, s) for name, s in offline.scores.items()},
        "handbook": {name: dict(zip(METRICS, v, strict=True)) for name, v in HANDBOOK.items()},
        "threshold_curve": report.get("threshold_curve", []),
    }
    if gateway is None:
        return result
    live = await live_scores(gateway, frame, period, history_days=history_days, budget_ms=budget_ms)
    answered = ~np.isnan(live.score)
    result["live"] = {
        "gateway": gateway,
        "history_days": history_days,
        "history_gaps": history_gaps(frame, period, history_days, computed),
        "replayed_events": live.replayed,
        "elapsed_s": round(live.elapsed_s, 2),
        "labels_accepted": live.labels_accepted,
        "labels_unknown": live.labels_unknown,
        "answered": int(answered.sum()),
        "errors": dict(live.errors),
        "degraded": dict(live.degraded),
        "decided_by": dict(live.stage),
        "model_versions": dict(live.versions),
        "pass_rate": float(live.stage.get("ensemble", 0) / max(int(answered.sum()), 1)),
        "max_abs_score_diff": float(np.max(np.abs(live.score[answered] - offline.scores["cascade"][answered])))
        if answered.any() else None,
        # Events whose served score differs from the offline cascade's by more than float32 rounding could explain.
        "events_differing": int((np.abs(live.score[answered] - offline.scores["cascade"][answered]) > 1e-4).sum()),
        "stage_differs": int(
            ((live.stage_codes[answered] == 2) != (offline.scores["filter"][answered] >= offline.threshold)).sum()
        ),
    }
    if answered.all():
        result["live"]["tables"] = {
            "filter": score_table(offline.frame, live.filter_score),
            "cascade": score_table(offline.frame, live.score),
        }
    return result


def _retention(offline: Offline, report: dict[str, Any]) -> float:
    """Share of the ensemble's catches (at its operating point) that the cascade keeps on the test period."""
    y = offline.frame["TX_FRAUD"].to_numpy() == 1
    caught = (offline.scores["ensemble"] >= float(report["ensemble_threshold"])) & y
    kept = caught & (offline.scores["filter"] >= offline.threshold)
    return float(kept.sum() / max(int(caught.sum()), 1))


def format_evaluation(result: dict[str, Any]) -> str:
    def row(label: str, m: dict[str, float]) -> str:
        return f"{label:<34}" + "".join(f"{m[k]:>9.3f}" for k in METRICS)

    lines = [
        f"test period: days {result['test_period_days'][0]}-{result['test_period_days'][1] - 1}, "
        f"{result['test_transactions']:,} transactions, {result['test_frauds']:,} frauds",
        f"{'':<34}{'AUC ROC':>9}{'AP':>9}{'CP@100':>9}",
    ]
    for name, m in result["handbook"].items():
        lines.append(row(f"handbook {name}", m))
    names = {"filter": "filter (logistic regression)", "xgboost": "xgboost", "lstm": "lstm",
             "ensemble": "ensemble (triton)", "cascade": "cascade (offline)"}
    for name, m in result["offline"].items():
        lines.append(row(f"ours {names.get(name, name)}", m))
    live = result.get("live")
    if live and "tables" in live:
        lines.append(row("ours filter (live gateway)", live["tables"]["filter"]))
        lines.append(row("ours cascade (live gateway)", live["tables"]["cascade"]))
        diff = {k: live["tables"]["cascade"][k] - result["offline"]["cascade"][k] for k in METRICS}
        lines.append(f"{'live - offline (cascade)':<34}" + "".join(f"{diff[k]:>+9.4f}" for k in METRICS))
    best = {k: max(m[k] for m in result["handbook"].values()) for k in METRICS}
    served = live["tables"]["cascade"] if live and "tables" in live else result["offline"]["cascade"]
    beats = all(served[k] > best[k] for k in METRICS)
    lines.append(
        f"served cascade beats every handbook figure: {'yes' if beats else 'NO'}"
        f" (AP {served['average_precision']:.3f} vs best published {best['average_precision']:.3f})"
    )
    lines.append(
        f"filter threshold {result['filter_threshold']:.4f}: pass rate {result['pass_rate']:.1%} of test events, "
        f"recall retention {result['recall_retention']:.1%} of the ensemble's catches"
    )
    curve = result.get("threshold_curve") or []
    if curve:
        picks = [min(curve, key=lambda c: abs(c["pass_rate"] - p)) for p in (0.01, 0.02, 0.03, 0.05, 0.1, 0.2, 0.5)]
        lines.append("validation curve (pass rate -> retention): " + ", ".join(
            f"{c['pass_rate']:.1%} -> {c['retention']:.1%}" for c in picks))
    if live:
        lines.append(
            f"live: {live['replayed_events']:,} events replayed through {live['gateway']} in {live['elapsed_s']:.1f} s"
            f" ({live['history_days']} days of history, {live['history_gaps']} test events short of history), "
            f"labels accepted {live['labels_accepted']:,} unknown {live['labels_unknown']:,}"
        )
        lines.append(
            f"live: answered {live['answered']:,}, decided by {live['decided_by']}, pass rate {live['pass_rate']:.1%}, "
            f"degraded {live['degraded'] or 'none'}, errors {live['errors'] or 'none'}, "
            f"max |live - offline| score {live['max_abs_score_diff']:.2e} "
            f"({live['events_differing']} events over 1e-4, {live['stage_differs']} decided by another stage), "
            f"models {live['model_versions']}"
        )
    return "\n".join(lines)
