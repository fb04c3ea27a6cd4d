"""Full-ranking metrics on hand-computed tiny cases (EVALUATION.md definitions)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from ml_tasks.evaluation.metrics import (
    ndcg_at_k,
    per_user_metrics,
    ranking_metrics,
    recall_at_k,
    reciprocal_rank,
)
from ml_tasks.model.ranking import rank_order, tie_break_rank


def test_one_user_by_hand():
    # ranking a, b, c, d; relevant b, d and category 99, never seen before the cutoff (unrankable)
    ranked, relevant = [1, 2, 3, 4], {2, 4, 99}
    dcg = 1 / math.log2(3) + 1 / math.log2(5)
    idcg = 1 + 1 / math.log2(3) + 1 / math.log2(4)  # min(10, |R|) = 3 ideal hits
    assert ndcg_at_k(ranked, relevant) == pytest.approx(dcg / idcg)
    assert recall_at_k(ranked, relevant) == pytest.approx(2 / 3)
    assert reciprocal_rank(ranked, relevant) == pytest.approx(1 / 2)
    assert ndcg_at_k([5, 6], set()) == 0.0


def test_only_the_top_ten_count():
    ranked = list(range(1, 21))
    assert ndcg_at_k(ranked, {11}) == 0.0
    assert recall_at_k(ranked, {11, 1}) == 0.5
    assert reciprocal_rank(ranked, {11}) == pytest.approx(1 / 11)


def test_matrix_metrics_match_the_list_definitions():
    rng = np.random.default_rng(3)
    candidates = np.arange(1, 31)
    scores = rng.random((5, 30))
    pop = rng.integers(0, 5, 30)
    tb = tie_break_rank(candidates, pop)
    relevant = [
        np.array([1, 5, 40]),
        np.array([30]),
        np.array([2, 3, 4, 6, 7, 8, 9, 10, 11, 12, 13]),
        np.array([99]),
        np.array([17, 18]),
    ]
    per = per_user_metrics(scores, candidates, relevant, tb)
    order = rank_order(scores, tb)
    for u in range(5):
        ranked = list(candidates[order[u]])
        assert per["ndcg@10"][u] == pytest.approx(ndcg_at_k(ranked, set(relevant[u])))
        assert per["recall@10"][u] == pytest.approx(recall_at_k(ranked, set(relevant[u])))
        assert per["mrr"][u] == pytest.approx(reciprocal_rank(ranked, set(relevant[u])))


def test_ties_break_by_popularity_then_category():
    candidates = np.array([10, 20, 30, 40])
    popularity = np.array([1.0, 5.0, 5.0, 0.0])
    tb = tie_break_rank(candidates, popularity)
    order = rank_order(np.zeros((1, 4)), tb)[0]
    assert list(candidates[order]) == [20, 30, 10, 40]
    # a higher score still wins over popularity
    order = rank_order(np.array([[0.0, 0.0, 0.0, 1.0]]), tb)[0]
    assert list(candidates[order]) == [40, 20, 30, 10]


def test_users_without_relevant_categories_are_not_averaged():
    candidates = np.array([1, 2])
    tb = tie_break_rank(candidates, np.array([2.0, 1.0]))
    out = ranking_metrics(np.zeros((2, 2)), candidates, [np.array([1]), np.array([], dtype=int)], tb)
    assert out["n_users"] == 1
    assert out["ndcg@10"] == 1.0 and out["mrr"] == 1.0


def test_repeat_and_explore_split():
    candidates = np.array([1, 2, 3, 4])
    tb = tie_break_rank(candidates, np.zeros(4))
    scores = np.array([[4.0, 3.0, 2.0, 1.0]])
    # history {1, 2}; the user returns to 2 and explores 4
    out = ranking_metrics(scores, candidates, [np.array([2, 4])], tb, history=[np.array([1, 2])])
    assert out["n_users_repeat"] == 1 and out["n_users_explore"] == 1
    assert out["mrr_repeat"] == pytest.approx(1 / 2)
    assert out["mrr_explore"] == pytest.approx(1 / 4)
    assert out["recall@10_repeat"] == 1.0 and out["recall@10_explore"] == 1.0
    assert out["ndcg@10_repeat"] == pytest.approx(1 / math.log2(3))
    assert out["ndcg@10_explore"] == pytest.approx(1 / math.log2(5))
