"""The discover head: ranks, for each (user, cutoff), the categories *outside* the user's history.

Pure pandas/numpy/scikit-learn. The overall predictor (:mod:`ml_tasks.model.predictor`) learns mostly
that a user returns to what they touched recently: most label categories are repeats, so its single
ranking puts the history first, and among new categories it has little to go on. Where interests
evolve is the new categories, so the model has a second predictor, trained only on candidate pairs
outside the user's history at the sample cutoffs, with the new label categories as positives.

Candidates of a sample (never a history category, only categories seen before the cutoff): the
``n_popular`` most popular categories of the last horizon, the top ``k`` by co-visitation from the
user's recent categories, the top ``k`` by first-order transitions from the last category and, with
the LSTM, the top ``k`` of its window and next-event heads. Every other category ranks below them in
popularity order (as in the overall ranking).

Features of a pair:

- popularity at the cutoff (the same frame as the overall predictor's): log events in the last
  horizon and before the cutoff, log rank;
- population statistics of :mod:`ml_tasks.model.population` (what the ``covisitation`` and ``markov``
  baselines score with): co-visitation from the user's recent distinct categories (weight 1/rank) and
  from the last one alone, the transition probability and log count from the last category, the log
  ranks of both within the sample's candidates;
- LSTM (only with an :class:`~ml_tasks.model.predictor.LstmBlock`): the window and next-event heads'
  log-probabilities and ranks, and the PCA interest vector against the category's principal-axis
  vector (``z_j * w_cj``), as in the overall predictor.

The ablation (``predictor_without_lstm``) gets the same head without the LSTM features and the LSTM's
candidates, so the discover comparison of model and ablation stays honest.

Point in time: the population tables are computed from events strictly before a time ``until_ts``.
When fitting, they come from the events before the sample cutoff; the fitted head keeps tables from
the events before the model's training limit (``trained_until_ts``), which is the evaluation cutoff
in the protocol, and the batch and the in-memory serving paths both score with those stored tables,
so they agree.

Public API::

    PopulationTables.from_events(events, until_ts, max_followers=200)
    discover_candidates(rows, pair_features, popularity, tables, config, lstm=None) -> DataFrame[row, category_idx]
    discover_features(pairs, rows, popularity, tables, lstm=None) -> (X, names)
    discover_labels(pairs, rows) -> ndarray[bool]
    DiscoverHead.fit(rows, pair_features, popularity, fit_tables, serve_tables, config, lstm)
    DiscoverHead.score_pairs(rows, pair_features, popularity, lstm=None) -> (pairs, scores)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from ml_tasks.model.population import (
    COVISIT_RECENT,
    covisitation_table,
    recent_categories,
    transition_counts,
)
from ml_tasks.model.predictor import (
    InterestPredictor,
    LstmBlock,
    _neutral_oov,
    _row_log_rank,
    _top_popular,
    pair_labels,
)

POPULATION_FEATURES: tuple[str, ...] = (
    "log_pop_horizon",
    "log_pop_total",
    "log_pop_rank",
    "covis_recent",
    "log_covis_recent",
    "log_rank_covis_recent",
    "covis_last",
    "log_covis_last",
    "markov_prob",
    "log_markov_n",
    "log_rank_markov",
)
_EPS = 1e-4


@dataclass
class PopulationTables:
    """Co-visitation (``src, dst, weight``) and transitions (``src, dst, n, prob``) of every user's
    events strictly before ``until_ts``; each source keeps its ``max_followers`` strongest followers."""

    until_ts: int
    covisitation: pd.DataFrame
    transitions: pd.DataFrame

    @classmethod
    def from_events(cls, events: pd.DataFrame, until_ts: int, max_followers: int = 200) -> PopulationTables:
        ev = events.loc[events["event_ts"] < until_ts, ["user_id", "category_idx", "event_ts"]]
        ev = ev.assign(user_id=ev["user_id"].astype(str)).sort_values(["user_id", "event_ts"], kind="stable")
        cov = covisitation_table(ev) if len(ev) > 1 else pd.DataFrame(columns=["src", "dst", "weight"])
        trans = transition_counts(ev) if len(ev) > 1 else pd.DataFrame(columns=["src", "dst", "n"])
        trans["prob"] = trans["n"] / trans.groupby("src")["n"].transform("sum").clip(lower=1)
        return cls(int(until_ts), _strongest(cov, "weight", max_followers), _strongest(trans, "n", max_followers))


def _strongest(table: pd.DataFrame, by: str, n: int) -> pd.DataFrame:
    table = table.sort_values(["src", by, "dst"], ascending=[True, False, True], kind="stable")
    return table.groupby("src", sort=False).head(n).reset_index(drop=True)


def _keys(rows: pd.DataFrame) -> pd.DataFrame:
    keys = rows[["user_id", "cutoff_ts"]].reset_index(drop=True)
    keys["row"] = np.arange(len(keys))
    return keys


def _history(keys: pd.DataFrame, pair_features: pd.DataFrame) -> pd.DataFrame:
    return keys.merge(pair_features[["user_id", "cutoff_ts", "category_idx"]],
                      on=["user_id", "cutoff_ts"])[["row", "category_idx"]]


def _population_scores(rows: pd.DataFrame, tables: PopulationTables) -> pd.DataFrame:
    """``row, category_idx, covis_recent, covis_last, markov_n, markov_prob`` (categories any table scores)."""
    seqs = rows["seq_category_idx"].tolist()
    recent = recent_categories(np.arange(len(rows)), seqs, COVISIT_RECENT).rename(
        columns={"key": "row", "category_idx": "src"})
    cov = recent.merge(tables.covisitation, on="src")
    cov["covis_recent"] = cov["w"] * cov["weight"]
    cov["covis_last"] = np.where(cov["w"] == 1.0, cov["weight"], 0.0)
    cov = cov.groupby(["row", "dst"], sort=False)[["covis_recent", "covis_last"]].sum().reset_index()
    last = pd.DataFrame({"row": np.arange(len(rows)),
                         "src": [int(s[-1]) if s is not None and len(s) else -1 for s in seqs]})
    mk = last.merge(tables.transitions, on="src")[["row", "dst", "n", "prob"]]
    mk = mk.rename(columns={"n": "markov_n", "prob": "markov_prob"})
    out = cov.merge(mk, on=["row", "dst"], how="outer").rename(columns={"dst": "category_idx"})
    return out.fillna(0.0)


def _top_by(scores: pd.DataFrame, column: str, k: int) -> pd.DataFrame:
    if k <= 0 or scores.empty:
        return scores[["row", "category_idx"]].iloc[:0]
    s = scores[scores[column] > 0].sort_values(["row", column, "category_idx"], ascending=[True, False, True])
    return s.groupby("row", sort=False).head(k)[["row", "category_idx"]]


def discover_candidates(
    rows: pd.DataFrame,
    pair_features: pd.DataFrame,
    popularity: pd.DataFrame,
    tables: PopulationTables,
    config: Any,
    lstm: LstmBlock | None = None,
    population: pd.DataFrame | None = None,
) -> pd.DataFrame:
    """Distinct ``(row, category_idx)`` outside each sample's history, seen before its cutoff."""
    keys = _keys(rows)
    pop_scores = _population_scores(rows, tables) if population is None else population
    parts = [_top_by(pop_scores, "covis_recent", config.discover_covisit_candidates),
             _top_by(pop_scores, "markov_prob", config.discover_markov_candidates)]
    if config.discover_popular_candidates > 0:
        popular = keys.merge(_top_popular(popularity, config.discover_popular_candidates), on="cutoff_ts")
        parts.append(popular[["row", "category_idx"]])
    k = config.discover_lstm_candidates
    if lstm is not None and k > 0:
        for lp in (lstm.log_probs, lstm.next_log_probs):
            if lp is None:
                continue
            lp = lp[:, 1 : lstm.vocab.size + 1]
            kk = min(k, lp.shape[1])
            top = np.argpartition(-lp, kk - 1, axis=1)[:, :kk] + 1
            parts.append(pd.DataFrame({"row": np.repeat(np.arange(len(keys)), kk),
                                       "category_idx": lstm.vocab.decode(top.ravel())}))
    pairs = pd.concat(parts, ignore_index=True).drop_duplicates()
    hist = _history(keys, pair_features).assign(_hist=True)
    pairs = pairs.merge(hist, on=["row", "category_idx"], how="left")
    pairs = pairs[pairs["_hist"].isna()].drop(columns="_hist")
    seen = popularity[["cutoff_ts", "category_idx"]]
    pairs = pairs.merge(keys[["row", "cutoff_ts"]], on="row").merge(seen, on=["cutoff_ts", "category_idx"])
    return pairs[["row", "category_idx"]].sort_values(["row", "category_idx"]).reset_index(drop=True)


