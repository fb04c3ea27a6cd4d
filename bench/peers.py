"""The peers the warehouse is measured against: what a user would write without this project.

Both build the same (user, cutoff) samples as the dbt model ``ml_sequences`` (train, val and test rows:
the cutoff grid back from the test cutoff, the last ``length`` events strictly before each cutoff, the
label window's distinct categories with their counts), from the same ``generic`` CSV, and write them to
Parquet with the columns of ``ml_sequences`` (``split`` and the score rows aside):

- ``pandas_sequences``: DESIGN.md's pandas way: ``read_csv``, filter, sort by user and time, then per
  user ``np.searchsorted`` at each cutoff and a slice;
- ``polars_sequences``: the same in Polars' lazy API: one sort, per-user lists, an as-of search of
  every cutoff in each user's timestamps, list slices.

The definitions are the warehouse's: exact duplicates dropped, categories indexed by first appearance
(then id), events of a user ordered by time, category index, event type and item; ``check_equal``
compares a peer's Parquet with the project's export row by row.
"""

from __future__ import annotations

from pathlib import Path

from ml_tasks.contracts import EVENT_TYPE_INDEX

KEYS = ("user_id", "cutoff_ts")
COLUMNS = ("user_id", "cutoff_ts", "n_history_events", "seq_category_idx", "seq_event_type_idx", "seq_gap_hours",
           "label_category_idx", "label_event_counts")
MIN_TS = 788_918_400  # 1995-01-01, the loader's lower bound


