"""Behavioural tests of the synthetic generator: what it plants must be there, and nothing else moves."""

from __future__ import annotations

import json
import re
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest

from ml_tasks.contracts import CANONICAL_COLUMNS, EVENT_TYPES
from ml_tasks.data.synthetic import (
    TRUTH_COLUMNS,
    SyntheticConfig,
    generate,
    transition_graph,
    write,
)

SMALL = SyntheticConfig(n_users=300, n_categories=24, n_items=600, days=14, seed=3)


@pytest.fixture(scope="module")
def small() -> tuple[pd.DataFrame, pd.DataFrame]:
    return generate(SMALL)


def _user_ordered(events: pd.DataFrame) -> pd.DataFrame:
    return events.sort_values(["user_id", "event_ts"], kind="stable").reset_index(drop=True)


def _top3_mass(prev: np.ndarray, nxt: np.ndarray) -> float:
    """Share of pairs whose next category is among the 3 most frequent next ones for their prev."""
    counts = pd.crosstab(prev, nxt).to_numpy()
    return float(np.sort(counts, axis=1)[:, -3:].sum() / counts.sum())


def test_same_seed_same_frames_other_seed_other_frames(small):
    events, truth = small
    events2, truth2 = generate(SMALL)
    pd.testing.assert_frame_equal(events, events2)
    pd.testing.assert_frame_equal(truth, truth2)
    other, _ = generate(replace(SMALL, seed=4))
    assert len(other) != len(events) or not other.equals(events)


def test_events_schema_order_and_range(small):
    events, _ = small
    assert tuple(events.columns) == CANONICAL_COLUMNS
    for col in ("user_id", "item_id", "category_id", "event_type"):
        assert pd.api.types.is_string_dtype(events[col]), col
        assert events[col].notna().all(), col
    assert events["event_ts"].dtype == np.int64
    assert set(events["event_type"]) <= set(EVENT_TYPES)
    assert events["user_id"].str.fullmatch(r"u\d{6}").all()
    assert events["category_id"].str.fullmatch(r"c\d{3}").all()
    assert events["item_id"].str.fullmatch(r"i\d{6}").all()
    ordered = events.sort_values(["event_ts", "user_id"], kind="stable")
    assert (ordered.index == events.index).all()
    start = int(pd.Timestamp("2026-01-01", tz="UTC").timestamp())
    assert events["event_ts"].min() >= start
    assert events["event_ts"].max() < start + SMALL.days * 86_400
    assert events["user_id"].nunique() == SMALL.n_users
    expected = SMALL.n_users * SMALL.days * SMALL.events_per_user_day
    assert 0.7 * expected < len(events) < 1.3 * expected


def test_truth_schema_and_switch_fields(small):
    _, truth = small
    assert tuple(truth.columns) == TRUTH_COLUMNS
    assert len(truth) == SMALL.n_users * SMALL.days
    assert not truth.duplicated(["user_id", "day"]).any()
    assert truth["day"].min() == pd.Timestamp("2026-01-01").date()
    assert set(truth["profile"]) == {"stable", "drift", "switch"}
    assert truth["top_share"].between(0, 1).all()
    assert str(truth["switch_ts"].dtype) == "Int64"
    is_switch = truth["profile"] == "switch"
    for col in ("switch_ts", "old_top_category_id", "new_top_category_id"):
        assert truth.loc[is_switch, col].notna().all(), col
        assert truth.loc[~is_switch, col].isna().all(), col
    assert (truth.groupby("user_id")["switch_ts"].nunique(dropna=False) == 1).all()
    start = int(pd.Timestamp("2026-01-01", tz="UTC").timestamp())
    frac = (truth.loc[is_switch, "switch_ts"].astype("int64") - start) / (SMALL.days * 86_400)
    assert frac.between(0.4, 0.8).all()
    n_users = truth.drop_duplicates("user_id")["profile"].value_counts()
    assert n_users["switch"] == round(SMALL.frac_switch * SMALL.n_users)


