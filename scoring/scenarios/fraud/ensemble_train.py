"""Training and ONNX export of the heavy models served by Triton (train extra only).

XGBoost on the aggregate features (exported with onnxmltools), an LSTM on the customer's recent-event
sequence joined with the same aggregate features (PyTorch on the CPU, exported with torch.onnx), and the
stacker that combines them, fitted on validation data.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np


def train_gbt(x: np.ndarray, y: np.ndarray, *, seed: int = 0, n_estimators: int = 300):  # noqa: ANN201
    import xgboost as xgb

    model = xgb.XGBClassifier(
        n_estimators=n_estimators,
        max_depth=6,
        learning_rate=0.08,
        subsample=0.9,
        colsample_bytree=0.9,
        tree_method="hist",
        n_jobs=2,
        random_state=seed,
        eval_metric="aucpr",
    )
    model.fit(x, y)
    return model


def export_gbt(model: object, n_features: int, path: Path) -> None:
    import onnxmltools
    from onnxmltools.convert.common.data_types import FloatTensorType

    onx = onnxmltools.convert_xgboost(
        # onnxmltools converts XGBoost up to opset 15.
        model, initial_types=[("features", FloatTensorType([None, n_features]))], target_opset=15
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(onx.SerializeToString())


# ONNX input names of the sequence model; the Triton repository writer binds FEATURES/SEQUENCE to them.
LSTM_FEATURES_INPUT = "features"
LSTM_SEQUENCE_INPUT = "sequence"
LSTM_OUTPUT = "probability"


def _lstm_module(
    n_features: int, seq_features: int, hidden: int, stats: dict[str, np.ndarray] | None = None
):  # noqa: ANN202
    """LSTM over the recent-event window, its last hidden state joined with the event's aggregate features.

    The inputs are standardised inside the module (means and deviations from the training rows, kept as
    buffers) so the exported ONNX graph takes raw FEATURES and SEQUENCE, as Triton receives them. The
    aggregate features (amounts, counts, risks: all >= 0, heavy-tailed) go through log1p first.
    """
    import torch
    from torch import nn

    class SequenceScorer(nn.Module):
        feature_mean: torch.Tensor
        feature_std: torch.Tensor
        seq_mean: torch.Tensor
        seq_std: torch.Tensor

        def __init__(self) -> None:
            super().__init__()
            for name, size in (("feature", n_features), ("seq", seq_features)):
                mean = stats[f"{name}_mean"] if stats else np.zeros(size)
                std = stats[f"{name}_std"] if stats else np.ones(size)
                self.register_buffer(f"{name}_mean", torch.tensor(mean, dtype=torch.float32))
                self.register_buffer(f"{name}_std", torch.tensor(std, dtype=torch.float32))
            self.lstm = nn.LSTM(seq_features, hidden, batch_first=True)
            self.head = nn.Sequential(
                nn.Linear(hidden + n_features, 2 * hidden),
                nn.ReLU(),
                nn.Linear(2 * hidden, hidden),
                nn.ReLU(),
                nn.Linear(hidden, 1),
            )

        def forward(self, features: torch.Tensor, sequence: torch.Tensor) -> torch.Tensor:
            f = (torch.log1p(torch.clamp(features, min=0.0)) - self.feature_mean) / self.feature_std
            _, (h, _) = self.lstm((sequence - self.seq_mean) / self.seq_std)
            return torch.sigmoid(self.head(torch.cat([h[-1], f], dim=1)))

    return SequenceScorer()


def _input_stats(features: np.ndarray, seq: np.ndarray) -> dict[str, np.ndarray]:
    """Per-column mean and deviation of the module's inputs (features after log1p; every sequence step)."""
    logged = np.log1p(np.maximum(features.astype(np.float64), 0.0))
    steps = seq.reshape(-1, seq.shape[2]).astype(np.float64)
    stats = {}
    for name, values in (("feature", logged), ("seq", steps)):
        std = values.std(axis=0)
        stats[f"{name}_mean"] = values.mean(axis=0)
        # A constant column (e.g. a flag never set in a small simulation) divides by 1, not by 0.
        stats[f"{name}_std"] = np.where(std > 1e-6, std, 1.0)
    return stats


