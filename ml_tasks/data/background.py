"""Background behaviour files: other users' events, read with the same loader as the main events file.

A background file (``evaluate --background-events FILE --background-format F``, or the training DAG's
``background_events`` param) is loaded by :func:`ml_tasks.data.ingest.ingest_file` into its own scratch
warehouse, never into the main one: the same formats (``contracts.SOURCE_FORMATS``) and the same row
rules, so a file-level problem is one sentence (:class:`~ml_tasks.errors.PipelineError`) and a bad row
lands in the scratch warehouse's ``raw.rejected_events`` with its line and reason (the summary names
the commonest reasons). What the rows are used for, and the cut at the test cutoff, is decided by the
pure :mod:`ml_tasks.model.background`.

    load_background(path, fmt, scratch, max_reject_ratio=MAX_REJECT_RATIO) -> (events frame, summary)
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import duckdb
import pandas as pd

from ml_tasks.contracts import MAX_REJECT_RATIO, SOURCE_FORMATS
from ml_tasks.data.ingest import IngestError, ingest_file
from ml_tasks.errors import PipelineError


def load_background(path: str | Path, fmt: str, scratch: Path,
                    max_reject_ratio: float = MAX_REJECT_RATIO) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Canonical events of a background file (epoch-second ``event_ts``) and a JSON-safe summary.

    ``scratch``: the DuckDB file the loader writes (``raw.events``, ``raw.rejected_events``: the
    quarantine of this file's bad rows, kept as long as the caller keeps the file).
    """
    path = Path(path)
    if fmt not in SOURCE_FORMATS:
        raise PipelineError(f"background format {fmt!r} is not one of {', '.join(SOURCE_FORMATS)}")
    if not path.exists():
        raise PipelineError(f"{path}: no such background events file")
    scratch.parent.mkdir(parents=True, exist_ok=True)
    try:
        loaded = ingest_file(path, fmt, scratch, max_reject_ratio=max_reject_ratio)
    except IngestError as exc:
        raise PipelineError(f"background events: {exc}") from exc
    con = duckdb.connect(str(scratch), read_only=True)
    try:
        events = con.execute("""select distinct user_id, item_id, category_id, event_type,
                                       epoch(event_ts)::bigint as event_ts
                                from raw.events order by user_id, event_ts""").df()
        reasons = con.execute("""select reason, count(*) as n from raw.rejected_events
                                 group by reason order by n desc, reason limit 5""").fetchall()
    finally:
        con.close()
    summary = {
        "file": str(path),
        "format": fmt,
        **{k: loaded.get(k) for k in ("rows_read", "rows_loaded", "rows_rejected", "rows_duplicate", "sha256")},
        "rejected_reasons": {str(r): int(n) for r, n in reasons},
        "quarantine": f"{scratch}: raw.rejected_events",
        "n_users": int(events["user_id"].nunique()),
    }
    return events, summary
