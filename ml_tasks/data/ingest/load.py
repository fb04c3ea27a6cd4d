"""Loading one input (one transaction) into ``raw``: the warehouse connection, the load, its faults."""

from __future__ import annotations

import logging
import re
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import duckdb

from ml_tasks.data.ingest.faults import duckdb_sentence, os_sentence
from ml_tasks.data.ingest.plan import Plan, plan_input
from ml_tasks.data.ingest.progress import Progress
from ml_tasks.data.ingest.rules import (
    DEFAULT_MAX_REJECT_RATIO,
    GLOB_CHARS,
    LOAD_COLUMNS,
    MAX_FUTURE_S,
    PROGRESS_MIN_BYTES,
    RAW_DDL,
    IngestError,
    Resources,
)
from ml_tasks.data.ingest.sources import Source, resolve_source
from ml_tasks.data.ingest.sql import (
    LINES_SQL,
    QUARANTINE_SQL,
    TOP_REASONS_SQL,
    csv_fielded_sql,
    judge_sql,
    lookup_sql,
    native_rows_sql,
    parquet_fielded_sql,
    too_many_fields_sql,
)

log = logging.getLogger(__name__)

# --- warehouse connection ---------------------------------------------------------------------------


def connect(warehouse: Path, resources: Resources | None = None) -> Any:
    """A read-write connection to the warehouse with the raw schema in place (creates the file).

    With ``resources``, DuckDB's ``memory_limit``, ``threads`` and ``temp_directory`` are set, so an
    input larger than memory spills to that folder instead of failing."""
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
    if resources is not None:
        try:
            con.execute("set memory_limit = $v", {"v": resources.memory_limit})
        except duckdb.Error:
            con.close()
            raise IngestError(f"{warehouse}: expected a memory limit such as 1GB or 512MB, "
                              f"found '{resources.memory_limit}'.") from None
        con.execute("set threads = $v", {"v": resources.threads})
        con.execute("set temp_directory = $v", {"v": str(resources.temp_directory)})
    for ddl in RAW_DDL:
        con.execute(ddl)
    return con


@contextmanager
def _workdir(warehouse: Path) -> Iterator[Path]:
    """A private folder for the copies and DuckDB's spill files, beside the warehouse (removed after)."""
    base = Path(str(Path(warehouse).expanduser().absolute()) + ".ingest")
    if GLOB_CHARS & set(str(base)):
        base = Path(tempfile.gettempdir()) / "iep-ingest"
        if GLOB_CHARS & set(str(base)):
            raise IngestError(f"{warehouse}: expected a folder for the loader's private copies without "
                              f"* ? [ ] {{ }} in its path, found {base}.")
    for attempt in range(3):  # another loader may remove an empty base folder between the two calls
        base.mkdir(parents=True, exist_ok=True)
        try:
            work = Path(tempfile.mkdtemp(dir=base, prefix="load-"))
            break
        except FileNotFoundError:
            if attempt == 2:
                raise
    try:
        yield work
    finally:
        shutil.rmtree(work, ignore_errors=True)
        try:
            base.rmdir()
        except OSError:
            pass


# --- loading ----------------------------------------------------------------------------------------