def train_lstm(
    features: np.ndarray,
    seq: np.ndarray,
    y: np.ndarray,
    *,
    seed: int = 0,
    epochs: int = 6,
    hidden: int = 32,
    batch: int = 1024,
    max_lr: float = 3e-3,
):  # noqa: ANN201
    """Train on features [N, n_features] and windows [N, T, F] with Adam under a one-cycle learning rate."""
    import torch

    torch.manual_seed(seed)
    torch.set_num_threads(2)
    model = _lstm_module(features.shape[1], seq.shape[2], hidden, _input_stats(features, seq))
    f_t = torch.from_numpy(np.ascontiguousarray(features, dtype=np.float32))
    x_t = torch.from_numpy(np.ascontiguousarray(seq, dtype=np.float32))
    y_t = torch.from_numpy(y.astype(np.float32)).reshape(-1, 1)
    # Frauds are rare: weight them so the LSTM does not learn to answer "genuine" everywhere.
    pos_weight = float((len(y) - y.sum()) / max(y.sum(), 1))
    optimiser = torch.optim.Adam(model.parameters(), lr=max_lr)
    steps_per_epoch = (len(x_t) + batch - 1) // batch
    schedule = torch.optim.lr_scheduler.OneCycleLR(
        optimiser, max_lr=max_lr, total_steps=max(epochs * steps_per_epoch, 1)
    )
    generator = torch.Generator().manual_seed(seed)
    model.train()
    for _ in range(epochs):
        order = torch.randperm(len(x_t), generator=generator)
        for start in range(0, len(order), batch):
            idx = order[start : start + batch]
            p = model(f_t[idx], x_t[idx]).clamp(1e-6, 1 - 1e-6)
            target = y_t[idx]
            weights = 1.0 + (pos_weight ** 0.5 - 1.0) * target
            loss = torch.nn.functional.binary_cross_entropy(p, target, weight=weights)
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            schedule.step()
    model.eval()
    return model


def predict_lstm(model: object, features: np.ndarray, seq: np.ndarray, *, chunk: int = 65_536) -> np.ndarray:
    import torch

    out = []
    with torch.no_grad():
        for start in range(0, len(seq), chunk):
            f = torch.from_numpy(np.ascontiguousarray(features[start : start + chunk], dtype=np.float32))
            s = torch.from_numpy(np.ascontiguousarray(seq[start : start + chunk], dtype=np.float32))
            out.append(model(f, s).numpy().reshape(-1))  # type: ignore[operator]
    return np.concatenate(out) if out else np.zeros(0, dtype=np.float32)


def export_lstm(model: object, n_features: int, seq_len: int, seq_features: int, path: Path) -> None:
    import torch

    path.parent.mkdir(parents=True, exist_ok=True)
    example = (torch.zeros(2, n_features), torch.zeros(2, seq_len, seq_features))
    torch.onnx.export(
        model,  # type: ignore[arg-type]
        example,
        str(path),
        input_names=[LSTM_FEATURES_INPUT, LSTM_SEQUENCE_INPUT],
        output_names=[LSTM_OUTPUT],
        dynamic_axes={LSTM_FEATURES_INPUT: {0: "batch"}, LSTM_SEQUENCE_INPUT: {0: "batch"}, LSTM_OUTPUT: {0: "batch"}},
        opset_version=17,
        dynamo=False,
    )


def fit_stacker(p_gbt: np.ndarray, p_seq: np.ndarray, y: np.ndarray) -> tuple[float, float, float]:
    """The ensemble's combiner: a logistic regression on both models' logits, fitted on validation data, so the
    ensemble's score is a calibrated probability. Returns (w_gbt, w_seq, bias)."""
    from sklearn.linear_model import LogisticRegression

    from scoring.common.calibration import logit

    fit = LogisticRegression(C=1e6, max_iter=1000).fit(np.column_stack([logit(p_gbt), logit(p_seq)]), y)
    return float(fit.coef_[0, 0]), float(fit.coef_[0, 1]), float(fit.intercept_[0])
