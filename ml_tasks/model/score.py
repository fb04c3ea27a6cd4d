"""Applying a fitted model: candidate scores, ranked categories, interest embeddings.

Two rankings per (user, cutoff): ``"overall"`` (every category seen before the cutoff, the predictor)
and ``"discover"`` (only the categories outside the user's history, the discover head of
:mod:`ml_tasks.model.discover`; a model saved before the head existed falls back to the overall
predictor's order there).

    RANKINGS = ("overall", "discover")
    score_pairs(model, rows, pair_features, popularity=None, use_lstm=True, ranking="overall")
        -> (pairs[row, category_idx], scores)
    score(model, sequences_df, pair_features_df, use_lstm=True, top_n=50, popularity=None,
          ranking="overall") -> DataFrame[user_id, cutoff_ts, category_idx, score, rank]
    interest_embeddings(model, sequences_df) -> DataFrame[user_id, cutoff_ts, pc_1..pc_k]
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from ml_tasks.model import lstm
from ml_tasks.model import pca as pca_mod
from ml_tasks.model.persist import FittedInterestModel
from ml_tasks.model.predictor import (
    LstmBlock,
    candidate_pairs,
    feature_matrix,
    popularity_table,
    score_matrix,
)
from ml_tasks.model.ranking import rank_order, tie_break_rank
from ml_tasks.model.sequences import SequenceArrays, encode_sequences

RANKINGS: tuple[str, ...] = ("overall", "discover")


def lstm_block(model: FittedInterestModel, arrays: SequenceArrays, out: dict | None = None) -> LstmBlock:
    """The LSTM's outputs for ``arrays`` as the predictor's inputs (heads, PCA features, directions)."""
    out = lstm.readout(model.keras_model, arrays) if out is None else out
    z = model.pca.transform(out["state"])
    kernel, _bias = lstm.category_vectors(model.keras_model)
    dirs = pca_mod.project_directions(model.pca, kernel)
    parts = tuple(model.config.lstm_features)
    return LstmBlock(out["window"], z, dirs, model.vocab, parts, next_log_probs=out["next"])


# --- applying ------------------------------------------------------------------------------------
def score_pairs(
    model: FittedInterestModel,
    rows: pd.DataFrame,
    pair_features: pd.DataFrame,
    popularity: pd.DataFrame | None = None,
    use_lstm: bool = True,
    ranking: str = "overall",
) -> tuple[pd.DataFrame, np.ndarray]:
    """Candidate pairs of ``rows`` (``row`` = position in ``rows``) and their predictor scores; with
    ``ranking="discover"`` the discover head's candidates (none in the history) and scores."""
    if ranking not in RANKINGS:
        raise ValueError(f"unknown ranking {ranking!r}; expected one of {list(RANKINGS)}")
    rows = rows.reset_index(drop=True)
    pop = popularity_table(pair_features) if popularity is None else popularity
    cfg = model.config
    block = None
    if use_lstm:
        arrays = encode_sequences(rows, model.vocab, model.sequence_length, with_labels=False)
        block = lstm_block(model, arrays)
    if ranking == "discover" and model.discover is not None:
        return model.discover.score_pairs(rows, pair_features, pop, block)
    if block is not None:
        pairs = candidate_pairs(
            rows, pair_features, pop, cfg.n_popular_candidates, block, cfg.top_k_candidates
        )
        x, _ = feature_matrix(pairs, rows, pair_features, pop, block)
        return pairs, model.predictor.predict(x)
    pairs = candidate_pairs(rows, pair_features, pop, cfg.n_popular_candidates)
    x, _ = feature_matrix(pairs, rows, pair_features, pop)
    return pairs, model.ablation.predict(x)


