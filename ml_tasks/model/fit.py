"""Fitting the interest model: LSTM -> hidden states -> PCA -> predictor, and the periodic fine-tune.

Pure: frames and config in, models out; no mlflow/duckdb/airflow. TensorFlow/Keras load with
``ml_tasks.model.lstm``.

Time discipline (EVALUATION.md): ``fit(data, config, final=False)`` is the *selection* fit: nothing it
uses lies at or after the validation cutoff ``T_val`` (LSTM inputs and next-event targets before
``T_val``, label windows ending at or before it), and it is evaluated at ``T_val`` (the evaluation
protocol reports it, and hyper-parameters are chosen on it). ``final=True`` moves the limit to the test
cutoff ``T_test``: the scheduled pipeline fits only this one. Either way the LSTM stops early on data
between its own training limit and the fit's limit, which it never trains on (:func:`fit`).

    fit(data, config, final=False, epochs=None) -> FittedInterestModel
    select_and_fit(data, config) -> (final_model, selection_model)
    fine_tune(model, data, config=None) -> FittedInterestModel          # warm start, newest window
"""

from __future__ import annotations

import time
from typing import Any

import keras
import numpy as np
import pandas as pd

from ml_tasks.config import ModelConfig
from ml_tasks.model import lstm
from ml_tasks.model.dataset import ModelData
from ml_tasks.model.discover import DiscoverHead, PopulationTables
from ml_tasks.model.pca import fit_pca
from ml_tasks.model.persist import FittedInterestModel
from ml_tasks.model.predictor import (
    InterestPredictor,
    candidate_pairs,
    feature_matrix,
    pair_labels,
    popularity_from_events,
)
from ml_tasks.model.score import lstm_block
from ml_tasks.model.sequences import GAP_SCALE, SequenceArrays, Vocabulary, encode_sequences


def _usable_window(rows: pd.DataFrame, limit_ts: int, horizon_hours: int) -> np.ndarray:
    """Label windows that end at or before ``limit_ts`` and hold at least one event."""
    ends_ok = (rows["cutoff_ts"].to_numpy() + horizon_hours * 3600) <= limit_ts
    has = rows["label_category_idx"].map(lambda x: x is not None and len(x) > 0).to_numpy(dtype=bool)
    return ends_ok & has


def _lstm_training_rows(
    data: ModelData, limit_ts: int, config: ModelConfig, since_ts: int | None = None
) -> pd.DataFrame:
    """The samples with a cutoff in ``(since_ts, limit_ts]``, at most ``max_train_sequences`` of them."""
    seqs = data.sequences
    rows = seqs[(seqs["cutoff_ts"] <= limit_ts) & (seqs["split"] != "score")]
    if since_ts is not None:
        rows = rows[rows["cutoff_ts"] > since_ts]
    if config.max_train_sequences and len(rows) > config.max_train_sequences:
        rows = rows.sample(config.max_train_sequences, random_state=config.seed)
    return rows.sort_values(["user_id", "cutoff_ts"]).reset_index(drop=True)


def _predictor_rows(data: ModelData, limit_ts: int, cutoffs: list[int] | None = None) -> pd.DataFrame:
    seqs = data.sequences
    rows = seqs[seqs["split"] != "score"]
    if cutoffs is not None:
        rows = rows[rows["cutoff_ts"].isin(cutoffs)]
    rows = rows[_usable_window(rows, limit_ts, data.horizon_hours)]
    return rows.sort_values(["cutoff_ts", "user_id"]).reset_index(drop=True)


def _subsample_rows(rows: pd.DataFrame, n_pairs_est: float, max_pairs: int, seed: int) -> pd.DataFrame:
    if n_pairs_est <= max_pairs:
        return rows
    frac = max_pairs / n_pairs_est
    return (
        rows.sample(frac=frac, random_state=seed).sort_values(["cutoff_ts", "user_id"]).reset_index(drop=True)
    )


def _stage_cutoff(data: ModelData, limit_ts: int) -> int:
    """The latest sample cutoff whose label window ends at or before ``limit_ts``."""
    cutoffs = data.sequences["cutoff_ts"].unique()
    ok = cutoffs[cutoffs + data.horizon_hours * 3600 <= limit_ts]
    if not len(ok):
        raise ValueError(f"no sample cutoff has a label window ending by {limit_ts}; too little history")
    return int(ok.max())


