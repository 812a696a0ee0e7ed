"""Fraud-detection metrics, as the handbook defines them: AUC ROC, average precision, card precision@k."""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.metrics import average_precision_score, roc_auc_score


def card_precision_top_k(frame: pd.DataFrame, scores: np.ndarray, k: int = 100) -> float:
    """Mean over days of the share of frauded cards among the k cards with the highest daily max score.

    Cards already known to be compromised (a fraud before that day) are removed from later days, as the
    handbook does: investigators would not be shown them again.
    """
    df = pd.DataFrame(
        {"day": frame["TX_TIME_DAYS"].to_numpy(), "customer": frame["CUSTOMER_ID"].to_numpy(),
         "fraud": frame["TX_FRAUD"].to_numpy(), "score": scores}
    )
    known: set[int] = set()
    precisions = []
    for _, day in df.groupby("day", sort=True):
        per_card = day.groupby("customer").agg(score=("score", "max"), fraud=("fraud", "max")).reset_index()
        per_card = per_card[~per_card["customer"].isin(known)]
        top = per_card.sort_values("score", ascending=False).head(k)
        precisions.append(top["fraud"].sum() / k)
        known.update(per_card.loc[per_card["fraud"] == 1, "customer"].tolist())
    return float(np.mean(precisions)) if precisions else 0.0


def score_table(frame: pd.DataFrame, scores: np.ndarray, k: int = 100) -> dict[str, float]:
    y = frame["TX_FRAUD"].to_numpy()
    return {
        "auc_roc": float(roc_auc_score(y, scores)),
        "average_precision": float(average_precision_score(y, scores)),
        f"card_precision@{k}": card_precision_top_k(frame, scores, k),
    }
