"""Model inputs built from raw events in memory, with the same definitions as the dbt ML tables.

The warehouse computes ``ml_sequences`` and ``ml_pair_features`` in SQL for every (user, cutoff);
a served model receives a user's recent events instead. These functions turn such events into rows
of the same shape for one cutoff per user, so the scoring code is the same in both places (a test
checks the two agree on the same data).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from ml_tasks.features import EVENT_TYPE_INDEX, EVENT_WEIGHTS

DECAY_HALF_LIVES = {"decay_24h": 24.0, "decay_72h": 72.0, "decay_168h": 168.0}
REQUIRED_COLUMNS = ("user_id", "category_id", "event_type", "event_ts")


def normalise_events(events: pd.DataFrame, vocabulary: dict[str, int], oov_index: int) -> pd.DataFrame:
    """Validate and type the input events; map categories to the model's indexes (OOV for unknown)."""
    missing = [c for c in REQUIRED_COLUMNS if c not in events.columns]
    if missing:
        raise ValueError(f"events need the columns {list(REQUIRED_COLUMNS)}; missing {missing}")
    ev = events.loc[:, list(REQUIRED_COLUMNS)].copy()
    ev["user_id"] = ev["user_id"].astype(str)
    ev["category_id"] = ev["category_id"].astype(str)
    ev["event_type"] = ev["event_type"].astype(str).str.strip().str.lower()
    unknown = sorted(set(ev["event_type"]) - set(EVENT_TYPE_INDEX))
    if unknown:
        raise ValueError(f"unknown event types {unknown}; expected one of {sorted(EVENT_TYPE_INDEX)}")
    ts = ev["event_ts"]
    if pd.api.types.is_datetime64_any_dtype(ts):
        ev["event_ts"] = ts.astype("datetime64[s, UTC]" if getattr(ts.dt, "tz", None) else "datetime64[s]") \
            .astype("int64")
    else:
        ev["event_ts"] = pd.to_numeric(ts, errors="raise").astype("int64")
    ev["category_idx"] = ev["category_id"].map(vocabulary).fillna(oov_index).astype("int64")
    return ev.drop_duplicates().sort_values(["user_id", "event_ts", "category_idx", "event_type"],
                                            kind="stable").reset_index(drop=True)


def sequences_at(events: pd.DataFrame, cutoffs: pd.Series, sequence_length: int) -> pd.DataFrame:
    """One ``ml_sequences``-shaped row per user: the last events strictly before the user's cutoff."""
    rows = []
    for user_id, group in events.groupby("user_id", sort=True):
        cutoff = int(cutoffs.loc[user_id])
        hist = group[group["event_ts"] < cutoff]
        tail = hist.iloc[-sequence_length:]
        rows.append({
            "user_id": user_id,
            "cutoff_ts": cutoff,
            "split": "score",
            "n_history_events": len(hist),
            "seq_category_idx": tail["category_idx"].to_numpy(dtype=np.int64).tolist(),
            "seq_event_type_idx": tail["event_type"].map(EVENT_TYPE_INDEX).to_numpy(dtype=np.int64).tolist(),
            "seq_gap_hours": ((cutoff - tail["event_ts"].to_numpy()) / 3600.0).tolist(),
            "label_category_idx": [],
            "label_event_counts": [],
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
