"""Background behaviour: other users' events train the LSTM and the transition statistics, cut at the
test cutoff, and never become evaluated users."""

from __future__ import annotations

import gzip

import numpy as np
import pandas as pd
import pytest

from ml_tasks.data.background import load_background
from ml_tasks.errors import PipelineError
from ml_tasks.evaluation import protocol
from ml_tasks.evaluation.baselines import baseline_scores
from ml_tasks.model.background import (
    BACKGROUND_PREFIX,
    BACKGROUND_SPLIT,
    background_rows,
    population_events,
    prepare_background,
    with_background,
)
from ml_tasks.model.dataset import ModelData
from ml_tasks.model.fit import _lstm_training_rows, _predictor_rows

H = 3600
DAY = 24 * H


def _main_events() -> pd.DataFrame:
    rows = []
    for u in range(6):  # events every 6 hours over 8 days, two categories per user
        for i in range(32):
            rows.append((f"u{u}", f"i{i}", f"c{(u + i) % 3}", "view", 1_000_000 + i * 6 * H))
    return pd.DataFrame(rows, columns=["user_id", "item_id", "category_id", "event_type", "event_ts"])


def _background_events(data: ModelData) -> pd.DataFrame:
    t_test = data.test_cutoff_ts
    rows = [
        # a user with a session well before the test cutoff (one background row expected)
        ("b1", "x", "c0", "view", t_test - 3 * DAY), ("b1", "x", "c1", "view", t_test - 3 * DAY + 60),
        ("b1", "x", "c2", "view", t_test - 3 * DAY + 120),
        # a single event: no next-event target, no row
        ("b2", "x", "c1", "view", t_test - 3 * DAY),
        # events at and after the test cutoff, on a category nobody else has: must vanish entirely
        ("b3", "x", "c0", "view", t_test - 2 * DAY), ("b3", "x", "late", "view", t_test),
        ("b3", "x", "late", "view", t_test + DAY),
        # an id that is also a main user: dropped (their own events are in the main file)
        ("u0", "x", "c2", "view", t_test - 3 * DAY), ("u0", "x", "c2", "view", t_test - 3 * DAY + 60),
    ]
    return pd.DataFrame(rows, columns=["user_id", "item_id", "category_id", "event_type", "event_ts"])


@pytest.fixture
def data() -> ModelData:
    return ModelData.from_events(_main_events(), horizon_hours=48, cutoff_step_hours=12, sequence_length=10)


def test_background_is_cut_at_the_test_cutoff_and_never_evaluated(data):
    bg = prepare_background(_background_events(data), data, data.test_cutoff_ts)
    assert bg.info["events_at_or_after_cutoff_dropped"] == 2
    assert bg.info["users_in_main_data_dropped"] == 1
    assert (bg.events["event_ts"] < data.test_cutoff_ts).all()
    assert bg.events["user_id"].str.startswith(BACKGROUND_PREFIX).all()
    rows = background_rows(bg, data, max_rows=None, min_events=2)
    assert set(rows["user_id"]) == {BACKGROUND_PREFIX + "b1"}
    assert (rows["split"] == BACKGROUND_SPLIT).all()
    assert all(len(x) == 0 for x in rows["label_category_idx"])
    # every background event in a row lies before that row's cutoff, and every cutoff before T_test
    assert all(min(g) > 0 for g in rows["seq_gap_hours"])
    assert (rows["cutoff_ts"] < data.test_cutoff_ts).all()
    merged = with_background(data, rows)
    for cutoff in (merged.val_cutoff_ts, merged.test_cutoff_ts):
        ctx = protocol.cutoff_context(protocol.events_frame(merged), cutoff, merged.horizon_hours)
        assert ctx.users and not any(u.startswith(BACKGROUND_PREFIX) for u in ctx.users)
    # the LSTM trains on them, the predictor never sees them (no label window)
    lstm_rows = _lstm_training_rows(merged, merged.test_cutoff_ts, _config())
    assert (lstm_rows["split"] == BACKGROUND_SPLIT).sum() == 1
    assert not (_predictor_rows(merged, merged.test_cutoff_ts)["split"] == BACKGROUND_SPLIT).any()


