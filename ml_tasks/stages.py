"""The model's fit split into the training DAG's stages, each resumable from files.

``ml_tasks.model.fit`` runs LSTM -> PCA -> predictor in one call; the ``train_interest_model`` DAG
runs them as separate tasks (so an operator sees which stage failed or is slow, and a retry does not
retrain the LSTM). These functions are those stages; together they equal ``model.fit``.
"""

from __future__ import annotations

import time
from typing import Any

from ml_tasks.config import ModelConfig
from ml_tasks.model import (
    FittedInterestModel,
    ModelData,
    _lstm_block,
    _predictor_rows,
    _subsample_rows,
    _train_lstm,
)
from ml_tasks.predictor import (
    InterestPredictor,
    candidate_pairs,
    feature_matrix,
    pair_labels,
    popularity_table,
)
from ml_tasks.sequences import Vocabulary, encode_sequences


def train_lstm(data: ModelData, config: ModelConfig, final: bool = False,
               epochs: int | None = None) -> FittedInterestModel:
    """Stage 1: the sequence model. ``final=False`` fits before ``T_val`` with early stopping at
    ``T_val``; ``final=True`` fits before ``T_test`` for ``epochs``. PCA and predictor are unset."""
    from ml_tasks import lstm

    start = time.perf_counter()
    lstm.set_seed(config.seed)
    limit = data.test_cutoff_ts if final else data.val_cutoff_ts
    vocab = Vocabulary.from_events(data.events, limit, config.min_category_events)
    keras_model, info = _train_lstm(data, config, limit, vocab, epochs or config.epochs, early_stopping=not final)
    info["seconds"] = info.get("seconds", time.perf_counter() - start)
    return FittedInterestModel(
        keras_model=keras_model, vocab=vocab, pca=None, predictor=InterestPredictor(),
        ablation=InterestPredictor(), config=config, sequence_length=data.sequence_length,
        horizon_hours=data.horizon_hours, trained_until_ts=limit,
        info={"final": final, "seed": config.seed, "lstm": info, "vocabulary_size": vocab.size},
    )


def _training_rows(model: FittedInterestModel, data: ModelData, config: ModelConfig):
    rows = _predictor_rows(data, model.trained_until_ts)
    n_hist = data.pair_features.groupby(["user_id", "cutoff_ts"]).size().mean() if len(rows) else 0
    est_pairs = len(rows) * (n_hist + config.n_popular_candidates + config.top_k_candidates)
    return _subsample_rows(rows, est_pairs, config.max_predictor_rows, config.seed)


def fit_pca_stage(model: FittedInterestModel, data: ModelData, config: ModelConfig) -> dict[str, Any]:
    """Stage 3: PCA on the training samples' hidden states only; returns the variance curve."""
    import numpy as np

    from ml_tasks import lstm
    from ml_tasks.pca import fit_pca

    rows = _training_rows(model, data, config)
    arrays = encode_sequences(rows, model.vocab, model.sequence_length)
    states = lstm.hidden_states(model.keras_model, arrays)
    model.pca, curve = fit_pca(states.astype(np.float64), config.pca_variance, seed=config.seed)
    model.info["pca"] = curve
    return curve


def fit_predictor_stage(model: FittedInterestModel, data: ModelData, config: ModelConfig) -> dict[str, Any]:
    """Stage 4: the predictor on candidate pairs (with LSTM/PCA features) and its ablation (without)."""
    rows = _training_rows(model, data, config)
    arrays = encode_sequences(rows, model.vocab, model.sequence_length)
    pop = popularity_table(data.pair_features)
    pf = data.pair_features
    block = _lstm_block(model, arrays)
    pairs = candidate_pairs(rows, pf, pop, config.n_popular_candidates, block, config.top_k_candidates)
    x, names = feature_matrix(pairs, rows, pf, pop, block)
    y = pair_labels(pairs, rows)
    model.predictor = InterestPredictor(config.predictor, config.predictor_c, config.seed).fit(x, y, names)
    pairs_a = candidate_pairs(rows, pf, pop, config.n_popular_candidates)
    xa, names_a = feature_matrix(pairs_a, rows, pf, pop)
    model.ablation = InterestPredictor(config.predictor, config.predictor_c, config.seed).fit(
        xa, pair_labels(pairs_a, rows), names_a)
    info = {"n_predictor_samples": len(rows), "n_predictor_pairs": len(pairs), "positive_rate": float(y.mean()),
            "coefficients": model.predictor.coefficients()}
    model.info.update(info)
    return info
