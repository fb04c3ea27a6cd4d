"""The baselines on a hand-computed case, and the reference figures on the real Taobao sample (co-visitation:
tests/evaluation/test_discover.py)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from ml_tasks.evaluation.baselines import BASELINES, baseline_scores, popularity_counts
from ml_tasks.model.ranking import rank_order, tie_break_rank

H = 3600
T = 100 * H  # cutoff


def _events(rows):
    return pd.DataFrame(rows, columns=["user_id", "category_idx", "event_type", "event_ts"])


@pytest.fixture
def events():
    return _events(
        [
            # u1: 1, 1, 2 (cart), 3 -- then an event at T that must be ignored
            ("u1", 1, "view", T - 90 * H),
            ("u1", 1, "view", T - 80 * H),
            ("u1", 2, "cart", T - 10 * H),
            ("u1", 3, "view", T - 5 * H),
            ("u1", 4, "buy", T),
            # u2: 3 -> 2, 3 -> 2, then 3 (its last category)
            ("u2", 3, "view", T - 60 * H),
            ("u2", 2, "view", T - 50 * H),
            ("u2", 3, "view", T - 40 * H),
            ("u2", 2, "view", T - 30 * H),
            ("u2", 3, "view", T - 2 * H),
            ("u3", 4, "view", T - 200 * H),
        ]
    )


CANDIDATES = np.array([1, 2, 3, 4])
USERS = ["u1", "u2"]


def _ranking(name, events, **kw):
    scores = baseline_scores(name, events, T, USERS, CANDIDATES, horizon_hours=48, **kw)
    pop = popularity_counts(events, T, CANDIDATES, 48)
    order = rank_order(scores, tie_break_rank(CANDIDATES, pop))
    return scores, [list(CANDIDATES[o]) for o in order]


def test_popularity_counts_the_last_horizon_only(events):
    # in [T - 48 h, T): u1: 2, 3; u2: 2, 3, 3 -> category 3: 3 events, 2: 2, 1 and 4: none
    assert list(popularity_counts(events, T, CANDIDATES, 48)) == [0, 2, 3, 0]
    _, ranked = _ranking("popularity", events)
    assert ranked == [[3, 2, 1, 4], [3, 2, 1, 4]]


def test_user_frequency_ignores_events_at_or_after_the_cutoff(events):
    scores, ranked = _ranking("user_frequency", events)
    assert list(scores[0]) == [2, 1, 1, 0]  # the buy on 4 happens at T: not counted
    # u1: 1 (2 events), then 3 and 2 tie at 1 event -> popularity (3 before 2), then 4 (fallback)
    assert ranked[0] == [1, 3, 2, 4]
    assert ranked[1] == [3, 2, 1, 4]


def test_recency_decay_weights_event_types_and_age(events):
    scores, ranked = _ranking("recency_decay", events, half_life_hours=10.0)
    expected_u1 = [0.5**9 + 0.5**8, 3 * 0.5**1, 0.5**0.5, 0.0]
    np.testing.assert_allclose(scores[0], expected_u1)
    assert ranked[0] == [2, 3, 1, 4]
    # a long half-life turns it into weighted frequency: the cart (weight 3) still leads
    _, ranked_long = _ranking("recency_decay", events, half_life_hours=1e9)
    assert ranked_long[0] == [2, 1, 3, 4]


def test_last_category_orders_by_last_occurrence(events):
    _, ranked = _ranking("last_category", events)
    assert ranked[0] == [3, 2, 1, 4]
    assert ranked[1] == [3, 2, 1, 4]


def test_markov_uses_transitions_from_the_last_category(events):
    scores, ranked = _ranking("markov", events)
    # global transitions before T: 1->1, 1->2, 2->3 (u1); 3->2, 2->3, 3->2, 2->3 (u2)
    # u1's last category is 3: 3->2 twice; then u1's own counts (1: 2, 3: 1), then popularity
    assert ranked[0] == [2, 1, 3, 4]
    assert scores[0][1] > 1 > scores[0][0] > scores[0][2] > scores[0][3] == 0
    # u2's last category is 3 as well: 2 first, then its own history (3: 3 events)
    assert ranked[1] == [2, 3, 1, 4]


def test_every_baseline_returns_a_score_per_user_and_candidate(events):
    for name in BASELINES:
        scores = baseline_scores(name, events, T, USERS, CANDIDATES, 48)
        assert scores.shape == (2, 4) and np.isfinite(scores).all() and (scores >= 0).all()
    with pytest.raises(ValueError, match="unknown baseline"):
        baseline_scores("nope", events, T, USERS, CANDIDATES, 48)


REFERENCE = {  # EVALUATION.md, Taobao sample, horizon 2 days, half-life 72 h
    "recency_decay": 0.393,
    "user_frequency": 0.379,
    "last_category": 0.363,
    "markov": 0.291,
    "popularity": 0.200,
}

DISCOVER_REFERENCE = {"popularity": 0.116, "markov": 0.105}  # EVALUATION.md, same split


def test_reference_figures_on_the_taobao_sample(samples):
    from ml_tasks.evaluation.protocol import baseline_metrics, cutoff_context

    raw = pd.read_csv(
        samples / "taobao_userbehavior" / "UserBehavior_sample.csv",
        header=None,
        names=["user_id", "item_id", "category_id", "event_type", "event_ts"],
        dtype={"user_id": str, "category_id": str},
    )
    first = (
        raw.groupby("category_id")["event_ts"].min().reset_index().sort_values(["event_ts", "category_id"])
    )
    idx = dict(zip(first["category_id"], range(1, len(first) + 1), strict=True))
    ev = raw.assign(
        category_idx=raw["category_id"].map(idx), event_type=raw["event_type"].replace({"pv": "view"})
    )
    horizon = 48
    test_cutoff = int(ev["event_ts"].max()) - horizon * 3600
    ctx = cutoff_context(ev, test_cutoff, horizon)
    assert len(ctx.users) == 543

    class Data:
        events = ev

    results = baseline_metrics(Data, ctx, half_life_hours=72.0)
    for name, ref in REFERENCE.items():
        assert results[name]["ndcg@10"] == pytest.approx(ref, abs=0.01), name
    # discover: 517 users touch a category new to them in the window
    for name, ref in DISCOVER_REFERENCE.items():
        assert results[name]["n_users_discover"] == 517
        assert results[name]["ndcg@10_discover"] == pytest.approx(ref, abs=0.005), name
    # recency, frequency and last-category have nothing to score there: popularity order
    for name in ("recency_decay", "user_frequency", "last_category"):
        assert results[name]["ndcg@10_discover"] == results["popularity"]["ndcg@10_discover"]