def _train_lstm(
    data: ModelData,
    config: ModelConfig,
    limit_ts: int,
    vocab: Vocabulary,
    epochs: int,
    early_stopping: bool,
    keras_model: Any = None,
    rows: pd.DataFrame | None = None,
    learning_rate: float | None = None,
    holdout_until_ts: int | None = None,
) -> tuple[Any, dict[str, Any]]:
    """Train on samples up to ``limit_ts``; early stopping on the next-event loss of the events in
    ``[limit_ts, holdout_until_ts)`` (read from the samples at ``holdout_until_ts``), never trained on."""
    rows = _lstm_training_rows(data, limit_ts, config) if rows is None else rows
    arrays = encode_sequences(rows, vocab, data.sequence_length)
    arrays.window_weight = arrays.window_weight * _usable_window(rows, limit_ts, data.horizon_hours)
    val = None
    if early_stopping and holdout_until_ts is not None and holdout_until_ts > limit_ts:
        val_rows = data.sequences[data.sequences["cutoff_ts"] == holdout_until_ts]
        val = encode_sequences(val_rows, vocab, data.sequence_length)
        held_hours = (holdout_until_ts - limit_ts) / 3600.0
        gap_hours = np.expm1(val.gaps[:, :, 0] * GAP_SCALE)
        target_after_limit = np.zeros_like(val.next_target, dtype=bool)
        target_after_limit[:, :-1] = gap_hours[:, 1:] < held_hours
        val.next_target = np.where(target_after_limit & (val.cat > 0), val.next_target, 0)
        val.window_weight = np.zeros_like(val.window_weight)
        val = val.subset(np.flatnonzero((val.next_target > 0).any(axis=1)))
        # and the next-window loss of the samples at the limit (label windows never trained on)
        win_rows = data.sequences[data.sequences["cutoff_ts"] == limit_ts]
        win = encode_sequences(win_rows, vocab, data.sequence_length)
        win.window_weight = win.window_weight * _usable_window(win_rows, holdout_until_ts, data.horizon_hours)
        win.next_target = np.zeros_like(win.next_target)
        val = SequenceArrays.concat([val, win.subset(np.flatnonzero(win.window_weight > 0))])
    if keras_model is None:
        keras_model = lstm.build_model(vocab.n_outputs, config, data.sequence_length)
    lstm.compile_model(keras_model, config, learning_rate)
    info = lstm.train(
        keras_model, arrays, val, config, vocab.n_outputs, epochs=epochs, early_stopping=early_stopping
    )
    info["n_train_sequences"] = len(arrays)
    info["n_window_targets"] = int(arrays.window_weight.sum())
    return keras_model, info


def _fit_heads(
    model: FittedInterestModel,
    data: ModelData,
    limit_ts: int,
    config: ModelConfig,
    predictor_cutoffs: list[int] | None = None,
) -> FittedInterestModel:
    """PCA on the predictor samples' hidden states, then the predictor and its ablation, and the
    discover head (:mod:`ml_tasks.model.discover`) with and without the LSTM features."""
    rows = _predictor_rows(data, limit_ts, predictor_cutoffs)
    pop = popularity_from_events(data.events, rows["cutoff_ts"].unique(), data.horizon_hours)
    n_hist = data.pair_features.groupby(["user_id", "cutoff_ts"]).size().mean() if len(rows) else 0
    est_pairs = len(rows) * (n_hist + config.n_popular_candidates + config.top_k_candidates)
    rows = _subsample_rows(rows, est_pairs, config.max_predictor_rows, config.seed)
    arrays = encode_sequences(rows, model.vocab, model.sequence_length)
    out = lstm.readout(model.keras_model, arrays)
    model.pca, curve = fit_pca(out["state"], config.pca_variance, seed=config.seed)
    block = lstm_block(model, arrays, out)
    pf = data.pair_features
    pairs = candidate_pairs(rows, pf, pop, config.n_popular_candidates, block, config.top_k_candidates)
    x, names = feature_matrix(pairs, rows, pf, pop, block)
    y = pair_labels(pairs, rows)
    model.predictor = InterestPredictor(config.predictor_c, config.seed).fit(x, y, names)
    pairs_a = candidate_pairs(rows, pf, pop, config.n_popular_candidates)
    xa, names_a = feature_matrix(pairs_a, rows, pf, pop)
    model.ablation = InterestPredictor(config.predictor_c, config.seed).fit(
        xa, pair_labels(pairs_a, rows), names_a
    )
    # the discover head: the same samples, population statistics from the events before their cutoff
    # for fitting and from the events before ``limit_ts`` for scoring
    fit_tables = PopulationTables.from_events(data.events, int(rows["cutoff_ts"].min()))
    serve_tables = PopulationTables.from_events(data.events, limit_ts)
    model.discover, discover_info = DiscoverHead.fit(rows, pf, pop, fit_tables, serve_tables, config, block)
    model.info.update(
        {
            "discover": discover_info,
            "pca": curve,
            "n_predictor_samples": len(rows),
            "n_predictor_pairs": len(pairs),
            "positive_rate": float(y.mean()),
            "coefficients": model.predictor.coefficients(),
        }
    )
    return model


