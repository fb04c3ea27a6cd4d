"""Data steps: the synthetic log, ingest, the dbt build and the Parquet exports.
"""

from __future__ import annotations

import os
from dataclasses import asdict
from pathlib import Path

from ml_tasks.config import Paths, WarehouseConfig
from ml_tasks.contracts import INGEST_ROOTS_ENV, MAX_REJECT_RATIO
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


def allowed_roots(paths: Paths) -> list[Path]:
    """Where a path given to the ingest_events DAG may point: the landing folder and the folders listed
    in ``$IEP_INGEST_ROOTS`` (separated by ``os.pathsep``)."""
    extra = [Path(p).expanduser() for p in os.environ.get(INGEST_ROOTS_ENV, "").split(os.pathsep) if p.strip()]
    return [paths.landing_dir, *extra]


def _inside(paths: Paths, given: str | Path, roots: list[Path], what: str) -> Path:
    """``given`` resolved (relative to the landing folder), refused unless it lies inside one of ``roots``."""
    path = Path(given).expanduser()
    if not path.is_absolute():
        path = paths.landing_dir / path
    resolved = path.resolve()
    if not any(resolved.is_relative_to(root.expanduser().resolve()) for root in roots):
        shown = ", ".join(str(r) for r in roots)
        raise PipelineError(f"{given}: refused: {what} must lie inside the landing folder or another allowed folder "
                            f"({shown}; more in ${INGEST_ROOTS_ENV}), and this one resolves to {resolved}")
    return resolved


def ingest(paths: Paths, events_path: str | Path | None, fmt: str = "generic", *,
           source: str | Path | None = None, max_reject_ratio: float = MAX_REJECT_RATIO,
           allowed_roots: list[Path] | None = None) -> dict:
    """Load one file (or Parquet folder), or every new file of the landing folder, into ``raw.events``.

    ``source``: a source definition (YAML) instead of the format ``fmt``. ``max_reject_ratio``: a file with
    a larger share of rejected rows fails as a whole. ``allowed_roots`` (the DAG passes them): the paths
    given must resolve inside one of these folders. A landing file that fails does not stop the others;
    the step fails at the end naming each."""
    if not 0.0 <= float(max_reject_ratio) <= 1.0:
        raise PipelineError(f"max_reject_ratio must be between 0 and 1, got {max_reject_ratio}")
    try:
        spec: str | ingest_mod.Source = fmt
        if source:
            source_path = _inside(paths, source, allowed_roots, "source") if allowed_roots else Path(source)
            spec = ingest_mod.load_source(source_path)
            lookup = spec.category_from.path if spec.category_from is not None else None
            if allowed_roots and lookup is not None:
                _inside(paths, lookup, allowed_roots, "category_from.file")
        if events_path:
            path = _inside(paths, events_path, allowed_roots, "events_path") if allowed_roots else Path(events_path)
            if not path.exists():
                raise PipelineError(f"{path}: no such file or folder")
            return ingest_mod.ingest_file(path, spec, paths.warehouse, progress=True,
                                          max_reject_ratio=max_reject_ratio)
        paths.landing_dir.mkdir(parents=True, exist_ok=True)
        summary = ingest_mod.ingest_dir(paths.landing_dir, paths.warehouse, spec, max_reject_ratio=max_reject_ratio)
    except ingest_mod.IngestError as exc:
        raise PipelineError(str(exc)) from exc
    if summary.get("files_failed"):
        failed = summary["files_failed"]
        errors = " ".join(f["error"] for f in failed)
        raise PipelineError(f"{len(failed)} landing file(s) could not be loaded (the other "
                            f"{summary['files_loaded']} loaded, {summary['rows_loaded']} rows): {errors}")
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