def ingest_file(path: Path, fmt: str | Path | Source = "generic", warehouse: Path | None = None, *,
                progress: bool = False, max_reject_ratio: float = DEFAULT_MAX_REJECT_RATIO,
                memory_limit: str | None = None, threads: int | None = None,
                hive_root: Path | None = None) -> dict:
    """Load one file (or Parquet folder) into ``raw.events`` / ``raw.rejected_events`` in one transaction.

    ``fmt`` is a predefined format, the path of a source definition (``*.yml``) or a :class:`Source`.
    Returns the JSON-safe summary ``{"rows_read", "rows_loaded", "rows_rejected", "rows_duplicate",
    "load_id", "file", "sha256", "format", "skipped", "blank_lines", "seconds", ...}``. ``skipped`` is
    true, the counts 0 and ``load_id`` the earlier load's when the same content was loaded before.
    Raises :class:`IngestError` (one sentence; nothing written) for a file-level problem, for more than
    ``max_reject_ratio`` of the rows rejected, and for any DuckDB failure during the load.
    """
    if warehouse is None:
        raise TypeError("ingest_file() needs the warehouse path")
    started = time.perf_counter()
    path = Path(path).expanduser().resolve()
    if not path.exists():
        raise IngestError(f"{path}: expected a data file, found nothing at that path.")
    spec = resolve_source(fmt, path)
    if not 0.0 <= float(max_reject_ratio) <= 1.0:
        raise IngestError(f"{path}: expected max_reject_ratio between 0 and 1, found {max_reject_ratio}.")
    size_hint = path.stat().st_size if path.is_file() else sum(p.stat().st_size for p in path.rglob("*")
                                                                 if p.is_file())
    bar = Progress(progress and size_hint >= PROGRESS_MIN_BYTES and sys.stderr.isatty(), path.name, size_hint)
    Resources.resolve(path.parent, memory_limit, threads)  # a bad memory setting: one sentence, before any work
    resources: Resources | None = None
    try:
        with _workdir(warehouse) as work:
            plan = plan_input(path, spec, work, bar.bytes, hive_root=hive_root)
            copied = time.perf_counter()
            loaded_at = datetime.now(UTC).replace(tzinfo=None)
            resources = Resources.resolve(work / "spill", memory_limit, threads)
            con = connect(warehouse, resources)
            try:
                previous = con.execute("select load_id from raw.loads where sha256 = $sha",
                                       {"sha": plan.sha256}).fetchone()
                if previous:
                    log.info("%s: already loaded as load %s (same sha256); skipped", plan.source_path, previous[0])
                    counts = {"load_id": int(previous[0]), "rows_read": 0, "rows_loaded": 0, "rows_rejected": 0,
                              "rows_duplicate": 0, "blank_lines": 0}
                else:
                    counts = _load(con, plan, loaded_at, bar, started, float(max_reject_ratio))
            finally:
                con.close()
    except duckdb.Error as exc:
        raise IngestError(duckdb_sentence(path, exc, resources)) from None
    except OSError as exc:
        raise IngestError(os_sentence(path, exc)) from None
    finally:
        bar.close()
    return {
        "rows_read": counts["rows_read"],
        "rows_loaded": counts["rows_loaded"],
        "rows_rejected": counts["rows_rejected"],
        "rows_duplicate": counts["rows_duplicate"],
        "load_id": counts["load_id"],
        "file": str(plan.source_path),
        "sha256": plan.sha256,
        "format": spec.name,
        "skipped": bool(previous),
        "blank_lines": counts["blank_lines"],
        "seconds": round(time.perf_counter() - started, 3),
        "stage_seconds": {"copy": round(copied - started, 3), "load": round(time.perf_counter() - copied, 3)},
        **({"files_ignored": [{"file": f, "reason": r} for f, r in plan.ignored]} if plan.ignored else {}),
    }


def _params(plan: Plan, loaded_at: datetime) -> dict[str, Any]:
    spec = plan.spec
    params: dict[str, Any] = {
        "source_file": str(plan.source_path),
        "max_epoch_us": int((loaded_at.replace(tzinfo=UTC).timestamp() + MAX_FUTURE_S) * 1_000_000),
        "skip_lines": plan.skip_lines,
        "ts_format": spec.timestamp_format,
        "constant_event_type": spec.constant_event_type,
        "type_raws": list(spec.event_types),
        "type_targets": list(spec.event_types.values()),
    }
    if plan.kind == "csv":
        assert plan.text is not None
        params["path"] = str(plan.text.path)
    else:
        params["files"] = [copy for copy, _ in plan.files]
    if plan.lookup is not None:
        params["lookup_reason"] = plan.lookup.missing_reason
    return params


def _prepare(con: Any, plan: Plan) -> None:
    """The temp tables the judging reads: category lookup, Parquet file names, the CSV's rows or lines."""
    spec = plan.spec
    if plan.lookup is not None:
        lk = plan.lookup
        sql = lookup_sql(lk.n_fields, lk.key_pos, lk.value_pos, bool(lk.first_of), lk.new_line, spec.delimiter)
        _run(con, sql, {"path": str(lk.copy), "first_of": lk.first_of})
    if plan.kind == "parquet":
        con.execute("create temp table parquet_files as select unnest($copies) as copy, unnest($originals) as original",
                    {"copies": [c for c, _ in plan.files], "originals": [o for _, o in plan.files]})
    elif plan.text is not None and plan.text.simple:
        con.execute(native_rows_sql(plan.n_fields, plan.text.new_line, spec.delimiter), {"path": str(plan.text.path)})
    elif plan.text is not None:
        con.execute(f"create temp table lines as {LINES_SQL.format(new_line=plan.text.new_line)}",
                    {"path": str(plan.text.path)})


