"""EVALUATION.md's protocol on one file (``python -m ml_tasks evaluate``).
"""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
import time
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

from ml_tasks import tracking
from ml_tasks.config import ModelConfig, Paths, WarehouseConfig
from ml_tasks.contracts import ABLATION_NAME, MODEL_NAME
from ml_tasks.errors import PipelineError
from ml_tasks.evaluation import plots, protocol
from ml_tasks.evaluation.compare import comparison_fields
from ml_tasks.model.dataset import ModelData
from ml_tasks.steps.data import build, ingest

log = logging.getLogger(__name__)

MIN_MEANINGFUL_USERS = 30


def evaluate_file(paths: Paths, events: Path, fmt: str, out: Path, horizon_days: float = 2.0,
                  n_seeds: int = 3, dataset: str | None = None, keep_workspace: Path | None = None,
                  overrides: dict[str, Any] | None = None) -> dict:
    """EVALUATION.md's protocol on one file: ingest -> build -> model and baselines, in a workspace.

    The report goes to ``out``; every method is logged to MLflow as a run with the same metric names.
    """

    if not events.exists():
        raise PipelineError(f"{events}: no such file or folder")
    if n_seeds < 1:
        raise PipelineError("--seeds must be at least 1")
    workspace = keep_workspace or Path(tempfile.mkdtemp(prefix="iep-evaluate-"))
    ws = Paths.from_env(data_dir=workspace, warehouse=workspace / "warehouse.duckdb",
                        export_dir=workspace / "exports", artifact_dir=workspace / "artifacts",
                        landing_dir=workspace / "landing", tracking_uri=paths.tracking_uri)
    started = time.perf_counter()
    try:
        ingested = ingest(ws, events, fmt)
        wh = replace(WarehouseConfig.from_env(), horizon_hours=int(round(horizon_days * 24)))
        build(ws, wh, full_refresh=True)
        data = ModelData.from_dir(ws.export_dir)
        config = replace(ModelConfig(), **{k: v for k, v in (overrides or {}).items() if v is not None})
        name = dataset or events.stem
        report = protocol.run_evaluation(data, config, seeds=tuple(range(n_seeds)), dataset=name,
                                           progress=lambda msg: log.info(msg))
    finally:
        if keep_workspace is None:
            shutil.rmtree(workspace, ignore_errors=True)
    report["ingest"] = {k: ingested.get(k) for k in ("rows_read", "rows_loaded", "rows_rejected",
                                                     "rows_duplicate")}
    n_eval = int(report["protocol"]["n_eval_users"])
    report["warnings"] = []
    if n_eval < MIN_MEANINGFUL_USERS:
        report["warnings"].append(
            f"only {n_eval} users have events in the test window (fewer than {MIN_MEANINGFUL_USERS}); "
            f"differences between methods are noise at this size")
        log.warning(report["warnings"][-1])
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=1, default=str))
    parent = tracking.start_parent_run(paths, run_name=f"evaluate:{report['dataset']}",
                                       tags={"kind": "evaluation", "dataset": report["dataset"]},
                                       params={"model": asdict(config), "protocol": report["protocol"]})
    tracking.log_baseline_runs(paths, parent, report)
    with tracking.step_run(paths, parent, "report"):
        comparison_metrics, comparison_params = comparison_fields(report["comparisons"])
        tracking.log_metrics(comparison_metrics)
        tracking.log_params({**comparison_params, "ci_method": report["ci_method"]})
        tracking.log_dict(report, "report.json")
        tracking.log_figure(plots.model_vs_baselines(report), "model_vs_baselines.png")
        tracking.log_figure(plots.model_vs_baselines(report, "ndcg@10_discover"), "discover_vs_baselines.png")
    res = report["results"]
    return {"out": str(out), "dataset": report["dataset"], "n_eval_users": n_eval,
            **({"warnings": report["warnings"]} if report["warnings"] else {}),
            "seconds": round(time.perf_counter() - started, 1), "mlflow_parent_run_id": parent,
            **{name: round(res[name]["ndcg@10"], 4) for name in (MODEL_NAME, ABLATION_NAME, "recency_decay",
                                                                 "user_frequency", "popularity")},
            "verdicts": report["summary"]["verdicts"]}
