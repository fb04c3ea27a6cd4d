"""EVALUATION.md's protocol on one file (``python -m ml_tasks evaluate``), optionally with a background file.

``--background-events FILE --background-format F``: other users' events, read by the same loader
(:mod:`ml_tasks.data.background`; its rejected rows stay in the workspace's ``background.duckdb``), cut
at the test cutoff and used for the LSTM's next-event objective and the baselines' transition statistics,
never evaluated (:mod:`ml_tasks.model.background`). The report's ``background`` says whether one was
used and what was kept.
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
from ml_tasks.data.background import load_background
from ml_tasks.errors import PipelineError
from ml_tasks.evaluation import plots, protocol
from ml_tasks.evaluation.compare import comparison_fields
from ml_tasks.model.background import (
    BACKGROUND_MAX_SEQUENCES,
    BACKGROUND_MIN_EVENTS,
    background_rows,
    population_events,
    prepare_background,
    with_background,
)
from ml_tasks.model.dataset import ModelData
from ml_tasks.steps.data import build, ingest

log = logging.getLogger(__name__)

MIN_MEANINGFUL_USERS = 30


def evaluate_file(paths: Paths, events: Path, fmt: str, out: Path, horizon_days: float = 2.0,
                  n_seeds: int = 3, dataset: str | None = None, keep_workspace: Path | None = None,
                  overrides: dict[str, Any] | None = None, background_events: Path | None = None,
                  background_format: str = "generic", background_max_sequences: int = BACKGROUND_MAX_SEQUENCES,
                  background_min_events: int = BACKGROUND_MIN_EVENTS) -> dict:
    """EVALUATION.md's protocol on one file: ingest -> build -> model and baselines, in a workspace.

    The report goes to ``out``; every method is logged to MLflow as a run with the same metric names.
    ``background_events``: other users' events (see the module doc), in ``background_format``.
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
        bg_events, bg_summary = (None, None)
        if background_events is not None:
            bg_events, bg_summary = load_background(background_events, background_format,
                                                    workspace / "background.duckdb")
        wh = replace(WarehouseConfig.from_env(), horizon_hours=int(round(horizon_days * 24)))
        build(ws, wh, full_refresh=True)
        data = ModelData.from_dir(ws.export_dir)
        config = replace(ModelConfig(), **{k: v for k, v in (overrides or {}).items() if v is not None})
        name = dataset or events.stem
        population, bg_report = None, {"used": False}
        if bg_events is not None:
            bg = prepare_background(bg_events, data, data.test_cutoff_ts)
            rows = background_rows(bg, data, background_max_sequences, background_min_events, seed=0)
            data, population = with_background(data, rows), population_events(data, bg)
            bg_report = {"used": True, **(bg_summary or {}), **bg.info, "n_sequences": int(len(rows)),
                         "max_sequences": background_max_sequences, "min_events": background_min_events,
                         "used_for": ["lstm next-event objective", "markov transitions", "covisitation table"]}
            log.info("background: %s events of %s users kept, %s sequences", bg.info["events_used"],
                     bg.info["users_used"], len(rows))
        report = protocol.run_evaluation(data, config, seeds=tuple(range(n_seeds)), dataset=name,
                                           progress=lambda msg: log.info(msg), population=population)
        report["background"] = bg_report
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
                                       params={"model": asdict(config), "protocol": report["protocol"],
                                               "background": {k: report["background"].get(k) for k in
                                                              ("used", "file", "events_used", "users_used",
                                                               "n_sequences")}})
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
            "background": {k: report["background"].get(k) for k in ("used", "events_used", "users_used",
                                                                       "n_sequences", "rows_rejected")},
            "verdicts": report["summary"]["verdicts"]}
