"""The DuckDB warehouse: run the dbt project against it, export the ML tables, read it briefly.

DuckDB has a single writer, and while a process holds a read-write connection even read-only opens
fail (``Could not set lock on file``). So every function here opens the file for as short as it can:
``build`` runs dbt as a subprocess (its connection ends with it), ``export_ml_tables`` and ``query``
open it read-only and close it before returning. ML code reads the Parquet exports, not the warehouse.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from ml_tasks.config import Paths, WarehouseConfig
from ml_tasks.contracts import EXPORT_COLUMNS, EXPORT_EVENTS
from ml_tasks.data.memory import duckdb_memory_limit
from ml_tasks.errors import PipelineError

log = logging.getLogger(__name__)

DEFAULT_CONFIG = WarehouseConfig()  # frozen: a safe shared default

#: export file stem -> the warehouse table it copies
EXPORT_TABLES: dict[str, str] = {name: name for name in EXPORT_COLUMNS} | {EXPORT_EVENTS: "fct_events"}


class WarehouseError(PipelineError):
    """The warehouse cannot be read or built; the message says which file and what went wrong."""


class DbtBuildError(WarehouseError):
    """``dbt build`` failed; ``failures`` lists the failing nodes as ``(unique_id, status, message)``."""

    def __init__(self, message: str, failures: list[tuple[str, str, str]] | None = None) -> None:
        super().__init__(message)
        self.failures = failures or []


# --- connections ------------------------------------------------------------------------------------


def _locked_message(path: Path) -> str:
    return (f"{path}: the warehouse is locked by another process (DuckDB has a single writer, and while it "
            "writes nobody can read); retry when that process is done")


@contextmanager
def read_only_connection(path: Path) -> Iterator[Any]:
    """A read-only DuckDB connection to the warehouse, closed on exit. Keep the block short."""
    with connection(path, read_only=True) as con:
        yield con


@contextmanager
def connection(path: Path, read_only: bool = True) -> Iterator[Any]:
    """A DuckDB connection to the warehouse (UTC), closed on exit; a lock held by another process is one
    sentence (:class:`WarehouseError`), not DuckDB's error. A reader needs the file to exist; a writer
    creates it. Keep write blocks short: DuckDB has one writer."""
    import duckdb

    path = Path(path)
    if read_only and not path.exists():
        raise WarehouseError(f"{path}: no warehouse there yet; load events first (python -m ml_tasks ingest)")
    try:
        con = duckdb.connect(str(path), read_only=read_only)
    except duckdb.IOException as exc:
        if "lock" in str(exc).lower():
            raise WarehouseError(_locked_message(path)) from None
        raise WarehouseError(f"{path}: DuckDB cannot open it ({str(exc).splitlines()[0]})") from None
    try:
        con.execute("set TimeZone = 'UTC'")
        con.execute("set memory_limit = ?", [duckdb_memory_limit()])  # the process budget's share, as dbt's
        yield con
    finally:
        con.close()


def query(path: Path, sql: str, params: dict[str, Any] | list[Any] | None = None):
    """Run one read-only query against the warehouse and return a pandas DataFrame.

    Values go in ``params`` (``$name`` or ``?`` placeholders), never into the SQL text.
    """
    with read_only_connection(path) as con:
        return con.execute(sql, params or []).df()


# --- dbt --------------------------------------------------------------------------------------------


def dbt_executable() -> Path:
    """The ``dbt`` of this virtualenv (next to the running Python)."""
    return Path(sys.executable).parent / "dbt"


def dbt_env(paths: Paths) -> dict[str, str]:
    """The environment dbt runs with: the warehouse path, no telemetry, no version check."""
    env = dict(os.environ)
    env.update({
        "IEP_WAREHOUSE": str(paths.warehouse),
        "DBT_SEND_ANONYMOUS_USAGE_STATS": "false",
        "DO_NOT_TRACK": "1",
        "DBT_VERSION_CHECK": "false",
    })
    return env


def dbt_command(paths: Paths, config: WarehouseConfig, *, full_refresh: bool = False,
                select: str | None = None, command: str = "build") -> list[str]:
    project = str(paths.dbt_project_dir)
    cmd = [str(dbt_executable()), command, "--project-dir", project, "--profiles-dir", project,
           "--vars", json.dumps(config.dbt_vars())]
    if full_refresh:
        cmd.append("--full-refresh")
    if select:
        cmd += ["--select", select]
    return cmd


def _node_name(unique_id: str) -> str:
    """``model.interest_pipeline.fct_events`` -> ``fct_events`` (tests keep their hash suffix)."""
    parts = unique_id.split(".", 2)
    return parts[2] if len(parts) == 3 else unique_id


def _read_run_results(target: Path) -> list[dict]:
    try:
        return json.loads((target / "run_results.json").read_text())["results"]
    except (OSError, ValueError, KeyError):
        return []


def _target_dir(paths: Paths, env: dict[str, str]) -> Path:
    target = Path(env.get("DBT_TARGET_PATH", "target"))
    return target if target.is_absolute() else paths.dbt_project_dir / target


def build(paths: Paths, config: WarehouseConfig = DEFAULT_CONFIG, *, full_refresh: bool = False,
          select: str | None = None) -> dict:
    """``dbt build`` (models, unit tests and data tests) against ``paths.warehouse``, as a subprocess.

    Returns ``{"models", "tests", "unit_tests", "seconds", "warehouse", "full_refresh", "select"}``
    (counts of the nodes that passed). Raises :class:`DbtBuildError` naming the failing nodes.
    """
    if not paths.warehouse.exists():
        raise WarehouseError(f"{paths.warehouse}: no warehouse there yet; load events first "
                             "(python -m ml_tasks ingest --events FILE)")
    executable = dbt_executable()
    if not executable.exists():
        raise WarehouseError(f"{executable}: dbt is not installed next to this Python (make install)")
    duckdb_memory_limit()  # a bad IEP_DUCKDB_MEMORY_LIMIT: one sentence here, not a trace from dbt's plugin
    env = dbt_env(paths)
    cmd = dbt_command(paths, config, full_refresh=full_refresh, select=select)
    target = _target_dir(paths, env)
    (target / "run_results.json").unlink(missing_ok=True)  # what is there afterwards is this run's
    started = time.perf_counter()
    log.info("running %s", " ".join(cmd))
    proc = subprocess.run(cmd, env=env, cwd=paths.dbt_project_dir.parent, capture_output=True, text=True)
    seconds = round(time.perf_counter() - started, 3)
    results = _read_run_results(target)
    by_kind: dict[str, int] = {"model": 0, "test": 0, "unit_test": 0}
    failures: list[tuple[str, str, str]] = []
    for result in results:
        uid, status = result.get("unique_id", "?"), str(result.get("status", "?"))
        kind = uid.split(".", 1)[0]
        if status in ("success", "pass"):
            by_kind[kind] = by_kind.get(kind, 0) + 1
        elif status not in ("skipped", "warn", "no-op"):
            message = (result.get("message") or "").strip()
            failures.append((uid, status, message.splitlines()[0] if message else ""))
    if proc.returncode != 0 or failures:
        tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-15:])
        if "lock" in tail.lower() and "could not set lock" in tail.lower():
            raise DbtBuildError(_locked_message(paths.warehouse), failures)
        if failures:
            names = ", ".join(f"{_node_name(uid)} ({status})" for uid, status, _ in failures)
            detail = "; ".join(f"{_node_name(uid)}: {msg}" for uid, _, msg in failures if msg)
            message = f"dbt build failed on {len(failures)} node(s): {names}" + (f" -- {detail}" if detail else "")
        else:
            message = f"dbt build failed (exit {proc.returncode}) before running any node:\n{tail}"
        log.error("%s\n%s", message, tail)
        raise DbtBuildError(message, failures)
    return {
        "models": by_kind.get("model", 0),
        "tests": by_kind.get("test", 0),
        "unit_tests": by_kind.get("unit_test", 0),
        "seconds": seconds,
        "warehouse": str(paths.warehouse),
        "full_refresh": full_refresh,
        "select": select,
    }


# --- exports ----------------------------------------------------------------------------------------


def _sql_path(path: Path) -> str:
    return "'" + str(path).replace("'", "''") + "'"


def export_ml_tables(paths: Paths) -> dict:
    """Copy the ML tables to ``paths.export_dir/<name>.parquet`` (columns of ``features.EXPORT_COLUMNS``).

    Opens the warehouse read-only; each file is written under a temporary name and renamed, so a
    reader never sees half a file. Returns ``{name: rows}`` plus ``export_dir``.
    """
    export_dir = Path(paths.export_dir)
    export_dir.mkdir(parents=True, exist_ok=True)
    counts: dict[str, Any] = {}
    written: list[tuple[Path, Path]] = []
    try:
        with read_only_connection(paths.warehouse) as con:
            for name, columns in EXPORT_COLUMNS.items():
                table = EXPORT_TABLES[name]
                target = export_dir / f"{name}.parquet"
                tmp = export_dir / f".{name}.parquet.{os.getpid()}.tmp"
                select = f"select {', '.join(columns)} from main.{table}"
                try:
                    con.execute(f"copy ({select}) to {_sql_path(tmp)} (format parquet, compression zstd)")
                except Exception as exc:  # noqa: BLE001 - a missing table means "not built yet"
                    raise WarehouseError(f"{paths.warehouse}: cannot export {table} "
                                         f"({str(exc).splitlines()[0]}); run the build first") from None
                written.append((tmp, target))
                counts[name] = int(con.execute(f"select count(*) from main.{table}").fetchone()[0])
        for tmp, target in written:
            os.replace(tmp, target)
    finally:
        for tmp, _ in written:
            tmp.unlink(missing_ok=True)
    counts["export_dir"] = str(export_dir)
    return counts
