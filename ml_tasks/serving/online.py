"""Model inputs for the served model: a user's recent events in, rows of the warehouse's shape out.

The warehouse computes ``ml_sequences`` and ``ml_pair_features`` in SQL for every (user, cutoff); a
served model receives a user's recent events instead. :func:`normalise_events` checks and types them,
and the rows for one cutoff per user come from ``ml_tasks.model.samples`` (the one in-memory
definition, also behind ``ModelData.from_events``), so the scoring code is the same in both places.
"""

from __future__ import annotations

import pandas as pd

from ml_tasks.contracts import EVENT_TYPE_INDEX
from ml_tasks.model.samples import sequence_rows

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
    return pd.DataFrame(sequence_rows(events.groupby("user_id", sort=True), cutoffs, sequence_length))
