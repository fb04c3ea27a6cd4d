"""Background behaviour: other users' events that train the sequence model and the population
statistics, and are never evaluated.

Pure: frames in, frames out (the file is read by :mod:`ml_tasks.data.background`).

What the background is used for, and why:

- **The LSTM's next-event objective.** :func:`background_rows` builds ``ml_sequences``-shaped rows for
  the background users at the main data's own cutoffs, ``split = "background"`` and *no labels*: they add
  next-event targets (every position of the sequence) and nothing else. Without labels they never reach
  the predictor or the next-window objective (both need a label window), and they are never scored: the
  evaluated users come from the main events only (``protocol.cutoff_context``), and background ids carry
  the prefix ``bg:`` so they cannot collide with them. A row is made at a cutoff only when the user has
  new events since the previous cutoff and at least ``min_events`` events before it, so a short session
  is not repeated at every later cutoff.
- **The transition statistics of the baselines** (``markov``'s transition counts, ``covisitation``'s
  table): a population statistic per source category, which many short sessions estimate well.
  ``popularity`` (and the predictor's popularity feature) stays the evaluated population's own: it means
  "what is in demand in the last horizon", and a background file is usually a slice of another time or
  sampling (the Taobao file is mostly two hours of one night), which would swamp that window.
- **Not** the vocabulary, the candidates or the evaluated users: those stay the main data's, so the
  reports with and without a background file rank the same candidates for the same users.

Time discipline: :func:`prepare_background` drops every background event at or after ``until_ts`` (the
test cutoff), and each row holds only events strictly before its cutoff; the fits then use rows up to
their own limits as for the main data. Background users who also appear in the main data are dropped
(their own events are in the main file).

    prepare_background(events, data, until_ts) -> Background
    background_rows(background, data, max_rows, min_events=2, seed=0) -> DataFrame (ml_sequences rows)
    with_background(data, rows) -> ModelData       # sequences + background rows
    population_events(data, background) -> DataFrame  # for the transition statistics
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import pandas as pd

from ml_tasks.contracts import EVENT_TYPE_INDEX
from ml_tasks.model.dataset import ModelData

#: prefix of background user ids: never equal to an evaluated user's id
BACKGROUND_PREFIX = "bg:"
BACKGROUND_SPLIT = "background"
#: at most this many background rows (a random subsample above it): with ``max_train_sequences`` the
#: LSTM's rows per epoch, so the background adds to the main rows instead of crowding them out
BACKGROUND_MAX_SEQUENCES = 15_000
#: a background row needs this many events before its cutoff (one event has no next-event target)
BACKGROUND_MIN_EVENTS = 2
_COLUMNS = ["user_id", "category_idx", "event_type", "event_ts"]


@dataclass
class Background:
    """Background events cut at ``until_ts``: ``user_id`` (prefixed), ``category_idx`` (the main data's
    index; categories the main data does not know get indexes above its largest), ``event_type``,
    ``event_ts``, sorted by user and time; ``info`` says what was kept and dropped."""

    events: pd.DataFrame
    until_ts: int
    info: dict[str, Any] = field(default_factory=dict)


def prepare_background(events: pd.DataFrame, data: ModelData, until_ts: int) -> Background:
    """Canonical background events -> :class:`Background`: cut at ``until_ts``, main users dropped,
    ids prefixed, categories mapped to the main data's ``category_idx``."""
    ev = events[["user_id", "category_id", "event_type", "event_ts"]].copy()
    ev["user_id"] = ev["user_id"].astype(str)
    ev["category_id"] = ev["category_id"].astype(str)
    ev["event_ts"] = ev["event_ts"].astype("int64")
    n_read, n_users_read = len(ev), ev["user_id"].nunique()
    main_users = set(data.events["user_id"].astype(str))
    overlap = ev["user_id"].isin(main_users)
    after = ev["event_ts"] >= int(until_ts)
    ev = ev[~overlap & ~after]
    known = dict(zip(data.categories["category_id"].astype(str), data.categories["category_idx"], strict=True))
    idx = ev["category_id"].map(known)
    unknown = ev.loc[idx.isna()].groupby("category_id")["event_ts"].min().reset_index()
    unknown = unknown.sort_values(["event_ts", "category_id"])
    start = int(data.categories["category_idx"].max()) + 1 if len(data.categories) else 1
    extra = dict(zip(unknown["category_id"], range(start, start + len(unknown)), strict=True))
    idx = idx.fillna(ev["category_id"].map(extra))
    ev = ev.assign(user_id=BACKGROUND_PREFIX + ev["user_id"], category_idx=idx.astype("int64"))
    ev = ev[_COLUMNS].sort_values(["user_id", "event_ts"], kind="stable").reset_index(drop=True)
    info = {
        "events_read": int(n_read),
        "users_read": int(n_users_read),
        "events_at_or_after_cutoff_dropped": int(after.sum()),
        "users_in_main_data_dropped": int(events.loc[overlap.to_numpy(), "user_id"].astype(str).nunique()),
        "events_used": int(len(ev)),
        "users_used": int(ev["user_id"].nunique()),
        "categories_known_to_main_data": int(ev.loc[ev["category_idx"] < start, "category_idx"].nunique()),
        "categories_only_in_background": int(len(extra)),
        "cut_at_ts": int(until_ts),
    }
    return Background(events=ev, until_ts=int(until_ts), info=info)


