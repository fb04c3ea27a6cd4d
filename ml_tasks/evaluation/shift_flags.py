"""Do the interest-shift flags find real switches? Scored against the synthetic data's planted switches.

Pure pandas/numpy. The serving table ``user_interest_shifts`` flags a user when the distance between two
of their interest vectors, at the scoring cutoff and at the previous scoring's cutoff, exceeds a
threshold. Here that is replayed over daily scoring cutoffs ``c_0 < c_1 < ... < c_n`` and judged against
the truth file's ``switch_ts`` (``switch`` users jump to a disjoint set of categories at that moment):

- **Flags of day k**: every active user (an event in the ``active_days`` before ``c_k`` and one before
  ``c_{k-1}``) whose distance between ``c_{k-1}`` and ``c_k`` exceeds the threshold.
- **A flag is correct** when the user switched since their previous scored cutoff, or in the scoring
  interval before it (``c_k - 2 * interval <= switch_ts < c_k``): a switch late in a day leaves only an
  event or two before the next scoring, and the evidence arrives with the following one. Every other
  flag is a false alarm. *Precision* = correct flags / flags, over the days.
- **A switch is found** when its user is flagged at one of those two scorings. *Recall* counts the
  switches at least a day old at the second of them (``c_0 <= switch_ts`` and ``switch_ts + 1 day <=
  c_n``); the *delay* of a found switch is the time (hours) and the user's events from the switch to
  the first flag.

Two detectors, the same distance (cosine) on different vectors:

- ``embedding``: the model's interest vectors (the LSTM's hidden state on the PCA axes), what
  :func:`ml_tasks.serving.scoring.interest_shifts` flags;
- ``recency_profile``: the skeptical engineer's first try, the user's recency-decay category shares
  (``w(event_type) * 0.5 ** (age / half_life)`` per category, divided by their sum).

Each detector's threshold (and the profile's half-life) is chosen on validation days only
(:func:`choose`), by F1; the detector with the better validation F1 is the chosen one; both are then
reported on the test days.

    recency_profiles(events, cutoff_ts, half_life_hours, weights=EVENT_WEIGHTS) -> DataFrame
    profile_distances(events, cutoffs, half_life_hours, active_days=7.0) -> DataFrame
    vector_distances(vectors, cutoffs, events, active_days=7.0) -> DataFrame
    flag_metrics(distances, switch_ts, events, threshold, interval_hours=24.0) -> dict
    choose(distances, switch_ts, events, thresholds=None) -> (threshold, metrics)
    robust_threshold(distances, k=5.0, min_distance=0.8) -> float  # the fallback rule's threshold
    rule_distances(distances) -> DataFrame            # that rule per day, as distances over 0
    compare_detectors(embedding, profiles, switch_ts, events, test_from_ts) -> dict
    distance_between(events, users, now_ts, previous_ts, half_life_hours) -> Series  # for scoring

The evaluate step (:func:`ml_tasks.steps.evaluate.shift_flag_replay`) replays daily scorings before the
score cutoff, chooses on the earlier days and judges on the last three; the chosen detector and threshold
go with the model, and the scoring step flags with them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from ml_tasks.contracts import EVENT_WEIGHTS

DISTANCE_COLUMNS = ["day", "cutoff_ts", "previous_cutoff_ts", "user_id", "distance"]


def _cosine_distance(merged: pd.DataFrame, a: str, b: str) -> pd.Series:
    """``1 - cos`` per user of the sparse vectors ``a`` and ``b`` of ``merged`` (``user_id, key, a, b``)."""
    g = merged.assign(ab=merged[a] * merged[b], aa=merged[a] ** 2, bb=merged[b] ** 2).groupby("user_id")
    sums = g[["ab", "aa", "bb"]].sum()
    denom = np.sqrt(sums["aa"] * sums["bb"])
    cos = np.where(denom > 0, sums["ab"] / np.maximum(denom, 1e-12), 1.0)
    return pd.Series(1.0 - cos, index=sums.index)


def recency_profiles(events: pd.DataFrame, cutoff_ts: int, half_life_hours: float,
                     weights: Mapping[str, float] = EVENT_WEIGHTS) -> pd.DataFrame:
    """``user_id, category_idx, share``: each user's recency-decay category shares before ``cutoff_ts``."""
    ev = events[events["event_ts"] < cutoff_ts]
    age = (cutoff_ts - ev["event_ts"].to_numpy(dtype=float)) / 3600.0
    w = ev["event_type"].map(dict(weights)).fillna(1.0).to_numpy(dtype=float) * 0.5 ** (age / half_life_hours)
    prof = pd.DataFrame({"user_id": ev["user_id"].to_numpy(), "category_idx": ev["category_idx"].to_numpy(),
                         "w": w}).groupby(["user_id", "category_idx"], as_index=False)["w"].sum()
    prof["share"] = prof["w"] / prof.groupby("user_id")["w"].transform("sum")
    return prof.drop(columns="w")


