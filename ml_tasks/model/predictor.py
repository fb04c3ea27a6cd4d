"""The predictor: scores (user, cutoff, candidate category) pairs; logistic regression by default.

Pure pandas/numpy/scikit-learn; no side effects at import.

A *sample* is one ``ml_sequences`` row (user, cutoff); ``rows`` is a frame of samples whose position
(``row`` = 0..n-1) indexes the LSTM outputs. For each sample the candidates are the user's history
categories (the ``ml_pair_features`` rows), the ``n_popular`` most popular categories of the last
horizon and, when the LSTM is used, its head's ``top_k`` categories. Every other category seen before
the cutoff ranks below the candidates, in popularity order (:func:`score_matrix`).

Features of a pair:

- recency/frequency (``ml_pair_features``, zero/neutral outside the history): log counts, weighted
  counts and decayed counts (24/72/168 h), hours and events since the last event on the category,
  events in the last horizon, the same as shares of the user's totals, the rank of the 72 h decay
  within the user's history, "is the last category", "in history";
- popularity at the cutoff (all users): events in the last horizon and before the cutoff, rank;
- LSTM/PCA (only with an :class:`LstmBlock`): the head's log-probability of the category and its
  rank, and the PCA interest vector ``z`` interacting with the category's vector in the same
  principal axes (``z_j * w_cj``, j = 1..k: the LSTM head's logit split along the components).

The ablation ``predictor_without_lstm`` is the same estimator on the recency/frequency and
popularity features only (and without the LSTM's top-K candidates).

Public API::

    popularity_table(pair_features) -> DataFrame[cutoff_ts, category_idx, pop_horizon, pop_total, pop_rank]
    popularity_from_events(events, cutoffs, horizon_hours) -> the same, from raw events
    LstmBlock(log_probs, z, category_dirs, vocab)                 # per-sample LSTM outputs
    candidate_pairs(rows, pair_features, popularity, n_popular, lstm=None, top_k=0) -> DataFrame
    feature_matrix(pairs, rows, pair_features, popularity, lstm=None) -> (X, names)
    pair_labels(pairs, rows) -> ndarray[bool]
    make_estimator(name, c=1.0, seed=0) / InterestPredictor(name, c, seed).fit(X, y).predict(X)
    score_matrix(pairs, scores, n_rows, candidates) -> ndarray[n_rows, len(candidates)]
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

BASE_FEATURES: tuple[str, ...] = (
    "log_n_events",
    "log_weighted_events",
    "log_decay_24h",
    "log_decay_72h",
    "log_decay_168h",
    "log_hours_since_last",
    "log_events_since_last",
    "log_n_events_last_horizon",
    "share_events",
    "share_decay_24h",
    "share_decay_72h",
    "share_decay_168h",
    "log_rank_decay_72h",
    "is_last_category",
    "in_history",
    "log_pop_horizon",
    "log_pop_total",
    "log_pop_rank",
)
WINDOW_FEATURES: tuple[str, ...] = (
    "lstm_window_log_prob",  # the next-window head's log-probability of the category
    "lstm_window_log_rank",  # its rank among the sample's candidates
    "lstm_window_log_prob_new",  # the log-probability again for categories outside the user's history
)
NEXT_FEATURES: tuple[str, ...] = (
    "lstm_next_log_prob",  # the next-event head: what the user does right after the cutoff
    "lstm_next_log_rank",
    "lstm_next_log_prob_new",
)
LSTM_FEATURES: tuple[str, ...] = WINDOW_FEATURES + NEXT_FEATURES
INTERACTION_BASE: tuple[str, ...] = ("log_decay_24h", "log_hours_since_last", "is_last_category", "in_history")
_NEVER_HOURS = 24.0 * 365


@dataclass
class LstmBlock:
    """LSTM outputs per sample: head log-probabilities ``[n, V + 2]``, PCA features ``[n, k]``, and
    the categories' vectors on the same principal axes ``[k, V + 2]``; ``vocab`` maps categories."""

    log_probs: np.ndarray
    z: np.ndarray
    category_dirs: np.ndarray
    vocab: Any  # ml_tasks.model.sequences.Vocabulary
    parts: tuple[str, ...] = ("head", "pca")  # which LSTM feature groups the predictor sees
    next_log_probs: np.ndarray | None = None  # [n, V + 2] next-event head at the last position

    @property
    def n_components(self) -> int:
        return int(self.z.shape[1])

    def wants(self, group: str) -> bool:
        return group in self.parts or ("head" in self.parts and group in ("window", "next"))

    def feature_names(self) -> list[str]:
        names = list(WINDOW_FEATURES) if self.wants("window") else []
        names += list(NEXT_FEATURES) if self.wants("next") else []
        if "pca" in self.parts:
            names += [f"pc_{j + 1}_x_category" for j in range(self.n_components)]
        if "interactions" in self.parts:
            for group in ("window", "next"):
                if self.wants(group):
                    names += [f"lstm_{group}_x_{b}" for b in INTERACTION_BASE]
        return names


