"""The shift-flag evaluation against planted switches, on a hand-computed tiny case."""

from __future__ import annotations

import pandas as pd
import pytest

from ml_tasks.evaluation.shift_flags import (
    choose,
    compare_detectors,
    distance_between,
    flag_metrics,
    profile_distances,
    rule_distances,
)

H = 3600
DAY = 24 * H
C = [10 * DAY, 11 * DAY, 12 * DAY, 13 * DAY]  # scoring cutoffs


def _distances(rows):
    return pd.DataFrame(rows, columns=["day", "cutoff_ts", "previous_cutoff_ts", "user_id", "distance"])


def test_precision_recall_and_delay_by_hand():
    switch = pd.Series({"a": C[0] + 2 * H, "b": C[1] + 20 * H, "c": C[0] + 5 * H, "late": C[2] + 3 * H})
    d = _distances([
        (1, C[1], C[0], "a", 0.9),  # a switched 22 h before: correct flag, found at the first scoring
        (1, C[1], C[0], "s", 0.95),  # a stable user flagged: false alarm
        (2, C[2], C[1], "b", 0.2),  # b switched 4 h before c_2: missed at the first scoring ...
        (3, C[3], C[2], "b", 0.8),  # ... found at the second (28 h after the switch)
        (3, C[3], C[2], "c", 0.99),  # c switched 2 days and 20 h before: too late to count, false alarm
        (2, C[2], C[1], "c", 0.1),  # c never flagged in time: a missed switch
        (3, C[3], C[2], "late", 0.1),  # switched 21 h before the last scoring: not judged (not a day old)
    ])
    events = pd.DataFrame({"user_id": ["b"] * 4, "event_ts": [C[1] + 19 * H, C[1] + 21 * H, C[2] + H, C[3] + H]})
    m = flag_metrics(d, switch, events, threshold=0.5)
    assert m["n_flags"] == 4 and m["n_correct_flags"] == 2
    assert m["precision"] == pytest.approx(0.5)
    assert m["n_switches"] == 3 and m["n_found"] == 2  # a, b found; c missed; "late" not judged
    assert m["recall"] == pytest.approx(2 / 3)
    assert m["f1"] == pytest.approx(2 * 0.5 * (2 / 3) / (0.5 + 2 / 3))
    # delays: a 22 h, b 28 h; events after the switch before the flag: a none listed, b two
    assert m["delay_hours_median"] == pytest.approx(25.0)
    assert m["delay_events_mean"] == pytest.approx(1.0)
    threshold, best = choose(d, switch, events)
    # the best threshold also flags b at its first scoring (0.2): 3 of 5 flags correct, 2 of 3 switches
    assert threshold < 0.2 and best["f1"] == pytest.approx(2 * 0.6 * (2 / 3) / (0.6 + 2 / 3))


def test_choose_agrees_with_flag_metrics_at_every_threshold():
    import numpy as np

    rng = np.random.default_rng(3)
    users = [f"u{i}" for i in range(60)]
    switch = pd.Series({u: C[0] + float(rng.integers(-DAY, 3 * DAY)) for u in users[:25]})
    rows = [(k, C[k], C[k - 1], u, round(float(rng.random()), 2)) for k in (1, 2, 3) for u in users]
    d = _distances(rows)  # rounded distances: many ties between thresholds
    events = pd.DataFrame({"user_id": users * 3, "event_ts": [C[0] + k * H for k in range(180)]})
    grid = np.unique(d["distance"])
    by_loop = [flag_metrics(d, switch, events, float(t))["f1"] for t in grid]
    best = max(by_loop)
    expected = float(grid[max(i for i, f in enumerate(by_loop) if f == best)])  # ties: the higher threshold
    threshold, metrics = choose(d, switch, events, thresholds=grid)
    assert threshold == expected and metrics["f1"] == best
    assert metrics == flag_metrics(d, switch, events, expected)


def test_recency_profile_distance_sees_a_switch():
    rows = [("stay", "view", 1, C[0] - k * H) for k in range(1, 20)]
    rows += [("stay", "view", 1, C[1] - k * H) for k in range(1, 5)]
    rows += [("jump", "view", 1, C[0] - k * H) for k in range(1, 20)]
    rows += [("jump", "view", 2, C[1] - k * H) for k in range(1, 5)]
    events = pd.DataFrame(rows, columns=["user_id", "event_type", "category_idx", "event_ts"])
    d = profile_distances(events, C[:2], half_life_hours=12.0).set_index("user_id")["distance"]
    assert d["stay"] == pytest.approx(0.0, abs=1e-12)
    assert d["jump"] > 0.3  # 4 new events against 19 old ones, half-life 12 h


def _replayed(n_days: int = 8):
    """Users over ``n_days`` daily cutoffs: stable ones in category 1, switchers who move to category 2 at a
    planted time (one per day), with a few events a day each."""
    cutoffs = [10 * DAY + k * DAY for k in range(n_days + 1)]
    rows, switch = [], {}
    for u in range(20):
        for h in range(0, n_days * 24 + 240, 6):
            rows.append((f"s{u}", "view", 1 + (h // 6 + u) % 3 // 2, h * H))  # stays in categories 1-2
    for d in range(1, n_days):
        user, at = f"w{d}", cutoffs[d - 1] + 5 * H
        switch[user] = at
        for h in range(0, n_days * 24 + 240, 4):
            rows.append((user, "view", 7 if h * H >= at else 1, h * H))
    events = pd.DataFrame(rows, columns=["user_id", "event_type", "category_idx", "event_ts"])
    return events.sort_values(["user_id", "event_ts"]), cutoffs, pd.Series(switch, dtype=float)


def test_detectors_are_chosen_on_validation_days_and_judged_on_test_days():
    events, cutoffs, switch = _replayed()
    profiles = {hl: profile_distances(events, cutoffs, hl) for hl in (6.0, 48.0)}
    # an uninformative "embedding": the same distance for everybody
    noise = profiles[6.0].assign(distance=0.5)
    out = compare_detectors(noise, profiles, switch, events, test_from_ts=cutoffs[-4])
    assert out["chosen"]["detector"] == "recency_profile"  # the informative one wins on validation
    assert out["validation_days"] == len(cutoffs) - 4 and out["test_days"] == 3
    test = out["test"]["recency_profile"]
    assert test["precision"] == 1.0 and test["recall"] == 1.0 and test["n_switches"] == 2
    assert out["test"]["embedding"]["precision"] < 0.5  # everybody flagged or nobody: no signal
    assert out["chosen"]["half_life_hours"] in (6.0, 48.0)
    # the robust rule: a day where everybody is at the same distance flags nobody above max(median, 0.8)
    assert (rule_distances(noise)["distance"] <= 0).all()


def test_distance_between_two_scorings_for_the_scoring_step():
    events, cutoffs, switch = _replayed()
    users = ["s0", "w3", "w6"]
    d = distance_between(events, users, now_ts=cutoffs[3], previous_ts=cutoffs[2], half_life_hours=6.0)
    assert d["w3"] > 0.5 and d["s0"] < 0.2 and d["w6"] < 1e-9  # w6 switches later
