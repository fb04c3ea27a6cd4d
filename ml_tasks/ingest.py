"""Load behaviour log files into the DuckDB warehouse (``raw`` schema) without losing a row.

Every data row of a file ends up in exactly one of two tables: ``raw.events`` (canonical columns, plus
where the row came from) or ``raw.rejected_events`` (file, line number, raw text and the reason), so
``rows_read = rows_loaded + rows_rejected`` always holds. Each load is recorded in ``raw.loads``.

Formats (``ml_tasks.features.SOURCE_FORMATS``):

- ``generic``: CSV with the header ``user_id,item_id,category_id,event_type,event_ts`` (any order), or
  Parquet with those columns. ``event_type`` is one of ``features.EVENT_TYPES``; ``event_ts`` is epoch
  seconds (integer or decimal) or ISO-8601 (naive means UTC).
- ``taobao``: headerless ``user,item,category,behavior,timestamp``; behaviours ``pv`` (-> ``view``),
  ``fav``, ``cart``, ``buy``; epoch seconds.
- ``movielens``: ``ratings.csv`` (``userId,movieId,rating,timestamp``; the path may be the folder) with
  ``movies.csv`` beside it. A rating becomes a ``review`` of the item ``movieId``; the movie's first
  genre is its category.

Row rules (a row breaking one goes to ``raw.rejected_events``; all reasons of a row are listed, joined by
``"; "``): the format's number of fields, well-formed CSV quoting, non-empty user, item and category ids,
an event type in the vocabulary after the format's mapping (case-insensitive), a parseable timestamp
not before 1995-01-01 and not more than one day after the load time. Blank lines are not rows; they are
counted in ``blank_lines``. One event per physical line: quoted fields may hold commas and doubled
quotes, not line breaks.

File-level problems (missing or empty file, not text, not UTF-8, columns that do not match the format,
already locked warehouse) raise :class:`IngestError` with one sentence, before anything is written. A
load is one transaction: a failure part-way leaves no rows. A file whose content (sha256) was loaded
before is skipped. Values are passed to DuckDB as data (bound parameters or file reads), never pasted
into SQL text; the SQL is assembled only from this module's own constants.

``raw.events.event_ts`` is a ``TIMESTAMP`` holding UTC (microsecond precision); dbt staging derives
epoch seconds from it.
"""

from __future__ import annotations

import codecs
import csv
import hashlib
import json
import logging
import os
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ml_tasks.features import CANONICAL_COLUMNS, EVENT_TYPES, SOURCE_FORMATS

log = logging.getLogger(__name__)

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
TAOBAO_FIELDS = ("user_id", "item_id", "category_id", "behavior", "timestamp")
MOVIELENS_RATINGS_HEADER = ("userId", "movieId", "rating", "timestamp")
MOVIELENS_MOVIES_HEADER = ("movieId", "title", "genres")
PARQUET_SUFFIXES = (".parquet", ".pq")
DATA_SUFFIXES = (".csv", ".txt", *PARQUET_SUFFIXES)