def popularity_table(pair_features: pd.DataFrame) -> pd.DataFrame:
    """Per (cutoff, category): events in the last horizon and before the cutoff, summed over the users
    of ``pair_features``. Equal to the global counts only where every user with history has rows
    (the score cutoff); the evaluation and the fit use :func:`popularity_from_events` instead, since the
    warehouse keeps train/val/test rows only for users with label events."""
    pop = (
        pair_features.groupby(["cutoff_ts", "category_idx"], sort=False)
        .agg(pop_horizon=("n_events_last_horizon", "sum"), pop_total=("n_events", "sum"))
        .reset_index()
    )
    pop["pop_rank"] = pop.groupby("cutoff_ts")["pop_horizon"].rank(method="first", ascending=False)
    return pop


def popularity_from_events(events: pd.DataFrame, cutoffs, horizon_hours: float) -> pd.DataFrame:
    """:func:`popularity_table` computed from raw events (all users, strictly before each cutoff).

    One binary search per category over its sorted timestamps, so thousands of cutoffs are cheap.
    """
    cols = ["cutoff_ts", "category_idx", "pop_horizon", "pop_total", "pop_rank"]
    cuts = np.unique(np.asarray(list(cutoffs), dtype=np.int64))
    if not len(cuts) or not len(events):
        return pd.DataFrame(columns=cols)
    ev = events[["category_idx", "event_ts"]].sort_values(["category_idx", "event_ts"], kind="stable")
    cat = ev["category_idx"].to_numpy(dtype=np.int64)
    ts = ev["event_ts"].to_numpy(dtype=np.int64)
    cats, starts = np.unique(cat, return_index=True)
    ends = np.append(starts[1:], len(cat))
    lo = cuts - int(horizon_hours * 3600)
    total = np.empty((len(cats), len(cuts)), dtype=np.int64)
    recent = np.empty_like(total)
    for i, (a, b) in enumerate(zip(starts, ends, strict=True)):
        t = ts[a:b]
        total[i] = np.searchsorted(t, cuts, side="left")
        recent[i] = total[i] - np.searchsorted(t, lo, side="left")
    ci, ki = np.nonzero(total > 0)
    pop = pd.DataFrame(
        {
            "cutoff_ts": cuts[ki],
            "category_idx": cats[ci],
            "pop_horizon": recent[ci, ki],
            "pop_total": total[ci, ki],
        }
    ).sort_values(["cutoff_ts", "category_idx"], ignore_index=True)
    pop["pop_rank"] = pop.groupby("cutoff_ts")["pop_horizon"].rank(method="first", ascending=False)
    return pop[cols]


def _top_popular(popularity: pd.DataFrame, n: int) -> pd.DataFrame:
    pop = popularity.sort_values(["cutoff_ts", "pop_horizon", "category_idx"], ascending=[True, False, True])
    return pop.groupby("cutoff_ts", sort=False).head(n)[["cutoff_ts", "category_idx"]]