def _grid(data: ModelData, until_ts: int) -> np.ndarray:
    """The main data's training/validation cutoffs before ``until_ts``, sorted."""
    seqs = data.sequences
    cut = seqs.loc[seqs["split"].isin(["train", "val"]), "cutoff_ts"].to_numpy(dtype=np.int64)
    return np.unique(cut[cut < until_ts])


def background_rows(background: Background, data: ModelData, max_rows: int | None, min_events: int = 2,
                    seed: int = 0) -> pd.DataFrame:
    """``ml_sequences``-shaped rows of the background users, without labels (see the module doc).

    At each cutoff of the main data's grid where a user has new events since the previous one and at
    least ``min_events`` events before it: the last ``sequence_length`` events before the cutoff.
    Above ``max_rows`` rows, a random subsample (``seed``).
    """
    grid = _grid(data, background.until_ts)
    length = data.sequence_length
    rows: list[dict[str, Any]] = []
    ev = background.events
    if not len(grid) or not len(ev):
        return pd.DataFrame(rows)
    counts = ev.groupby("user_id", sort=False)["event_ts"].transform("size")
    ev = ev[counts >= min_events]
    etype = ev["event_type"].map(EVENT_TYPE_INDEX).fillna(0).to_numpy(dtype=np.int64)
    ts_all = ev["event_ts"].to_numpy(dtype=np.int64)
    cat_all = ev["category_idx"].to_numpy(dtype=np.int64)
    users = ev["user_id"].to_numpy()
    bounds = np.flatnonzero(np.r_[True, users[1:] != users[:-1], True])
    for a, b in zip(bounds[:-1], bounds[1:], strict=True):
        ts = ts_all[a:b]
        for k in np.unique(np.searchsorted(grid, ts, side="right")):
            if k >= len(grid):
                continue
            cutoff = int(grid[k])
            n = int(np.searchsorted(ts, cutoff, side="left"))
            if n < min_events:
                continue
            lo = max(0, n - length)
            rows.append({
                "user_id": users[a],
                "cutoff_ts": cutoff,
                "split": BACKGROUND_SPLIT,
                "n_history_events": n,
                "seq_category_idx": cat_all[a + lo : a + n].tolist(),
                "seq_event_type_idx": etype[a + lo : a + n].tolist(),
                "seq_gap_hours": ((cutoff - ts[lo:n]) / 3600.0).tolist(),
                "label_category_idx": [],
                "label_event_counts": [],
            })
    out = pd.DataFrame(rows)
    if max_rows is not None and len(out) > max_rows:
        out = out.sample(max_rows, random_state=seed).sort_values(["user_id", "cutoff_ts"])
    return out.reset_index(drop=True)


def with_background(data: ModelData, rows: pd.DataFrame) -> ModelData:
    """``data`` with the background rows appended to ``sequences`` (events, categories, protocol unchanged)."""
    if not len(rows):
        return data
    return replace(data, sequences=pd.concat([data.sequences, rows], ignore_index=True))


def population_events(data: ModelData, background: Background | None) -> pd.DataFrame:
    """The main events and the background events (``user_id, category_idx, event_type, event_ts``):
    what the transition statistics of the baselines are counted on."""
    main = data.events[_COLUMNS].assign(user_id=data.events["user_id"].astype(str))
    if background is None or not len(background.events):
        return main
    return pd.concat([main, background.events[_COLUMNS]], ignore_index=True)