def discover_features(
    pairs: pd.DataFrame,
    rows: pd.DataFrame,
    popularity: pd.DataFrame,
    tables: PopulationTables,
    lstm: LstmBlock | None = None,
    population: pd.DataFrame | None = None,
) -> tuple[np.ndarray, list[str]]:
    """Feature matrix ``[len(pairs), n_features]`` and the feature names (module docstring)."""
    keys = _keys(rows)
    pop_scores = _population_scores(rows, tables) if population is None else population
    df = pairs.merge(keys[["row", "cutoff_ts"]], on="row", how="left")
    df = df.merge(popularity, on=["cutoff_ts", "category_idx"], how="left")
    df = df.merge(pop_scores, on=["row", "category_idx"], how="left")
    r = df["row"].to_numpy()

    def col(name: str) -> np.ndarray:
        return df[name].fillna(0.0).to_numpy(dtype=float)

    covis, covis_last, mk_n, mk_p = col("covis_recent"), col("covis_last"), col("markov_n"), col("markov_prob")
    feats = {
        "log_pop_horizon": np.log1p(col("pop_horizon")),
        "log_pop_total": np.log1p(col("pop_total")),
        "log_pop_rank": np.log1p(df["pop_rank"].fillna(df["pop_rank"].max()).to_numpy(dtype=float)),
        "covis_recent": covis,
        "log_covis_recent": np.log(covis + _EPS),
        "log_rank_covis_recent": _row_log_rank(covis, r) if len(r) else covis,
        "covis_last": covis_last,
        "log_covis_last": np.log(covis_last + _EPS),
        "markov_prob": mk_p,
        "log_markov_n": np.log1p(mk_n),
        "log_rank_markov": _row_log_rank(mk_p, r) if len(r) else mk_p,
    }
    names = list(POPULATION_FEATURES)
    blocks = [np.column_stack([feats[n] for n in names])]
    if lstm is not None:
        m = lstm.vocab.encode(df["category_idx"].to_numpy())
        in_vocab = m <= lstm.vocab.size
        for group, lp in (("window", lstm.log_probs), ("next", lstm.next_log_probs)):
            if lp is None:
                continue
            v = _neutral_oov(lp[r, m], r, in_vocab)
            blocks.append(np.column_stack([v, _row_log_rank(v, r)]))
            names += [f"lstm_{group}_log_prob", f"lstm_{group}_log_rank"]
        if "pca" in lstm.parts:
            blocks.append(lstm.z[r] * lstm.category_dirs[:, m].T * in_vocab[:, None])
            names += [f"pc_{j + 1}_x_category" for j in range(lstm.n_components)]
    return np.hstack(blocks).astype(np.float64), names


