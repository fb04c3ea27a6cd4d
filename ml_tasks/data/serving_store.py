"""Scores, interest trajectories and shift flags written back to the DuckDB warehouse.

Tables in schema ``serving`` (created on first write; downstream dbt models read them as sources):

- ``user_interest_scores(user_id, category_id, score, rank, model_version, scored_at)``: the overall
  ranking (every category; what the user is most likely to touch next, mostly what they already like)
- ``user_discover_scores(user_id, category_id, score, rank, model_version, scored_at)``: the discover
  ranking (only categories outside the user's history; what they are about to discover)
- ``user_interest_trajectory(user_id, cutoff_at, components, model_version, scored_at)``
- ``user_interest_shifts(user_id, scored_at, model_version, previous_cutoff_at, distance, threshold,
  top_category_id)``
- ``scoring_runs(scored_at, model_version, n_users, n_scores, n_shifts, written_at)``

``scored_at`` is the data time of the scoring cutoff (not the wall clock), so writing the same
scoring again replaces its rows: one transaction deletes the (model_version, scored_at) slice and
inserts the new one. A rerun adds no rows.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from ml_tasks.data import warehouse as warehouse_db

DDL = (
    "create schema if not exists serving",
    """create table if not exists serving.user_interest_scores (
        user_id varchar not null, category_id varchar not null, score double not null,
        rank integer not null, model_version integer not null, scored_at timestamp not null)""",
    """create table if not exists serving.user_interest_trajectory (
        user_id varchar not null, cutoff_at timestamp not null, components double[] not null,
        model_version integer not null, scored_at timestamp not null)""",
    """create table if not exists serving.user_interest_shifts (
        user_id varchar not null, scored_at timestamp not null, model_version integer not null,
        previous_cutoff_at timestamp, distance double not null, threshold double not null,
        top_category_id varchar)""",
    """create table if not exists serving.scoring_runs (
        scored_at timestamp not null, model_version integer not null, n_users integer not null,
        n_scores integer not null, n_shifts integer not null, written_at timestamp not null)""",
    """create table if not exists serving.user_discover_scores (
        user_id varchar not null, category_id varchar not null, score double not null,
        rank integer not null, model_version integer not null, scored_at timestamp not null)""",
)
TABLES = ("user_interest_scores", "user_interest_trajectory", "user_interest_shifts", "scoring_runs",
          "user_discover_scores")
_NO_DISCOVER = pd.DataFrame({"user_id": pd.Series(dtype=str), "category_id": pd.Series(dtype=str),
                             "score": pd.Series(dtype=float), "rank": pd.Series(dtype="int64")})


def write_scoring(warehouse: Path, scored_at: int, model_version: int, scores: pd.DataFrame,
                  trajectory: pd.DataFrame, shifts: pd.DataFrame, written_at: int,
                  discover: pd.DataFrame | None = None) -> dict[str, int]:
    """Replace the (model_version, scored_at) slice of every serving table in one transaction.

    ``discover`` (``user_id, category_id, score, rank``: the discover ranking) goes to
    ``user_discover_scores``; without it that slice is left empty.
    """
    discover = _NO_DISCOVER if discover is None else discover
    with warehouse_db.connection(warehouse, read_only=False) as con:
        _write(con, scored_at, model_version, scores, trajectory, shifts, written_at, discover)
    return {"n_scored_users": int(scores["user_id"].nunique()), "n_scores": int(len(scores)),
            "n_discover_scores": int(len(discover)),
            "n_trajectory_rows": int(len(trajectory)), "n_shifts": int(len(shifts))}


def _write(con: Any, scored_at: int, model_version: int, scores: pd.DataFrame, trajectory: pd.DataFrame,
           shifts: pd.DataFrame, written_at: int, discover: pd.DataFrame) -> None:
    try:
        con.execute("begin transaction")
        for stmt in DDL:
            con.execute(stmt)
        params = [model_version, scored_at]
        for table in TABLES:
            con.execute(f"delete from serving.{table} where model_version = ? "  # noqa: S608 (constant)
                        "and scored_at = make_timestamp(?::bigint * 1000000)", params)
        con.register("scores_df", scores)
        con.execute("""insert into serving.user_interest_scores
            select user_id, category_id, score, rank, ?, make_timestamp(?::bigint * 1000000) from scores_df""",
                    params)
        con.register("discover_df", discover)
        con.execute("""insert into serving.user_discover_scores
            select user_id, category_id, score, rank, ?, make_timestamp(?::bigint * 1000000) from discover_df""",
                    params)
        con.register("trajectory_df", trajectory)
        con.execute("""insert into serving.user_interest_trajectory
            select user_id, make_timestamp(cutoff_ts::bigint * 1000000), components, ?,
                   make_timestamp(?::bigint * 1000000) from trajectory_df""", params)
        con.register("shifts_df", shifts)
        con.execute("""insert into serving.user_interest_shifts
            select user_id, make_timestamp(?::bigint * 1000000), ?,
                   make_timestamp(previous_cutoff_ts::bigint * 1000000), distance, threshold, top_category_id
            from shifts_df""", [scored_at, model_version])
        n_users = int(scores["user_id"].nunique())
        con.execute("""insert into serving.scoring_runs values
            (make_timestamp(?::bigint * 1000000), ?, ?, ?, ?, make_timestamp(?::bigint * 1000000))""",
                    [scored_at, model_version, n_users, len(scores), len(shifts), written_at])
        con.execute("commit")
    except BaseException:
        con.execute("rollback")
        raise


def _has_scoring_runs(con: Any) -> bool:
    return bool(con.execute("select count(*) from information_schema.tables "
                            "where table_schema = 'serving' and table_name = 'scoring_runs'").fetchone()[0])


def read_status(warehouse: Path) -> dict[str, Any]:
    """The latest scoring run (read-only; empty when nothing was scored yet)."""
    if not warehouse.exists():
        return {}
    with warehouse_db.read_only_connection(warehouse) as con:
        if not _has_scoring_runs(con):
            return {}
        row = con.execute("""select epoch(scored_at)::bigint, model_version, n_users, n_scores, n_shifts,
                                    epoch(written_at)::bigint
                             from serving.scoring_runs order by written_at desc limit 1""").fetchone()
    if row is None:
        return {}
    keys = ("scored_at", "model_version", "n_scored_users", "n_scores", "n_shifts", "written_at")
    return dict(zip(keys, row, strict=True))


def previous_scoring(warehouse: Path, before_ts: int) -> int | None:
    """``scored_at`` (epoch seconds) of the latest scoring strictly before ``before_ts``."""
    if not warehouse.exists():
        return None
    with warehouse_db.read_only_connection(warehouse) as con:
        if not _has_scoring_runs(con):
            return None
        row = con.execute("select max(epoch(scored_at))::bigint from serving.scoring_runs "
                          "where epoch(scored_at) < ?", [before_ts]).fetchone()
    return None if row is None or row[0] is None else int(row[0])