def _load(con: Any, plan: Plan, loaded_at: datetime, bar: Progress, started: float,
          max_reject_ratio: float) -> dict[str, int]:
    """The transaction: judge every row, insert the valid ones and the rejects, record the load."""
    spec, text = plan.spec, plan.text
    params = _params(plan, loaded_at)
    if plan.kind == "parquet":
        fielded = parquet_fielded_sql(dict(plan.positions), dict(plan.column_types), plan.n_columns, plan.hive)
    else:
        assert text is not None
        fielded = csv_fielded_sql(dict(plan.positions), plan.n_fields, text.new_line, text.simple, spec.delimiter)
    judged = judge_sql(fielded, n_fields=plan.n_fields if plan.kind == "csv" else 0,
                       unit=spec.timestamp_unit, lookup=plan.lookup is not None,
                       constant_type=spec.constant_event_type is not None)
    con.execute("begin transaction")
    try:
        load_id = int(con.execute("select coalesce(max(load_id), 0) + 1 from raw.loads").fetchone()[0])
        where = {"load_id": load_id, "source_file": str(plan.source_path)}
        with bar.query(con, "reading"):
            _prepare(con, plan)
        _run_hook("before_insert")
        with bar.query(con, "loading"):
            rows_loaded = _run(
                con,
                f"""insert into raw.events
                    select user_id, item_id, category_id, event_type, make_timestamp(ts_us), $load_id,
                           source_file, line_number
                    from ({judged}) where reason = ''""",
                {**params, **where},
            ).fetchone()[0]
        _run_hook("after_events")
        quarantined = text.quarantined if text is not None else 0
        rows_read = _count_rows(con, plan) + quarantined
        rows_rejected = rows_read - rows_loaded
        if rows_rejected:
            with bar.query(con, "rejects"):
                _rejects(con, plan, judged, params, where, rows_rejected, max_reject_ratio, rows_read)
        rows_duplicate = _count_duplicates(con, load_id) if rows_loaded else 0
        blank_lines = max(text.physical_lines - plan.skip_lines - rows_read, 0) if text is not None else 0
        _run_hook("before_record")
        con.execute(
            f"insert into raw.loads ({', '.join(LOAD_COLUMNS)}) values ({', '.join('?' * len(LOAD_COLUMNS))})",
            [load_id, str(plan.source_path), plan.sha256, spec.name, plan.size, plan.mtime_ns,
             rows_read, rows_loaded, rows_rejected, rows_duplicate, blank_lines, loaded_at,
             round(time.perf_counter() - started, 3)],
        )
        for temp in ("lines", "native_rows", "lookup", "rejects", "parquet_files"):
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
    return con.execute(sql, {k: v for k, v in params.items() if re.search(rf"\${k}\b", sql)})


def _count_rows(con: Any, plan: Plan) -> int:
    """Data rows read by DuckDB: every Parquet row; every CSV line after the header, but empty ones."""
    if plan.kind == "parquet":
        return int(_run(con, "select count(*) from read_parquet($files)", {"files": [c for c, _ in plan.files]})
                   .fetchone()[0])
    assert plan.text is not None
    if plan.text.simple:  # no empty line by construction
        return plan.text.physical_lines - plan.skip_lines
    return int(con.execute(
        "select count(*) from lines where line_number > $skip and line is not null and line <> ''",
        {"skip": plan.skip_lines}).fetchone()[0])


def _rejects(con: Any, plan: Plan, judged: str, params: dict, where: dict, expected: int,
             max_reject_ratio: float, rows_read: int) -> None:
    """The rejected rows with their raw text (the quarantined lines' from the side file), the reject
    ratio check, then ``raw.rejected_events``."""
    _run(con, f"""create temp table rejects as
                  select line_number, raw_line, reason, excluded_only, source_file, n_fields
                  from ({judged}) where reason <> ''""", params)
    text = plan.text
    if text is not None and text.simple:  # DuckDB's CSV reader does not keep the line: read those lines
        con.execute(too_many_fields_sql(plan.n_fields, text.new_line, plan.spec.delimiter),
                    {"path": str(text.path)})
    if text is not None and text.quarantined:
        con.execute(QUARANTINE_SQL, {"path": str(text.quarantine_path), "source_file": str(plan.source_path)})
    excluded = int(con.execute("select count(*) from rejects where excluded_only").fetchone()[0])
    counted = expected - excluded
    if rows_read and counted / rows_read > max_reject_ratio + 1e-12:
        raise _too_many_rejects(con, plan, counted, rows_read, max_reject_ratio)
    found = con.execute(
        """insert into raw.rejected_events
           select $load_id, source_file, line_number, raw_line, reason from rejects order by line_number""",
        {"load_id": where["load_id"]},
    ).fetchone()[0]
    if found != expected:  # a bug, not bad data: refuse to record a load that does not reconcile
        raise RuntimeError(f"{plan.source_path}: {expected} rows were neither loaded nor rejected "
                           f"({found} rejects found); nothing was loaded")


def _pct(x: float) -> str:
    return f"{round(100 * x, 1):g}%"


def _too_many_rejects(con: Any, plan: Plan, counted: int, rows_read: int, limit: float) -> IngestError:
    top = con.execute(TOP_REASONS_SQL).fetchall()
    reasons = ", ".join(f"{kind} ({n} rows, first in line {line})" for kind, n, line in top)
    advice = "re-encode the file as UTF-8" if top and top[0][0] == "not UTF-8" else \
        "fix the data or its source definition"
    return IngestError(f"{plan.source_path}: expected at most {_pct(limit)} of the rows rejected, found {counted} "
                       f"of {rows_read} ({_pct(counted / rows_read)}), commonest reasons: {reasons}; nothing was "
                       f"loaded ({advice}, or raise max_reject_ratio to load the valid rows).")


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


def canonical_events(path: Path, fmt: str | Path | Source, scratch: Path) -> Any:
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
