"""Data steps: the synthetic log, ingest, the dbt build and the Parquet exports.
"""

from __future__ import annotations

import os
from dataclasses import asdict
from pathlib import Path

from ml_tasks.config import Paths, WarehouseConfig
from ml_tasks.data import ingest as ingest_mod
from ml_tasks.data import synthetic, warehouse
from ml_tasks.errors import PipelineError


def generate(paths: Paths, out_dir: Path | None = None, users: int | None = None, days: int | None = None,
             seed: int | None = None, events_per_user_day: float | None = None,
             file_format: str = "csv", categories: int | None = None, items: int | None = None) -> dict:
    """Write the synthetic log to the landing folder and its ground truth to ``<data>/synthetic/``."""
    overrides = {k: v for k, v in {"n_users": users, "days": days, "seed": seed,
                                   "events_per_user_day": events_per_user_day, "n_categories": categories,
                                   "n_items": items}.items() if v is not None}
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


def ingest(paths: Paths, events_path: str | Path | None, fmt: str = "generic") -> dict:
    """Load one file, or every new file of the landing folder, into ``raw.events``."""
    try:
        if events_path:
            path = Path(events_path)
            if not path.exists():
                raise PipelineError(f"{path}: no such file or folder")
            return ingest_mod.ingest_file(path, fmt, paths.warehouse, progress=True)
        paths.landing_dir.mkdir(parents=True, exist_ok=True)
        summary = ingest_mod.ingest_dir(paths.landing_dir, paths.warehouse, fmt)
    except ingest_mod.IngestError as exc:
        raise PipelineError(str(exc)) from exc
    if summary.get("files_failed"):
        failed = "; ".join(str(f) for f in summary["files_failed"])
        raise PipelineError(f"{len(summary['files_failed'])} landing file(s) could not be loaded "
                            f"(the other {summary['files_loaded']} loaded): {failed}")
    return summary


def build(paths: Paths, config: WarehouseConfig | None = None, full_refresh: bool = False,
          select: str | None = None, export: bool = True) -> dict:
    """``dbt build`` (models and tests) against the warehouse, then the Parquet exports."""
    if not paths.warehouse.exists():
        raise PipelineError(f"{paths.warehouse}: no warehouse yet; load events first "
                            "(python -m ml_tasks ingest --events FILE)")
    summary = warehouse.build(paths, config or WarehouseConfig.from_env(), full_refresh=full_refresh,
                              select=select)
    if export:
        summary["exports"] = warehouse.export_ml_tables(paths)
    return summary


def export(paths: Paths) -> dict:

    return warehouse.export_ml_tables(paths)


def refresh_warehouse(paths: Paths, run_dir: Path | None = None) -> dict:
    """Incremental ``dbt build`` and export, so an update also sees rows ingested since the last build."""
    return build(paths, full_refresh=False)