def discover_labels(pairs: pd.DataFrame, rows: pd.DataFrame) -> np.ndarray:
    """1 where the pair's category is in the sample's label window (pairs are outside the history)."""
    return pair_labels(pairs, rows)


@dataclass
class DiscoverHead:
    """The fitted discover predictor (with LSTM features), its ablation, and the population tables
    it scores with (events before the model's training limit)."""

    tables: PopulationTables
    predictor: InterestPredictor
    ablation: InterestPredictor
    config: Any  # ml_tasks.config.ModelConfig: candidate counts

    @classmethod
    def fit(
        cls,
        rows: pd.DataFrame,
        pair_features: pd.DataFrame,
        popularity: pd.DataFrame,
        fit_tables: PopulationTables,
        serve_tables: PopulationTables,
        config: Any,
        lstm: LstmBlock,
    ) -> tuple[DiscoverHead, dict[str, Any]]:
        """Fit on ``rows`` (samples whose label windows are known; ``lstm`` aligned with them) with
        ``fit_tables`` (events before the samples' cutoff); keep ``serve_tables`` for scoring."""
        keep = np.flatnonzero(_has_new_label(rows, pair_features))
        rows, lstm = rows.iloc[keep].reset_index(drop=True), _subset_block(lstm, keep)
        population = _population_scores(rows, fit_tables)
        heads, info = [], {"n_samples": int(len(rows))}
        for name, block in (("predictor", lstm), ("ablation", None)):
            pairs = discover_candidates(rows, pair_features, popularity, fit_tables, config, block, population)
            x, names = discover_features(pairs, rows, popularity, fit_tables, block, population)
            y = discover_labels(pairs, rows)
            heads.append(make_head(config).fit(x, y, names))
            info[name] = {"n_pairs": int(len(pairs)), "positive_rate": float(y.mean()),
                          "candidate_recall": _candidate_recall(pairs, y, rows, pair_features)}
        info["coefficients"] = heads[0].coefficients()
        return cls(serve_tables, heads[0], heads[1], config), info

    def score_pairs(
        self,
        rows: pd.DataFrame,
        pair_features: pd.DataFrame,
        popularity: pd.DataFrame,
        lstm: LstmBlock | None = None,
    ) -> tuple[pd.DataFrame, np.ndarray]:
        """Discover candidates of ``rows`` and their scores (the ablation's when ``lstm`` is None)."""
        rows = rows.reset_index(drop=True)
        population = _population_scores(rows, self.tables)
        pairs = discover_candidates(rows, pair_features, popularity, self.tables, self.config, lstm, population)
        x, _ = discover_features(pairs, rows, popularity, self.tables, lstm, population)
        head = self.predictor if lstm is not None else self.ablation
        return pairs, head.predict(x) if len(pairs) else np.zeros(0)