def _profile_distance(now: pd.DataFrame, before: pd.DataFrame, users: Any) -> pd.Series:
    """Cosine distance per user in ``users`` of two :func:`recency_profiles` frames."""
    merged = now.merge(before, on=["user_id", "category_idx"], how="outer", suffixes=("_now", "_prev"))
    merged = merged.fillna({"share_now": 0.0, "share_prev": 0.0})
    return _cosine_distance(merged[merged["user_id"].isin(users)], "share_now", "share_prev")


def _active(events: pd.DataFrame, cutoff_ts: int, previous_ts: int, active_days: float) -> pd.Index:
    """Users with an event in the ``active_days`` before ``cutoff_ts`` and one before ``previous_ts``."""
    ts = events["event_ts"].to_numpy()
    users = events["user_id"].to_numpy()
    recent = users[(ts < cutoff_ts) & (ts >= cutoff_ts - active_days * 86_400)]
    return pd.Index(np.intersect1d(pd.unique(recent), pd.unique(users[ts < previous_ts])))


def profile_distances(events: pd.DataFrame, cutoffs: Sequence[int], half_life_hours: float,
                      active_days: float = 7.0) -> pd.DataFrame:
    """Per day ``k >= 1`` and active user: cosine distance of the recency profiles at ``c_{k-1}``, ``c_k``."""
    parts = []
    profiles = {int(c): recency_profiles(events, int(c), half_life_hours) for c in cutoffs}
    for k in range(1, len(cutoffs)):
        prev, now = int(cutoffs[k - 1]), int(cutoffs[k])
        users = _active(events, now, prev, active_days)
        dist = _profile_distance(profiles[now], profiles[prev], users)
        parts.append(pd.DataFrame({"day": k, "cutoff_ts": now, "previous_cutoff_ts": prev,
                                   "user_id": dist.index, "distance": dist.to_numpy()}))
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=DISTANCE_COLUMNS)


def vector_distances(vectors: pd.DataFrame, cutoffs: Sequence[int], events: pd.DataFrame,
                     active_days: float = 7.0) -> pd.DataFrame:
    """The same for dense vectors (``user_id, cutoff_ts, pc_1..pc_n``, e.g. the model's interest vectors)."""
    pcs = [c for c in vectors.columns if c.startswith("pc_")]
    parts = []
    for k in range(1, len(cutoffs)):
        prev, now = int(cutoffs[k - 1]), int(cutoffs[k])
        users = _active(events, now, prev, active_days)
        a = vectors[vectors["cutoff_ts"] == now].set_index("user_id")
        b = vectors[vectors["cutoff_ts"] == prev].set_index("user_id")
        both = users.intersection(a.index).intersection(b.index)
        x, y = a.loc[both, pcs].to_numpy(dtype=float), b.loc[both, pcs].to_numpy(dtype=float)
        denom = np.linalg.norm(x, axis=1) * np.linalg.norm(y, axis=1)
        cos = np.where(denom > 0, (x * y).sum(axis=1) / np.maximum(denom, 1e-12), 1.0)
        parts.append(pd.DataFrame({"day": k, "cutoff_ts": now, "previous_cutoff_ts": prev,
                                   "user_id": np.asarray(both), "distance": 1.0 - cos}))
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=DISTANCE_COLUMNS)


def _correct_and_judged(distances: pd.DataFrame, switch_ts: pd.Series, interval_hours: float
                        ) -> tuple[np.ndarray, pd.Series]:
    """Per row of ``distances``, whether a flag there is correct (the user switched within two intervals
    before its cutoff), and the switches the replay can judge: after the first compared cutoff, an
    interval old at the last scoring, of users in ``distances``."""
    interval = interval_hours * 3600.0
    sw = switch_ts.dropna().astype(float)
    age = (distances["cutoff_ts"] - distances["user_id"].map(sw)).to_numpy(dtype=float)
    correct = (age > 0) & (age <= 2 * interval)
    judged = sw[(sw >= float(distances["previous_cutoff_ts"].min()))
                & (sw + interval <= float(distances["cutoff_ts"].max()))]
    return correct, judged[judged.index.isin(distances["user_id"].unique())]


