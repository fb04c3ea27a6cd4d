"""Population statistics over all users' sequences: first-order transitions and co-visitation.

Pure pandas/numpy. One definition shared by the ``markov`` and ``covisitation`` baselines
(:mod:`ml_tasks.evaluation.baselines`) and the model's discover head (:mod:`ml_tasks.model.discover`),
so the head's population features are exactly what the baselines score with. Both read an events
frame already cut at a cutoff and sorted by user and time; the caller owns the point-in-time cut.

    transition_counts(ev) -> DataFrame[src, dst, n]
    covisitation_table(ev, window=COVISIT_WINDOW) -> DataFrame[src, dst, weight]
    recent_categories(users, sequences, n_recent=COVISIT_RECENT) -> DataFrame[key, category_idx, w]
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

#: co-visitation: categories that follow within this many events (repeats in a row count once) ...
COVISIT_WINDOW = 3
#: ... of each of the user's this many most recent distinct categories (both chosen at the validation
#: cutoffs of the Taobao sample and the default synthetic data, among windows 1/3/5 and 1/5/10 categories)
COVISIT_RECENT = 10


def transition_counts(ev: pd.DataFrame) -> pd.DataFrame:
    """``src, dst, n``: consecutive events of one user, ``src`` then ``dst`` (``ev`` sorted by user, time)."""
    user = ev["user_id"].to_numpy()
    cat = ev["category_idx"].to_numpy()
    same_user = user[1:] == user[:-1]
    trans = pd.DataFrame({"src": cat[:-1][same_user], "dst": cat[1:][same_user]})
    return trans.groupby(["src", "dst"]).size().rename("n").reset_index()


def covisitation_table(ev: pd.DataFrame, window: int = COVISIT_WINDOW) -> pd.DataFrame:
    """``src, dst, weight``: how often ``dst`` followed ``src`` within ``window`` events of one user's
    sequence (``ev`` sorted by user and time; repeats of a category in a row count once, ``dst != src``),
    normalised so each ``src`` sums to 1."""
    user = ev["user_id"].to_numpy()
    cat = ev["category_idx"].to_numpy()
    run_start = np.ones(len(cat), dtype=bool)
    run_start[1:] = (user[1:] != user[:-1]) | (cat[1:] != cat[:-1])
    user, cat = user[run_start], cat[run_start]
    src, dst = [], []
    for lag in range(1, window + 1):
        ok = (user[lag:] == user[:-lag]) & (cat[lag:] != cat[:-lag])
        src.append(cat[:-lag][ok])
        dst.append(cat[lag:][ok])
    pairs = pd.DataFrame({"src": np.concatenate(src), "dst": np.concatenate(dst)})
    table = pairs.groupby(["src", "dst"]).size().rename("weight").reset_index()
    table["weight"] = table["weight"] / table.groupby("src")["weight"].transform("sum")
    return table


def recent_categories(keys: Sequence, sequences: Sequence, n_recent: int = COVISIT_RECENT) -> pd.DataFrame:
    """``key, category_idx, w``: each sequence's ``n_recent`` most recent distinct categories, weight
    ``1 / rank`` (the latest rank 1); ``sequences[i]`` lists ``keys[i]``'s categories oldest first."""
    lengths = np.array([len(s) if s is not None else 0 for s in sequences], dtype=np.int64)
    flat = pd.DataFrame({
        "key": np.repeat(np.asarray(keys), lengths),
        "category_idx": np.concatenate([np.asarray(s, dtype=np.int64) for s in sequences if s is not None
                                        and len(s)]) if lengths.sum() else np.zeros(0, np.int64),
    })
    recent = flat.iloc[::-1].drop_duplicates(["key", "category_idx"])
    rank = recent.groupby("key", sort=False).cumcount().to_numpy()
    return recent.assign(w=1.0 / (rank + 1))[rank < n_recent].reset_index(drop=True)
