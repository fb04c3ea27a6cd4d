"""Batch-scoring logic (pure): who is active, and whose interest vector moved sharply.

Sudden interest shifts can mean a changed life or a hijacked account; they are flagged for review.
The distance is the cosine distance between a user's PCA interest vector at the scoring cutoff and
at the previous scoring's cutoff (both computed with the same model, so the spaces match). A user is
flagged when the distance is an outlier among this scoring's users: above the median plus
``k`` scaled median absolute deviations, and above an absolute floor (cosine distance 0.8 by
default: on the default synthetic data about 6% of active users between two daily scorings).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from ml_tasks.evaluation.shift_flags import robust_threshold


def active_users(score_rows: pd.DataFrame, active_days: float) -> pd.DataFrame:
    """Rows of ``ml_sequences`` (split ``score``) whose user's last event is within ``active_days``."""
    last_gap = score_rows["seq_gap_hours"].map(lambda g: float(g[-1]) if g is not None and len(g) else np.inf)
    return score_rows[last_gap <= active_days * 24.0].reset_index(drop=True)


def interest_shifts(now: pd.DataFrame, before: pd.DataFrame, k: float = 5.0,
                    min_distance: float = 0.8, threshold: float | None = None) -> pd.DataFrame:
    """Users whose interest vector moved sharply between two cutoffs (cosine distance above ``threshold``;
    without one, median + ``k`` scaled MADs of the distances, at least ``min_distance``).

    ``now`` and ``before``: ``user_id, cutoff_ts, pc_1..pc_n`` (one row per user). Returns
    ``user_id, previous_cutoff_ts, distance, threshold, is_shift`` for users present in both.
    """
    pcs = [c for c in now.columns if c.startswith("pc_")]
    merged = now.merge(before, on="user_id", suffixes=("", "_prev"))
    cols = ["user_id", "previous_cutoff_ts", "distance", "threshold", "is_shift"]
    if merged.empty:
        return pd.DataFrame(columns=cols)
    a = merged[pcs].to_numpy(dtype=float)
    b = merged[[f"{c}_prev" for c in pcs]].to_numpy(dtype=float)
    denom = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    cosine = np.where(denom > 0, (a * b).sum(axis=1) / np.maximum(denom, 1e-12), 1.0)
    distance = 1.0 - cosine
    if threshold is None:
        threshold = robust_threshold(distance, k, min_distance)
    return pd.DataFrame({
        "user_id": merged["user_id"].to_numpy(),
        "previous_cutoff_ts": merged["cutoff_ts_prev"].to_numpy(dtype=np.int64),
        "distance": distance,
        "threshold": threshold,
        "is_shift": distance > threshold,
    })[cols]
