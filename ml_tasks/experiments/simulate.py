"""The periodic-update experiment (``python -m ml_tasks simulate``).
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

import numpy as np

from ml_tasks import tracking
from ml_tasks.config import ModelConfig, Paths
from ml_tasks.data import synthetic
from ml_tasks.data.ingest import IngestError, canonical_events
from ml_tasks.errors import PipelineError
from ml_tasks.evaluation import plots
from ml_tasks.evaluation import protocol as ev
from ml_tasks.model.dataset import ModelData
from ml_tasks.model.fit import fine_tune, fit
from ml_tasks.steps.data import build, ingest
from ml_tasks.steps.state import PIPELINE_MODEL_DEFAULTS

log = logging.getLogger(__name__)

def simulate(paths: Paths, days: int = 4, out: Path | None = None, events: Path | None = None,
             fmt: str = "generic", overrides: dict[str, Any] | None = None) -> dict:
    """Replay a log day by day through ingest -> incremental dbt build -> models.

    The log's last ``days`` days arrive one per step. The first model is trained on everything
    before them. After each new day, three models are evaluated on the newest label window (the
    protocol's test cutoff of the data so far), on the same users: the first model never updated, a
    chain of daily fine-tunes from it (``periodic_update``), and a fresh fit on all data so far
    (``full_retrain``, what ``train_interest_model`` runs: the fit up to ``T_test``).
    ``update_cost_ratio`` = mean fine-tune time / mean full-retrain time.
    """

    if days < 1:
        raise PipelineError("--days must be at least 1")
    root = Path(tempfile.mkdtemp(prefix="iep-simulate-", dir=paths.data_dir if paths.data_dir.exists() else None))
    ws = Paths.from_env(data_dir=root, warehouse=root / "warehouse.duckdb", export_dir=root / "exports",
                        artifact_dir=root / "artifacts", landing_dir=root / "landing",
                        tracking_uri=paths.tracking_uri)
    started = time.perf_counter()
    try:
        if events is None:
            written = synthetic.write(synthetic.SyntheticConfig(), root / "source")
            events, fmt = Path(written["events_path"]), "generic"
        elif not events.exists():
            raise PipelineError(f"{events}: no such file or folder")
        try:
            log_frame = canonical_events(events, fmt, root / "scratch.duckdb")
        except IngestError as exc:
            raise PipelineError(str(exc)) from exc
        end = int(log_frame["event_ts"].max()) + 1
        bounds = [end - (days - k) * 86_400 for k in range(days + 1)]
        if int(log_frame["event_ts"].min()) >= bounds[0] - 3 * 86_400:
            raise PipelineError(f"the log is too short to hold back {days} days and still train a model")
        ws.landing_dir.mkdir(parents=True)
        config = replace(ModelConfig(), **PIPELINE_MODEL_DEFAULTS)
        config = replace(config, **{k: v for k, v in (overrides or {}).items() if v is not None})

        def land_and_build(frame, name: str):
            file = ws.landing_dir / f"{name}.csv"
            frame.to_csv(file, index=False)
            ingest(ws, file, "generic")
            build(ws, full_refresh=False)
            return ModelData.from_dir(ws.export_dir)

        data = land_and_build(log_frame[log_frame["event_ts"] < bounds[0]], "day_0")
        base = fit(data, config, final=True)
        never, periodic = base, base
        per_day = []
        for k in range(1, days + 1):
            day = log_frame[(log_frame["event_ts"] >= bounds[k - 1]) & (log_frame["event_ts"] < bounds[k])]
            data = land_and_build(day, f"day_{k}")
            t0 = time.perf_counter()
            periodic = fine_tune(periodic, data, config)
            update_s = time.perf_counter() - t0
            t0 = time.perf_counter()
            full = fit(data, config, final=True)
            retrain_s = time.perf_counter() - t0
            ctx = ev.cutoff_context(ev.events_frame(data), data.test_cutoff_ts, data.horizon_hours)
            row = {"day": k, "cutoff_ts": data.test_cutoff_ts, "n_eval_users": len(ctx.users),
                   "update_seconds": update_s, "retrain_seconds": retrain_s,
                   "update_lstm_sequences": int(periodic.info["lstm"].get("n_train_sequences", 0))}
            for name, model in (("never_updated", never), ("periodic_update", periodic), ("full_retrain", full)):
                row[name] = ctx.metrics(ev.model_score_matrix(model, data, ctx, use_lstm=True))
            row["recency_decay"] = ev.baseline_metrics_one(data, ctx, "recency_decay", config.half_life_hours)
            per_day.append(row)
            log.info("day %d: never %.4f periodic %.4f full %.4f", k, row["never_updated"]["ndcg@10"],
                     row["periodic_update"]["ndcg@10"], row["full_retrain"]["ndcg@10"])
    finally:
        shutil.rmtree(root, ignore_errors=True)
    methods = ("never_updated", "periodic_update", "full_retrain", "recency_decay")
    results = {name: {metric: float(np.mean([r[name][metric] for r in per_day]))
                      for metric in ("ndcg@10", "recall@10", "mrr")} for name in methods}
    update_s = float(np.mean([r["update_seconds"] for r in per_day]))
    ratio = update_s / float(np.mean([r["retrain_seconds"] for r in per_day]))
    report = {
        "days": days, "source": str(events), "results": results, "update_cost_ratio": ratio,
        "periodic_vs_never": results["periodic_update"]["ndcg@10"] / max(results["never_updated"]["ndcg@10"], 1e-12),
        "per_day": per_day, "initial_model": {"trained_until_ts": base.trained_until_ts, "seed": config.seed},
        "config": asdict(config),
        "seconds": time.perf_counter() - started,
    }
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(report, indent=1, default=str))
    parent = tracking.start_parent_run(paths, run_name=f"simulate:{days}d", tags={"kind": "simulation"},
                                       params={"days": days, "model": asdict(config)})
    with tracking.step_run(paths, parent, "simulate"):
        for r in per_day:
            for name in methods:
                tracking.log_metrics({f"{name}.ndcg@10": r[name]["ndcg@10"]}, step=r["day"])
        tracking.log_metrics({"update_cost_ratio": ratio,
                              "periodic_vs_never": report["periodic_vs_never"]})
        tracking.log_dict(report, "simulation.json")
        tracking.log_figure(plots.metrics_over_days(per_day, methods), "ndcg_over_days.png")
    return {"out": str(out) if out else None, "update_cost_ratio": round(ratio, 3),
            "periodic_vs_never": round(report["periodic_vs_never"], 4),
            **{f"{name}.ndcg@10": round(results[name]["ndcg@10"], 4) for name in methods},
            "mlflow_parent_run_id": parent, "seconds": round(report["seconds"], 1)}