def candidate_pairs(
    rows: pd.DataFrame,
    pair_features: pd.DataFrame,
    popularity: pd.DataFrame,
    n_popular: int,
    lstm: LstmBlock | None = None,
    top_k: int = 0,
) -> pd.DataFrame:
    """Distinct ``(row, category_idx)`` candidates for every sample of ``rows`` (position = row)."""
    keys = rows[["user_id", "cutoff_ts"]].reset_index(drop=True)
    keys["row"] = np.arange(len(keys))
    hist = keys.merge(pair_features[["user_id", "cutoff_ts", "category_idx"]], on=["user_id", "cutoff_ts"])
    parts = [hist[["row", "category_idx"]]]
    if n_popular > 0:
        popular = keys.merge(_top_popular(popularity, n_popular), on="cutoff_ts")
        parts.append(popular[["row", "category_idx"]])
    if lstm is not None and top_k > 0:
        lp = lstm.log_probs[:, 1 : lstm.vocab.size + 1]  # real categories only (no padding, no OOV)
        k = min(top_k, lp.shape[1])
        top = np.argpartition(-lp, k - 1, axis=1)[:, :k] + 1
        parts.append(
            pd.DataFrame(
                {"row": np.repeat(np.arange(len(keys)), k), "category_idx": lstm.vocab.decode(top.ravel())}
            )
        )
    pairs = pd.concat(parts, ignore_index=True).drop_duplicates()
    # a category can only be ranked once it has been seen before the cutoff
    seen = popularity[["cutoff_ts", "category_idx"]]
    pairs = pairs.merge(keys[["row", "cutoff_ts"]], on="row").merge(seen, on=["cutoff_ts", "category_idx"])
    return pairs[["row", "category_idx"]].sort_values(["row", "category_idx"]).reset_index(drop=True)