class BoostedPredictor(InterestPredictor):
    """:class:`InterestPredictor` with gradient-boosted trees (``discover_estimator="boosting"``): lets
    popularity, co-visitation and the LSTM's view combine non-linearly (e.g. co-visitation matters
    more for a rare category than for a popular one)."""

    def fit(self, x: np.ndarray, y: np.ndarray, feature_names: list[str]) -> BoostedPredictor:
        from sklearn.ensemble import HistGradientBoostingClassifier

        if y.all() or not y.any():
            raise ValueError("the predictor needs positive and negative pairs")
        self.estimator = HistGradientBoostingClassifier(
            max_iter=200, learning_rate=0.05, max_leaf_nodes=15, min_samples_leaf=40,
            l2_regularization=1.0, random_state=self.seed,
        ).fit(x, y.astype(int))
        self.feature_names = list(feature_names)
        return self


def make_head(config: Any) -> InterestPredictor:
    """The discover head's estimator: ``config.discover_estimator`` "logistic" (default) or "boosting"."""
    kind = getattr(config, "discover_estimator", "logistic")
    if kind == "boosting":
        return BoostedPredictor(config.discover_c, config.seed)
    if kind != "logistic":
        raise ValueError(f"discover_estimator must be 'logistic' or 'boosting', got {kind!r}")
    return InterestPredictor(config.discover_c, config.seed)


def _has_new_label(rows: pd.DataFrame, pair_features: pd.DataFrame) -> np.ndarray:
    """Samples with at least one label category outside the history: the only ones that tell the
    head how new categories rank against each other."""
    keys = _keys(rows)
    hist = _history(keys, pair_features).groupby("row")["category_idx"].apply(set)
    labels = rows["label_category_idx"].reset_index(drop=True)
    return np.array([lab is not None and bool(set(np.asarray(lab).tolist()) - hist.get(i, set()))
                     for i, lab in enumerate(labels)], dtype=bool)


def _subset_block(block: LstmBlock, idx: np.ndarray) -> LstmBlock:
    nxt = block.next_log_probs[idx] if block.next_log_probs is not None else None
    return LstmBlock(block.log_probs[idx], block.z[idx], block.category_dirs, block.vocab, block.parts, nxt)


def _candidate_recall(pairs: pd.DataFrame, y: np.ndarray, rows: pd.DataFrame, pair_features: pd.DataFrame) -> float:
    """Share of the new label categories that made it into the candidates (what the head can rank)."""
    keys = _keys(rows)
    hist = _history(keys, pair_features).groupby("row")["category_idx"].apply(set)
    labels = rows["label_category_idx"].reset_index(drop=True)
    n_new = sum(len(set(np.asarray(lab).tolist()) - hist.get(i, set())) for i, lab in enumerate(labels)
                if lab is not None)
    return float(y.sum() / n_new) if n_new else float("nan")
