"""Offline evaluation of the market-ticks scenario on held-out time (`scoring evaluate --scenario market`).

For the served horizon, on the test part: macro-F1, Matthews correlation, precision and recall of up and down for
the filter alone, XGBoost alone, the LSTM alone, the ensemble and the cascade (the filter clears, the ensemble
decides the rest), against two baselines: always flat, and a logistic regression on the queue imbalance alone
(Gould and Bonart 2016). Then the signal as a trader judges it: the hit rate of up/down signals and the profit
of a naive strategy (one unit long on up, short on down, held k ticks, paying the half-spread on entry and on
exit), per regime, with the number of trades. Then a regime the models never saw: XGBoost retrained without the
volatile regime's training ticks, scored on the test's volatile ticks, against the one trained on everything.
The other horizons of `labels.HORIZONS` get XGBoost and the baselines.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from scoring.scenarios.market import features as MF
from scoring.scenarios.market import labels as ML
from scoring.scenarios.market import models as MM
from scoring.scenarios.market.simulator import REGIMES

if TYPE_CHECKING:
    from scoring.scenarios.market.pipeline import Dataset, MarketTrainConfig


def _session(path: Path) -> Any:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 2
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


@dataclass
class Served:
    """The exported graphs, run as the services run them."""

    filter_session: Any
    gbt_session: Any
    seq_session: Any

    @classmethod
    def from_files(cls, filter_onnx: Path, gbt_onnx: Path, seq_onnx: Path) -> Served:
        return cls(_session(filter_onnx), _session(gbt_onnx), _session(seq_onnx))

    @staticmethod
    def _chunks(fn: Any, *arrays: np.ndarray, chunk: int = 65_536) -> np.ndarray:
        n = len(arrays[0])
        parts = [fn(*(a[i : i + chunk] for a in arrays)) for i in range(0, n, chunk)]
        return np.concatenate(parts) if parts else np.zeros((0, 3))

    def filter(self, x: np.ndarray) -> np.ndarray:
        return self._chunks(lambda a: MM.onnx_probabilities(self.filter_session, {"features": a.astype(np.float32)}),
                            x)

    def gbt(self, x: np.ndarray) -> np.ndarray:
        return self._chunks(lambda a: MM.onnx_probabilities(self.gbt_session, {"features": a.astype(np.float32)}), x)

    def seq(self, x: np.ndarray, s: np.ndarray) -> np.ndarray:
        return self._chunks(lambda a, b: MM.onnx_probabilities(
            self.seq_session, {MM.LSTM_FEATURES_INPUT: a.astype(np.float32), MM.LSTM_SEQUENCE_INPUT: b}), x, s)


def classification(y: np.ndarray, signal: np.ndarray) -> dict[str, float]:
    from sklearn.metrics import matthews_corrcoef, precision_recall_fscore_support

    p, r, _, _ = precision_recall_fscore_support(y, signal, labels=[ML.DOWN, ML.UP], zero_division=0)
    return {
        "macro_f1": MM.macro_f1(y, signal),
        "mcc": float(matthews_corrcoef(y, signal)) if len(np.unique(signal)) > 1 else 0.0,
        "precision_down": float(p[0]), "recall_down": float(r[0]),
        "precision_up": float(p[1]), "recall_up": float(r[1]),
        "signal_share": float((signal != ML.FLAT).mean()),
    }


def trading(frame_rows: Any, signal: np.ndarray, k: int) -> dict[str, dict[str, float]]:
    """Per regime (and all): trades, hit rate, profit in ticks after paying the half-spread twice."""
    direction = np.where(signal == ML.UP, 1.0, np.where(signal == ML.DOWN, -1.0, 0.0))
    mid, later_mid, half, later_half, regime = frame_rows
    move = later_mid - mid
    pnl = direction * move - (half + later_half)
    out = {}
    for name, mask in (("all", np.ones(len(signal), bool)), *((r, regime == i) for i, r in enumerate(REGIMES))):
        trade = mask & (direction != 0) & np.isfinite(later_mid)
        n = int(trade.sum())
        out[name] = {
            "trades": n,
            "hit_rate": float((direction[trade] * move[trade] > 0).mean()) if n else 0.0,
            "profit_ticks": float(pnl[trade].sum() / MF.TICK_SIZE),
            # Before paying the spread: the signal's own edge.
            "gross_ticks": float((direction[trade] * move[trade]).sum() / MF.TICK_SIZE),
            "profit_per_trade_ticks": float(pnl[trade].mean() / MF.TICK_SIZE) if n else 0.0,
        }
    return out


def _later(frame: Any, k: int) -> tuple[np.ndarray, ...]:
    mid = ((frame["bid_price"] + frame["ask_price"]) / 2.0).to_numpy()
    half = ((frame["ask_price"] - frame["bid_price"]) / 2.0).to_numpy()
    g = frame.assign(mid=mid, half=half).groupby("symbol", sort=False)
    return mid, g["mid"].shift(-k).to_numpy(), half, g["half"].shift(-k).to_numpy(), frame["regime"].to_numpy()


def cascade(p_filter: np.ndarray, p_ensemble: np.ndarray, threshold: float, tau: float) -> tuple[np.ndarray, ...]:
    """The gateway's decision: a tick whose move probability (1 - p_flat) under the filter is below the threshold
    is cleared as flat with the filter's probabilities; the others get the ensemble's probabilities and signal."""
    passed = (1.0 - p_filter[:, ML.FLAT]) >= threshold
    probs = np.where(passed[:, None], p_ensemble, p_filter)
    signal = np.where(passed, MM.decide(p_ensemble, tau), ML.FLAT).astype(np.int8)
    return probs, signal, passed


def evaluate_offline(out: Path, data: Dataset, config: MarketTrainConfig, served_models: Served) -> dict[str, Any]:
    from scoring.scenarios.market.pipeline import model_dirs

    filter_dir, ensemble_dir = model_dirs(out)
    meta = json.loads((filter_dir / "filter.json").read_text())
    ens = json.loads((ensemble_dir / "ensemble.json").read_text())
    stacker = MM.Linear.from_json(ens["stacker"])
    k = config.horizon
    y = data.labels[k]
    te, va, tr = data.parts["test"], data.parts["validation"], data.parts["train"]
    x, s = data.features, data.sequences
    p_filter = served_models.filter(x[te])
    p_gbt, p_seq = served_models.gbt(x[te]), served_models.seq(x[te], s[te])
    p_ens = stacker.predict(MM.stack_inputs(p_gbt, p_seq))
    _, signal_cascade, passed = cascade(p_filter, p_ens, meta["threshold"], ens["tau"])

    qi_col = [MF.FEATURE_NAMES.index("queue_imbalance")]
    qi_model = MM.Linear.of(MM.train_logistic(x[tr][:, qi_col], y[tr]))
    qi_tau = MM.choose_tau(qi_model.predict(x[va][:, qi_col]), y[va])
    # The other single models' tau, chosen on validation as the ensemble's was.
    taus = {
        "xgboost": MM.choose_tau(served_models.gbt(x[va]), y[va]),
        "lstm": MM.choose_tau(served_models.seq(x[va], s[va]), y[va]),
    }
    signals = {
        "always_flat": np.full(int(te.sum()), ML.FLAT, np.int8),
        "queue_imbalance_lr": MM.decide(qi_model.predict(x[te][:, qi_col]), qi_tau),
        "filter": MM.decide(p_filter, meta["tau"]),
        "xgboost": MM.decide(p_gbt, taus["xgboost"]),
        "lstm": MM.decide(p_seq, taus["lstm"]),
        "ensemble": MM.decide(p_ens, ens["tau"]),
        "cascade": signal_cascade,
    }
    later = tuple(a[te] for a in _later(data.frame, k))
    table = {name: classification(y[te], sig) | {"trading": trading(later, sig, k)} for name, sig in signals.items()}
    result: dict[str, Any] = {
        "horizon": k,
        "test_ticks": int(te.sum()),
        "ensemble_share": float(passed.mean()),
        "models": table,
    }

    # A regime never seen in training: XGBoost without the volatile regime's training ticks.
    volatile = REGIMES.index("volatile")
    regime = data.frame["regime"].to_numpy()
    seen = tr & (regime != volatile)
    held = MM.train_trees(x[seen], y[seen], n_estimators=config.gbt_trees, max_depth=6, learning_rate=0.1,
                          seed=config.seed)
    held_tau = MM.choose_tau(held.predict_proba(x[va & (regime != volatile)]), y[va & (regime != volatile)])
    test_volatile = te & (regime == volatile)
    result["unseen_regime"] = {
        "regime": "volatile",
        "test_ticks": int(test_volatile.sum()),
        "xgboost_trained_on_all": classification(y[test_volatile], MM.decide(
            served_models.gbt(x[test_volatile]), taus["xgboost"])),
        "xgboost_without_regime": classification(y[test_volatile], MM.decide(
            held.predict_proba(x[test_volatile]), held_tau)),
    }

    other: dict[str, Any] = {}
    for horizon in ML.HORIZONS:
        if horizon == k:
            continue
        yh = data.labels[horizon]
        trh, vah, teh = tr & (yh >= 0), va & (yh >= 0), te & (yh >= 0)
        gbt_h = MM.train_trees(x[trh], yh[trh], n_estimators=config.gbt_trees, max_depth=6, learning_rate=0.1,
                               seed=config.seed)
        tau_h = MM.choose_tau(gbt_h.predict_proba(x[vah]), yh[vah])
        qi_h = MM.Linear.of(MM.train_logistic(x[trh][:, qi_col], yh[trh]))
        qi_tau_h = MM.choose_tau(qi_h.predict(x[vah][:, qi_col]), yh[vah])
        other[str(horizon)] = {
            "always_flat": classification(yh[teh], np.full(int(teh.sum()), ML.FLAT, np.int8)),
            "queue_imbalance_lr": classification(yh[teh], MM.decide(qi_h.predict(x[teh][:, qi_col]), qi_tau_h)),
            "xgboost": classification(yh[teh], MM.decide(gbt_h.predict_proba(x[teh]), tau_h)),
        }
    result["other_horizons"] = other
    return result


def format_evaluation(evaluation: dict[str, Any]) -> str:
    lines = [f"market, horizon {evaluation['horizon']} ticks, {evaluation['test_ticks']:,} test ticks; "
             f"the ensemble scores {evaluation['ensemble_share']:.1%} of them"]
    lines.append(f"{'model':<20}{'macro-F1':>9}{'MCC':>8}{'P up':>7}{'R up':>7}{'P dn':>7}{'R dn':>7}"
                 f"{'trades':>8}{'hit':>7}{'profit/tick-trades':>20}")
    for name, m in evaluation["models"].items():
        t = m["trading"]["all"]
        lines.append(f"{name:<20}{m['macro_f1']:>9.4f}{m['mcc']:>8.4f}{m['precision_up']:>7.3f}{m['recall_up']:>7.3f}"
                     f"{m['precision_down']:>7.3f}{m['recall_down']:>7.3f}{t['trades']:>8}{t['hit_rate']:>7.3f}"
                     f"{t['profit_ticks']:>20.1f}")
    lines.append("cascade by regime: " + "; ".join(
        f"{r}: {v['trades']} trades, hit {v['hit_rate']:.3f}, profit {v['profit_ticks']:.1f} ticks "
        f"(gross {v['gross_ticks']:.1f})"
        for r, v in evaluation["models"]["cascade"]["trading"].items() if r != "all"))
    u = evaluation["unseen_regime"]
    lines.append(f"unseen regime ({u['regime']}, {u['test_ticks']:,} ticks): xgboost macro-F1 "
                 f"{u['xgboost_trained_on_all']['macro_f1']:.4f} trained on all, "
                 f"{u['xgboost_without_regime']['macro_f1']:.4f} without it")
    for horizon, models in evaluation["other_horizons"].items():
        lines.append(f"horizon {horizon}: " + ", ".join(
            f"{name} macro-F1 {m['macro_f1']:.4f} MCC {m['mcc']:.4f}" for name, m in models.items()))
    return "\n".join(lines)
