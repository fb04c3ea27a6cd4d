"""Faults as one sentence: a DuckDB or OS failure during a load, naming the file (and line), never the data."""

from __future__ import annotations

import errno
import re
from pathlib import Path

from ml_tasks.data.ingest.rules import MEMORY_LIMIT_ENV, Resources


def duckdb_sentence(path: Path, exc: Exception, resources: Resources | None) -> str:
    """A DuckDB failure as one sentence naming the file and, where DuckDB gives it, the line; never the
    data (quoted values are left out) and never a traceback."""
    text = str(exc)
    low = text.lower()
    line = re.search(r"\bline:? (\d+)", text, flags=re.IGNORECASE)
    where = f" in line {line.group(1)}" if line else ""
    spill = resources.temp_directory if resources else "DuckDB's temp folder"
    if "no space left" in low or "max_temp_directory_size" in low or "disk full" in low:
        what = f"the disk is full (DuckDB could not write the warehouse or its spill files in {spill})"
    elif "out of memory" in low or "memory_limit" in low:
        limit = resources.memory_limit if resources else "its default"
        what = f"DuckDB ran out of memory (memory_limit {limit}; set {MEMORY_LIMIT_ENV} higher)"
    elif "maximum line size" in low:
        what = "a line longer than DuckDB's line limit"
    elif "unicode" in low:
        what = "bytes that are not UTF-8"
    else:
        first = text.splitlines()[0] if text else type(exc).__name__
        first = re.sub(r"'[^']*'|\"[^\"]*\"", "'...'", first)
        what = f"{first[:160]} ({type(exc).__name__})"
    return f"{path}: the load failed{where}: {what}; nothing was loaded."


def os_sentence(path: Path, exc: OSError) -> str:
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return (f"{path}: the load failed: the disk is full (no room for the loader's private copy "
                "beside the warehouse); nothing was loaded.")
    return f"{path}: expected a readable file, found {exc.strerror or type(exc).__name__}; nothing was loaded."
