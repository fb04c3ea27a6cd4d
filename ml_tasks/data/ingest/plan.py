"""The file-level checks per format, before anything is written: what to read and how."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ml_tasks.contracts import CANONICAL_COLUMNS, SOURCE_FORMATS
from ml_tasks.data.ingest.rules import (
    EVENT_TYPE_MAPS,
    MOVIELENS_MOVIES_HEADER,
    MOVIELENS_RATINGS_HEADER,
    PARQUET_SUFFIXES,
    IngestError,
)
from ml_tasks.data.ingest.scan import Scan, csv_fields, hash_file, scan_text

# --- the file-level checks per format ---------------------------------------------------------------


@dataclass(frozen=True)
class Plan:
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
    found = [c.strip() for c in csv_fields(found_line)]
    if ordered:
        ok = found == list(expected)
    else:
        ok = sorted(found) == sorted(expected) and len(set(found)) == len(found)
    if not ok:
        shown = ",".join(found) if found_line.strip() else "an empty first line"
        raise IngestError(f"{path}: expected the header {','.join(expected)}, found {shown}.")
    return {name: found.index(name) + 1 for name in expected}


def _check_taobao(path: Path, scan: Scan) -> None:
    first = [f.strip() for f in csv_fields(scan.first_line)]
    if len(first) == 5 and not first[4].lstrip("+-").replace(".", "", 1).isdigit() \
            and first[3].lower() not in EVENT_TYPE_MAPS["taobao"]:
        raise IngestError(f"{path}: expected headerless Taobao rows user,item,category,behavior,timestamp, "
                          f"found a header line '{scan.first_line[:80]}' (use --format generic for headed files).")
    counts = [len(csv_fields(ln)) for ln in scan.head_lines if ln.strip()]
    if counts and 5 not in counts:
        raise IngestError(f"{path}: expected 5 comma-separated fields per line "
                          f"(user,item,category,behavior,timestamp), found {counts[0]} in the first line "
                          "and no line with 5 among the first ones.")


def plan_file(path: Path, fmt: str, on_bytes: Callable[[int], None]) -> Plan:
    """File-level checks; nothing is written. Hashes the content on the way."""
    if fmt not in SOURCE_FORMATS:
        raise IngestError(f"{path}: expected a format among {', '.join(SOURCE_FORMATS)}, found '{fmt}'.")
    if fmt == "movielens":
        ratings, movies = _resolve_movielens(path)
        digest = hashlib.sha256()
        scan = scan_text(ratings, digest, on_bytes)
        movies_scan = scan_text(movies, hashlib.sha256(), lambda n: None)
        _check_header(movies, movies_scan.first_line, MOVIELENS_MOVIES_HEADER, ordered=True)
        _check_header(ratings, scan.first_line, MOVIELENS_RATINGS_HEADER, ordered=True)
        digest.update(b"\x00movies.csv\x00")  # the categories come from movies.csv: part of the content
        hash_file(movies, lambda n: None, digest)
        return Plan(ratings, fmt, "csv", digest.hexdigest(), scan.size + movies_scan.size, skip_lines=1,
                     n_fields=4, positions=(("user_id", 1), ("item_id", 2), ("event_ts", 4)),
                     new_line=scan.new_line, physical_lines=scan.physical_lines, simple=scan.simple,
                     movies=movies)
    if not path.is_file():
        raise IngestError(f"{path}: expected a data file, found {'a folder' if path.is_dir() else 'nothing'}.")
    if path.stat().st_size == 0:
        raise IngestError(f"{path}: expected rows of behaviour events, found an empty file.")
    if fmt == "generic" and _is_parquet(path):
        digest = hash_file(path, on_bytes)
        return Plan(path, fmt, "parquet", digest.hexdigest(), path.stat().st_size)
    scan = scan_text(path, hashlib.sha256(), on_bytes)
    if fmt == "generic":
        positions = _check_header(path, scan.first_line, CANONICAL_COLUMNS, ordered=False)
        skip = 1
    else:
        _check_taobao(path, scan)
        positions = {name: i + 1 for i, name in enumerate(CANONICAL_COLUMNS)}
        skip = 0
    return Plan(path, fmt, "csv", scan.sha256, scan.size, skip_lines=skip, n_fields=5,
                 positions=tuple(positions.items()), new_line=scan.new_line, physical_lines=scan.physical_lines,
                 simple=scan.simple)


def _is_parquet(path: Path) -> bool:
    if path.suffix.lower() in PARQUET_SUFFIXES:
        return True
    with open(path, "rb") as fh:
        return fh.read(4) == b"PAR1"


def check_parquet_columns(con: Any, path: Path) -> str:
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
