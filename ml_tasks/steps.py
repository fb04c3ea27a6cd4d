"""One function per pipeline step: load -> pure work -> save -> track, returning a small JSON-safe dict.

The Airflow tasks and ``python -m ml_tasks`` call these and nothing else. Arrays, models and tables
go to files (the export folder, a per-run artifact folder, MLflow); the return values carry paths,
ids and small metric dicts only.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

from ml_tasks.config import ModelConfig, Paths, WarehouseConfig
from ml_tasks.errors import PipelineError

log = logging.getLogger(__name__)

SYNTHETIC_EVENTS_FILE = "synthetic_events.csv"


# --- data -----------------------------------------------------------------------------------------


def generate(paths: Paths, out_dir: Path | None = None, users: int | None = None, days: int | None = None,
             seed: int | None = None, events_per_user_day: float | None = None,
             file_format: str = "csv") -> dict:
    """Write the synthetic log to the landing folder and its ground truth to ``<data>/synthetic/``."""
    from ml_tasks import synthetic

    overrides = {k: v for k, v in {"n_users": users, "days": days, "seed": seed,
                                   "events_per_user_day": events_per_user_day}.items() if v is not None}
    try:
        config = synthetic.SyntheticConfig(**overrides)
    except ValueError as exc:
        raise PipelineError(f"invalid synthetic data settings: {exc}") from exc
    staging = paths.data_dir / "synthetic"
    written = synthetic.write(config, staging, fmt=file_format)
    target_dir = out_dir or paths.landing_dir
    target_dir.mkdir(parents=True, exist_ok=True)
    target = target_dir / f"synthetic_seed{config.seed}.{file_format}"
    os.replace(written["events_path"], target)
    return {**written, "events_path": str(target), "config": asdict(config)}


def truth_path(paths: Paths) -> Path:
    return paths.data_dir / "synthetic" / "truth.parquet"


def ingest(paths: Paths, events_path: str | Path | None, fmt: str = "generic") -> dict:
    """Load one file, or every new file of the landing folder, into ``raw.events``."""
    from ml_tasks import ingest as ingest_mod

    try:
        if events_path:
            path = Path(events_path)
            if not path.exists():
                raise PipelineError(f"{path}: no such file or folder")
            return ingest_mod.ingest_file(path, fmt, paths.warehouse, progress=True)
        paths.landing_dir.mkdir(parents=True, exist_ok=True)
        return ingest_mod.ingest_dir(paths.landing_dir, paths.warehouse, fmt)
    except ingest_mod.IngestError as exc:
        raise PipelineError(str(exc)) from exc


def build(paths: Paths, config: WarehouseConfig | None = None, full_refresh: bool = False,
          select: str | None = None, export: bool = True) -> dict:
    """``dbt build`` (models and tests) against the warehouse, then the Parquet exports."""
    from ml_tasks import warehouse

    if not paths.warehouse.exists():
        raise PipelineError(f"{paths.warehouse}: no warehouse yet; load events first "
                            "(python -m ml_tasks ingest --events FILE)")
    summary = warehouse.build(paths, config or WarehouseConfig.from_env(), full_refresh=full_refresh,
                              select=select)
    if export:
        summary["exports"] = warehouse.export_ml_tables(paths)
    return summary


def export(paths: Paths) -> dict:
    from ml_tasks import warehouse

    return warehouse.export_ml_tables(paths)