def test_background_events_after_the_cutoff_reach_no_statistic(data):
    bg = prepare_background(_background_events(data), data, data.test_cutoff_ts)
    pop = population_events(data, bg)
    late_idx = set(bg.events["category_idx"]) - set(data.categories["category_idx"])
    assert not late_idx  # "late" only occurs at or after the cutoff: it never got an index
    assert pop["event_ts"].max() < max(data.test_cutoff_ts, int(data.events["event_ts"].max()) + 1)
    assert len(pop) == len(data.events) + len(bg.events)


def test_transitions_count_background_sequences(data):
    ev = protocol.events_frame(data)
    ctx = protocol.cutoff_context(ev, data.test_cutoff_ts, data.horizon_hours)
    # background users who always go c0 -> c2: the transition statistics see it, the user-level baselines do not
    c0, c2 = (int(data.categories.set_index("category_id").loc[c, "category_idx"]) for c in ("c0", "c2"))
    rows = [(f"b{i}", "x", c, "view", data.test_cutoff_ts - 5 * DAY + k) for i in range(50)
            for k, c in enumerate(("c0", "c2"))]
    bg = prepare_background(pd.DataFrame(rows, columns=["user_id", "item_id", "category_id", "event_type",
                                                        "event_ts"]), data, data.test_cutoff_ts)
    pop = population_events(data, bg)
    col = {int(c): j for j, c in enumerate(ctx.candidates)}
    for name in ("markov", "covisitation"):
        without = baseline_scores(name, ev, ctx.cutoff_ts, ctx.users, ctx.candidates, ctx.horizon_hours)
        with_bg = baseline_scores(name, ev, ctx.cutoff_ts, ctx.users, ctx.candidates, ctx.horizon_hours,
                                  population=pop)
        last = ev[ev["event_ts"] < ctx.cutoff_ts].sort_values("event_ts").groupby("user_id")["category_idx"].last()
        users_at_c0 = [i for i, u in enumerate(ctx.users) if last[u] == c0]
        assert users_at_c0
        assert np.all(with_bg[users_at_c0, col[c2]] > without[users_at_c0, col[c2]])
    for name in ("recency_decay", "user_frequency", "popularity"):
        np.testing.assert_array_equal(
            baseline_scores(name, ev, ctx.cutoff_ts, ctx.users, ctx.candidates, ctx.horizon_hours),
            baseline_scores(name, ev, ctx.cutoff_ts, ctx.users, ctx.candidates, ctx.horizon_hours, population=pop))


def _config():
    from ml_tasks.config import ModelConfig

    return ModelConfig(max_train_sequences=None)


def test_background_file_bad_input(tmp_path):
    good = tmp_path / "bg.csv.gz"
    with gzip.open(good, "wt") as fh:
        fh.write("1,10,100,pv,1511672210\n1,11,101,pv,1511672270\n2,12,100,cart,1511672300\n"
                 "3,13,100,teleport,1511672300\n")
    events, summary = load_background(good, "taobao", tmp_path / "bg.duckdb", max_reject_ratio=0.5)
    assert len(events) == 3 and summary["rows_rejected"] == 1
    assert any("teleport" in r or "event type" in r for r in summary["rejected_reasons"])
    with pytest.raises(PipelineError, match="no such background events file"):
        load_background(tmp_path / "missing.csv", "taobao", tmp_path / "x.duckdb")
    wrong = tmp_path / "wrong.csv"
    wrong.write_text("user_id,item_id\n1,2\n")
    with pytest.raises(PipelineError, match="^background events: "):
        load_background(wrong, "generic", tmp_path / "y.duckdb")
    with pytest.raises(PipelineError, match="not one of"):
        load_background(good, "parquet-ish", tmp_path / "z.duckdb")