def feature_matrix(
    pairs: pd.DataFrame,
    rows: pd.DataFrame,
    pair_features: pd.DataFrame,
    popularity: pd.DataFrame,
    lstm: LstmBlock | None = None,
) -> tuple[np.ndarray, list[str]]:
    """Feature matrix ``[len(pairs), n_features]`` and the feature names (see module docstring)."""
    keys = rows[["user_id", "cutoff_ts", "n_history_events"]].reset_index(drop=True)
    keys["row"] = np.arange(len(keys))
    pf = pair_features.merge(keys, on=["user_id", "cutoff_ts"])
    grp = pf.groupby("row")
    for col in ("decay_24h", "decay_72h", "decay_168h"):
        pf[f"share_{col}"] = pf[col] / grp[col].transform("sum").clip(lower=1e-12)
    pf["share_events"] = pf["n_events"] / pf["n_history_events"].clip(lower=1)
    pf["rank_decay_72h"] = grp["decay_72h"].rank(method="first", ascending=False)
    pf["n_history_categories"] = grp["category_idx"].transform("size")
    df = pairs.merge(keys[["row", "cutoff_ts", "n_history_events"]], on="row", how="left")
    df = df.merge(
        pf.drop(columns=["user_id", "n_history_events"]), on=["row", "cutoff_ts", "category_idx"], how="left"
    )
    df = df.merge(popularity, on=["cutoff_ts", "category_idx"], how="left")
    in_hist = df["n_events"].notna().to_numpy()
    n_hist_cats = df.groupby("row")["n_history_categories"].transform("max").fillna(0).to_numpy()

    def col(name: str, fill: float | np.ndarray = 0.0) -> np.ndarray:
        return np.where(in_hist, df[name].to_numpy(dtype=float, na_value=0.0), fill)

    n_hist = df["n_history_events"].to_numpy(dtype=float)
    feats = {
        "log_n_events": np.log1p(col("n_events")),
        "log_weighted_events": np.log1p(col("weighted_events")),
        "log_decay_24h": np.log1p(col("decay_24h")),
        "log_decay_72h": np.log1p(col("decay_72h")),
        "log_decay_168h": np.log1p(col("decay_168h")),
        "log_hours_since_last": np.log1p(np.minimum(col("hours_since_last", _NEVER_HOURS), _NEVER_HOURS)),
        "log_events_since_last": np.log1p(col("events_since_last", n_hist)),
        "log_n_events_last_horizon": np.log1p(col("n_events_last_horizon")),
        "share_events": col("share_events"),
        "share_decay_24h": col("share_decay_24h"),
        "share_decay_72h": col("share_decay_72h"),
        "share_decay_168h": col("share_decay_168h"),
        "log_rank_decay_72h": np.log1p(col("rank_decay_72h", n_hist_cats + 1)),
        "is_last_category": (col("events_since_last", -1.0) == 0).astype(float),
        "in_history": in_hist.astype(float),
        "log_pop_horizon": np.log1p(df["pop_horizon"].fillna(0).to_numpy(dtype=float)),
        "log_pop_total": np.log1p(df["pop_total"].fillna(0).to_numpy(dtype=float)),
        "log_pop_rank": np.log1p(df["pop_rank"].fillna(df["pop_rank"].max()).to_numpy(dtype=float)),
    }
    names = list(BASE_FEATURES)
    blocks = [np.column_stack([feats[n] for n in names])]
    if lstm is not None:
        r = df["row"].to_numpy()
        m = lstm.vocab.encode(df["category_idx"].to_numpy())
        in_vocab = m <= lstm.vocab.size
        lp = lstm.log_probs[r, m]
        new = 1.0 - in_hist.astype(float)
        # categories the LSTM never learned (out of vocabulary) get the sample's mean: no signal
        if lstm.wants("window"):
            lp_c = _neutral_oov(lp, r, in_vocab)
            blocks.append(np.column_stack([lp_c, _row_log_rank(lp_c, r), lp_c * new]))
        if lstm.wants("next"):
            nxt = lstm.next_log_probs[r, m] if lstm.next_log_probs is not None else np.zeros(len(r))
            nxt_c = _neutral_oov(nxt, r, in_vocab)
            blocks.append(np.column_stack([nxt_c, _row_log_rank(nxt_c, r), nxt_c * new]))
        if "pca" in lstm.parts:
            blocks.append(lstm.z[r] * lstm.category_dirs[:, m].T * in_vocab[:, None])
        if "interactions" in lstm.parts:
            # how the sequence model's view moves the recency signals (the LR is otherwise additive)
            base = np.column_stack([feats[n] for n in INTERACTION_BASE])
            for group in ("window", "next"):
                if lstm.wants(group):
                    v = _neutral_oov(lp if group == "window" else lstm.next_log_probs[r, m], r, in_vocab)
                    v = _row_standardise(v, r)
                    blocks.append(base * v[:, None])
        names += lstm.feature_names()
    return np.hstack(blocks).astype(np.float64), names