def score(
    model: FittedInterestModel,
    sequences_df: pd.DataFrame,
    pair_features_df: pd.DataFrame,
    use_lstm: bool = True,
    top_n: int | None = 50,
    popularity: pd.DataFrame | None = None,
    ranking: str = "overall",
) -> pd.DataFrame:
    """Ranked categories per (user, cutoff): ``user_id, cutoff_ts, category_idx, score, rank`` (1 = best).

    The ranking covers every category seen before the cutoff (candidates by predictor score, the
    rest below them in popularity order, score ``-1``); ``top_n`` keeps the best ``n`` per sample.
    ``ranking="discover"`` leaves out the categories of the user's history (the ``pair_features_df``
    rows of the sample) and ranks the rest with the discover head.
    ``popularity`` (a :func:`ml_tasks.model.predictor.popularity_table` frame) defaults to the one derived
    from ``pair_features_df``; pass one when scoring a handful of users.
    """
    rows = sequences_df.reset_index(drop=True)
    pop = popularity_table(pair_features_df) if popularity is None else popularity
    pairs, scores = score_pairs(model, rows, pair_features_df, pop, use_lstm, ranking)
    history = None
    if ranking == "discover":
        keys = rows[["user_id", "cutoff_ts"]].assign(row=np.arange(len(rows)))
        history = keys.merge(pair_features_df[["user_id", "cutoff_ts", "category_idx"]], on=["user_id", "cutoff_ts"])
    out = []
    for cutoff, idx in rows.groupby("cutoff_ts").indices.items():
        seen = pop[pop["cutoff_ts"] == cutoff]
        cands = seen["category_idx"].to_numpy()
        sel = pairs["row"].isin(idx).to_numpy()
        sub = pairs[sel].copy()
        sub["row"] = pd.Index(idx).get_indexer(sub["row"])
        mat = score_matrix(sub, scores[sel], len(idx), cands)
        order = rank_order(mat, tie_break_rank(cands, seen["pop_horizon"].to_numpy()))
        keep = np.ones_like(order, dtype=bool)
        if history is not None:
            hist = history[history["row"].isin(idx)]
            excluded = np.zeros(mat.shape, dtype=bool)
            col = pd.Index(cands).get_indexer(hist["category_idx"])
            ok = col >= 0
            excluded[pd.Index(idx).get_indexer(hist["row"])[ok], col[ok]] = True
            dropped = np.take_along_axis(excluded, order, axis=1)
            order = np.take_along_axis(order, np.argsort(dropped, axis=1, kind="stable"), axis=1)
            keep = np.arange(order.shape[1])[None, :] < (~excluded).sum(axis=1)[:, None]
        n = order.shape[1] if top_n is None else min(top_n, order.shape[1])
        top, keep = order[:, :n], keep[:, :n]
        out.append(
            pd.DataFrame(
                {
                    "user_id": np.repeat(rows["user_id"].to_numpy()[idx], keep.sum(axis=1)),
                    "cutoff_ts": int(cutoff),
                    "category_idx": cands[top][keep],
                    "score": np.take_along_axis(mat, top, axis=1)[keep],
                    "rank": np.broadcast_to(np.arange(1, n + 1), top.shape)[keep],
                }
            )
        )
    cols = ["user_id", "cutoff_ts", "category_idx", "score", "rank"]
    return pd.concat(out, ignore_index=True)[cols] if out else pd.DataFrame(columns=cols)


def interest_embeddings(model: FittedInterestModel, sequences_df: pd.DataFrame) -> pd.DataFrame:
    """The PCA interest vector of every (user, cutoff): ``user_id, cutoff_ts, pc_1..pc_k``."""
    rows = sequences_df.reset_index(drop=True)
    arrays = encode_sequences(rows, model.vocab, model.sequence_length, with_labels=False)
    z = pca_mod.transform(model.pca, lstm.hidden_states(model.keras_model, arrays))
    out = pd.DataFrame(z, columns=[f"pc_{j + 1}" for j in range(z.shape[1])])
    out.insert(0, "cutoff_ts", rows["cutoff_ts"].to_numpy(dtype=np.int64))
    out.insert(0, "user_id", rows["user_id"].astype(str).to_numpy())
    return out
