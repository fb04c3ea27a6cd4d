"""Loading a file (one transaction) or every new file of a landing folder into ``raw``."""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import duckdb

from ml_tasks.data.ingest.plan import Plan, check_parquet_columns, plan_file
from ml_tasks.data.ingest.rules import (
    DATA_SUFFIXES,
    LOAD_COLUMNS,
    MAX_FUTURE_S,
    PROGRESS_MIN_BYTES,
    RAW_DDL,
    IngestError,
)
from ml_tasks.data.ingest.scan import Progress
from ml_tasks.data.ingest.sql import LINES_SQL, MOVIES_SQL, csv_fielded_sql, judge_sql, parquet_fielded_sql

log = logging.getLogger(__name__)

# --- warehouse connection ---------------------------------------------------------------------------


def connect(warehouse: Path) -> Any:
    """A read-write connection to the warehouse with the raw schema in place (creates the file)."""
    warehouse = Path(warehouse)
    warehouse.parent.mkdir(parents=True, exist_ok=True)
    try:
        con = duckdb.connect(str(warehouse))
    except duckdb.IOException as exc:
        if "lock" in str(exc).lower():
            raise IngestError(f"{warehouse}: expected to be the warehouse's only writer, found it locked by "
                              "another process (DuckDB allows one writer); retry when that one is done.") from None
        raise IngestError(f"{warehouse}: expected a DuckDB warehouse file, found one DuckDB cannot open "
                          f"({str(exc).splitlines()[0]}).") from None
    con.execute("set TimeZone = 'UTC'")
    for ddl in RAW_DDL:
        con.execute(ddl)
    return con


# --- loading ----------------------------------------------------------------------------------------


def ingest_file(path: Path, fmt: str, warehouse: Path, *, progress: bool = False) -> dict:
    """Load one file into ``raw.events`` / ``raw.rejected_events`` in one transaction.

    Returns the JSON-safe summary ``{"rows_read", "rows_loaded", "rows_rejected", "rows_duplicate",
    "load_id", "file", "sha256", "format", "skipped", "blank_lines", "seconds"}``. ``skipped`` is true,
    the counts 0 and ``load_id`` the earlier load's when the same content was loaded before. Raises
    :class:`IngestError` for file-level problems, before anything is written.
    """
    started = time.perf_counter()
    path = Path(path).expanduser().resolve()
    if not path.exists():
        raise IngestError(f"{path}: expected a data file, found nothing at that path.")
    size_hint = path.stat().st_size if path.is_file() else sum(p.stat().st_size for p in path.glob("*.csv"))
    bar = Progress(progress and size_hint >= PROGRESS_MIN_BYTES and sys.stderr.isatty(), path.name, size_hint)
    try:
        plan = plan_file(path, fmt, bar.bytes)
        loaded_at = datetime.now(UTC).replace(tzinfo=None)
        con = connect(warehouse)
        try:
            previous = con.execute("select load_id from raw.loads where sha256 = $sha",
                                   {"sha": plan.sha256}).fetchone()
            if previous:
                log.info("%s: already loaded as load %s (same sha256); skipped", plan.source, previous[0])
                counts = {"load_id": int(previous[0]), "rows_read": 0, "rows_loaded": 0, "rows_rejected": 0,
                          "rows_duplicate": 0, "blank_lines": 0}
                skipped = True
            else:
                ts_type = check_parquet_columns(con, plan.source) if plan.kind == "parquet" else ""
                counts = _load(con, plan, loaded_at, bar, started, ts_type)
                skipped = False
        finally:
            con.close()
    finally:
        bar.close()
    return {
        "rows_read": counts["rows_read"],
        "rows_loaded": counts["rows_loaded"],
        "rows_rejected": counts["rows_rejected"],
        "rows_duplicate": counts["rows_duplicate"],
        "load_id": counts["load_id"],
        "file": str(plan.source),
        "sha256": plan.sha256,
        "format": fmt,
        "skipped": skipped,
        "blank_lines": counts["blank_lines"],
        "seconds": round(time.perf_counter() - started, 3),
    }