def flag_metrics(distances: pd.DataFrame, switch_ts: pd.Series, events: pd.DataFrame, threshold: float,
                 interval_hours: float = 24.0) -> dict[str, Any]:
    """Precision, recall, F1 and detection delay of the flags ``distance > threshold`` (see the module doc).

    ``switch_ts``: planted switch time per user id (users without a switch absent or NaN); ``events``:
    ``user_id, event_ts`` (for the delay in events).
    """
    correct_at, judged = _correct_and_judged(distances, switch_ts, interval_hours)
    above = distances["distance"].to_numpy(dtype=float) > threshold
    flags, correct = distances[above], correct_at[above]
    cutoffs = np.sort(distances["cutoff_ts"].unique())
    out: dict[str, Any] = {"threshold": float(threshold), "n_flags": int(len(flags)),
                           "n_correct_flags": int(correct.sum())}
    out["precision"] = float(correct.mean()) if len(flags) else 0.0
    if not len(cutoffs):
        return {**out, "recall": 0.0, "f1": 0.0, "n_switches": 0, "n_found": 0}
    hits = flags[correct & flags["user_id"].isin(judged.index).to_numpy()]
    first = hits.sort_values("cutoff_ts").groupby("user_id")["cutoff_ts"].first()
    out["n_switches"] = int(len(judged))
    out["n_found"] = int(len(first))
    out["recall"] = float(len(first) / len(judged)) if len(judged) else 0.0
    p, r = out["precision"], out["recall"]
    out["f1"] = float(2 * p * r / (p + r)) if p + r > 0 else 0.0
    if len(first):
        delay_h = (first - judged.loc[first.index]) / 3600.0
        ev = events[events["user_id"].isin(first.index)]
        start = ev["user_id"].map(judged).astype(float).to_numpy()
        stop = ev["user_id"].map(first).astype(float).to_numpy()
        ts = ev["event_ts"].to_numpy(dtype=float)
        n_after = ev[(ts >= start) & (ts < stop)].groupby("user_id").size()
        n_after = n_after.reindex(first.index).fillna(0)
        out.update({"delay_hours_median": float(delay_h.median()), "delay_hours_mean": float(delay_h.mean()),
                    "delay_events_median": float(n_after.median()), "delay_events_mean": float(n_after.mean())})
    return out


def _f1_by_threshold(distances: pd.DataFrame, switch_ts: pd.Series, thresholds: np.ndarray,
                     interval_hours: float = 24.0) -> np.ndarray:
    """:func:`flag_metrics`' F1 at every threshold at once, from the same counts: flags, correct flags and
    judged switches found are counts of distances above the threshold (sorted once, searched per threshold)."""
    correct, judged = _correct_and_judged(distances, switch_ts, interval_hours)
    dist = distances["distance"].to_numpy(dtype=float)
    # a judged switch is found at threshold t when one of its user's correct flags has a distance above t
    hit = correct & distances["user_id"].isin(judged.index).to_numpy()
    best_hit = np.sort(distances.loc[hit, "distance"].groupby(distances.loc[hit, "user_id"]).max().to_numpy(float))

    def above(sorted_values: np.ndarray) -> np.ndarray:
        return len(sorted_values) - np.searchsorted(sorted_values, thresholds, side="right")

    n_flags, n_correct, n_found = above(np.sort(dist)), above(np.sort(dist[correct])), above(best_hit)
    with np.errstate(invalid="ignore", divide="ignore"):
        precision = np.where(n_flags > 0, n_correct / np.maximum(n_flags, 1), 0.0)
        recall = n_found / len(judged) if len(judged) else np.zeros(len(thresholds))
        return np.where(precision + recall > 0, 2 * precision * recall / (precision + recall), 0.0)


def choose(distances: pd.DataFrame, switch_ts: pd.Series, events: pd.DataFrame,
           thresholds: Sequence[float] | None = None) -> tuple[float, dict[str, Any]]:
    """The threshold with the best F1 on ``distances`` (validation days); by default a grid over the
    distances' 0th-99.8th percentiles. Ties go to the higher threshold (fewer flags)."""
    if thresholds is None:
        values = distances["distance"].to_numpy(dtype=float)
        thresholds = np.unique(np.quantile(values, np.linspace(0.0, 0.998, 100))) if len(values) else [1.0]
    grid = np.asarray(thresholds, dtype=float)
    if not len(distances) or not distances["cutoff_ts"].nunique():
        t = float(grid[-1])
    else:
        f1 = _f1_by_threshold(distances, switch_ts, grid)
        t = float(grid[len(f1) - 1 - int(np.argmax(f1[::-1]))])  # the last of the best: ties to the higher
    return t, flag_metrics(distances, switch_ts, events, t)