def _row_groups(rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    uniq, inverse = np.unique(rows, return_inverse=True)
    return inverse, np.bincount(inverse).astype(float)


def _neutral_oov(values: np.ndarray, rows: np.ndarray, in_vocab: np.ndarray) -> np.ndarray:
    inv, _ = _row_groups(rows)
    n_in = np.bincount(inv, weights=in_vocab.astype(float))
    s_in = np.bincount(inv, weights=np.where(in_vocab, values, 0.0))
    mean_in = np.divide(s_in, n_in, out=np.zeros_like(s_in), where=n_in > 0)
    return np.where(in_vocab, values, mean_in[inv])


def _row_standardise(values: np.ndarray, rows: np.ndarray) -> np.ndarray:
    inv, n = _row_groups(rows)
    mean = np.bincount(inv, weights=values) / n
    var = np.bincount(inv, weights=(values - mean[inv]) ** 2) / n
    return (values - mean[inv]) / np.sqrt(var[inv] + 1e-9)


def _row_log_rank(values: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """log(rank) of each value within its row, 1 = highest."""
    order = np.lexsort((-values, rows))
    ranks = np.empty(len(values), dtype=float)
    sorted_rows = rows[order]
    starts = np.r_[0, np.flatnonzero(sorted_rows[1:] != sorted_rows[:-1]) + 1]
    pos = np.arange(len(values)) - np.repeat(starts, np.diff(np.r_[starts, len(values)]))
    ranks[order] = pos + 1
    return np.log(ranks)


def _rank_in_rows(values: np.ndarray, rows: np.ndarray, query: np.ndarray, chunk: int = 256) -> np.ndarray:
    """1 + how many entries of ``values[rows[i]]`` exceed ``query[i]`` (sorted rows, binary search)."""
    rank = np.empty(len(rows), dtype=np.int64)
    order = np.argsort(rows, kind="stable")
    rows_sorted = rows[order]
    bounds = np.searchsorted(rows_sorted, np.arange(len(values) + 1))
    for start in range(0, len(values), chunk):
        block = np.sort(values[start : start + chunk], axis=1)
        for j, row_values in enumerate(block):
            lo, hi = bounds[start + j], bounds[start + j + 1]
            if hi > lo:
                idx = order[lo:hi]
                rank[idx] = len(row_values) - np.searchsorted(row_values, query[idx], side="right") + 1
    return rank


def pair_labels(pairs: pd.DataFrame, rows: pd.DataFrame) -> np.ndarray:
    """1 where the pair's category is in the sample's label window."""
    labels = rows["label_category_idx"].reset_index(drop=True)
    lab = pd.DataFrame(
        {
            "row": np.repeat(np.arange(len(labels)), [len(x) if x is not None else 0 for x in labels]),
            "category_idx": np.concatenate(
                [np.asarray(x if x is not None else [], dtype=np.int64) for x in labels]
            )
            if len(labels)
            else np.zeros(0, np.int64),
        }
    )
    lab["label"] = True
    out = pairs[["row", "category_idx"]].merge(lab, on=["row", "category_idx"], how="left")
    return out["label"].fillna(False).to_numpy(dtype=bool)


def make_estimator(c: float = 1.0, seed: int = 0) -> Any:
    """A logistic regression on standardised features (L2, ``C=c``)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    return make_pipeline(StandardScaler(), LogisticRegression(C=c, max_iter=2000, random_state=seed))


class InterestPredictor:
    """A fitted estimator plus the feature names it expects."""

    def __init__(self, c: float = 1.0, seed: int = 0) -> None:
        self.c, self.seed = c, seed
        self.estimator: Any = None
        self.feature_names: list[str] = []

    def fit(self, x: np.ndarray, y: np.ndarray, feature_names: list[str]) -> InterestPredictor:
        if y.all() or not y.any():
            raise ValueError("the predictor needs positive and negative pairs")
        self.estimator = make_estimator(self.c, self.seed).fit(x, y.astype(int))
        self.feature_names = list(feature_names)
        return self

    def predict(self, x: np.ndarray) -> np.ndarray:
        """Probability that the user touches the category in the next window."""
        return self.estimator.predict_proba(x)[:, 1]

    def coefficients(self) -> dict[str, float]:
        """Standardised logistic coefficients by feature."""
        est = getattr(self.estimator, "steps", [(None, None)])[-1][1]
        coef = getattr(est, "coef_", None)
        if coef is None:
            return {}
        return {n: float(v) for n, v in zip(self.feature_names, coef[0], strict=True)}


def score_matrix(pairs: pd.DataFrame, scores: np.ndarray, n_rows: int, candidates: np.ndarray) -> np.ndarray:
    """Dense ``[n_rows, len(candidates)]`` scores: predictor scores for candidates, ``-1`` elsewhere.

    Non-candidates tie at ``-1`` and so fall back to the metrics' popularity tie-break order.
    """
    out = np.full((n_rows, len(candidates)), -1.0)
    col = pd.Index(np.asarray(candidates)).get_indexer(pairs["category_idx"])
    ok = col >= 0
    out[pairs["row"].to_numpy()[ok], col[ok]] = np.asarray(scores)[ok]
    return out
