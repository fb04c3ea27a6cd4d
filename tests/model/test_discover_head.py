"""The discover head: candidates outside the history, point-in-time population tables, the ablation
without the LSTM, the discover ranking of ``score``, and the in-memory path agreeing with the batch one."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from ml_tasks.model.discover import PopulationTables, discover_candidates
from ml_tasks.model.persist import FittedInterestModel
from ml_tasks.model.predictor import popularity_from_events
from ml_tasks.model.samples import pair_features_at
from ml_tasks.model.score import score
from ml_tasks.serving import online
from tests.model.test_model import TINY, data, model  # noqa: F401  (module fixtures)


def _at_test(data, n=25):  # noqa: F811
    t = data.test_cutoff_ts
    rows = data.sequences[data.sequences["cutoff_ts"] == t].head(n).reset_index(drop=True)
    pf = data.pair_features[data.pair_features["cutoff_ts"] == t]
    pop = popularity_from_events(data.events, [t], data.horizon_hours)
    return rows, pf, pop


def test_population_tables_see_nothing_at_or_after_their_time(data):  # noqa: F811
    t = data.val_cutoff_ts
    ev = data.events
    tables = PopulationTables.from_events(ev, t)
    # rewrite every event from t on: the tables must not move
    later = ev["event_ts"] >= t
    changed = ev.copy()
    changed.loc[later, "category_idx"] = changed.loc[later, "category_idx"].to_numpy()[::-1]
    again = PopulationTables.from_events(changed, t)
    pd.testing.assert_frame_equal(tables.covisitation, again.covisitation)
    pd.testing.assert_frame_equal(tables.transitions, again.transitions)
    # while a table built later does see them
    assert not PopulationTables.from_events(changed, data.test_cutoff_ts).transitions.equals(
        PopulationTables.from_events(ev, data.test_cutoff_ts).transitions)


def test_candidates_are_outside_the_history_and_seen_before_the_cutoff(data, model):  # noqa: F811
    rows, pf, pop = _at_test(data)
    pairs = discover_candidates(rows, pf, pop, model.discover.tables, model.config)
    assert len(pairs)
    keyed = rows[["user_id", "cutoff_ts"]].assign(row=np.arange(len(rows)))
    hist = keyed.merge(pf[["user_id", "cutoff_ts", "category_idx"]], on=["user_id", "cutoff_ts"])
    assert pairs.merge(hist[["row", "category_idx"]], on=["row", "category_idx"]).empty
    assert set(pairs["category_idx"]) <= set(pop["category_idx"])


def test_ablation_head_has_no_lstm_features_and_the_model_head_has_them(model):  # noqa: F811
    head = model.discover
    assert head is not None and head.tables.until_ts == model.trained_until_ts
    assert any(n.startswith(("lstm_", "pc_")) for n in head.predictor.feature_names)
    assert not any(n.startswith(("lstm_", "pc_")) for n in head.ablation.feature_names)
    assert {"covis_recent", "markov_prob", "log_pop_horizon"} <= set(head.ablation.feature_names)
    info = model.info["discover"]
    assert info["n_samples"] > 0 and 0 < info["predictor"]["positive_rate"] < 1


def test_discover_ranking_covers_every_category_outside_the_history(data, model):  # noqa: F811
    rows, pf, pop = _at_test(data, n=8)
    overall = score(model, rows, pf, top_n=None, popularity=pop)
    disc = score(model, rows, pf, top_n=None, popularity=pop, ranking="discover")
    for (user, cutoff), got in disc.groupby(["user_id", "cutoff_ts"]):
        history = set(pf.loc[(pf["user_id"] == user) & (pf["cutoff_ts"] == cutoff), "category_idx"])
        everything = set(overall.loc[overall["user_id"] == user, "category_idx"])
        assert set(got["category_idx"]) == everything - history
        assert list(got["rank"]) == list(range(1, len(got) + 1))
        assert (np.diff(got["score"].to_numpy()) <= 1e-12).all()
    top3 = score(model, rows, pf, top_n=3, popularity=pop, ranking="discover")
    assert top3.groupby("user_id").size().le(3).all()
    with pytest.raises(ValueError, match="ranking"):
        score(model, rows, pf, popularity=pop, ranking="sideways")


def test_discover_head_changes_the_order_outside_the_history(data, model):  # noqa: F811
    """The discover ranking is the head's, not the overall ranking with the history cut out."""
    rows, pf, pop = _at_test(data, n=40)
    overall = score(model, rows, pf, top_n=None, popularity=pop)
    disc = score(model, rows, pf, top_n=None, popularity=pop, ranking="discover")
    hist = pf[["user_id", "category_idx"]].assign(h=True)
    cut = overall.merge(hist, on=["user_id", "category_idx"], how="left")
    cut = cut[cut["h"].isna()]
    a = cut.groupby("user_id")["category_idx"].apply(lambda s: list(s)[:5])
    b = disc.groupby("user_id")["category_idx"].apply(lambda s: list(s)[:5])
    assert (a != b.loc[a.index]).any()


def test_discover_scores_survive_save_and_load(tmp_path, data, model):  # noqa: F811
    rows, pf, pop = _at_test(data, n=10)
    before = score(model, rows, pf, top_n=10, popularity=pop, ranking="discover")
    model.save(tmp_path / "m")
    loaded = FittedInterestModel.load(tmp_path / "m")
    pd.testing.assert_frame_equal(before, score(loaded, rows, pf, top_n=10, popularity=pop, ranking="discover"))
    # a model folder written before the head existed still scores its discover list (overall order)
    (tmp_path / "m" / "discover.joblib").unlink()
    old = FittedInterestModel.load(tmp_path / "m")
    assert old.discover is None
    fallback = score(old, rows, pf, top_n=10, popularity=pop, ranking="discover")
    assert len(fallback) == len(before)


@pytest.mark.parametrize("ranking", ["overall", "discover"])
def test_in_memory_inputs_agree_with_the_warehouse_rows(data, model, ranking):  # noqa: F811
    """The served model builds a user's rows from their events (``ml_tasks.serving.online``); the batch
    path reads the warehouse's rows. Same users, same cutoff: the same two rankings."""
    rows, pf, pop = _at_test(data, n=15)
    users = rows["user_id"].astype(str).tolist()
    t = data.test_cutoff_ts
    ev = data.events[data.events["user_id"].astype(str).isin(users)]
    ev = ev[["user_id", "category_idx", "event_type", "event_ts"]].assign(user_id=lambda e: e["user_id"].astype(str))
    cut = pd.Series(t, index=sorted(users))
    mem_rows = online.sequences_at(ev, cut, model.sequence_length)
    mem_pf = pair_features_at(ev, cut, model.horizon_hours)
    batch = score(model, rows, pf[pf["user_id"].astype(str).isin(users)], top_n=10, popularity=pop, ranking=ranking)
    mem = score(model, mem_rows, mem_pf, top_n=10, popularity=pop, ranking=ranking)
    key = ["user_id", "rank"]
    batch = batch.assign(user_id=batch["user_id"].astype(str)).sort_values(key).reset_index(drop=True)
    mem = mem.assign(user_id=mem["user_id"].astype(str)).sort_values(key).reset_index(drop=True)
    pd.testing.assert_frame_equal(batch[["user_id", "category_idx", "rank"]], mem[["user_id", "category_idx", "rank"]])
    np.testing.assert_allclose(batch["score"], mem["score"], rtol=1e-6, atol=1e-9)