def fit(
    data: ModelData, config: ModelConfig, final: bool = False, epochs: int | None = None
) -> FittedInterestModel:
    """Fit the whole model; nothing at or after ``limit`` (``T_val``, or ``T_test`` when ``final``) is used.

    Two stages in time, so the predictor learns from LSTM outputs on behaviour the LSTM never saw
    (the same situation as at scoring time): the LSTM is trained on samples up to
    ``lstm_limit = limit - horizon`` (inputs, next-event targets and label windows before it; early
    stopping on the next-window loss of the samples at ``lstm_limit``), and the PCA and the predictor
    are fitted on the samples at ``lstm_limit``, whose label windows end at ``limit``.
    """
    start = time.perf_counter()
    lstm.set_seed(config.seed)
    limit = data.test_cutoff_ts if final else data.val_cutoff_ts
    lstm_limit = _stage_cutoff(data, limit)
    vocab = Vocabulary.from_events(data.events, lstm_limit, config.min_category_events)
    keras_model, train_info = _train_lstm(
        data,
        config,
        lstm_limit,
        vocab,
        epochs or config.epochs,
        early_stopping=config.early_stopping_patience > 0,
        holdout_until_ts=limit,
    )
    return _with_heads(keras_model, vocab, data, config, limit, lstm_limit, start, final=final,
                       lstm=train_info)


def select_and_fit(data: ModelData, config: ModelConfig) -> tuple[FittedInterestModel, FittedInterestModel]:
    """The selection fit (up to ``T_val``, evaluated at ``T_val``) and the final fit (up to ``T_test``)."""
    return fit(data, config, final=True), fit(data, config, final=False)


def fine_tune(
    model: FittedInterestModel, data: ModelData, config: ModelConfig | None = None
) -> FittedInterestModel:
    """Continue training a copy of ``model``'s LSTM on the samples that arrived since it was fitted,
    then refit PCA and predictor: the periodic update, the same two stages in time as :func:`fit`.

    With ``limit = T_test`` of ``data`` and ``lstm_limit`` the latest sample cutoff whose label window
    ends by ``limit``: the LSTM continues on the samples with a cutoff in ``(previous lstm_limit,
    lstm_limit]`` (label windows cut at ``lstm_limit``; ``fine_tune_epochs`` at half the learning
    rate), and PCA and predictor are refitted on the samples at ``lstm_limit`` (as :func:`fit` does),
    whose label windows the LSTM never saw. The vocabulary stays the model's (new categories share
    the out-of-vocabulary bucket).
    """
    config = config or model.config
    start = time.perf_counter()
    lstm.set_seed(config.seed)
    limit = data.test_cutoff_ts
    lstm_limit = _stage_cutoff(data, limit)
    previous = int(model.info.get("lstm_limit_ts", model.trained_until_ts - model.horizon_hours * 3600))
    rows = _lstm_training_rows(data, lstm_limit, config, since_ts=previous)
    km = keras.models.clone_model(model.keras_model)
    km.set_weights(model.keras_model.get_weights())
    # nothing new since the last fit: the LSTM stays as it is (the heads are still refitted)
    train_info: dict[str, Any] = {"history": {}, "best_epoch": 0, "epochs_run": 0, "seconds": 0.0,
                                  "n_train_sequences": 0, "n_window_targets": 0}
    if len(rows) and config.fine_tune_epochs > 0:
        km, train_info = _train_lstm(
            data,
            config,
            lstm_limit,
            model.vocab,
            config.fine_tune_epochs,
            early_stopping=False,
            keras_model=km,
            rows=rows,
            learning_rate=config.learning_rate / 2,
        )
    return _with_heads(km, model.vocab, data, config, limit, lstm_limit, start, final=True, lstm=train_info,
                       sequence_length=model.sequence_length, horizon_hours=model.horizon_hours,
                       fine_tuned_from=model.trained_until_ts, fine_tuned_since_ts=previous)


def _with_heads(keras_model: Any, vocab: Vocabulary, data: ModelData, config: ModelConfig, limit: int,
                lstm_limit: int, started: float, final: bool, lstm: dict[str, Any],
                sequence_length: int | None = None, horizon_hours: int | None = None,
                **info: Any) -> FittedInterestModel:
    """The fitted model around a trained LSTM: PCA and predictor fitted on the samples at ``lstm_limit``
    (label windows ending by ``limit``); ``sequence_length``/``horizon_hours`` default to the data's."""
    model = FittedInterestModel(
        keras_model=keras_model,
        vocab=vocab,
        pca=None,
        predictor=InterestPredictor(),
        ablation=InterestPredictor(),
        config=config,
        sequence_length=sequence_length or data.sequence_length,
        horizon_hours=horizon_hours or data.horizon_hours,
        trained_until_ts=limit,
        info={"final": final, "seed": config.seed, "lstm": lstm, "lstm_limit_ts": lstm_limit,
              "vocabulary_size": vocab.size, **info},
    )
    _fit_heads(model, data, limit, config, predictor_cutoffs=[lstm_limit])
    model.info["fit_seconds"] = time.perf_counter() - started
    return model