def _grid(min_ts: int, max_ts: int, horizon: int, step: int):
    import numpy as np

    test_cutoff = max_ts - horizon
    grid = test_cutoff - step * np.arange(0, (max_ts - min_ts) // step + 2)
    return grid[(grid == test_cutoff) | ((grid <= test_cutoff - horizon) & (grid > min_ts))][::-1]


def pandas_sequences(events_csv: Path, out: Path, horizon_hours: int = 48, step_hours: int = 12,
                     length: int = 50) -> int:
    import numpy as np
    import pandas as pd

    df = pd.read_csv(events_csv, dtype={"user_id": str, "item_id": str, "category_id": str, "event_type": str})
    df = df.dropna(subset=["user_id", "item_id", "category_id", "event_type", "event_ts"])
    df["event_type"] = df["event_type"].str.strip().str.lower()
    df = df[df["event_type"].isin(list(EVENT_TYPE_INDEX)) & (df["event_ts"] >= MIN_TS)].drop_duplicates()
    first = df.groupby("category_id")["event_ts"].min().reset_index().sort_values(["event_ts", "category_id"])
    df["category_idx"] = df["category_id"].map(pd.Series(np.arange(1, len(first) + 1), index=first["category_id"]))
    df["event_type_idx"] = df["event_type"].map(EVENT_TYPE_INDEX)
    df = df.sort_values(["user_id", "event_ts", "category_idx", "event_type", "item_id"], kind="stable")
    ts, cats, types = (df[c].to_numpy().astype("int64") for c in ("event_ts", "category_idx", "event_type_idx"))
    users = df["user_id"].to_numpy()
    horizon, step = horizon_hours * 3600, step_hours * 3600
    grid = _grid(int(ts.min()), int(ts.max()), horizon, step)
    bounds = np.flatnonzero(np.r_[True, users[1:] != users[:-1], True])
    rows = []
    for a, b in zip(bounds[:-1], bounds[1:], strict=True):
        u_ts, u_cats, u_types = ts[a:b], cats[a:b], types[a:b]
        starts = np.searchsorted(u_ts, grid, side="left")
        ends = np.searchsorted(u_ts, grid + horizon, side="left")
        for cutoff, n, m in zip(grid, starts, ends, strict=True):
            if n == 0 or m == n:
                continue
            lo = max(n - length, 0)
            label, counts = np.unique(u_cats[n:m], return_counts=True)
            rows.append((users[a], int(cutoff), int(n), u_cats[lo:n], u_types[lo:n], (cutoff - u_ts[lo:n]) / 3600.0,
                         label, counts))
    seqs = pd.DataFrame(rows, columns=list(COLUMNS))
    seqs.to_parquet(out, index=False)
    return len(seqs)


def polars_sequences(events_csv: Path, out: Path, horizon_hours: int = 48, step_hours: int = 12,
                     length: int = 50) -> int:
    import polars as pl

    horizon, step = horizon_hours * 3600, step_hours * 3600
    types = pl.DataFrame({"event_type": list(EVENT_TYPE_INDEX), "event_type_idx": list(EVENT_TYPE_INDEX.values())})
    events = (
        pl.scan_csv(events_csv, schema_overrides={"user_id": pl.String, "item_id": pl.String,
                                                  "category_id": pl.String, "event_type": pl.String})
        .drop_nulls(["user_id", "item_id", "category_id", "event_type", "event_ts"])
        .with_columns(pl.col("event_type").str.strip_chars().str.to_lowercase())
        .join(types.lazy(), on="event_type")
        .filter(pl.col("event_ts") >= MIN_TS)
        .unique()
    )
    categories = (events.group_by("category_id").agg(pl.col("event_ts").min().alias("first_ts"))
                  .sort("first_ts", "category_id").with_row_index("category_idx", offset=1))
    events = (events.join(categories.select("category_id", "category_idx"), on="category_id")
              .sort("user_id", "event_ts", "category_idx", "event_type", "item_id")
              .collect())
    grid = _grid(int(events["event_ts"].min()), int(events["event_ts"].max()), horizon, step)
    histories = events.group_by("user_id", maintain_order=True).agg(
        pl.col("event_ts").alias("ts"), pl.col("category_idx").alias("cats"),
        pl.col("event_type_idx").alias("types"))
    before = _count_before(events, grid, 0)
    until = _count_before(events, grid, horizon)
    samples = (
        histories.join(before, on="user_id").join(until, on=["user_id", "cutoff_ts"])
        .filter((pl.col("n") > 0) & (pl.col("m") > pl.col("n")))
        .with_columns(lo=pl.max_horizontal(pl.col("n") - length, 0))
        .with_columns(
            seq_category_idx=pl.col("cats").list.slice(pl.col("lo"), pl.col("n") - pl.col("lo")),
            seq_event_type_idx=pl.col("types").list.slice(pl.col("lo"), pl.col("n") - pl.col("lo")),
            seq_ts=pl.col("ts").list.slice(pl.col("lo"), pl.col("n") - pl.col("lo")),
            label=pl.col("cats").list.slice(pl.col("n"), pl.col("m") - pl.col("n")).list.sort(),
        )
        .with_columns(
            seq_gap_hours=(pl.col("cutoff_ts") - pl.col("seq_ts")) / 3600.0,
            label_category_idx=pl.col("label").list.unique(maintain_order=True),
            label_event_counts=pl.col("label").list.eval(pl.element().rle().struct.field("len")),
        )
        .rename({"n": "n_history_events"})
        .select(COLUMNS)
    )
    samples.write_parquet(out)
    return samples.height


def _count_before(events, grid, shift: int):
    """(user_id, cutoff_ts, n|m): how many of the user's events lie before ``cutoff + shift``."""
    import polars as pl

    positions = (events.select("user_id", "event_ts")
                 .with_columns(pos=pl.int_range(1, pl.len() + 1).over("user_id"))
                 .sort("event_ts"))
    marks = (events.select("user_id").unique()
             .join(pl.DataFrame({"cutoff_ts": grid}), how="cross")
             .with_columns(mark=pl.col("cutoff_ts") + shift - 1)
             .sort("mark"))
    found = marks.join_asof(positions, left_on="mark", right_on="event_ts", by="user_id", strategy="backward")
    name = "n" if shift == 0 else "m"
    return found.select("user_id", "cutoff_ts", pl.col("pos").fill_null(0).alias(name))


def check_equal(peer: Path, project: Path) -> dict:
    """Row-by-row comparison of a peer's samples with the project's ``ml_sequences`` export (DuckDB)."""
    import duckdb

    con = duckdb.connect()
    has_split = "split" in [r[0] for r in con.execute(f"describe select * from read_parquet('{project}')").fetchall()]
    project_rows = (f"select {', '.join(COLUMNS)} from read_parquet('{project}')"
                    + (" where split <> 'score'" if has_split else ""))
    peer_rows = f"select {', '.join(COLUMNS)} from read_parquet('{peer}')"
    rounded = ("list_transform(seq_gap_hours, lambda g: round(g, 6)) as seq_gap_hours")
    norm = (f"select user_id, cutoff_ts::bigint as cutoff_ts, n_history_events::bigint as n_history_events, "
            f"seq_category_idx::bigint[] as seq_category_idx, seq_event_type_idx::bigint[] as seq_event_type_idx, "
            f"{rounded}, label_category_idx::bigint[] as label_category_idx, "
            f"label_event_counts::bigint[] as label_event_counts from ")
    n_project, n_peer, n_diff = con.execute(f"""
        with a as ({norm}({project_rows})), b as ({norm}({peer_rows}))
        select (select count(*) from a), (select count(*) from b),
               (select count(*) from (select * from a except all select * from b))
             + (select count(*) from (select * from b except all select * from a))
    """).fetchone()
    return {"rows_project": int(n_project), "rows_peer": int(n_peer), "rows_different": int(n_diff),
            "equal": n_project == n_peer and n_diff == 0}
