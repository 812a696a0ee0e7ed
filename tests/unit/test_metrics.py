"""Card precision@k as the handbook defines it, on frames small enough to check by hand."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from scoring.metrics import card_precision_top_k, score_table


def _frame(rows: list[tuple[int, int, int]]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=["TX_TIME_DAYS", "CUSTOMER_ID", "TX_FRAUD"])


def test_a_card_is_scored_by_its_highest_transaction_of_the_day() -> None:
    frame = _frame([(0, 1, 0), (0, 1, 1), (0, 2, 0), (0, 3, 0)])
    # Card 1's fraud has a low score, but its other transaction puts the card first.
    scores = np.array([0.9, 0.1, 0.5, 0.4])
    assert card_precision_top_k(frame, scores, k=1) == 1.0
    assert card_precision_top_k(frame, scores, k=2) == 0.5


def test_cards_caught_on_an_earlier_day_are_removed_from_later_days() -> None:
    frame = _frame([(0, 1, 1), (0, 2, 0), (1, 1, 1), (1, 2, 0), (1, 3, 1)])
    scores = np.array([0.9, 0.1, 0.9, 0.8, 0.7])
    # Day 0: card 1 caught (1/1). Day 1: card 1 is gone, card 2 (genuine) tops the list (0/1).
    assert card_precision_top_k(frame, scores, k=1) == pytest.approx(0.5)


def test_compromised_cards_not_caught_stay_in_later_days() -> None:
    frame = _frame([(0, 1, 1), (0, 2, 0), (1, 1, 1), (1, 2, 0)])
    scores = np.array([0.1, 0.9, 0.9, 0.1])
    # Day 0: card 2 (genuine) is shown, card 1 is missed; day 1: card 1 is still there and caught.
    assert card_precision_top_k(frame, scores, k=1) == pytest.approx(0.5)


def test_score_table_has_the_three_handbook_metrics() -> None:
    frame = _frame([(0, i, int(i % 3 == 0)) for i in range(30)])
    table = score_table(frame, np.linspace(0, 1, 30), k=10)
    assert set(table) == {"auc_roc", "average_precision", "card_precision@10"}
    assert all(0.0 <= v <= 1.0 for v in table.values())
