"""Batch scoring: the promotion gate, active users, interest-shift flags, idempotent warehouse writes."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from ml_tasks.data import serving_store
from ml_tasks.evaluation.gate import gate
from ml_tasks.serving import scoring


@pytest.mark.parametrize(
    ("candidate", "champion", "margin", "promoted"),
    [(0.30, None, 0.05, True), (0.33, 0.30, 0.05, True), (0.31, 0.30, 0.05, False), (0.30, 0.30, 0.0, False),
     (0.20, 0.30, 0.0, False)],
)
def test_gate_promotes_only_a_better_challenger(candidate, champion, margin, promoted):
    decision, reason = gate(candidate, champion, margin)
    assert decision is promoted
    assert reason


def test_active_users_by_last_event_gap():
    rows = pd.DataFrame({"user_id": ["a", "b", "c"],
                         "seq_gap_hours": [[100.0, 2.0], [500.0, 200.0], []]})
    assert list(scoring.active_users(rows, active_days=7)["user_id"]) == ["a"]


def test_interest_shift_flags_only_the_user_who_switched():
    rng = np.random.default_rng(0)
    users = [f"u{i}" for i in range(40)]
    before = rng.normal(size=(40, 4)) + np.array([3.0, 0, 0, 0])
    now = before + rng.normal(scale=0.05, size=before.shape)
    now[7] = np.array([-3.0, 0.5, 0, 0])  # u7 turns to the opposite interest
    frame = lambda z, t: pd.DataFrame(  # noqa: E731
        {"user_id": users, "cutoff_ts": t, **{f"pc_{j + 1}": z[:, j] for j in range(4)}})
    shifts = scoring.interest_shifts(frame(now, 200), frame(before, 100))
    assert list(shifts.loc[shifts["is_shift"], "user_id"]) == ["u7"]
    assert (shifts["previous_cutoff_ts"] == 100).all()
    # a threshold chosen on validation days replaces the robust rule
    fixed = scoring.interest_shifts(frame(now, 200), frame(before, 100), threshold=0.0005)
    assert (fixed["threshold"] == 0.0005).all()
    assert fixed["is_shift"].sum() > 1 and fixed["is_shift"].tolist() == (fixed["distance"] > 0.0005).tolist()


def _scoring_frames(n_users: int):
    users = [f"u{i}" for i in range(n_users)]
    scores = pd.DataFrame({"user_id": np.repeat(users, 2), "category_id": ["c1", "c2"] * n_users,
                           "score": 0.5, "rank": [1, 2] * n_users})
    trajectory = pd.DataFrame({"user_id": users, "cutoff_ts": 1_700_000_000,
                               "components": [np.array([0.1, 0.2])] * n_users})
    shifts = pd.DataFrame({"user_id": users[:1], "previous_cutoff_ts": [1_699_990_000], "distance": [0.9],
                           "threshold": [0.5], "top_category_id": ["c1"]})
    return scores, trajectory, shifts


def test_scoring_writes_are_idempotent(tmp_path):
    warehouse = tmp_path / "w.duckdb"
    frames = _scoring_frames(5)
    first = serving_store.write_scoring(warehouse, 1_700_000_001, 3, *frames, written_at=1)
    again = serving_store.write_scoring(warehouse, 1_700_000_001, 3, *frames, written_at=2)
    assert first == again == {"n_scored_users": 5, "n_scores": 10, "n_discover_scores": 0, "n_trajectory_rows": 5,
                              "n_shifts": 1}
    import duckdb

    con = duckdb.connect(str(warehouse), read_only=True)
    counts = [con.execute(f"select count(*) from serving.{t}").fetchone()[0] for t in serving_store.TABLES]
    con.close()
    assert counts == [10, 5, 1, 1, 0]  # the rerun replaced its slice instead of adding rows
    serving_store.write_scoring(warehouse, 1_700_086_401, 3, *_scoring_frames(2), written_at=3)
    status = serving_store.read_status(warehouse)
    assert status["n_scored_users"] == 2 and status["scored_at"] == 1_700_086_401
    assert serving_store.previous_scoring(warehouse, 1_700_086_401) == 1_700_000_001


def test_failed_write_leaves_nothing(tmp_path):
    warehouse = tmp_path / "w.duckdb"
    scores, trajectory, shifts = _scoring_frames(3)
    broken = trajectory.drop(columns=["components"])
    with pytest.raises(Exception):  # noqa: B017 - DuckDB's binder error type is not the point
        serving_store.write_scoring(warehouse, 1_700_000_001, 1, scores, broken, shifts, written_at=1)
    assert serving_store.read_status(warehouse) == {}


def _discover_frame(users: list[str]) -> pd.DataFrame:
    return pd.DataFrame({"user_id": np.repeat(users, 3), "category_id": ["c7", "c8", "c9"] * len(users),
                         "score": [0.3, 0.2, 0.1] * len(users), "rank": [1, 2, 3] * len(users)})


def test_discover_list_is_written_beside_the_scores_and_a_rerun_replaces_it(tmp_path):
    import duckdb

    warehouse = tmp_path / "w.duckdb"
    frames = _scoring_frames(4)
    users = sorted(frames[0]["user_id"].unique())
    for written_at in (1, 2):  # a retried task writes the same scoring twice
        out = serving_store.write_scoring(warehouse, 1_700_000_001, 2, *frames, written_at=written_at,
                                          discover=_discover_frame(users))
        assert out["n_discover_scores"] == 12
    # a second model version's scoring of the same cutoff is its own slice
    serving_store.write_scoring(warehouse, 1_700_000_001, 3, *frames, written_at=3,
                                discover=_discover_frame(users[:1]))
    con = duckdb.connect(str(warehouse), read_only=True)
    rows = con.execute("select model_version, count(*), count(distinct (user_id, rank)) "
                       "from serving.user_discover_scores group by 1 order by 1").fetchall()
    top = con.execute("select category_id from serving.user_discover_scores "
                      "where model_version = 2 and rank = 1").fetchall()
    con.close()
    assert rows == [(2, 12, 12), (3, 3, 3)]
    assert {c for (c,) in top} == {"c7"}


def test_a_failed_write_leaves_no_discover_rows(tmp_path):
    warehouse = tmp_path / "w.duckdb"
    scores, trajectory, shifts = _scoring_frames(2)
    with pytest.raises(Exception):  # noqa: B017 - DuckDB's binder error type is not the point
        serving_store.write_scoring(warehouse, 1_700_000_001, 1, scores, trajectory, shifts, written_at=1,
                                    discover=_discover_frame(["u0"]).drop(columns=["score"]))
    assert serving_store.read_status(warehouse) == {}