def _load(con: Any, plan: Plan, loaded_at: datetime, bar: Progress, started: float,
          ts_type: str = "") -> dict[str, int]:
    """The transaction: judge every row, insert the valid ones and the rejects, record the load."""
    params: dict[str, Any] = {"path": str(plan.source),
                              "max_epoch": loaded_at.replace(tzinfo=UTC).timestamp() + MAX_FUTURE_S}
    if plan.kind == "parquet":
        fielded = parquet_fielded_sql(ts_type)
    else:
        params["skip_lines"] = plan.skip_lines
        fielded = csv_fielded_sql(plan.fmt, dict(plan.positions), plan.n_fields, plan.new_line, plan.simple)
    judged = judge_sql(fielded, plan.fmt, plan.n_fields)
    con.execute("begin transaction")
    try:
        load_id = int(con.execute("select coalesce(max(load_id), 0) + 1 from raw.loads").fetchone()[0])
        where = {"load_id": load_id, "source_file": str(plan.source)}
        if plan.movies is not None:
            con.execute(MOVIES_SQL, {"path": str(plan.movies)})
        if plan.kind == "csv" and not plan.simple:
            with bar.query(con, "reading"):
                con.execute(f"create temp table lines as {LINES_SQL.format(new_line=plan.new_line)}",
                            {"path": str(plan.source)})
        _run_hook("before_insert")
        with bar.query(con, "loading"):
            rows_loaded = _run(
                con,
                f"""insert into raw.events
                    select user_id, item_id, category_id, event_type,
                           make_timestamp(cast(round(ts_s * 1000000) as bigint)), $load_id, $source_file,
                           line_number
                    from ({judged}) where reason = ''""",
                {**params, **where},
            ).fetchone()[0]
        _run_hook("after_events")
        rows_read = _count_rows(con, plan)
        rows_rejected = rows_read - rows_loaded
        if rows_rejected:
            with bar.query(con, "rejects"):
                _insert_rejects(con, plan, judged, params, where, rows_rejected)
        rows_duplicate = _count_duplicates(con, load_id) if rows_loaded else 0
        blank_lines = max(plan.physical_lines - plan.skip_lines - rows_read, 0) if plan.kind == "csv" else 0
        _run_hook("before_record")
        con.execute(
            f"insert into raw.loads ({', '.join(LOAD_COLUMNS)}) values ({', '.join('?' * len(LOAD_COLUMNS))})",
            [load_id, str(plan.source), plan.sha256, plan.fmt, plan.size, plan.source.stat().st_mtime_ns,
             rows_read, rows_loaded, rows_rejected, rows_duplicate, blank_lines, loaded_at,
             round(time.perf_counter() - started, 3)],
        )
        for temp in ("lines", "movies", "rejects"):
            con.execute(f"drop table if exists {temp}")
        con.execute("commit")
    except BaseException:
        con.execute("rollback")
        raise
    return {"load_id": load_id, "rows_read": int(rows_read), "rows_loaded": int(rows_loaded),
            "rows_rejected": int(rows_rejected), "rows_duplicate": int(rows_duplicate),
            "blank_lines": int(blank_lines)}


def _run(con: Any, sql: str, params: dict[str, Any]) -> Any:
    """Execute with the bound parameters the statement uses (DuckDB refuses unused ones)."""
    return con.execute(sql, {k: v for k, v in params.items() if f"${k}" in sql})


def _count_rows(con: Any, plan: Plan) -> int:
    """Data rows of the file: every line after the header, but empty ones."""
    if plan.kind == "parquet":
        return int(con.execute("select count(*) from read_parquet($path)", {"path": str(plan.source)}).fetchone()[0])
    if plan.simple:  # no empty line by construction
        return plan.physical_lines - plan.skip_lines
    return int(con.execute(
        "select count(*) from lines where line_number > $skip and line is not null and line <> ''",
        {"skip": plan.skip_lines}).fetchone()[0])


def _insert_rejects(con: Any, plan: Plan, judged: str, params: dict, where: dict, expected: int) -> None:
    """The rejected rows, with their raw text. For ``simple`` files the text comes from a second,
    line-by-line read of just those lines (DuckDB's CSV reader does not keep it), and the exact field
    count of a row with too many fields from that text."""
    _run(con, f"create temp table rejects as select * from ({judged}) where reason <> ''", params)
    if plan.kind == "csv" and plan.simple:
        too_many = plan.n_fields + 1
        con.execute(
            f"""
            create or replace temp table rejects as
            with wanted as ({LINES_SQL.format(new_line=plan.new_line)})
            select
                r.line_number,
                w.line as raw_line,
                case when r.n_fields = {too_many}
                     then 'wrong number of fields: expected {plan.n_fields}, found ' || len(string_split(w.line, ','))
                     else r.reason end as reason
            from rejects as r
            join wanted as w on w.line_number = r.line_number
            """,
            {"path": str(plan.source)},
        )
    found = con.execute(
        """insert into raw.rejected_events
           select $load_id, $source_file, line_number, raw_line, reason from rejects order by line_number""",
        where,
    ).fetchone()[0]
    if found != expected:  # a bug, not bad data: refuse to record a load that does not reconcile
        raise RuntimeError(f"{plan.source}: {expected} rows were neither loaded nor rejected "
                           f"({found} rejects found); nothing was loaded")


