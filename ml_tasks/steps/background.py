"""Background behaviour in the training pipeline (the ``train_interest_model`` DAG's ``background_events``).

``start_training`` reads the file once with the ingest loader (:mod:`ml_tasks.data.background`; rejected
rows stay in the run folder's ``background.duckdb``), cuts it at the test cutoff and keeps the prepared
events as ``background_events.parquet`` in the run folder; ``fit_model`` adds their sequences to the
LSTM's training rows and ``evaluate`` their transitions to the baselines' statistics
(:mod:`ml_tasks.model.background`: never evaluated, never scored).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from ml_tasks.data.background import load_background
from ml_tasks.model.background import (
    BACKGROUND_MAX_SEQUENCES,
    BACKGROUND_MIN_EVENTS,
    Background,
    background_rows,
    population_events,
    prepare_background,
    with_background,
)
from ml_tasks.model.dataset import ModelData

EVENTS_FILE = "background_events.parquet"


def prepare(run_dir: Path, data: ModelData, events: str | Path, fmt: str) -> dict[str, Any]:
    """Load, cut at the test cutoff and store the background events of this run; a JSON-safe summary."""
    frame, summary = load_background(events, fmt, run_dir / "background.duckdb")
    bg = prepare_background(frame, data, data.test_cutoff_ts)
    run_dir.mkdir(parents=True, exist_ok=True)
    bg.events.to_parquet(run_dir / EVENTS_FILE, index=False)
    return {"used": True, **summary, **bg.info}


def _stored(run_dir: Path, state: dict[str, Any]) -> Background | None:
    info = state.get("background") or {}
    if not info.get("used"):
        return None
    return Background(events=pd.read_parquet(run_dir / EVENTS_FILE), until_ts=int(info["cut_at_ts"]), info=info)


def training_data(run_dir: Path, state: dict[str, Any], data: ModelData, seed: int) -> tuple[ModelData, int]:
    """``data`` with this run's background rows in ``sequences`` (unchanged without a background)."""
    bg = _stored(run_dir, state)
    if bg is None:
        return data, 0
    rows = background_rows(bg, data, BACKGROUND_MAX_SEQUENCES, BACKGROUND_MIN_EVENTS, seed=seed)
    return with_background(data, rows), len(rows)


def population(run_dir: Path, state: dict[str, Any], data: ModelData) -> pd.DataFrame | None:
    """Main and background events for the baselines' transition statistics (``None`` without one)."""
    bg = _stored(run_dir, state)
    return None if bg is None else population_events(data, bg)
