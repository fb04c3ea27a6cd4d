"""Synthetic behaviour logs with planted interest evolution, and the ground truth behind them.

This is the product's default data set and its evaluation testbed. ``generate`` returns canonical
events (``user_id, item_id, category_id, event_type, event_ts``) and a truth frame that says, per user
and day, what the user's latent interest was, so later work can measure how fast a model follows a
change. ``write`` lands them as files in the loader's ``generic`` format. Pure numpy/pandas; importing
the module does nothing.

What is planted, and why each part is there:

- **Latent interests.** Every user has an *old* and a *new* set of ``K`` categories with weights.
  ``stable`` users keep the old set; ``drift`` users move linearly from the old to the new set between
  two per-user times; ``switch`` users jump to the new set at ``switch_ts``, drawn uniformly in 40-80 %
  of the period so the change is visible well before the last days. Old and new sets are disjoint,
  and the new set is drawn through the category graph from the old one ("interests that lead to
  other interests"), its top category most often a direct successor of the old top.
- **Sequential structure.** A sparse transition graph gives each category 2-3 successor categories.
  Events come in sessions; after a session's first browse step, each step follows a graph edge from
  the previous step's category with probability ``P_FOLLOW`` and otherwise draws afresh from the
  latent interest at that moment (plus a little popularity-driven exploration). Frequency and recency
  cannot see this; a sequence model can.
- **Event types.** Every browse step is a ``view``; a ``search`` for the same item sometimes precedes
  it, ``fav`` and ``cart`` sometimes follow it (per-user propensity), a ``buy`` follows some carts
  and a ``review`` some buys, hours later. Mix: view ~85 %, cart ~5 %, search ~4 %, fav ~4 %, buy ~2 %,
  review ~0.5 %.
- **Popularity and activity.** Zipf-like popularity across categories and across the items of a
  category (each item has exactly one category). Users' activity is log-normal (heavy-tailed);
  sessions start on a daily rhythm (UTC, shifted per user) with browse steps minutes apart.

The truth frame has one row per (user, day); days are 24-hour windows from ``start`` (UTC calendar
days for a midnight start). ``top_category_id``/``top_share`` describe the latent interest averaged
over that day (the old/new mixture, not the graph-following or exploration draws).

Everything is vectorised: the only Python loop walks session positions (tens of steps), so 10M events
take seconds, not minutes, and the same config always gives identical frames.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd

from ml_tasks.contracts import CANONICAL_COLUMNS
from ml_tasks.data.synthetic.config import EVENTS_STEM, PROFILES, TRUTH_COLUMNS, TRUTH_FILE, SyntheticConfig
from ml_tasks.data.synthetic.world import generate, transition_graph

__all__ = ["PROFILES", "TRUTH_COLUMNS", "SyntheticConfig", "generate", "transition_graph", "write"]


def _atomic_write(path: Path, writer: Callable[[Path], Any]) -> None:
    fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        writer(tmp)
        tmp.chmod(0o644)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _write_events_csv(events: pd.DataFrame, path: Path) -> None:
    """The ``generic`` CSV: the exact header, unquoted ids, integer epoch seconds."""
    try:  # pyarrow (a pandas dependency here) writes 10M rows ~5x faster than DataFrame.to_csv
        import pyarrow as pa
        import pyarrow.csv as pa_csv
    except ImportError:  # pragma: no cover
        events.to_csv(path, index=False)
        return
    table = pa.Table.from_pandas(events, preserve_index=False)
    with open(path, "wb") as fh:
        fh.write((",".join(events.columns) + "\n").encode())
        pa_csv.write_csv(table, fh, pa_csv.WriteOptions(include_header=False, quoting_style="none"))


def write(config: SyntheticConfig, out_dir: Path, fmt: str = "csv") -> dict:
    """writes out_dir/events.csv (or .parquet) in the project's `generic` format (header exactly
    user_id,item_id,category_id,event_type,event_ts with event_ts epoch seconds int) and
    out_dir/truth.parquet; returns a small JSON-safe dict {"events_path":..., "truth_path":...,
    "n_events":..., "n_users":...}. Write to a temp name and rename (atomic)."""
    if fmt not in ("csv", "parquet"):
        raise ValueError(f"fmt must be 'csv' or 'parquet', got {fmt!r}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    events, truth = generate(config)
    events = events[list(CANONICAL_COLUMNS)]
    events_path = out_dir / f"{EVENTS_STEM}.{fmt}"
    truth_path = out_dir / TRUTH_FILE
    # truth first: whoever watches for the events file finds its truth already there
    _atomic_write(truth_path, lambda p: truth.to_parquet(p, index=False))
    if fmt == "csv":
        _atomic_write(events_path, lambda p: _write_events_csv(events, p))
    else:
        _atomic_write(events_path, lambda p: events.to_parquet(p, index=False))
    return {
        "events_path": str(events_path),
        "truth_path": str(truth_path),
        "n_events": int(len(events)),
        "n_users": int(events["user_id"].nunique()),
    }
