"""The evaluation step: the protocol at the test cutoff for the new model, its ablation, the baselines
and the champion, on the same users.
"""

from __future__ import annotations

import json
from pathlib import Path

from ml_tasks import tracking
from ml_tasks.config import Paths
from ml_tasks.contracts import ABLATION_NAME, MODEL_NAME
from ml_tasks.errors import PipelineError
from ml_tasks.evaluation import plots
from ml_tasks.evaluation import protocol as ev
from ml_tasks.model.persist import FittedInterestModel
from ml_tasks.steps.state import load_data, model_config, read_state, update_state


def evaluate(paths: Paths, run_dir: Path) -> dict:
    """The protocol at the test cutoff: the new model, its ablation, the five baselines and (when one
    exists) the current champion, all on the same users; one MLflow run per method."""
    state = read_state(run_dir)
    config = model_config(state)
    data = load_data(paths)
    candidate = FittedInterestModel.load(run_dir / "model")
    events = ev.events_frame(data)
    ctx = ev.cutoff_context(events, data.test_cutoff_ts, data.horizon_hours)
    if not ctx.users:
        raise PipelineError("no user has events both before the test cutoff and in the test window; "
                            "the data set is too short for the evaluation protocol")
    half_life, curve = ev.tune_half_life(data, config.half_life_grid)
    results: dict[str, dict[str, float]] = {
        MODEL_NAME: ctx.metrics(ev.model_score_matrix(candidate, data, ctx, use_lstm=True)),
        ABLATION_NAME: ctx.metrics(ev.model_score_matrix(candidate, data, ctx, use_lstm=False)),
    }
    results.update(ev.baseline_metrics(data, ctx, half_life))
    results["recency_decay_72h"] = ev.baseline_metrics_one(data, ctx, "recency_decay", 72.0)
    champion = state.get("champion_at_start")
    champion_metrics = None
    if champion is not None:
        champ_model = tracking.load_fitted_model(paths, champion)
        champion_metrics = ctx.metrics(ev.model_score_matrix(champ_model, data, ctx, use_lstm=True))
    report = {
        "dataset": "warehouse",
        "protocol": {"cutoff_ts": ctx.cutoff_ts, "horizon_days": data.horizon_hours / 24,
                     "n_eval_users": len(ctx.users), "n_categories": int(len(ctx.candidates))},
        "results": results,
        "half_life_hours": half_life,
        "half_life_validation_ndcg@10": {str(k): v for k, v in curve.items()},
        "champion": {"version": champion, "metrics": champion_metrics},
    }
    (run_dir / "report.json").write_text(json.dumps(report, indent=1))
    tracking.log_baseline_runs(paths, state["parent_run_id"], report)
    with tracking.step_run(paths, state["parent_run_id"], "evaluate"):
        tracking.log_metrics(results[MODEL_NAME])
        tracking.log_metrics({f"{k}.{name}": v for name, mm in results.items() for k, v in mm.items()
                              if k in ("ndcg@10", "recall@10", "mrr")})
        if champion_metrics:
            tracking.log_metrics(champion_metrics, prefix="champion.")
        tracking.log_dict(report, "report.json")
        tracking.log_figure(plots.model_vs_baselines(report), "model_vs_baselines.png")
    update_state(run_dir, evaluated=True)
    return {"ndcg@10": results[MODEL_NAME]["ndcg@10"],
            "ablation_ndcg@10": results[ABLATION_NAME]["ndcg@10"],
            "recency_decay_ndcg@10": results["recency_decay"]["ndcg@10"],
            "popularity_ndcg@10": results["popularity"]["ndcg@10"],
            "champion_ndcg@10": (champion_metrics or {}).get("ndcg@10"),
            "n_eval_users": len(ctx.users)}
