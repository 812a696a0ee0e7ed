"""Training and ONNX export of the heavy models served by Triton (train extra only).

XGBoost on the aggregate features (exported with onnxmltools), an LSTM on the customer's recent-event
sequence (PyTorch on the CPU, exported with torch.onnx), and the combiner's weight chosen on validation data.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from sklearn.metrics import average_precision_score


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


def _lstm_module(seq_features: int, hidden: int):  # noqa: ANN202
    import torch
    from torch import nn

    class SequenceScorer(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.norm = nn.LayerNorm(seq_features)
            self.lstm = nn.LSTM(seq_features, hidden, batch_first=True)
            self.head = nn.Sequential(nn.Linear(hidden, hidden), nn.ReLU(), nn.Linear(hidden, 1))

        def forward(self, sequence: torch.Tensor) -> torch.Tensor:
            _, (h, _) = self.lstm(self.norm(sequence))
            return torch.sigmoid(self.head(h[-1]))

    return SequenceScorer()


def train_lstm(
    seq: np.ndarray, y: np.ndarray, *, seed: int = 0, epochs: int = 4, hidden: int = 32, batch: int = 512
):  # noqa: ANN201
    import torch

    torch.manual_seed(seed)
    torch.set_num_threads(2)
    model = _lstm_module(seq.shape[2], hidden)
    x_t = torch.from_numpy(seq.astype(np.float32))
    y_t = torch.from_numpy(y.astype(np.float32)).reshape(-1, 1)
    # Frauds are rare: weight them so the LSTM does not learn to answer "genuine" everywhere.
    pos_weight = float((len(y) - y.sum()) / max(y.sum(), 1))
    optimiser = torch.optim.Adam(model.parameters(), lr=3e-3)
    generator = torch.Generator().manual_seed(seed)
    model.train()
    for _ in range(epochs):
        order = torch.randperm(len(x_t), generator=generator)
        for start in range(0, len(order), batch):
            idx = order[start : start + batch]
            p = model(x_t[idx]).clamp(1e-6, 1 - 1e-6)
            target = y_t[idx]
            weights = 1.0 + (pos_weight ** 0.5 - 1.0) * target
            loss = torch.nn.functional.binary_cross_entropy(p, target, weight=weights)
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
    model.eval()
    return model


def predict_lstm(model: object, seq: np.ndarray) -> np.ndarray:
    import torch

    with torch.no_grad():
        return model(torch.from_numpy(seq.astype(np.float32))).numpy().reshape(-1)  # type: ignore[operator]


def export_lstm(model: object, seq_len: int, seq_features: int, path: Path) -> None:
    import torch

    path.parent.mkdir(parents=True, exist_ok=True)
    example = torch.zeros(2, seq_len, seq_features)
    torch.onnx.export(
        model,  # type: ignore[arg-type]
        (example,),
        str(path),
        input_names=["sequence"],
        output_names=["probability"],
        dynamic_axes={"sequence": {0: "batch"}, "probability": {0: "batch"}},
        opset_version=17,
        dynamo=False,
    )


def choose_combiner_weight(p_gbt: np.ndarray, p_seq: np.ndarray, y: np.ndarray) -> float:
    """Weight of the GBT in the weighted mean, chosen for average precision on validation data."""
    grid = np.round(np.linspace(0.0, 1.0, 21), 2)
    scores = [average_precision_score(y, w * p_gbt + (1 - w) * p_seq) for w in grid]
    return float(grid[int(np.argmax(scores))])