#: the recency profile's half-lives tried on the validation days (hours)
PROFILE_HALF_LIVES: tuple[float, ...] = (6.0, 12.0, 24.0, 48.0, 72.0)


def robust_threshold(distances: np.ndarray, k: float = 5.0, min_distance: float = 0.8) -> float:
    """Median + ``k`` scaled MADs of one scoring's distances, at least ``min_distance`` (scoring's fallback)."""
    median = float(np.median(distances))
    return max(median + k * float(np.median(np.abs(distances - median))) * 1.4826, min_distance)


def rule_distances(distances: pd.DataFrame, k: float = 5.0, min_distance: float = 0.8) -> pd.DataFrame:
    """``distances`` shifted by each day's threshold of the robust rule that scoring falls back on
    (median + ``k`` scaled MADs of the day's distances, at least ``min_distance``): ``distance > 0`` is
    that rule's flag, so :func:`flag_metrics` with threshold 0 judges it."""
    parts = [day.assign(distance=day["distance"] - robust_threshold(day["distance"].to_numpy(dtype=float),
                                                                     k, min_distance))
             for _, day in distances.groupby("cutoff_ts", sort=True)]
    return pd.concat(parts, ignore_index=True) if parts else distances


def compare_detectors(embedding: pd.DataFrame, profiles: Mapping[float, pd.DataFrame], switch_ts: pd.Series,
                      events: pd.DataFrame, test_from_ts: int) -> dict[str, Any]:
    """Choose each detector's threshold (and the profile's half-life) on the validation days (``cutoff_ts
    <= test_from_ts``), the detector by validation F1, and judge all of them on the test days.

    ``embedding``: :func:`vector_distances` of the model's interest vectors; ``profiles``: half-life ->
    :func:`profile_distances`. Also judges the fixed rule scoring uses without a choice
    (:func:`rule_distances`) on the test days. Returns ``{"chosen": {detector, threshold, half_life_hours},
    "validation": {...}, "test": {...}, ...}`` (JSON-safe)."""
    def split(d: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
        return d[d["cutoff_ts"] <= test_from_ts], d[d["cutoff_ts"] > test_from_ts]

    emb_val, emb_test = split(embedding)
    t_emb, v_emb = choose(emb_val, switch_ts, events)
    by_half_life = {hl: choose(split(d)[0], switch_ts, events) for hl, d in profiles.items()}
    half_life = max(by_half_life, key=lambda hl: (by_half_life[hl][1]["f1"], -hl))
    t_prof, v_prof = by_half_life[half_life]
    prof_test = split(profiles[half_life])[1]
    validation = {"embedding": v_emb, "recency_profile": v_prof}
    test = {"embedding": flag_metrics(emb_test, switch_ts, events, t_emb),
            "recency_profile": flag_metrics(prof_test, switch_ts, events, t_prof),
            "embedding_fixed_rule": flag_metrics(rule_distances(emb_test), switch_ts, events, 0.0)}
    detector = "embedding" if v_emb["f1"] > v_prof["f1"] else "recency_profile"
    chosen = {"detector": detector, "threshold": t_emb if detector == "embedding" else t_prof,
              "half_life_hours": float(half_life) if detector == "recency_profile" else None}
    days = sorted(int(c) for c in embedding["cutoff_ts"].unique())
    return {"chosen": chosen, "validation": validation, "test": test,
            "profile_half_life_validation_f1": {str(hl): m[1]["f1"] for hl, m in by_half_life.items()},
            "profile_half_life_hours": float(half_life), "embedding_threshold": t_emb, "profile_threshold": t_prof,
            "validation_days": sum(c <= test_from_ts for c in days),
            "test_days": sum(c > test_from_ts for c in days), "test_from_ts": int(test_from_ts)}


def distance_between(events: pd.DataFrame, users: Sequence[str], now_ts: int, previous_ts: int,
                     half_life_hours: float) -> pd.Series:
    """Cosine distance of each user's recency profile at ``previous_ts`` and at ``now_ts`` (scoring with the
    ``recency_profile`` detector); users without events before ``previous_ts`` are left out."""
    ev = events[events["user_id"].isin(set(users))]
    before = recency_profiles(ev, previous_ts, half_life_hours)
    return _profile_distance(recency_profiles(ev, now_ts, half_life_hours), before, set(before["user_id"]))
