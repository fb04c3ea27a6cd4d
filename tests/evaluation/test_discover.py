"""The discover ranking (the user's history left out, new categories relevant) and the co-visitation
baseline, on hand-computed tiny cases."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from ml_tasks.evaluation.baselines import baseline_scores, covisitation_table, popularity_counts
from ml_tasks.evaluation.metrics import (
    ndcg_at_k,
    per_user_metrics,
    ranking_metrics,
    recall_at_k,
    reciprocal_rank,
)
from ml_tasks.model.ranking import rank_order, tie_break_rank


def test_discover_metrics_by_hand():
    candidates = np.array([1, 2, 3, 4, 5])
    tb = tie_break_rank(candidates, np.zeros(5))
    scores = np.array([[5.0, 4.0, 3.0, 2.0, 1.0]] * 3)  # every user ranks 1, 2, 3, 4, 5
    history = [np.array([1, 3]), np.array([1, 2]), np.array([1, 2, 3, 4])]
    relevant = [
        np.array([3, 4, 9]),  # 3 is a repeat; 4 is new; 9 was never seen before the cutoff (unrankable)
        np.array([1, 2]),  # only repeats: no discover metric for this user
        np.array([5]),  # the one candidate left outside the history
    ]
    out = ranking_metrics(scores, candidates, relevant, tb, history)
    assert out["n_users_discover"] == 2
    # user 0: discover ranking 2, 4, 5; relevant {4, 9}: a hit at rank 2, two ideal hits
    ndcg0 = (1 / math.log2(3)) / (1 + 1 / math.log2(3))
    # user 2: discover ranking 5: a hit at rank 1
    assert out["ndcg@10_discover"] == pytest.approx((ndcg0 + 1.0) / 2)
    assert out["recall@10_discover"] == pytest.approx((0.5 + 1.0) / 2)
    assert out["mrr_discover"] == pytest.approx((0.5 + 1.0) / 2)
    # explore: the same relevant set, ranked among all candidates (4 at rank 4, 5 at rank 5)
    assert out["mrr_explore"] == pytest.approx((1 / 4 + 1 / 5) / 2)
    assert out["n_users"] == 3 and out["n_users_explore"] == 2


def test_excluded_candidates_leave_the_ranking_and_the_rest_keeps_its_order():
    rng = np.random.default_rng(5)
    candidates = np.arange(1, 26)
    scores = rng.random((4, 25))
    tb = tie_break_rank(candidates, rng.integers(0, 4, 25))
    exclude = rng.random((4, 25)) < 0.4
    relevant = [candidates[~exclude[u]][rng.random((~exclude[u]).sum()) < 0.3] for u in range(4)]
    per = per_user_metrics(scores, candidates, relevant, tb, exclude=exclude)
    order = rank_order(scores, tb)
    for u in range(4):
        ranked = [c for c in candidates[order[u]] if not exclude[u][c - 1]]
        expected = ndcg_at_k(ranked, set(relevant[u])) if len(relevant[u]) else np.nan
        np.testing.assert_allclose(per["ndcg@10"][u], expected)
        if len(relevant[u]):
            assert per["recall@10"][u] == pytest.approx(recall_at_k(ranked, set(relevant[u])))
            assert per["mrr"][u] == pytest.approx(reciprocal_rank(ranked, set(relevant[u])))


H = 3600
T = 100 * H


@pytest.fixture
def events():
    rows = [
        ("a", 1, T - 50 * H), ("a", 1, T - 49 * H), ("a", 2, T - 40 * H), ("a", 3, T - 30 * H),
        ("b", 1, T - 20 * H), ("b", 3, T - 10 * H), ("b", 4, T),  # 3 -> 4 happens at the cutoff
        ("c", 2, T - 8 * H), ("c", 1, T - 6 * H),
        ("d", 3, T - 5 * H),
        ("e", 4, T - 200 * H),  # category 4: seen long ago, not popular now
    ]
    frame = pd.DataFrame(rows, columns=["user_id", "category_idx", "event_ts"])
    return frame.assign(event_type="view")


CANDIDATES = np.array([1, 2, 3, 4])


def test_covisitation_table_counts_followers_within_the_window_before_the_cutoff(events):
    table = covisitation_table(events[events["event_ts"] < T].sort_values(["user_id", "event_ts"]))
    got = {(int(r.src), int(r.dst)): r.weight for r in table.itertuples()}
    # a: 1 1 2 3 -> runs 1 2 3: 1->2, 1->3, 2->3; b: 1->3; c: 2->1; nothing follows 3 before T
    assert got == pytest.approx({(1, 2): 1 / 3, (1, 3): 2 / 3, (2, 3): 1 / 2, (2, 1): 1 / 2})


def test_covisitation_scores_by_hand_with_popularity_fallback(events):
    users = ["a", "b", "d"]
    scores = baseline_scores("covisitation", events, T, users, CANDIDATES, horizon_hours=48)
    # a's recent categories: 3 (weight 1), 2 (1/2), 1 (1/3); b's: 3 (1), 1 (1/2); d's: 3 only
    np.testing.assert_allclose(scores[0], [0.5 * 0.5, (1 / 3) * (1 / 3), 0.5 * 0.5 + (1 / 3) * (2 / 3), 0.0])
    np.testing.assert_allclose(scores[1], [0.0, 0.5 / 3, 0.5 * 2 / 3, 0.0])
    np.testing.assert_allclose(scores[2], 0.0)  # nothing ever followed 3 before T
    pop = popularity_counts(events, T, CANDIDATES, 48)
    order = rank_order(scores, tie_break_rank(CANDIDATES, pop))
    # popularity in the last 48 h: 3 (3 events), 1 (2), 2 (2), 4 (none); d has no score: popularity order
    assert list(CANDIDATES[order[2]]) == [3, 1, 2, 4]
    # b: 3, then 2 by co-visitation ahead of the more popular 1, which falls back with 4 to popularity
    assert list(CANDIDATES[order[1]]) == [3, 2, 1, 4]


def test_covisitation_sees_no_event_at_or_after_the_cutoff(events):
    later = pd.DataFrame(
        [("b", 3, T + H), ("b", 4, T + 2 * H), ("d", 4, T + H), ("a", 4, T)], columns=["user_id", "category_idx", "event_ts"]
    ).assign(event_type="view")
    with_future = pd.concat([events, later], ignore_index=True)
    users = ["a", "b", "d"]
    np.testing.assert_array_equal(
        baseline_scores("covisitation", events, T, users, CANDIDATES, 48),
        baseline_scores("covisitation", with_future, T, users, CANDIDATES, 48),
    )