def _count_duplicates(con: Any, load_id: int) -> int:
    """Rows of this load identical to an earlier row (of this load or of an earlier load).

    Hashes first (cheap); the exact comparison runs only on rows whose hash repeats."""
    return int(con.execute(
        """
        with this_load as (
            select *, hash(user_id, item_id, category_id, event_type, event_ts) as h
            from raw.events where load_id = $load_id
        ),
        earlier_hashes as (
            select distinct hash(user_id, item_id, category_id, event_type, event_ts) as h
            from raw.events where load_id < $load_id
        ),
        candidate_hashes as (
            select h from this_load group by h having count(*) > 1
            union
            select h from this_load semi join earlier_hashes using (h)
        ),
        candidates as (
            select user_id, item_id, category_id, event_type, event_ts, count(*) as n
            from this_load where h in (select h from candidate_hashes)
            group by all
        ),
        earlier as (
            select distinct user_id, item_id, category_id, event_type, event_ts
            from raw.events
            where load_id < $load_id
              and hash(user_id, item_id, category_id, event_type, event_ts) in (select h from candidate_hashes)
        )
        select coalesce(sum(n - 1), 0) + count(earlier.user_id)
        from candidates left join earlier using (user_id, item_id, category_id, event_type, event_ts)
        """,
        {"load_id": load_id},
    ).fetchone()[0])


#: test seam: called at fixed points inside the load transaction (atomicity tests raise from it)
_HOOKS: dict[str, Callable[[], None]] = {}


def _run_hook(name: str) -> None:
    hook = _HOOKS.get(name)
    if hook is not None:
        hook()


# --- a landing folder -------------------------------------------------------------------------------


def _candidates(landing_dir: Path, fmt: str) -> list[Path]:
    if fmt == "movielens":
        found = sorted(landing_dir.glob("ratings.csv")) + sorted(landing_dir.glob("*/ratings.csv"))
        return [p for p in found if not any(part.startswith(".") for part in p.relative_to(landing_dir).parts)]
    return sorted(
        p for p in landing_dir.iterdir()
        if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in DATA_SUFFIXES
    )


def _known_files(warehouse: Path) -> set[tuple[str, int, int]]:
    """(path, size, mtime_ns) of files loaded before, to skip them without hashing them again."""
    if not Path(warehouse).exists():
        return set()
    con = connect(warehouse)
    try:
        rows = con.execute("select source_file, size_bytes, mtime_ns from raw.loads where mtime_ns is not null")
        return {(r[0], int(r[1]), int(r[2])) for r in rows.fetchall()}
    finally:
        con.close()


def ingest_dir(landing_dir: Path, warehouse: Path, fmt: str = "generic") -> dict:
    """Load every new file of a landing folder (one transaction per file).

    A file whose path, size and modification time match an earlier load is skipped without reading it;
    a file whose content was loaded before is skipped after hashing. A file with a file-level problem
    does not stop the others: it is listed under ``files_failed`` (and logged) and the rest load.
    Returns totals over the loaded files plus ``files`` (per-file summaries).
    """
    landing_dir = Path(landing_dir).expanduser().resolve()
    if not landing_dir.is_dir():
        raise IngestError(f"{landing_dir}: expected a landing folder, found "
                          f"{'a file' if landing_dir.exists() else 'nothing'}.")
    known = _known_files(warehouse)
    files: list[dict] = []
    failed: list[dict] = []
    unchanged = 0
    for path in _candidates(landing_dir, fmt):
        stat = path.stat()
        if (str(path), stat.st_size, stat.st_mtime_ns) in known:
            unchanged += 1
            continue
        try:
            files.append(ingest_file(path, fmt, warehouse))
        except IngestError as exc:
            log.warning("%s", exc)
            failed.append({"file": str(path), "error": str(exc)})
    totals = {key: sum(f[key] for f in files) for key in
              ("rows_read", "rows_loaded", "rows_rejected", "rows_duplicate")}
    return {
        **totals,
        "landing_dir": str(landing_dir),
        "format": fmt,
        "files_loaded": sum(1 for f in files if not f["skipped"]),
        "files_skipped": sum(1 for f in files if f["skipped"]) + unchanged,
        "files_failed": failed,
        "files": files,
    }


def canonical_events(path: Path, fmt: str, scratch: Path) -> Any:
    """Any supported file -> canonical events with epoch-second ``event_ts`` (a pandas frame), through
    the real loader into the scratch warehouse ``scratch``, so the row rules are the same."""
    ingest_file(path, fmt, scratch)
    con = duckdb.connect(str(scratch), read_only=True)
    try:
        return con.execute("""select distinct user_id, item_id, category_id, event_type,
                                     epoch(event_ts)::bigint as event_ts
                              from raw.events order by event_ts, user_id""").df()
    finally:
        con.close()
