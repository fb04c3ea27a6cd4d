"""The file-level checks of an input against its source, before anything is written: what to read and how.

Planning makes the private copies (``scan``), so every check runs on the bytes that will be loaded.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import duckdb

from ml_tasks.contracts import CANONICAL_COLUMNS
from ml_tasks.data.ingest.rules import GLOB_CHARS, MAX_LINE_BYTES, PARQUET_SUFFIXES, IngestError
from ml_tasks.data.ingest.scan import TextCopy, copy_bytes, copy_text, csv_fields, peek_lines
from ml_tasks.data.ingest.sources import Lookup, Source

HINT = "other layouts need a source definition (--source SOURCE.yml)"


@dataclass(frozen=True)
class LookupPlan:
    """The private copy of a category lookup (a CSV with a header) and where its two columns are."""

    copy: Path
    n_fields: int
    key_pos: int
    value_pos: int
    first_of: str | None
    missing_reason: str  # e.g. "movieId not found in movies.csv"
    new_line: str


@dataclass(frozen=True)
class Plan:
    """How to read one input, decided by the file-level checks."""

    source_path: Path  # what raw.loads names: the file (ratings.csv for MovieLens) or the Parquet folder
    spec: Source
    kind: str  # 'csv' or 'parquet'
    sha256: str
    size: int
    mtime_ns: int | None
    text: TextCopy | None = None
    skip_lines: int = 0  # header lines
    n_fields: int = 5
    positions: tuple[tuple[str, int], ...] = ()  # canonical name -> 1-based field (or Parquet column) position
    files: tuple[tuple[str, str], ...] = ()  # Parquet: (private copy, original file)
    hive: bool = False
    n_columns: int = 0  # Parquet: columns of the relation (hive keys included)
    column_types: tuple[tuple[str, str], ...] = ()  # Parquet: canonical name -> DuckDB type
    lookup: LookupPlan | None = None
    ignored: tuple[tuple[str, str], ...] = ()  # files of a Parquet folder that are not read, and why


def locate(path: Path, spec: Source) -> tuple[Path, Lookup | None]:
    """The data file (MovieLens: ratings.csv in the folder) and the category lookup, if any."""
    if spec.name != "movielens":
        return path, spec.category_from
    ratings = path / "ratings.csv" if path.is_dir() else path
    if not ratings.is_file():
        raise IngestError(f"{path}: expected a MovieLens ratings.csv (or the folder holding it), "
                          "found no ratings.csv there.")
    movies = ratings.parent / "movies.csv"
    if not movies.is_file():
        raise IngestError(f"{ratings}: expected movies.csv beside it (the genres give the categories), "
                          f"found no {movies}.")
    assert spec.category_from is not None
    return ratings, replace(spec.category_from, path=movies)


def plan_input(path: Path, spec: Source, work: Path, on_bytes: Callable[[int], None],
               hive_root: Path | None = None) -> Plan:
    """File-level checks and the private copies; nothing is written to the warehouse.

    ``hive_root``: for a single Parquet file, the folder from which ``key=value`` folders on its path
    are partition columns (the landing scan passes its root)."""
    data, lookup = locate(path, spec)
    if data.is_dir():
        return _plan_parquet(data, sorted(_parquet_files(data)), spec, work, on_bytes, data)
    if not data.is_file():
        raise IngestError(f"{data}: expected a data file, found nothing at that path.")
    if data.stat().st_size == 0:
        raise IngestError(f"{data}: expected rows of behaviour events, found an empty file.")
    if spec.header and spec.name != "movielens" and _is_parquet(data):
        root = hive_root if hive_root is not None and data.is_relative_to(hive_root) else data.parent
        return _plan_parquet(data, [data], spec, work, on_bytes, root, single=True)
    early = peek_lines(data)
    if early and (spec.header or any(line.strip() for line in early)):
        _positions(data, spec, early)  # a wrong header fails before the whole file is copied
    before = data.stat()
    digest = hashlib.sha256()
    text = copy_text(data, work, [digest], on_bytes)
    _check_unchanged(data, before)
    if spec.header and text.first_quarantined and text.first_quarantined[0] == 1:
        found = "bytes that are not UTF-8" if text.first_quarantined[1] == "not UTF-8" else "a longer line"
        raise IngestError(f"{data}: expected a UTF-8 header line of at most {MAX_LINE_BYTES} bytes, found {found} "
                          "in line 1.")
    skip, n_fields, positions = _positions(data, spec, text.head_lines)
    lookup_plan = _plan_lookup(lookup, spec, work, digest) if lookup is not None else None
    return Plan(data, spec, "csv", text.sha256 if lookup_plan is None else digest.hexdigest(),
                text.size, before.st_mtime_ns, text=text, skip_lines=skip, n_fields=n_fields,
                positions=tuple(positions.items()), lookup=lookup_plan)


def _check_unchanged(path: Path, before: os.stat_result) -> None:
    after = path.stat()
    if (after.st_size, after.st_mtime_ns) != (before.st_size, before.st_mtime_ns):
        raise IngestError(f"{path}: expected a file at rest, found it changing while it was read "
                          "(a writer is still at work); nothing was loaded, retry when it is done.")


def _is_parquet(path: Path) -> bool:
    if path.name.lower().endswith(PARQUET_SUFFIXES):
        return True
    with open(path, "rb") as fh:
        return fh.read(4) == b"PAR1"


# --- text: the header (or the fields of a headerless layout) -----------------------------------------


def _positions(path: Path, spec: Source, head: list[str] | tuple[str, ...]) -> tuple[int, int, dict[str, int]]:
    """(header lines, fields per row, canonical name -> 1-based field) from the first lines."""
    if not spec.header:
        return _headerless(path, spec, head)
    first = head[0] if head else ""
    found = [c.strip() for c in csv_fields(first, spec.delimiter)]
    shown = ",".join(found) if first.strip() else "an empty first line"
    wanted = [str(c) for c in spec.columns.values()]
    if spec.ordered_header is not None:
        if found != list(spec.ordered_header):
            raise IngestError(f"{path}: expected the header {','.join(spec.ordered_header)}, found {shown}.")
    elif spec.exact_header:
        if sorted(found) != sorted(wanted) or len(set(found)) != len(found):
            raise IngestError(f"{path}: expected the header {','.join(wanted)}, found {shown}; {HINT}.")
    else:
        for canonical, column in spec.columns.items():
            if found.count(str(column)) != 1:
                what = "twice" if found.count(str(column)) > 1 else "not"
                raise IngestError(f"{path}: expected the column '{column}' (columns.{canonical} in {spec.label}) "
                                  f"once in the header, found it {what} in the header {shown}.")
    return 1, len(found), {c: found.index(str(col)) + 1 for c, col in spec.columns.items()}


def _headerless(path: Path, spec: Source, head: list[str] | tuple[str, ...]) -> tuple[int, int, dict[str, int]]:
    positions = {c: int(p) for c, p in spec.columns.items()}
    lines = [ln for ln in head if ln.strip()]
    first = [f.strip() for f in csv_fields(lines[0], spec.delimiter)] if lines else []
    ts, et = positions.get("event_ts"), positions.get("event_type")
    if first and ts and et and len(first) >= max(ts, et):
        numeric = first[ts - 1].lstrip("+-").replace(".", "", 1).isdigit()
        if not numeric and first[et - 1].lower() not in spec.event_types:
            hint = (f"set header: true in {spec.label}" if spec.yml else "use --format generic for headed files")
            raise IngestError(f"{path}: expected headerless {spec.layout}, found a header line "
                              f"'{lines[0][:80]}' ({hint}).")
    counts = [len(csv_fields(ln, spec.delimiter)) for ln in lines]
    if spec.n_fields is not None:
        if counts and spec.n_fields not in counts:
            raise IngestError(f"{path}: expected {spec.n_fields} comma-separated fields per line "
                              f"({spec.field_names}), found {counts[0]} in the first line "
                              f"and no line with {spec.n_fields} among the first ones.")
        return 0, spec.n_fields, positions
    n_fields = counts[0] if counts else max(positions.values())
    if max(positions.values()) > n_fields:
        raise IngestError(f"{path}: expected at least {max(positions.values())} fields per line (the positions "
                          f"in {spec.label}), found {n_fields} in the first line.")
    return 0, n_fields, positions


def _plan_lookup(lookup: Lookup, spec: Source, work: Path, digest: Any) -> LookupPlan:
    """Copy and check the category lookup; its bytes are part of the load's sha256."""
    digest.update(b"\x00" + lookup.path.name.encode() + b"\x00")
    before = lookup.path.stat()
    copy = copy_text(lookup.path, work, [digest], lambda n: None)
    _check_unchanged(lookup.path, before)
    if copy.first_quarantined is not None:
        line, reason = copy.first_quarantined
        raise IngestError(f"{lookup.path}: expected a category table of UTF-8 lines of at most {MAX_LINE_BYTES} "
                          f"bytes, found {reason} in line {line}.")
    first = copy.head_lines[0] if copy.head_lines else ""
    found = [c.strip() for c in csv_fields(first, spec.delimiter)]
    shown = ",".join(found) if first.strip() else "an empty first line"
    if lookup.header is not None and found != list(lookup.header):
        raise IngestError(f"{lookup.path}: expected the header {','.join(lookup.header)}, found {shown}.")
    for key, column in (("key", lookup.key), ("value", lookup.value)):
        if found.count(column) != 1:
            raise IngestError(f"{lookup.path}: expected the column '{column}' (category_from.{key} in "
                              f"{spec.label}) once in the header, found the header {shown}.")
    return LookupPlan(copy.path, len(found), found.index(lookup.key) + 1, found.index(lookup.value) + 1,
                      lookup.first_of, f"{lookup.key} not found in {lookup.path.name}", copy.new_line)


