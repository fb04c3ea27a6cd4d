"""(user, cutoff) samples built in memory, with the warehouse's definitions.

The warehouse computes ``ml_sequences`` and ``ml_pair_features`` in SQL (``dbt_project/models/marts/ml``)
for every (user, cutoff). Tests, benchmarks and the served model build the same rows from canonical
events in memory with these two functions, the one in-memory definition of a sequence, its labels
and the per-pair features (``tests/dbt`` checks that both agree on the same events):

- the sequence of a (user, cutoff) holds the user's last ``sequence_length`` events strictly before
  the cutoff, oldest first;
- its labels are the distinct categories the user touches in ``[cutoff, cutoff + horizon)`` with their
  event counts (a sample with an empty label window is not a labelled sample);
- pair features describe each category the user touched before the cutoff.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import pandas as pd

from ml_tasks.contracts import EVENT_TYPE_INDEX, EVENT_WEIGHTS

DECAY_HALF_LIVES = {"decay_24h": 24.0, "decay_72h": 72.0, "decay_168h": 168.0}
_EMPTY = np.zeros(0, np.int64)


def sequence_rows(users: Iterable[tuple[str, pd.DataFrame]], cutoffs: pd.Series, sequence_length: int,
                  split: str = "score", horizon_hours: float | None = None) -> list[dict]:
    """``ml_sequences`` rows: one per user with events before the user's cutoff (``cutoffs[user]``).

    ``users``: ``(user_id, events)`` pairs, each user's events in time order, with ``category_idx``,
    ``event_type`` and ``event_ts``. With ``horizon_hours``, users without an event in the label
    window are left out; without it (scoring) the labels are empty.
    """
    rows = []
    for user, group in users:
        if user not in cutoffs.index:
            continue
        cutoff = int(cutoffs.loc[user])
        ts = group["event_ts"].to_numpy()
        n = int(np.searchsorted(ts, cutoff, side="left"))
        if n == 0:
            continue
        labels, counts = _EMPTY, _EMPTY
        if horizon_hours is not None:
            end = int(np.searchsorted(ts, cutoff + horizon_hours * 3600, side="left"))
            labels, counts = np.unique(group["category_idx"].to_numpy()[n:end], return_counts=True)
            if not len(labels):
                continue
        tail = slice(max(0, n - sequence_length), n)  # plain arrays: this loop runs once per user
        rows.append({
            "user_id": user,
            "cutoff_ts": cutoff,
            "split": split,
            "n_history_events": n,
            "seq_category_idx": group["category_idx"].to_numpy(dtype=np.int64)[tail].tolist(),
            "seq_event_type_idx": [EVENT_TYPE_INDEX[t] for t in group["event_type"].to_numpy()[tail]],
            "seq_gap_hours": ((cutoff - ts[tail]) / 3600.0).tolist(),
            "label_category_idx": labels.tolist(),
            "label_event_counts": counts.tolist(),
        })
    return rows


def score_rows_at(events: pd.DataFrame, cutoffs: Iterable[int], sequence_length: int) -> pd.DataFrame:
    """:func:`sequence_rows` without labels (``split = "score"``) for every user at each of ``cutoffs``, as
    one frame: the same rows, built from arrays (many users at many cutoffs, e.g. replayed daily scorings).

    ``events``: ``user_id, category_idx, event_type, event_ts``."""
    ev = events.sort_values(["user_id", "event_ts"], kind="stable")
    uid = ev["user_id"].astype(str).to_numpy()
    cat = ev["category_idx"].to_numpy(dtype=np.int64)
    etype = ev["event_type"].map(EVENT_TYPE_INDEX).to_numpy(dtype=np.int64)
    ts = ev["event_ts"].to_numpy(dtype=np.int64)
    if not len(uid):
        return pd.DataFrame(columns=["user_id", "cutoff_ts", "split", "n_history_events", "seq_category_idx",
                                     "seq_event_type_idx", "seq_gap_hours", "label_category_idx",
                                     "label_event_counts"])
    starts = np.flatnonzero(np.r_[True, uid[1:] != uid[:-1]])
    rows = []
    for cutoff in cutoffs:
        cutoff = int(cutoff)
        n_before = np.add.reduceat((ts < cutoff).astype(np.int64), starts)
        for start, n in zip(starts[n_before > 0].tolist(), n_before[n_before > 0].tolist(), strict=True):
            lo, hi = start + max(0, n - sequence_length), start + n
            rows.append({
                "user_id": uid[start], "cutoff_ts": cutoff, "split": "score", "n_history_events": n,
                "seq_category_idx": cat[lo:hi].tolist(), "seq_event_type_idx": etype[lo:hi].tolist(),
                "seq_gap_hours": ((cutoff - ts[lo:hi]) / 3600.0).tolist(),
                "label_category_idx": [], "label_event_counts": [],
            })
    return pd.DataFrame(rows)


def pair_features_at(events: pd.DataFrame, cutoffs: pd.Series, horizon_hours: float) -> pd.DataFrame:
    """``ml_pair_features``-shaped rows: per (user, category touched before the cutoff)."""
    ev = events.copy()
    ev["cutoff_ts"] = ev["user_id"].map(cutoffs).astype("int64")
    ev = ev[ev["event_ts"] < ev["cutoff_ts"]].copy()
    ev["pos"] = ev.groupby("user_id").cumcount()
    ev["n_user"] = ev.groupby("user_id")["pos"].transform("size")
    age_h = (ev["cutoff_ts"] - ev["event_ts"]) / 3600.0
    ev["w"] = ev["event_type"].map(EVENT_WEIGHTS).astype(float)
    for name, half_life in DECAY_HALF_LIVES.items():
        ev[name] = ev["w"] * np.power(0.5, age_h / half_life)
    ev["in_horizon"] = (age_h <= horizon_hours).astype("int64")
    grouped = ev.groupby(["user_id", "cutoff_ts", "category_idx"], sort=True)
    out = grouped.agg(
        n_events=("w", "size"),
        weighted_events=("w", "sum"),
        decay_24h=("decay_24h", "sum"),
        decay_72h=("decay_72h", "sum"),
        decay_168h=("decay_168h", "sum"),
        last_ts=("event_ts", "max"),
        last_pos=("pos", "max"),
        n_user=("n_user", "first"),
        n_events_last_horizon=("in_horizon", "sum"),
    ).reset_index()
    out["hours_since_last"] = (out["cutoff_ts"] - out["last_ts"]) / 3600.0
    out["events_since_last"] = out["n_user"] - 1 - out["last_pos"]
    return out.drop(columns=["last_ts", "last_pos", "n_user"])
