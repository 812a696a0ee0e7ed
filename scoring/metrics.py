"""Fraud-detection metrics, as the handbook defines them: AUC ROC, average precision, card precision@k."""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.metrics import average_precision_score, roc_auc_score


def card_precision_top_k(frame: pd.DataFrame, scores: np.ndarray, k: int = 100) -> float:
    """Mean over days of the share of compromised cards among the k cards with the highest daily max score.

    As in the handbook (chapter 4, "card precision top-k"): a card is scored by the max of its transactions'
    scores that day and counts as compromised if any of them is a fraud; cards the investigators already
    caught (compromised and in an earlier day's top k) are removed from later days, since they are blocked.
    """
    df = pd.DataFrame(
        {"day": frame["TX_TIME_DAYS"].to_numpy(), "customer": frame["CUSTOMER_ID"].to_numpy(),
         "fraud": frame["TX_FRAUD"].to_numpy(), "score": scores}
    )
    detected: set[int] = set()
    precisions = []
    for _, day in df.groupby("day", sort=True):
        day = day[~day["customer"].isin(detected)]
        per_card = day.groupby("customer").agg(score=("score", "max"), fraud=("fraud", "max"))
        top = per_card.sort_values("score", ascending=False, kind="stable").head(k)
        caught = top.index[top["fraud"] == 1]
        precisions.append(len(caught) / k)
        detected.update(caught.tolist())
    return float(np.mean(precisions)) if precisions else 0.0


def score_table(frame: pd.DataFrame, scores: np.ndarray, k: int = 100) -> dict[str, float]:
    y = frame["TX_FRAUD"].to_numpy()
    return {
        "auc_roc": float(roc_auc_score(y, scores)),
        "average_precision": float(average_precision_score(y, scores)),
        f"card_precision@{k}": card_precision_top_k(frame, scores, k),
    }