def test_event_type_mix(small):
    events, _ = small
    n = events["event_type"].value_counts()
    assert n["view"] > 5 * max(n["fav"], n["cart"], n["search"])
    assert n["fav"] > n["buy"] and n["cart"] > n["buy"]
    assert 0 < n.get("review", 0) < n["buy"]
    assert 0.8 < n["view"] / len(events) < 0.9


def test_funnel_follows_views(small):
    """Every buy is of an item the user put in the cart, and every review of an item they bought."""
    events, _ = small
    for later, earlier in (("buy", "cart"), ("review", "buy"), ("cart", "view")):
        a = events[events["event_type"] == later][["user_id", "item_id"]].drop_duplicates()
        b = events[events["event_type"] == earlier][["user_id", "item_id"]].drop_duplicates()
        assert len(a.merge(b)) == len(a), (later, earlier)


def test_items_belong_to_one_category_and_popularity_is_skewed(small):
    events, _ = small
    assert (events.groupby("item_id")["category_id"].nunique() == 1).all()
    by_category = events["category_id"].value_counts(normalize=True)
    assert by_category.iloc[: len(by_category) // 5].sum() > 0.3  # top 20% of categories; uniform: 0.2
    top_category = by_category.index[0]
    items = events.loc[events["category_id"] == top_category, "item_id"].value_counts(normalize=True)
    assert items.iloc[0] > 5 / len(items)


def test_sessions_are_bursty_and_activity_heavy_tailed(small):
    events, _ = small
    e = _user_ordered(events)
    same_user = e["user_id"].to_numpy()[1:] == e["user_id"].to_numpy()[:-1]
    gaps = np.diff(e["event_ts"].to_numpy())[same_user]
    assert np.median(gaps) < 5 * 60
    assert (gaps > 3600).mean() > 0.05
    per_user = events["user_id"].value_counts()
    assert per_user.max() > 8 * per_user.median()


def test_switch_users_move_to_the_new_top_category(small):
    events, truth = small
    switch = truth[truth["profile"] == "switch"]
    first = switch[switch["day"] == switch["day"].min()]
    last = switch[switch["day"] == switch["day"].max()]
    assert (first["top_category_id"].to_numpy() == first["old_top_category_id"].to_numpy()).all()
    assert (last["top_category_id"].to_numpy() == last["new_top_category_id"].to_numpy()).all()
    assert (switch["old_top_category_id"] != switch["new_top_category_id"]).all()

    users = switch.drop_duplicates("user_id")[
        ["user_id", "switch_ts", "old_top_category_id", "new_top_category_id"]
    ]
    x = events.merge(users, on="user_id")
    after = (x["event_ts"] >= x["switch_ts"].astype("int64")).to_numpy()
    is_new = (x["category_id"] == x["new_top_category_id"]).to_numpy()
    is_old = (x["category_id"] == x["old_top_category_id"]).to_numpy()
    assert is_new[after].mean() > is_new[~after].mean() + 0.15
    assert is_old[after].mean() < is_old[~after].mean() - 0.15
    # per user, too: most switch users' most frequent category after the switch is the new top
    x_after = x[after]
    top_after = x_after.groupby("user_id")["category_id"].agg(lambda s: s.value_counts().index[0])
    new_top = users.set_index("user_id")["new_top_category_id"].reindex(top_after.index)
    assert (top_after == new_top).mean() > 0.6


def test_new_interests_are_reachable_through_the_graph(small):
    _, truth = small
    graph = transition_graph(SMALL)
    assert graph.groupby("category_id").size().between(2, 3).all()
    assert (graph["category_id"] != graph["next_category_id"]).all()
    assert np.allclose(graph.groupby("category_id")["probability"].sum(), 1.0)
    succ = graph.groupby("category_id")["next_category_id"].agg(set).to_dict()
    users = truth[truth["profile"] == "switch"].drop_duplicates("user_id")
    two_hops = [
        new in succ[old] or any(new in succ[mid] for mid in succ[old])
        for old, new in zip(users["old_top_category_id"], users["new_top_category_id"], strict=True)
    ]
    assert np.mean(two_hops) > 0.8


def test_sequential_structure_beyond_user_interest(small):
    """Consecutive views in a session follow the planted graph, and their transition matrix is far
    more concentrated than the marginal or than pairs of the same user's views in random order."""
    events, _ = small
    graph = transition_graph(SMALL)
    views = _user_ordered(events[events["event_type"] == "view"])
    user = views["user_id"].to_numpy()
    ts = views["event_ts"].to_numpy()
    category = views["category_id"].to_numpy()
    pair = (user[1:] == user[:-1]) & (np.diff(ts) < 30 * 60)
    prev, nxt = category[:-1][pair], category[1:][pair]
    assert len(prev) > 5000

    edges = set(zip(graph["category_id"], graph["next_category_id"], strict=True))
    on_edge = np.fromiter((e in edges for e in zip(prev, nxt, strict=True)), bool, len(prev))
    assert 0.35 < on_edge.mean() < 0.7

    rng = np.random.default_rng(0)
    shuffled = views.assign(
        category_id=views.groupby("user_id")["category_id"].transform(
            lambda s: s.to_numpy()[rng.permutation(len(s))]
        )
    )["category_id"].to_numpy()
    nxt_shuffled = shuffled[1:][pair]
    on_edge_shuffled = np.mean([e in edges for e in zip(prev, nxt_shuffled, strict=True)])
    assert on_edge.mean() > 2 * on_edge_shuffled

    marginal = pd.Series(nxt).value_counts(normalize=True).iloc[:3].sum()
    assert _top3_mass(prev, nxt) > marginal + 0.3
    assert _top3_mass(prev, nxt) > _top3_mass(prev, nxt_shuffled) + 0.15


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_write_generic_files_atomically(tmp_path, fmt):
    config = SyntheticConfig(n_users=40, n_categories=12, n_items=100, days=3, seed=1)
    result = write(config, tmp_path / "landing", fmt=fmt)
    assert json.loads(json.dumps(result)) == result
    events_path = tmp_path / "landing" / f"events.{fmt}"
    assert result["events_path"] == str(events_path)
    assert result["truth_path"] == str(tmp_path / "landing" / "truth.parquet")
    assert sorted(p.name for p in (tmp_path / "landing").iterdir()) == sorted(
        [events_path.name, "truth.parquet"]
    )  # no temp files left behind

    if fmt == "csv":
        assert events_path.read_text().splitlines()[0] == "user_id,item_id,category_id,event_type,event_ts"
        assert re.fullmatch(r"u\d{6},i\d{6},c\d{3},[a-z]+,\d{10}", events_path.read_text().splitlines()[1])
        back = pd.read_csv(events_path, dtype={"event_ts": "int64"})
    else:
        back = pd.read_parquet(events_path)
    events, truth = generate(config)
    assert tuple(back.columns) == CANONICAL_COLUMNS
    assert result["n_events"] == len(back) == len(events)
    assert result["n_users"] == back["user_id"].nunique() == config.n_users
    assert (back["event_ts"].to_numpy() == events["event_ts"].to_numpy()).all()
    assert (back["item_id"].astype(str).to_numpy() == events["item_id"].to_numpy()).all()
    truth_back = pd.read_parquet(result["truth_path"])
    assert len(truth_back) == len(truth) == config.n_users * config.days


def test_config_is_validated():
    with pytest.raises(ValueError, match="frac"):
        SyntheticConfig(frac_stable=0.5, frac_drift=0.5, frac_switch=0.5)
    with pytest.raises(ValueError, match="n_items"):
        SyntheticConfig(n_categories=50, n_items=10)
    with pytest.raises(ValueError, match="fmt"):
        write(SyntheticConfig(n_users=5, n_categories=12, n_items=20, days=1), "unused", fmt="json")
