"""Loading every new file of a landing folder, each with its source; reporting every file not loaded."""

from __future__ import annotations

import logging
import os
from pathlib import Path

from ml_tasks.data.ingest.load import connect, ingest_file
from ml_tasks.data.ingest.rules import (
    DATA_SUFFIXES,
    DEFAULT_MAX_REJECT_RATIO,
    SOURCE_FILE_NAME,
    IngestError,
    Resources,
)
from ml_tasks.data.ingest.sources import Source, load_source, resolve_source

log = logging.getLogger(__name__)


def _known_files(warehouse: Path) -> dict[tuple[str, int, int], int]:
    """(path, size, mtime_ns) of files loaded before -> their load, to skip them without reading them."""
    if not Path(warehouse).exists():
        return {}
    con = connect(warehouse)
    try:
        rows = con.execute("select source_file, size_bytes, mtime_ns, load_id from raw.loads "
                           "where mtime_ns is not null").fetchall()
        return {(r[0], int(r[1]), int(r[2])): int(r[3]) for r in rows}
    finally:
        con.close()


def _candidates(landing: Path, default: Source) -> tuple[list[tuple[Path, Source, Path]], list[dict], list[dict]]:
    """Walk the landing folder: (file, its source, the folder its partition columns start from) for every
    file to load, plus the files not loaded (and why) and the source definitions that are invalid.

    A ``_source.yml`` applies to its folder and every folder below it (until another one)."""
    candidates: list[tuple[Path, Source, Path]] = []
    ignored: list[dict] = []
    failed: list[dict] = []
    governing: dict[Path, tuple[Source | None, Path, str]] = {}
    for here, dirs, names in os.walk(landing):
        folder = Path(here)
        for d in sorted(d for d in dirs if d.startswith(".")):
            ignored.append({"file": str(folder / d) + os.sep, "reason": "hidden folder"})
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        if SOURCE_FILE_NAME in names:
            yml = folder / SOURCE_FILE_NAME
            try:
                governing[folder] = (load_source(yml), folder, str(yml))
            except IngestError as exc:
                failed.append({"file": str(yml), "error": str(exc)})
                governing[folder] = (None, folder, str(yml))
        else:
            governing[folder] = governing.get(folder.parent, (default, landing, ""))
        spec, root, yml_name = governing[folder]
        lookup = spec.category_from.path if spec is not None and spec.category_from is not None else None
        for name in sorted(names):
            path = folder / name
            reason = _why_not(path, spec, lookup, yml_name)
            if reason:
                ignored.append({"file": str(path), "reason": reason})
            elif spec is not None:
                candidates.append((path, spec, root))
    return candidates, ignored, failed


def _why_not(path: Path, spec: Source | None, lookup: Path | None, yml: str) -> str:
    """Why a file of the landing folder is not a file to load ('' when it is one)."""
    name = path.name
    if name == SOURCE_FILE_NAME:
        return "source definition"
    if name.startswith("."):
        return "hidden file (a writer's temporary file?)"
    if spec is None:
        return f"not loaded: its source definition {yml} is invalid"
    if lookup is not None and path.resolve() == lookup:
        return f"category table of {spec.label}"
    if spec.name == "movielens":
        if name == "ratings.csv":
            return ""
        if name == "movies.csv" and (path.parent / "ratings.csv").is_file():
            return "categories of the MovieLens ratings.csv beside it"
        return "not a MovieLens ratings.csv"
    if not name.lower().endswith(DATA_SUFFIXES):
        return f"not a data file (expected a name ending in {', '.join(DATA_SUFFIXES)})"
    return ""


def ingest_dir(landing_dir: Path, warehouse: Path, fmt: str | Path | Source = "generic", *,
               max_reject_ratio: float = DEFAULT_MAX_REJECT_RATIO, memory_limit: str | None = None,
               threads: int | None = None) -> dict:
    """Load every new file of a landing folder and its sub-folders (one transaction per file).

    ``fmt`` (a format, a source definition or a :class:`Source`) applies where no ``_source.yml`` does.
    A file whose path, size and modification time match an earlier load is skipped without reading it;
    a file whose content was loaded before is skipped after hashing. A file that fails does not stop the
    others: it is listed under ``files_failed`` with its one-sentence error, and the rest load. Files
    that are not loaded for another reason are listed under ``files_ignored`` with the reason.
    Returns totals over the loaded files plus ``files`` (per-file summaries).
    """
    landing_dir = Path(landing_dir).expanduser().resolve()
    if not landing_dir.is_dir():
        raise IngestError(f"{landing_dir}: expected a landing folder, found "
                          f"{'a file' if landing_dir.exists() else 'nothing'}.")
    default = resolve_source(fmt, landing_dir)
    Resources.resolve(landing_dir, memory_limit, threads)  # a bad memory setting fails the run, not each file
    candidates, ignored, failed = _candidates(landing_dir, default)
    known = _known_files(warehouse)
    files: list[dict] = []
    unchanged = 0
    for path, spec, root in candidates:
        stat = path.stat()
        if (str(path), stat.st_size, stat.st_mtime_ns) in known:
            unchanged += 1
            continue
        try:
            files.append(ingest_file(path, spec, warehouse, max_reject_ratio=max_reject_ratio,
                                     memory_limit=memory_limit, threads=threads, hive_root=root))
        except IngestError as exc:
            log.warning("%s", exc)
            failed.append({"file": str(path), "error": str(exc)})
        except Exception as exc:  # noqa: BLE001 - one file's failure must not stop the others
            log.warning("%s: load failed", path, exc_info=True)
            first = (str(exc).splitlines() or [""])[0][:160]
            failed.append({"file": str(path), "error": f"{path}: the load failed: {type(exc).__name__}"
                                                      f"{': ' + first if first else ''}; nothing was loaded."})
    totals = {key: sum(f[key] for f in files) for key in
              ("rows_read", "rows_loaded", "rows_rejected", "rows_duplicate")}
    return {
        **totals,
        "landing_dir": str(landing_dir),
        "format": default.name,
        "files_loaded": sum(1 for f in files if not f["skipped"]),
        "files_skipped": sum(1 for f in files if f["skipped"]) + unchanged,
        "files_failed": failed,
        "files_ignored": ignored,
        "files": files,
    }