# --- Parquet: a file, or a folder (flat or hive-partitioned) ---------------------------------------------


def _parquet_files(folder: Path) -> list[Path]:
    found = [p for p in folder.rglob("*") if p.is_file() and p.name.lower().endswith(PARQUET_SUFFIXES)
             and not any(part.startswith((".", "_")) for part in p.relative_to(folder).parts)]
    if not found:
        raise IngestError(f"{folder}: expected a data file or a folder of Parquet files, "
                          "found a folder with no Parquet file in it.")
    return found


def _ignored_in(folder: Path, used: list[Path]) -> tuple[tuple[str, str], ...]:
    keep = set(used)
    return tuple((str(p), "not a Parquet file of the folder") for p in sorted(folder.rglob("*"))
                 if p.is_file() and p not in keep and not p.name.startswith("."))


def _plan_parquet(path: Path, files: list[Path], spec: Source, work: Path, on_bytes: Callable[[int], None],
                  root: Path, single: bool = False) -> Plan:
    digest = hashlib.sha256()
    copies: list[tuple[str, str]] = []
    hive = False
    size = 0
    for i, original in enumerate(files):
        parts = [p for p in original.relative_to(root).parts[:-1] if "=" in p]
        for part in parts:
            if GLOB_CHARS & set(part):
                raise IngestError(f"{original}: expected partition folder names without * ? [ ] {{ }}, "
                                  f"found '{part}'.")
        hive = hive or bool(parts)
        if not single:
            digest.update(str(original.relative_to(root)).encode() + b"\x00")
        dest_dir = work.joinpath("parquet", *parts)
        dest_dir.mkdir(parents=True, exist_ok=True)
        before = original.stat()
        own = hashlib.sha256()
        tmp = dest_dir / f"incoming-{i}.parquet"
        size += copy_bytes(original, tmp, [own, digest], on_bytes)
        _check_unchanged(original, before)
        copy = dest_dir / f"{own.hexdigest()}-{i}.parquet"
        os.replace(tmp, copy)
        copies.append((str(copy), str(original)))
    names, types = _describe(path, [c for c, _ in copies], hive)
    hive_keys = {p.split("=", 1)[0] for _, o in copies for p in Path(o).relative_to(root).parts[:-1] if "=" in p}
    if spec.exact_header:
        data_columns = [n for n in names if n not in hive_keys]
        if sorted(data_columns) != sorted(CANONICAL_COLUMNS):
            raise IngestError(f"{path}: expected the columns {','.join(CANONICAL_COLUMNS)}, "
                              f"found {','.join(data_columns)}; {HINT}.")
    for canonical, column in spec.columns.items():
        if str(column) not in names:
            raise IngestError(f"{path}: expected the column '{column}' (columns.{canonical} in {spec.label}), "
                              f"found the columns {','.join(names)}.")
    positions = {c: names.index(str(col)) + 1 for c, col in spec.columns.items()}
    lookup = None
    if spec.category_from is not None:
        lookup = _plan_lookup(spec.category_from, spec, work, digest)
    sha = digest.hexdigest()
    return Plan(path, spec, "parquet", sha, size, path.stat().st_mtime_ns if single else None,
                positions=tuple(positions.items()), files=tuple(copies), hive=hive, n_columns=len(names),
                column_types=tuple((c, types[p - 1]) for c, p in positions.items()), lookup=lookup,
                ignored=() if single else _ignored_in(path, files))


def _describe(path: Path, copies: list[str], hive: bool) -> tuple[list[str], list[str]]:
    con = duckdb.connect()
    try:
        described = con.execute(
            f"describe select * from read_parquet($files, hive_partitioning = {str(hive).lower()}, "
            "union_by_name = true)", {"files": copies}).fetchall()
    except duckdb.Error as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        for copy in copies:
            first = first.replace(copy, Path(copy).name)
        raise IngestError(f"{path}: expected a Parquet file, found one DuckDB cannot read ({first[:200]}).") from None
    finally:
        con.close()
    return [str(r[0]) for r in described], [str(r[1]) for r in described]
