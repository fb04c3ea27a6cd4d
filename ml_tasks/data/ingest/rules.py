"""The loader's rules and constants: accepted timestamps, event-type maps, headers, the raw tables."""

from __future__ import annotations

from ml_tasks.contracts import EVENT_TYPES

#: timestamps before this are rejected (epoch seconds of 1995-01-01T00:00:00Z)
MIN_EVENT_EPOCH = 788_918_400
#: timestamps more than this many seconds after the load time are rejected
MAX_FUTURE_S = 86_400
#: files at least this big get a progress bar (when stderr is a terminal)
PROGRESS_MIN_BYTES = 64 << 20

#: raw event type (lower-cased, trimmed) -> canonical event type, per format
EVENT_TYPE_MAPS: dict[str, dict[str, str]] = {
    "generic": {name: name for name in EVENT_TYPES},
    "taobao": {"pv": "view", "fav": "fav", "cart": "cart", "buy": "buy"},
    "movielens": {},  # every rating is a review
}
MOVIELENS_RATINGS_HEADER = ("userId", "movieId", "rating", "timestamp")
MOVIELENS_MOVIES_HEADER = ("movieId", "title", "genres")
PARQUET_SUFFIXES = (".parquet", ".pq")
DATA_SUFFIXES = (".csv", ".txt", *PARQUET_SUFFIXES)

CHUNK = 4 << 20
SEP = "\x01"  # the line reader's column separator; a file containing it is refused as "not text"
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