_CHUNK = 4 << 20
_SEP = "\x01"  # the line reader's column separator; a file containing it is refused as "not text"
_LOAD_COLUMNS = (
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


# --- reading the file once in Python: hash, text checks, header -------------------------------------


@dataclass(frozen=True)
class _Scan:
    sha256: str
    size: int
    first_line: str  # without BOM and line ending
    head_lines: tuple[str, ...]  # the first few lines, for the format checks
    new_line: str  # '\n' or '\r\n' for DuckDB's reader
    physical_lines: int
    simple: bool  # no quote character and no empty line: DuckDB's CSV reader keeps row = line


def _not_text(path: Path, found: str) -> IngestError:
    return IngestError(f"{path}: expected a UTF-8 text (CSV) file, found {found}.")


def _scan_text(path: Path, digest: Any, on_bytes: Callable[[int], None]) -> _Scan:
    """One pass over a text file: sha256, UTF-8 validity, no NUL/control separators, line endings."""
    size = path.stat().st_size
    decoder = codecs.getincrementaldecoder("utf-8")()
    head = b""
    lines_before = 0
    n_cr = n_crlf = 0
    prev_cr = False
    has_content = False
    last_byte = b""
    has_quote = has_empty = False
    tail = b"\n"  # the bytes before the chunk (an empty line may straddle two chunks)
    with open(path, "rb") as fh:
        first = True
        while chunk := fh.read(_CHUNK):
            digest.update(chunk)
            if first:
                first = False
                head = chunk[:65536]
                if chunk.startswith(b"\x1f\x8b"):
                    raise _not_text(path, "gzip-compressed data (decompress it first)")
                if chunk.startswith(b"PK\x03\x04"):
                    raise _not_text(path, "a zip archive (extract it first)")
                if chunk.startswith(b"PAR1"):
                    raise _not_text(path, "a Parquet file (name it *.parquet)")
            for bad, what in ((b"\x00", "NUL bytes"), (_SEP.encode(), "control character U+0001")):
                pos = chunk.find(bad)
                if pos >= 0:
                    line = lines_before + chunk.count(b"\n", 0, pos) + 1
                    raise _not_text(path, f"binary data ({what} in line {line})")
            try:
                decoder.decode(chunk)
            except UnicodeDecodeError as exc:
                line = lines_before + chunk.count(b"\n", 0, exc.start) + 1
                raise _not_text(path, f"bytes that are not UTF-8 in line {line} "
                                      f"(byte 0x{chunk[exc.start]:02x}; re-encode the file as UTF-8)") from None
            cr = chunk.count(b"\r")
            if cr or prev_cr:
                n_cr += cr
                n_crlf += chunk.count(b"\r\n") + (1 if prev_cr and chunk[:1] == b"\n" else 0)
                bare = n_cr - n_crlf - (1 if chunk.endswith(b"\r") else 0)
                if bare > 0:
                    raise IngestError(f"{path}: expected lines ending in \\n or \\r\\n, found carriage returns "
                                      f"inside lines (old Mac line endings?) near line {lines_before + 1}.")
            prev_cr = chunk.endswith(b"\r")
            last_byte = chunk[-1:]
            has_quote = has_quote or b'"' in chunk
            if not has_empty:
                joined = tail + chunk
                has_empty = b"\n\n" in joined or b"\n\r\n" in joined
                tail = joined[-2:]
            if not has_content and chunk.strip():
                has_content = True
            lines_before += chunk.count(b"\n")
            on_bytes(len(chunk))
        try:
            decoder.decode(b"", final=True)
        except UnicodeDecodeError:
            raise _not_text(path, "a truncated UTF-8 character at the end") from None
    if prev_cr:  # a final bare CR (no \n after it)
        raise IngestError(f"{path}: expected lines ending in \\n or \\r\\n, found a carriage return at the end.")
    if not has_content:
        raise IngestError(f"{path}: expected rows of behaviour events, found an empty file.")
    text = head.decode("utf-8", errors="ignore").lstrip("\ufeff")
    lines = text.split("\n")
    if len(head) == 65536 and len(lines) > 1:
        lines = lines[:-1]  # the last one may be cut
    lines = [ln.rstrip("\r") for ln in lines[:200]]
    return _Scan(
        sha256=digest.hexdigest(),
        size=size,
        first_line=lines[0] if lines else "",
        head_lines=tuple(lines),
        new_line="\\r\\n" if n_crlf else "\\n",
        physical_lines=lines_before + (0 if last_byte == b"\n" else 1),
        simple=not (has_quote or has_empty),
    )


def _csv_fields(line: str) -> list[str]:
    return next(csv.reader([line]), [])


def _hash_file(path: Path, on_bytes: Callable[[int], None], digest: Any | None = None) -> Any:
    digest = digest or hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(_CHUNK):
            digest.update(chunk)
            on_bytes(len(chunk))
    return digest


# --- progress ---------------------------------------------------------------------------------------


class _Progress:
    """A one-line progress bar on stderr: bytes hashed, then DuckDB's own query progress."""

    def __init__(self, enabled: bool, label: str, total_bytes: int) -> None:
        self.enabled = enabled
        self.label = label
        self.total = max(total_bytes, 1)
        self.done = 0
        self._last = 0.0

    def bytes(self, n: int) -> None:
        if not self.enabled:
            return
        self.done += n
        self._draw("checking", self.done / self.total)

    def _draw(self, stage: str, frac: float, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._last < 0.2:
            return
        self._last = now
        frac = min(max(frac, 0.0), 1.0)
        bar = "#" * int(frac * 30)
        sys.stderr.write(f"\r{self.label} {stage:<9} [{bar:<30}] {frac:6.1%}")
        sys.stderr.flush()

    @contextmanager
    def query(self, con: Any, stage: str) -> Iterator[None]:
        """Show DuckDB's progress of the statement(s) run inside the block."""
        if not self.enabled:
            yield
            return
        stop = threading.Event()

        def poll() -> None:
            while not stop.wait(0.25):
                try:
                    pct = con.query_progress()
                except Exception:  # noqa: BLE001 - the bar is best effort
                    return
                if pct is not None and pct >= 0:
                    self._draw(stage, pct / 100.0, force=True)

        thread = threading.Thread(target=poll, daemon=True)
        thread.start()
        try:
            yield
        finally:
            stop.set()
            thread.join()
            self._draw(stage, 1.0, force=True)

    def close(self) -> None:
        if self.enabled:
            sys.stderr.write("\n")
            sys.stderr.flush()


# --- warehouse connection ---------------------------------------------------------------------------


def connect(warehouse: Path) -> Any:
    """A read-write connection to the warehouse with the raw schema in place (creates the file)."""
    import duckdb

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


# --- the formats as SQL over lines ------------------------------------------------------------------


def _sql_str(value: str) -> str:
    """A SQL string literal for this module's own constants (never for data)."""
    return "'" + value.replace("'", "''") + "'"


def _event_type_case(fmt: str, raw: str) -> str:
    mapping = EVENT_TYPE_MAPS[fmt]
    if fmt == "movielens":
        return "'review'"
    whens = " ".join(f"when {_sql_str(k)} then {_sql_str(v)}" for k, v in mapping.items())
    return f"case lower({raw}) {whens} end"


_LINES_SQL = """
    select row_number() over () as line_number, line
    from read_csv($path, columns = {{'line': 'VARCHAR'}}, header = false, delim = '\\x01', quote = '',
                  escape = '', auto_detect = false, strict_mode = false, new_line = '{new_line}')
"""

# a line's fields: a plain split when it has no quote, else a CSV-aware regex split and unquoting
_SPLIT_SQL = """
    select
        line_number,
        line,
        case when contains(line, '"')
             then regexp_extract_all(line || ',', '("(?:[^"]|"")*"|[^,"]*),', 1) else string_split(line, ',')
        end as raw_fields
    from lines
    where line_number > $skip_lines and line is not null and line <> ''
"""

_UNQUOTE_SQL = """
    select
        line_number,
        line,
        case when contains(line, '"')
             then list_transform(raw_fields,
                                 lambda x: case when x[1] = '"' then replace(x[2:-2], '""', '"') else x end)
             else raw_fields
        end as f,
        contains(line, '"') and length(array_to_string(raw_fields, ',')) <> length(line) as bad_quoting,
        len(raw_fields) as n_fields
    from split
"""

# DuckDB's own (parallel) CSV reader, one VARCHAR column more than the format has: a row with too many
# fields shows up there. Empty fields read as '' and missing ones as NULL (nullstr is a character that
# _scan_text refuses). Only for files without quotes and empty lines, where row number = line number.
_NATIVE_SQL = """
    select * from (
        select row_number() over () as line_number, *
        from read_csv($path, columns = {{{columns}}}, header = false, auto_detect = false, quote = '',
                      escape = '', new_line = '{new_line}', null_padding = true, strict_mode = false,
                      nullstr = '\\x01')
    )
    where line_number > $skip_lines
"""


def _judge_sql(fielded: str, fmt: str, n_fields: int) -> str:
    """From a ``fielded`` relation (line_number, line, bad_quoting, n_fields, the raw canonical fields)
    to one row per data row with the parsed values and ``reason`` ('' = valid)."""
    return f"""
        with fielded as ({fielded}),
        typed as (
            select
                *,
                {_event_type_case(fmt, 'event_type_raw')} as event_type,
                {_TS_EPOCH_SQL} as ts_s
            from fielded
        ),
        judged as (
            select
                *,
                case
                    when bad_quoting then 'malformed CSV quoting'
                    when n_fields <> {int(n_fields)}
                        then 'wrong number of fields: expected {int(n_fields)}, found ' || n_fields
                    else concat_ws('; ',
                        case when coalesce(user_id, '') = '' then 'missing user_id' end,
                        case when coalesce(item_id, '') = '' then 'missing item_id' end,
                        {_category_reason(fmt)},
                        {_event_type_reason(fmt)},
                        case
                            when coalesce(ts_raw, '') = '' then 'missing event_ts'
                            when ts_s is null then 'unparseable event_ts ' || {_quoted('ts_raw')}
                            when ts_s < {MIN_EVENT_EPOCH} then 'event_ts before 1995-01-01'
                            when ts_s > $max_epoch then 'event_ts more than 1 day after load time'
                        end
                    )
                end as reason
            from typed
        )
        select
            line_number,
            case when reason <> '' then line end as raw_line,
            n_fields,
            user_id,
            item_id,
            category_id,
            event_type,
            ts_s,
            reason
        from judged
    """


def _csv_fielded_sql(fmt: str, pos: dict[str, int], n_fields: int, new_line: str, simple: bool) -> str:
    """A CSV file -> one row per data row with its canonical fields (by this module's own positions).

    ``simple`` files go through DuckDB's CSV reader (``line`` is filled in later for rejects only);
    the others through the ``lines`` temp table (every physical line with its number) and a split.
    """
    if simple:
        columns = ", ".join(f"'c{i}': 'VARCHAR'" for i in range(1, n_fields + 2))
        source = _NATIVE_SQL.format(columns=columns, new_line=new_line)
        n_found = " ".join(f"when c{i} is not null then {i}" for i in range(n_fields + 1, 0, -1))

        def field(name: str) -> str:
            return f"trim(p.c{int(pos[name])})"

        select_line = f"null::varchar as line, false as bad_quoting, case {n_found} else 0 end as n_fields"
    else:
        source = f"with split as ({_SPLIT_SQL}) {_UNQUOTE_SQL}"

        def field(name: str) -> str:
            return f"trim(p.f[{int(pos[name])}])"

        select_line = "p.line, p.bad_quoting, p.n_fields"
    if fmt == "movielens":
        category, event_type = "m.category_id", "''"
        extra = f", m.movie_found, {field('item_id')} as movie_id"
        joins = f"left join movies as m on m.movie_id = {field('item_id')}"
    else:
        category, event_type, extra, joins = field("category_id"), field("event_type"), "", ""
    return f"""
        select
            p.line_number,
            {select_line},
            {field('user_id')} as user_id,
            {field('item_id')} as item_id,
            {category} as category_id,
            {event_type} as event_type_raw,
            {field('event_ts')} as ts_raw
            {extra}
        from ({source}) as p
        {joins}
    """


def _quoted(col: str) -> str:
    """``'value'`` for a reason string, cut to 60 characters."""
    return "chr(39) || left(" + col + ", 60) || chr(39)"


def _category_reason(fmt: str) -> str:
    if fmt == "movielens":
        return ("case when coalesce(movie_id, '') <> '' and movie_found is null "
                "then 'movieId not found in movies.csv' end")
    return "case when coalesce(category_id, '') = '' then 'missing category_id' end"


def _event_type_reason(fmt: str) -> str:
    if fmt == "movielens":
        return "null"
    return (
        "case when coalesce(event_type_raw, '') = '' then 'missing event_type' "
        f"when event_type is null then 'unknown event_type ' || {_quoted('event_type_raw')} end"
    )


# epoch seconds (double) from an epoch or ISO-8601 string; NULL when it is neither
_TS_EPOCH_SQL = """
    case
        when regexp_full_match(ts_raw, '[0-9]{1,18}') then cast(ts_raw as bigint)::double
        when regexp_full_match(ts_raw, '[+-]?[0-9]{1,18}(\\.[0-9]*)?') then cast(ts_raw as double)
        when regexp_full_match(ts_raw, '[0-9]{4}-[0-9]{2}-[0-9]{2}([T ].*)?')
            then epoch(try_cast(ts_raw as timestamptz))
    end
"""

def _parquet_fielded_sql(ts_type: str) -> str:
    """Parquet rows -> canonical fields as text; a timestamp column becomes epoch seconds first."""
    if ts_type.upper().startswith(("TIMESTAMP", "DATE")):
        ts_raw = "cast(epoch(event_ts) as varchar)"
    else:
        ts_raw = "trim(cast(event_ts as varchar))"
    return f"""
        select
            file_row_number + 1 as line_number,
            to_json({{'user_id': user_id, 'item_id': item_id, 'category_id': category_id,
                      'event_type': event_type, 'event_ts': event_ts}})::varchar as line,
            false as bad_quoting,
            5 as n_fields,
            trim(cast(user_id as varchar)) as user_id,
            trim(cast(item_id as varchar)) as item_id,
            trim(cast(category_id as varchar)) as category_id,
            trim(cast(event_type as varchar)) as event_type_raw,
            {ts_raw} as ts_raw
        from read_parquet($path, file_row_number = true)
    """


_MOVIES_SQL = """
    create temp table movies as
    select
        trim(movieId) as movie_id,
        nullif(trim(split_part(genres, '|', 1)), '') as category_id,
        true as movie_found
    from read_csv($path, header = true, quote = '"', escape = '"', auto_detect = false,
                  columns = {'movieId': 'VARCHAR', 'title': 'VARCHAR', 'genres': 'VARCHAR'})
    qualify row_number() over (partition by trim(movieId)) = 1
"""


# --- the file-level checks per format ---------------------------------------------------------------


@dataclass(frozen=True)
class _Plan:
    """How to read one file, decided by the file-level checks."""

    source: Path
    fmt: str
    kind: str  # 'csv' or 'parquet'
    sha256: str
    size: int
    skip_lines: int = 0  # header lines
    n_fields: int = 5
    positions: tuple[tuple[str, int], ...] = ()  # canonical name -> 1-based field position
    new_line: str = "\\n"
    physical_lines: int = 0
    simple: bool = False
    movies: Path | None = None


def _resolve_movielens(path: Path) -> tuple[Path, Path]:
    ratings = path / "ratings.csv" if path.is_dir() else path
    if not ratings.is_file():
        raise IngestError(f"{path}: expected a MovieLens ratings.csv (or the folder holding it), "
                          "found no ratings.csv there.")
    movies = ratings.parent / "movies.csv"
    if not movies.is_file():
        raise IngestError(f"{ratings}: expected movies.csv beside it (the genres give the categories), "
                          f"found no {movies}.")
    return ratings, movies


def _check_header(path: Path, found_line: str, expected: tuple[str, ...], ordered: bool) -> dict[str, int]:
    found = [c.strip() for c in _csv_fields(found_line)]
    if ordered:
        ok = found == list(expected)
    else:
        ok = sorted(found) == sorted(expected) and len(set(found)) == len(found)
    if not ok:
        shown = ",".join(found) if found_line.strip() else "an empty first line"
        raise IngestError(f"{path}: expected the header {','.join(expected)}, found {shown}.")
    return {name: found.index(name) + 1 for name in expected}


def _check_taobao(path: Path, scan: _Scan) -> None:
    first = [f.strip() for f in _csv_fields(scan.first_line)]
    if len(first) == 5 and not first[4].lstrip("+-").replace(".", "", 1).isdigit() \
            and first[3].lower() not in EVENT_TYPE_MAPS["taobao"]:
        raise IngestError(f"{path}: expected headerless Taobao rows user,item,category,behavior,timestamp, "
                          f"found a header line '{scan.first_line[:80]}' (use --format generic for headed files).")
    counts = [len(_csv_fields(ln)) for ln in scan.head_lines if ln.strip()]
    if counts and 5 not in counts:
        raise IngestError(f"{path}: expected 5 comma-separated fields per line "
                          f"(user,item,category,behavior,timestamp), found {counts[0]} in the first line "
                          "and no line with 5 among the first ones.")


def _plan(path: Path, fmt: str, on_bytes: Callable[[int], None]) -> _Plan:
    """File-level checks; nothing is written. Hashes the content on the way."""
    if fmt not in SOURCE_FORMATS:
        raise IngestError(f"{path}: expected a format among {', '.join(SOURCE_FORMATS)}, found '{fmt}'.")
    if fmt == "movielens":
        ratings, movies = _resolve_movielens(path)
        digest = hashlib.sha256()
        scan = _scan_text(ratings, digest, on_bytes)
        movies_scan = _scan_text(movies, hashlib.sha256(), lambda n: None)
        _check_header(movies, movies_scan.first_line, MOVIELENS_MOVIES_HEADER, ordered=True)
        _check_header(ratings, scan.first_line, MOVIELENS_RATINGS_HEADER, ordered=True)
        digest.update(b"\x00movies.csv\x00")  # the categories come from movies.csv: part of the content
        _hash_file(movies, lambda n: None, digest)
        return _Plan(ratings, fmt, "csv", digest.hexdigest(), scan.size + movies_scan.size, skip_lines=1,
                     n_fields=4, positions=(("user_id", 1), ("item_id", 2), ("event_ts", 4)),
                     new_line=scan.new_line, physical_lines=scan.physical_lines, simple=scan.simple,
                     movies=movies)
    if not path.is_file():
        raise IngestError(f"{path}: expected a data file, found {'a folder' if path.is_dir() else 'nothing'}.")
    if path.stat().st_size == 0:
        raise IngestError(f"{path}: expected rows of behaviour events, found an empty file.")
    if fmt == "generic" and _is_parquet(path):
        digest = _hash_file(path, on_bytes)
        return _Plan(path, fmt, "parquet", digest.hexdigest(), path.stat().st_size)
    scan = _scan_text(path, hashlib.sha256(), on_bytes)
    if fmt == "generic":
        positions = _check_header(path, scan.first_line, CANONICAL_COLUMNS, ordered=False)
        skip = 1
    else:
        _check_taobao(path, scan)
        positions = {name: i + 1 for i, name in enumerate(CANONICAL_COLUMNS)}
        skip = 0
    return _Plan(path, fmt, "csv", scan.sha256, scan.size, skip_lines=skip, n_fields=5,
                 positions=tuple(positions.items()), new_line=scan.new_line, physical_lines=scan.physical_lines,
                 simple=scan.simple)


def _is_parquet(path: Path) -> bool:
    if path.suffix.lower() in PARQUET_SUFFIXES:
        return True
    with open(path, "rb") as fh:
        return fh.read(4) == b"PAR1"


def _check_parquet_columns(con: Any, path: Path) -> str:
    """The file's columns must be the canonical ones; returns the type of ``event_ts``."""
    try:
        described = con.execute("describe select * from read_parquet($path)", {"path": str(path)}).fetchall()
    except Exception as exc:  # noqa: BLE001 - any reader error means "not a readable Parquet file"
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise IngestError(f"{path}: expected a Parquet file, found one DuckDB cannot read ({first}).") from None
    found = [row[0] for row in described]
    if sorted(found) != sorted(CANONICAL_COLUMNS):
        raise IngestError(f"{path}: expected the columns {','.join(CANONICAL_COLUMNS)}, found {','.join(found)}.")
    return str(dict((row[0], row[1]) for row in described)["event_ts"])


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
    bar = _Progress(progress and size_hint >= PROGRESS_MIN_BYTES and sys.stderr.isatty(), path.name, size_hint)
    try:
        plan = _plan(path, fmt, bar.bytes)
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
                ts_type = _check_parquet_columns(con, plan.source) if plan.kind == "parquet" else ""
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


def _load(con: Any, plan: _Plan, loaded_at: datetime, bar: _Progress, started: float,
          ts_type: str = "") -> dict[str, int]:
    """The transaction: judge every row, insert the valid ones and the rejects, record the load."""
    params: dict[str, Any] = {"path": str(plan.source),
                              "max_epoch": loaded_at.replace(tzinfo=UTC).timestamp() + MAX_FUTURE_S}
    if plan.kind == "parquet":
        fielded = _parquet_fielded_sql(ts_type)
    else:
        params["skip_lines"] = plan.skip_lines
        fielded = _csv_fielded_sql(plan.fmt, dict(plan.positions), plan.n_fields, plan.new_line, plan.simple)
    judged = _judge_sql(fielded, plan.fmt, plan.n_fields)
    con.execute("begin transaction")
    try:
        load_id = int(con.execute("select coalesce(max(load_id), 0) + 1 from raw.loads").fetchone()[0])
        where = {"load_id": load_id, "source_file": str(plan.source)}
        if plan.movies is not None:
            con.execute(_MOVIES_SQL, {"path": str(plan.movies)})
        if plan.kind == "csv" and not plan.simple:
            with bar.query(con, "reading"):
                con.execute(f"create temp table lines as {_LINES_SQL.format(new_line=plan.new_line)}",
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
            f"insert into raw.loads ({', '.join(_LOAD_COLUMNS)}) values ({', '.join('?' * len(_LOAD_COLUMNS))})",
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


def _count_rows(con: Any, plan: _Plan) -> int:
    """Data rows of the file: every line after the header, but empty ones."""
    if plan.kind == "parquet":
        return int(con.execute("select count(*) from read_parquet($path)", {"path": str(plan.source)}).fetchone()[0])
    if plan.simple:  # no empty line by construction
        return plan.physical_lines - plan.skip_lines
    return int(con.execute(
        "select count(*) from lines where line_number > $skip and line is not null and line <> ''",
        {"skip": plan.skip_lines}).fetchone()[0])


def _insert_rejects(con: Any, plan: _Plan, judged: str, params: dict, where: dict, expected: int) -> None:
    """The rejected rows, with their raw text. For ``simple`` files the text comes from a second,
    line-by-line read of just those lines (DuckDB's CSV reader does not keep it), and the exact field
    count of a row with too many fields from that text."""
    _run(con, f"create temp table rejects as select * from ({judged}) where reason <> ''", params)
    if plan.kind == "csv" and plan.simple:
        too_many = plan.n_fields + 1
        con.execute(
            f"""
            create or replace temp table rejects as
            with wanted as ({_LINES_SQL.format(new_line=plan.new_line)})
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


def main(argv: list[str] | None = None) -> int:  # pragma: no cover - a debugging aid; the CLI is ml_tasks
    args = sys.argv[1:] if argv is None else argv
    path, fmt, warehouse = Path(args[0]), args[1], Path(args[2] if len(args) > 2 else os.environ["IEP_WAREHOUSE"])
    try:
        print(json.dumps(ingest_file(path, fmt, warehouse, progress=True)))
    except IngestError as exc:
        print(str(exc), file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
