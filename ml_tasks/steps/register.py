"""Registration: one pyfunc version per run, the champion/challenger gate, manual promotion."""

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
    """Register the run's model as one version of ``user_interest_model`` and apply the champion gate.

    Idempotent per run: the version is created with the run's folder as a tag and recorded in the run
    state right after, so a retried task finds it (in the state, or by the tag after a crash between
    the two) and registers no second one. The gate compares against the champion the evaluation saw;
    right before changing an alias it reads the champion again, and when another run has moved it
    meanwhile the decision is refused (no alias changes) instead of applied to a different champion.
    With nothing new since the champion (a periodic update with no new samples) nothing is registered.
    """
    state = read_state(run_dir)
    if state.get("registered"):
        return state["registered"]
    if state.get("nothing_new"):
        decision = {"version": None, "promoted": False, "kind": state["kind"], "decided_at": int(time.time()),
                    "champion_before": state.get("champion_at_start"),
                    "reason": f"nothing new since champion v{state.get('champion_at_start')} "
                              f"(no samples after its training limit); no version registered"}
        update_state(run_dir, registered=decision)
        return decision
    report = json.loads((run_dir / "report.json").read_text())
    metrics = report["results"][MODEL_NAME]
    champion = state.get("champion_at_start")
    champion_ndcg = (report.get("champion", {}).get("metrics") or {}).get("ndcg@10")
    promote_it, reason = gate(metrics["ndcg@10"], champion_ndcg, margin)
    with tracking.step_run(paths, state["parent_run_id"], "register_model"):
        version = state.get("registered_version") or tracking.find_version(paths, "run_dir", str(run_dir))
        if version is None:
            data = load_data(paths)
            model_dir = run_dir / "model"
            _write_serving_extras(model_dir, data)
            logged = tracking.log_interest_model(model_dir, _signature_example(data), metrics=metrics,
                                                 register_tags={"run_dir": str(run_dir), "kind": state["kind"]})
            version = logged["version"]
        update_state(run_dir, registered_version=version)
        tracking.log_metrics(metrics)
        now_champion = tracking.alias_version(paths, tracking.CHAMPION)
        if now_champion != champion and now_champion != version:
            promote_it, reason = False, (f"refused: the champion moved from v{champion} to v{now_champion} after "
                                         f"this run evaluated against v{champion}; no alias changed")
        tracking.log_params({"gate.margin": margin, "gate.champion_before": champion,
                             "gate.promoted": promote_it, "gate.reason": reason})
        run_id = tracking.active_run_id()
    decision = {"version": version, "promoted": promote_it, "reason": reason, "margin": margin,
                "champion_before": champion, "candidate_ndcg@10": metrics["ndcg@10"],
                "champion_ndcg@10": champion_ndcg, "kind": state["kind"], "run_id": run_id,
                "decided_at": int(time.time())}
    refused = reason.startswith("refused")
    tracking.set_version_tags(paths, version, {
        "gate_decision": "refused" if refused else "promoted" if promote_it else "rejected",
        "gate_reason": reason, "ndcg_at_10": f"{metrics['ndcg@10']:.6f}"})
    if promote_it:
        tracking.set_alias(paths, tracking.CHAMPION, version)
        if champion is not None:
            tracking.set_alias(paths, tracking.CHALLENGER, champion)
    elif not refused:
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
