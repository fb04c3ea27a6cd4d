"""The one ranking order of the project: score descending, then a global tie-break (popularity, then
category index), so every model and baseline ranks deterministically and unscored categories fall back
to popularity order."""

from __future__ import annotations

import numpy as np


def tie_break_rank(candidates: np.ndarray, popularity: np.ndarray) -> np.ndarray:
    """Position of each candidate in the global tie-break order: popularity desc, then category asc."""
    candidates = np.asarray(candidates)
    order = np.lexsort((candidates, -np.asarray(popularity, dtype=float)))
    rank = np.empty(len(candidates), dtype=np.int64)
    rank[order] = np.arange(len(candidates))
    return rank


def rank_order(scores: np.ndarray, tie_break: np.ndarray) -> np.ndarray:
    """Candidate positions per user, best first: score descending, then ``tie_break`` ascending."""
    scores = np.atleast_2d(np.asarray(scores, dtype=float))
    tb = np.broadcast_to(np.asarray(tie_break), scores.shape)
    # NaN scores rank last
    key = np.where(np.isnan(scores), np.inf, -scores)
    return np.lexsort((tb, key), axis=-1)
