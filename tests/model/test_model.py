"""Behavioural tests of the interest model (LSTM -> PCA -> predictor) on small synthetic data."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pandas as pd
import pytest

from ml_tasks.config import ModelConfig
from ml_tasks.data.synthetic import SyntheticConfig, generate
from ml_tasks.model.dataset import ModelData
from ml_tasks.model.fit import _lstm_training_rows, _predictor_rows, fine_tune, fit
from ml_tasks.model.persist import FittedInterestModel
from ml_tasks.model.score import interest_embeddings, score
from ml_tasks.model.sequences import Vocabulary, encode_sequences

TINY = ModelConfig(
    seed=1,
    embedding_dim=8,
    lstm_units=(16, 16),
    epochs=3,
    batch_size=64,
    learning_rate=1e-2,
    n_popular_candidates=5,
    top_k_candidates=5,
    fine_tune_epochs=1,
)
DAY = 86_400


@pytest.fixture(scope="module")
def data() -> ModelData:
    events, _truth = generate(SyntheticConfig(n_users=120, n_categories=16, n_items=200, days=8, seed=5))
    return ModelData.from_events(events, horizon_hours=24, cutoff_step_hours=12, sequence_length=20)


@pytest.fixture(scope="module")
def model(data) -> FittedInterestModel:
    return fit(data, TINY, final=False)


def test_in_memory_exports_follow_the_contract(data):
    from ml_tasks.contracts import EXPORT_COLUMNS

    assert set(EXPORT_COLUMNS["ml_sequences"]) <= set(data.sequences.columns)
    assert set(EXPORT_COLUMNS["ml_pair_features"]) <= set(data.pair_features.columns)
    seqs = data.sequences
    assert (seqs.loc[seqs["split"] == "test", "cutoff_ts"] == data.test_cutoff_ts).all()
    gaps = np.concatenate(seqs["seq_gap_hours"].map(np.asarray).to_numpy())
    assert (gaps > 0).all()  # every input event lies strictly before its cutoff


def test_training_rows_never_reach_past_the_limit(data):
    limit = data.val_cutoff_ts
    lstm_rows = _lstm_training_rows(data, limit, TINY)
    assert (lstm_rows["cutoff_ts"] <= limit).all()
    rows = _predictor_rows(data, limit)
    assert len(rows) and (rows["cutoff_ts"] + data.horizon_hours * 3600 <= limit).all()


def test_vocabulary_maps_unknown_categories_to_the_oov_bucket():
    vocab = Vocabulary(np.array([3, 7, 9]))
    assert list(vocab.encode(np.array([0, 3, 9, 8, 100]))) == [0, 1, 3, 4, 4]
    assert list(vocab.decode(np.array([1, 2, 3, 4]))) == [3, 7, 9, 0]
    assert vocab.n_outputs == 5


def test_sequences_are_left_padded_with_next_event_targets():
    rows = pd.DataFrame(
        {
            "user_id": ["u"],
            "cutoff_ts": [100],
            "seq_category_idx": [[3, 7, 3]],
            "seq_event_type_idx": [[1, 4, 1]],
            "seq_gap_hours": [[5.0, 2.0, 1.0]],
            "label_category_idx": [[9]],
        }
    )
    a = encode_sequences(rows, Vocabulary(np.array([3, 7])), sequence_length=5)
    assert a.cat.tolist() == [[0, 0, 1, 2, 1]]
    assert a.next_target.tolist() == [[0, 0, 2, 1, 0]]
    assert a.label_idx.tolist() == [[3]]  # 9 is out of vocabulary
    np.testing.assert_allclose(np.expm1(a.gaps[0, 2:, 1] * 5.0), [0.0, 3.0, 1.0], atol=1e-5)


def test_fit_reports_history_pca_and_predictor(model):
    assert model.info["lstm"]["epochs_run"] >= 1
    assert set(model.info["lstm"]["history"]) >= {"loss", "next_loss", "window_loss"}
    assert 1 <= model.n_components <= max(TINY.lstm_units)
    curve = model.info["pca"]["cumulative"]
    assert curve == sorted(curve) and curve[-1] == pytest.approx(1.0)
    assert any(name.startswith("pc_") for name in model.predictor.feature_names)
    assert not any(name.startswith(("pc_", "lstm_")) for name in model.ablation.feature_names)


def _switch_rows(data: ModelData, model: FittedInterestModel):
    """A user who browses category A for 2.5 days, then only category B for 2.5 days."""
    cats = data.categories.sort_values("n_events", ascending=False)["category_idx"].to_numpy()
    a, b = int(cats[0]), int(cats[5])
    start = data.val_cutoff_ts - 4 * DAY
    times = start + np.arange(40) * 3 * 3600
    switch_at = 20
    ev = pd.DataFrame(
        {
            "user_id": "switcher",
            "category_idx": [a if i < switch_at else b for i in range(40)],
            "event_type": "view",
            "event_ts": times,
        }
    )
    from ml_tasks.model.samples import pair_features_at
    from ml_tasks.serving import online

    before_cut, after_cut = int(times[switch_at - 1]) + 1, int(times[-1]) + 1
    out = []
    for cutoff in (before_cut, after_cut):
        cut = pd.Series({"switcher": cutoff})
        rows = online.sequences_at(ev, cut, model.sequence_length)
        pf = pair_features_at(ev, cut, model.horizon_hours)
        out.append((rows, pf))
    return a, b, out


def _rank_of(ranked: pd.DataFrame, category: int) -> int:
    hit = ranked.loc[ranked["category_idx"] == category, "rank"]
    return int(hit.iloc[0]) if len(hit) else 10**6


def test_a_user_who_switches_interest_sees_the_new_category_rise(data, model):
    from ml_tasks.model.predictor import popularity_from_events

    a, b, ((rows0, pf0), (rows1, pf1)) = _switch_rows(data, model)
    ranks = []
    for rows, pf in ((rows0, pf0), (rows1, pf1)):
        pop = popularity_from_events(data.events, rows["cutoff_ts"], data.horizon_hours)
        ranked = score(model, rows, pf, top_n=None, popularity=pop)
        ranks.append((_rank_of(ranked, a), _rank_of(ranked, b)))
    (a_before, b_before), (a_after, b_after) = ranks
    assert a_before == 1 and b_before > 1  # before the switch, the long-time interest leads
    assert b_after == 1 and a_after > 1  # two and a half days later, the new one does


def test_save_load_round_trip_gives_identical_scores(tmp_path, data, model):
    rows = data.sequences[data.sequences["cutoff_ts"] == data.test_cutoff_ts].head(20)
    pf = data.pair_features[data.pair_features["cutoff_ts"] == data.test_cutoff_ts]
    before = score(model, rows, pf, top_n=10)
    model.save(tmp_path / "m")
    loaded = FittedInterestModel.load(tmp_path / "m")
    after = score(loaded, rows, pf, top_n=10)
    pd.testing.assert_frame_equal(before, after)
    emb0, emb1 = interest_embeddings(model, rows), interest_embeddings(loaded, rows)
    pd.testing.assert_frame_equal(emb0, emb1)
    assert list(emb0.columns[:2]) == ["user_id", "cutoff_ts"] and emb0.shape[1] == 2 + model.n_components


def test_score_ranks_every_category_seen_before_the_cutoff(data, model):
    rows = data.sequences[data.sequences["cutoff_ts"] == data.test_cutoff_ts].head(5)
    pf = data.pair_features[data.pair_features["cutoff_ts"] == data.test_cutoff_ts]
    ranked = score(model, rows, pf, top_n=None)
    seen = data.events.loc[data.events["event_ts"] < data.test_cutoff_ts, "category_idx"].nunique()
    assert ranked.groupby("user_id").size().eq(seen).all()
    assert ranked.groupby("user_id")["rank"].apply(lambda r: list(r) == list(range(1, seen + 1))).all()


def test_fine_tune_continues_from_the_weights(data, model):
    tuned = fine_tune(model, data, replace(TINY, fine_tune_epochs=1))
    assert tuned is not model and tuned.vocab.size == model.vocab.size
    assert tuned.trained_until_ts == data.test_cutoff_ts
    w0 = model.keras_model.get_layer("category_embedding").get_weights()[0]
    w1 = tuned.keras_model.get_layer("category_embedding").get_weights()[0]
    assert not np.allclose(w0, w1)
    # it continued on the samples that arrived after the model's LSTM limit, up to the new one
    seqs = data.sequences
    new = seqs[(seqs["cutoff_ts"] > model.info["lstm_limit_ts"]) & (seqs["cutoff_ts"] <= tuned.info["lstm_limit_ts"])
               & (seqs["split"] != "score")]
    assert tuned.info["lstm_limit_ts"] > model.info["lstm_limit_ts"]
    assert tuned.info["lstm"]["n_train_sequences"] == len(new) > 0
    # nothing new since: the LSTM stays as it is, the heads are refitted
    again = fine_tune(tuned, data, replace(TINY, fine_tune_epochs=1))
    assert again.info["lstm"]["n_train_sequences"] == 0 and again.info["lstm"]["history"] == {}
    assert np.allclose(w1, again.keras_model.get_layer("category_embedding").get_weights()[0])
    # the original is untouched and still scores
    rows = data.sequences[data.sequences["cutoff_ts"] == data.test_cutoff_ts].head(3)
    pf = data.pair_features[data.pair_features["cutoff_ts"] == data.test_cutoff_ts]
    assert len(score(tuned, rows, pf, top_n=3)) == 9


@pytest.fixture(scope="module")
def copy_model(data) -> FittedInterestModel:
    return fit(data, replace(TINY, copy_head=True, window_loss_weight=1.0), final=False)


def _mass_on_the_sequence(model: FittedInterestModel, rows: pd.DataFrame) -> np.ndarray:
    """Per sample: window-head probability of a category in the sequence over that of one not in it."""
    from ml_tasks.model import lstm

    arrays = encode_sequences(rows, model.vocab, model.sequence_length, with_labels=False)
    p = np.exp(lstm.window_log_probs(model.keras_model, arrays))
    np.testing.assert_allclose(p.sum(axis=1), 1.0, rtol=1e-4)
    in_seq = np.zeros_like(p, dtype=bool)
    np.put_along_axis(in_seq, arrays.cat.astype(np.int64), True, axis=1)
    in_seq[:, 0] = False
    seen = (p * in_seq).sum(axis=1) / in_seq.sum(axis=1)
    return seen / ((p * ~in_seq).sum(axis=1) / np.maximum((~in_seq).sum(axis=1), 1))


def test_copy_head_moves_the_window_distribution_onto_the_sequence(data, copy_model):
    rows = data.sequences[data.sequences["cutoff_ts"] == data.test_cutoff_ts].head(30)
    without = fit(data, replace(copy_model.config, copy_head=False), final=False)
    with_copy, plain = _mass_on_the_sequence(copy_model, rows), _mass_on_the_sequence(without, rows)
    # the same model without the pointer spreads more of its mass onto categories the user has not
    # touched in the sequence
    assert np.median(with_copy) > 1.5 * np.median(plain)


def test_copy_head_model_round_trips_through_save_and_load(tmp_path, data, copy_model):
    rows = data.sequences[data.sequences["cutoff_ts"] == data.test_cutoff_ts].head(20)
    pf = data.pair_features[data.pair_features["cutoff_ts"] == data.test_cutoff_ts]
    before = score(copy_model, rows, pf, top_n=10)
    copy_model.save(tmp_path / "m")
    after = score(FittedInterestModel.load(tmp_path / "m"), rows, pf, top_n=10)
    pd.testing.assert_frame_equal(before, after)


def test_score_rows_at_many_cutoffs_are_sequence_rows():
    """The array-built rows of replayed scorings equal the reference definition, user by user."""
    from ml_tasks.model.samples import score_rows_at, sequence_rows

    rng = np.random.default_rng(3)
    n = 400
    events = pd.DataFrame({"user_id": rng.choice(["a", "b", "c", "d"], n), "category_idx": rng.integers(1, 9, n),
                           "event_type": rng.choice(["view", "cart", "buy"], n),
                           "event_ts": rng.integers(0, 10 * 86_400, n)}).sort_values(["user_id", "event_ts"])
    cutoffs = [86_400, 5 * 86_400, 10 * 86_400]
    fast = score_rows_at(events, cutoffs, sequence_length=7)
    by_user = list(events.groupby("user_id", sort=True))
    ref = pd.DataFrame([r for c in cutoffs for r in sequence_rows(
        by_user, pd.Series(c, index=[u for u, _ in by_user]), 7)])
    key = ["cutoff_ts", "user_id"]
    pd.testing.assert_frame_equal(fast.sort_values(key).reset_index(drop=True)[ref.columns],
                                  ref.sort_values(key).reset_index(drop=True), check_dtype=False)
    assert len(fast) == len(ref) > 8


def test_compiled_readout_matches_keras_and_forgets_retrained_weights(data, model, monkeypatch):
    from ml_tasks.model import lstm

    rows = data.sequences[data.sequences["split"] != "score"].head(1500)  # more than one batch: the last padded
    arrays = encode_sequences(rows, model.vocab, model.sequence_length, with_labels=False)
    keras_out = lstm._readout_model(model.keras_model).predict(arrays.inputs(), batch_size=256, verbose=0)
    lstm.forget_readouts(model.keras_model)
    first = lstm.readout(model.keras_model, arrays)
    np.testing.assert_allclose(first["state"], keras_out["state"], atol=1e-4)
    np.testing.assert_allclose(first["window"], lstm._log_softmax(keras_out["window"]), atol=1e-4)
    np.testing.assert_allclose(first["next"], lstm._log_softmax(keras_out["next"]), atol=1e-4)
    # asked again: the kept result, a copy the caller may change
    first["state"][:] = 0.0
    again = lstm.readout(model.keras_model, arrays)
    np.testing.assert_allclose(again["state"], keras_out["state"], atol=1e-4)
    # the same object with other weights is another model: a fresh forward pass
    clone = lstm.build_model(model.vocab.n_outputs, model.config, model.sequence_length)
    clone.set_weights(model.keras_model.get_weights())
    before = lstm.readout(clone, arrays)["state"]
    layer = clone.get_layer("interest_lstm")
    layer.set_weights([w * 0.5 for w in layer.get_weights()])
    assert not np.allclose(lstm.readout(clone, arrays)["state"], before)
    # without XLA (IEP_XLA_INFERENCE=0, or where it cannot compile) the results are the same
    monkeypatch.setenv("IEP_XLA_INFERENCE", "0")
    lstm.forget_readouts(model.keras_model)
    plain = lstm.readout(model.keras_model, arrays)
    np.testing.assert_allclose(plain["state"], keras_out["state"], atol=1e-4)


def test_readout_falls_back_when_xla_cannot_compile(data, model, monkeypatch, caplog):
    from ml_tasks.model import lstm

    real = lstm._run_batches

    def no_xla(keras_model, inputs, xla):
        if xla:
            raise RuntimeError("XLA is not available on this platform")
        return real(keras_model, inputs, xla)

    monkeypatch.setattr(lstm, "_run_batches", no_xla)
    rows = data.sequences[data.sequences["split"] == "score"].head(40)
    arrays = encode_sequences(rows, model.vocab, model.sequence_length, with_labels=False)
    lstm.forget_readouts(model.keras_model)
    out = lstm.readout(model.keras_model, arrays)
    assert out["state"].shape[0] == 40 and np.isfinite(out["window"]).all()
    assert "running it uncompiled" in caplog.text
    monkeypatch.setattr(lstm, "_run_batches", real)
    lstm._NO_XLA.discard(model.keras_model)
