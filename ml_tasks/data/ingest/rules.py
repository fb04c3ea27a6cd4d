"""The loader's rules and constants: accepted timestamps, containers, limits, the raw tables."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from ml_tasks.contracts import MAX_REJECT_RATIO
from ml_tasks.data.memory import BUDGET_ENV, duckdb_memory_limit

#: timestamps before this are rejected (epoch seconds of 1995-01-01T00:00:00Z)
MIN_EVENT_EPOCH = 788_918_400
#: timestamps more than this many seconds after the load time are rejected
MAX_FUTURE_S = 86_400
#: files at least this big get a progress bar (when stderr is a terminal)
PROGRESS_MIN_BYTES = 64 << 20
#: by default a file with a larger share of rejected rows fails as a whole (declared exclusions aside)
DEFAULT_MAX_REJECT_RATIO = MAX_REJECT_RATIO

#: a line longer than this (bytes, without its line ending) is quarantined, never given to DuckDB
MAX_LINE_BYTES = 1 << 20
#: DuckDB's own line limit in every read: just above MAX_LINE_BYTES, so DuckDB never meets a longer line
DUCKDB_MAX_LINE_SIZE = MAX_LINE_BYTES + 4096
#: DuckDB's CSV read buffer (its default is 16 x the line limit, per thread: memory a small limit lacks)
CSV_BUFFER_SIZE = 4 * DUCKDB_MAX_LINE_SIZE
#: how much of a quarantined over-long line ``raw.rejected_events.raw_line`` keeps
LONG_LINE_PREVIEW = 1000

PARQUET_SUFFIXES = (".parquet", ".pq")
TEXT_SUFFIXES = (".csv", ".txt", ".tsv")
COMPRESSED_SUFFIXES = (".gz", ".zst")
DATA_SUFFIXES = (*TEXT_SUFFIXES, *(t + c for t in TEXT_SUFFIXES for c in COMPRESSED_SUFFIXES), *PARQUET_SUFFIXES)
#: a landing folder's (or sub-folder's) source definition
SOURCE_FILE_NAME = "_source.yml"
#: characters DuckDB expands in a path; the loader's private copies never contain them
GLOB_CHARS = frozenset("*?[]{}")

GZIP_MAGIC = b"\x1f\x8b"
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"

CHUNK = 4 << 20
SEP = "\x01"  # the line reader's column separator; a file containing it is refused as "not text"

#: the timestamp units a source may declare (``timestamp: {unit: ...}``); ``auto`` = by magnitude
TIMESTAMP_UNITS = ("auto", "s", "ms", "us", "ns", "iso")
#: a delimiter a source may declare -> (read_csv's literal, a SQL expression for it, a RE2 fragment)
DELIMITERS: dict[str, tuple[str, str, str]] = {
    ",": ("','", "','", ","),
    ";": ("';'", "';'", ";"),
    "|": ("'|'", "'|'", "\\|"),
    "\t": ("'\\t'", "chr(9)", "\\t"),
}

#: environment variables that size the loader's DuckDB (defaults: half the memory, every core); when the
#: loader's own limit is unset, the project-wide process budget (dbt's too) applies: DuckDB gets its share
MEMORY_LIMIT_ENV = "IEP_INGEST_MEMORY_LIMIT"
THREADS_ENV = "IEP_INGEST_THREADS"

LOAD_COLUMNS = (
    "load_id", "source_file", "sha256", "format", "size_bytes", "mtime_ns", "rows_read", "rows_loaded",
    "rows_rejected", "rows_duplicate", "blank_lines", "loaded_at", "duration_s",
)

RAW_DDL = (
    "create schema if not exists raw",
    """create table if not exists raw.loads (
        load_id bigint primary key,
        source_file varchar not null,
        sha256 varchar not null unique,
        format varchar not null,
        size_bytes bigint not null,
        mtime_ns bigint,
        rows_read bigint not null,
        rows_loaded bigint not null,
        rows_rejected bigint not null,
        rows_duplicate bigint not null,
        blank_lines bigint not null,
        loaded_at timestamp not null,
        duration_s double not null
    )""",
    """create table if not exists raw.events (
        user_id varchar not null,
        item_id varchar not null,
        category_id varchar not null,
        event_type varchar not null,
        event_ts timestamp not null,
        load_id bigint not null,
        source_file varchar not null,
        line_number bigint not null
    )""",
    """create table if not exists raw.rejected_events (
        load_id bigint not null,
        source_file varchar not null,
        line_number bigint not null,
        raw_line varchar,
        reason varchar not null
    )""",
)


class IngestError(Exception):
    """A file-level problem; ``str()`` is one sentence naming the file, what was expected and found."""


@dataclass(frozen=True)
class Resources:
    """What the loader's DuckDB may use: memory (a DuckDB size such as ``'1GB'``), threads, spill folder."""

    memory_limit: str
    threads: int
    temp_directory: Path

    @classmethod
    def resolve(cls, temp_directory: Path, memory_limit: str | None = None, threads: int | None = None) -> Resources:
        memory = (memory_limit or os.environ.get(MEMORY_LIMIT_ENV)
                  # the process budget, when set: DuckDB gets its share
                  or (duckdb_memory_limit() if os.environ.get(BUDGET_ENV) else _half_the_memory()))
        n = threads or int(os.environ.get(THREADS_ENV) or 0) or os.cpu_count() or 1
        return cls(memory_limit=str(memory), threads=max(int(n), 1), temp_directory=temp_directory)


def _half_the_memory() -> str:
    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return "2GB"
    return f"{max(total // 2 >> 20, 256)}MB"
