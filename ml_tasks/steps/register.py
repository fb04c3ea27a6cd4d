"""Registration: one pyfunc version per run, the champion/challenger gate, manual promotion.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from ml_tasks import tracking
from ml_tasks.config import Paths
from ml_tasks.contracts import MODEL_NAME
from ml_tasks.errors import PipelineError
from ml_tasks.evaluation.gate import gate
from ml_tasks.model.predictor import popularity_table
from ml_tasks.steps.state import load_data, read_state, record_decision, update_state


def register_model(paths: Paths, run_dir: Path, margin: float = 0.0) -> dict:
    """Log the model as one pyfunc version of ``user_interest_model`` and apply the champion gate.

    Idempotent per run: a retried task finds the version it registered and repeats no alias change.
    """

    state = read_state(run_dir)
    if state.get("registered"):
        return state["registered"]
    report = json.loads((run_dir / "report.json").read_text())
    metrics = report["results"][MODEL_NAME]
    champion = state.get("champion_at_start")
    champion_ndcg = (report.get("champion", {}).get("metrics") or {}).get("ndcg@10")
    promote_it, reason = gate(metrics["ndcg@10"], champion_ndcg, margin)
    data = load_data(paths)
    model_dir = run_dir / "model"
    _write_serving_extras(model_dir, data)
    example = _signature_example(data)
    with tracking.step_run(paths, state["parent_run_id"], "register_model"):

        logged = tracking.log_interest_model(model_dir, example, metrics=metrics)
        version = logged["version"]
        tracking.log_metrics(metrics)
        tracking.log_params({"gate.margin": margin, "gate.champion_before": champion,
                             "gate.promoted": promote_it, "gate.reason": reason})
        run_id = tracking.active_run_id()
    decision = {"version": version, "promoted": promote_it, "reason": reason, "margin": margin,
                "champion_before": champion, "candidate_ndcg@10": metrics["ndcg@10"],
                "champion_ndcg@10": champion_ndcg, "kind": state["kind"], "run_id": run_id,
                "decided_at": int(time.time())}
    tracking.set_version_tags(paths, version, {"gate_decision": "promoted" if promote_it else "rejected",
                                               "gate_reason": reason, "kind": state["kind"],
                                               "ndcg_at_10": f"{metrics['ndcg@10']:.6f}",
                                               "run_dir": str(run_dir)})
    if promote_it:
        tracking.set_alias(paths, tracking.CHAMPION, version)
        if champion is not None:
            tracking.set_alias(paths, tracking.CHALLENGER, champion)
    else:
        tracking.set_alias(paths, tracking.CHALLENGER, version)
    record_decision(paths, decision)
    update_state(run_dir, registered=decision)
    return decision


def _signature_example(data) -> Any:
    """A few users' recent events: the served model's input."""
    ev = data.events
    users = ev["user_id"].drop_duplicates().head(3)
    sample = ev[ev["user_id"].isin(users)].sort_values("event_ts").groupby("user_id").tail(20)
    return sample[["user_id", "category_id", "event_type", "event_ts"]].reset_index(drop=True)


def _write_serving_extras(model_dir: Path, data) -> None:
    """What the served model needs beside the fitted parts: category ids and recent popularity."""
    cats = data.categories[["category_idx", "category_id"]]
    cats.to_parquet(model_dir / "categories.parquet", index=False)
    pf = data.pair_features
    latest = pf[pf["cutoff_ts"] == pf["cutoff_ts"].max()]
    pop = popularity_table(latest).drop(columns=["cutoff_ts"])
    pop.to_parquet(model_dir / "popularity.parquet", index=False)
    meta = {"score_cutoff_ts": int(data.protocol["score_cutoff_ts"]),
            "horizon_hours": float(data.horizon_hours)}
    (model_dir / "serving.json").write_text(json.dumps(meta))


def promote(paths: Paths, version: int, reason: str = "manual promotion") -> dict:
    """Point ``champion`` at ``version`` (rollback or manual promotion), recorded in MLflow."""
    try:
        info = tracking.version_info(paths, version)
    except Exception as exc:  # MlflowException: the version does not exist
        raise PipelineError(f"model version {version} of user_interest_model does not exist") from exc
    before = tracking.alias_version(paths, tracking.CHAMPION)
    if before == version:
        return {"champion": version, "changed": False, "reason": "already champion"}
    tracking.set_alias(paths, tracking.CHAMPION, version)
    if before is not None:
        tracking.set_alias(paths, tracking.CHALLENGER, before)
    tracking.set_version_tags(paths, version, {"promoted_manually": reason})
    with tracking.step_run(paths, None, "promote", tags={"kind": "promotion"}):
        tracking.log_params({"version": version, "champion_before": before, "reason": reason})
    decision = {"version": version, "promoted": True, "reason": reason, "champion_before": before,
                "kind": "manual", "decided_at": int(time.time()), "run_id": info["run_id"]}
    record_decision(paths, decision)
    return {"champion": version, "champion_before": before, "changed": True, "reason": reason}
