"""Models of the market-ticks scenario and their ONNX export (train extra only).

Three classes (down, flat, up) everywhere:
- the filter: a few shallow XGBoost trees on the aggregate features; it clears the ticks whose probability of a
  move (1 - p_flat) is under its threshold, and a multinomial logistic regression on the tick's own fields
  (`features.SELF_CONTAINED`) is its fallback and the gateway's last resort;
- the ensemble: XGBoost on the aggregate features and an LSTM on the tick sequence joined with the aggregates,
  combined by a stacker (a multinomial logistic regression on both models' log-probabilities) fitted on
  validation data;
- the decision: a signal is up (or down) when that class's probability is at least `tau` and above the other
  move's, flat otherwise; `tau` is chosen on validation for the best macro-F1.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from scoring.scenarios.market.labels import DOWN, FLAT, UP

LSTM_FEATURES_INPUT = "features"
LSTM_SEQUENCE_INPUT = "sequence"
LSTM_OUTPUT = "probabilities"
GBT_OUTPUT = "probabilities"  # onnxmltools' XGBoost converter: class probabilities [N, 3]


def move_weights(y: np.ndarray, weight: float = 5.0) -> np.ndarray:
    """Sample weights that count each up or down tick `weight` times: moves are rare, and a model trained on the
    raw balance learns to answer flat everywhere."""
    return np.where(y == FLAT, 1.0, weight)


def train_trees(x: np.ndarray, y: np.ndarray, *, n_estimators: int, max_depth: int, learning_rate: float,
                seed: int = 0):  # noqa: ANN201
    import xgboost as xgb

    model = xgb.XGBClassifier(
        n_estimators=n_estimators, max_depth=max_depth, learning_rate=learning_rate, subsample=0.9,
        colsample_bytree=0.9, tree_method="hist", n_jobs=2, random_state=seed, objective="multi:softprob",
    )
    model.fit(x, y, sample_weight=move_weights(y))
    return model


def export_trees(model: Any, n_features: int, path: Path) -> None:
    import onnxmltools
    from onnxmltools.convert.common.data_types import FloatTensorType

    onx = onnxmltools.convert_xgboost(model, initial_types=[("features", FloatTensorType([None, n_features]))],
                                      target_opset=15)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(onx.SerializeToString())


def train_logistic(x: np.ndarray, y: np.ndarray):  # noqa: ANN201
    from sklearn.linear_model import LogisticRegression

    return LogisticRegression(max_iter=1000).fit(x, y, sample_weight=move_weights(y))


@dataclass(frozen=True)
class Linear:
    """A multinomial logistic regression as plain numbers: softmax(x @ coef.T + intercept)."""

    coef: np.ndarray  # [3, n_inputs]
    intercept: np.ndarray  # [3]

    @classmethod
    def of(cls, fitted: Any) -> Linear:
        return cls(np.asarray(fitted.coef_, np.float64), np.asarray(fitted.intercept_, np.float64))

    def predict(self, x: np.ndarray) -> np.ndarray:
        z = x.astype(np.float64) @ self.coef.T + self.intercept
        z -= z.max(axis=1, keepdims=True)
        p = np.exp(z)
        return p / p.sum(axis=1, keepdims=True)

    def to_json(self) -> dict[str, Any]:
        return {"coef": self.coef.tolist(), "intercept": self.intercept.tolist()}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Linear:
        return cls(np.asarray(data["coef"], np.float64), np.asarray(data["intercept"], np.float64))


def stack_inputs(p_gbt: np.ndarray, p_seq: np.ndarray) -> np.ndarray:
    return np.log(np.clip(np.column_stack([p_gbt, p_seq]).astype(np.float64), 1e-7, 1.0))


def fit_stacker(p_gbt: np.ndarray, p_seq: np.ndarray, y: np.ndarray) -> Linear:
    from sklearn.linear_model import LogisticRegression

    return Linear.of(LogisticRegression(C=10.0, max_iter=2000).fit(stack_inputs(p_gbt, p_seq), y))


def decide(p: np.ndarray, tau: float) -> np.ndarray:
    """The signal of each row of class probabilities [n, 3]: the likelier move when its probability is >= tau."""
    move = np.where(p[:, UP] >= p[:, DOWN], UP, DOWN)
    return np.where(np.maximum(p[:, UP], p[:, DOWN]) >= tau, move, FLAT).astype(np.int8)


def macro_f1(y: np.ndarray, signal: np.ndarray) -> float:
    from sklearn.metrics import f1_score

    return float(f1_score(y, signal, average="macro", labels=[DOWN, FLAT, UP], zero_division=0))


def choose_tau(p: np.ndarray, y: np.ndarray) -> float:
    grid = np.round(np.concatenate([np.arange(0.01, 0.1, 0.005), np.arange(0.1, 0.95, 0.01)]), 3)
    scores = [macro_f1(y, decide(p, float(t))) for t in grid]
    return float(grid[int(np.argmax(scores))])


def _lstm_module(n_features: int, seq_features: int, hidden: int, stats: dict[str, np.ndarray]):  # noqa: ANN202
    """LSTM over the last ticks' steps, its last hidden state joined with the aggregate features; inputs are
    standardised inside the module (training statistics as buffers), so the ONNX graph takes raw tensors."""
    import torch
    from torch import nn

    class TickSequenceModel(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            for name in ("feature_mean", "feature_std", "seq_mean", "seq_std"):
                self.register_buffer(name, torch.tensor(stats[name], dtype=torch.float32))
            self.lstm = nn.LSTM(seq_features, hidden, batch_first=True)
            self.head = nn.Sequential(nn.Linear(hidden + n_features, 2 * hidden), nn.ReLU(), nn.Linear(2 * hidden, 3))

        def forward(self, features: torch.Tensor, sequence: torch.Tensor) -> torch.Tensor:
            f = (features - self.feature_mean) / self.feature_std
            _, (h, _) = self.lstm((sequence - self.seq_mean) / self.seq_std)
            return torch.softmax(self.head(torch.cat([h[-1], f], dim=1)), dim=1)

    return TickSequenceModel()


def _stats(features: np.ndarray, seq: np.ndarray) -> dict[str, np.ndarray]:
    out = {}
    for name, values in (("feature", features.astype(np.float64)), ("seq", seq.reshape(-1, seq.shape[2]))):
        std = values.std(axis=0)
        out[f"{name}_mean"] = values.mean(axis=0)
        out[f"{name}_std"] = np.where(std > 1e-6, std, 1.0)
    return out


def train_lstm(features: np.ndarray, seq: np.ndarray, y: np.ndarray, *, seed: int = 0, epochs: int = 4,
               hidden: int = 32, batch: int = 1024, max_lr: float = 3e-3):  # noqa: ANN201
    import torch

    torch.manual_seed(seed)
    torch.set_num_threads(2)
    model = _lstm_module(features.shape[1], seq.shape[2], hidden, _stats(features, seq))
    f_t = torch.from_numpy(np.ascontiguousarray(features, dtype=np.float32))
    s_t = torch.from_numpy(np.ascontiguousarray(seq, dtype=np.float32))
    y_t = torch.from_numpy(y.astype(np.int64))
    w_t = torch.from_numpy(move_weights(y).astype(np.float32))
    optimiser = torch.optim.Adam(model.parameters(), lr=max_lr)
    steps = max(epochs * ((len(y) + batch - 1) // batch), 1)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimiser, max_lr=max_lr, total_steps=steps)
    generator = torch.Generator().manual_seed(seed)
    model.train()
    for _ in range(epochs):
        order = torch.randperm(len(y_t), generator=generator)
        for start in range(0, len(order), batch):
            idx = order[start : start + batch]
            p = model(f_t[idx], s_t[idx]).clamp(1e-7, 1.0)
            loss = (torch.nn.functional.nll_loss(torch.log(p), y_t[idx], reduction="none") * w_t[idx]).mean()
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            schedule.step()
    model.eval()
    return model


def predict_lstm(model: Any, features: np.ndarray, seq: np.ndarray, *, chunk: int = 65_536) -> np.ndarray:
    import torch

    out = []
    with torch.no_grad():
        for start in range(0, len(seq), chunk):
            f = torch.from_numpy(np.ascontiguousarray(features[start : start + chunk], dtype=np.float32))
            s = torch.from_numpy(np.ascontiguousarray(seq[start : start + chunk], dtype=np.float32))
            out.append(model(f, s).numpy())
    return np.concatenate(out) if out else np.zeros((0, 3), np.float32)


def export_lstm(model: Any, n_features: int, seq_len: int, seq_features: int, path: Path) -> None:
    import torch

    path.parent.mkdir(parents=True, exist_ok=True)
    torch.onnx.export(
        model, (torch.zeros(2, n_features), torch.zeros(2, seq_len, seq_features)), str(path),
        input_names=[LSTM_FEATURES_INPUT, LSTM_SEQUENCE_INPUT], output_names=[LSTM_OUTPUT],
        dynamic_axes={LSTM_FEATURES_INPUT: {0: "batch"}, LSTM_SEQUENCE_INPUT: {0: "batch"}, LSTM_OUTPUT: {0: "batch"}},
        opset_version=17, dynamo=False,
    )


def onnx_probabilities(session: Any, feeds: dict[str, np.ndarray]) -> np.ndarray:
    """Class probabilities [n, 3] from an exported model (a tensor output, or onnxmltools' list of dicts)."""
    outputs = session.run(None, feeds)
    probs = outputs[-1]
    if isinstance(probs, np.ndarray):
        return probs.astype(np.float64)
    return np.asarray([[row[c] for c in (DOWN, FLAT, UP)] for row in probs], dtype=np.float64)
