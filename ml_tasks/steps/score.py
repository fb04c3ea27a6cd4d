"""Batch scoring with the champion: both rankings, interest trajectories and shift flags into the warehouse.

The overall ranking (every category) goes to ``serving.user_interest_scores``, the discover ranking
(only categories outside each user's history, the model's discover head) to
``serving.user_discover_scores``; both top 20 per user, written in one transaction. Shift flags use the
detector the evaluate step chose for the model against planted switches (synthetic data: the model's
interest vectors or recency-decay category shares, with the threshold chosen on validation days); without
one, a robust rule on the interest vectors (median + 5 scaled MADs of the day's distances, at least 0.8).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ml_tasks import tracking
from ml_tasks.config import Paths
from ml_tasks.data import serving_store
from ml_tasks.errors import PipelineError
from ml_tasks.evaluation import shift_flags
from ml_tasks.model.predictor import popularity_table
from ml_tasks.model.score import interest_embeddings, score
from ml_tasks.serving import scoring
from ml_tasks.steps.state import load_data, read_state

DEFAULT_ACTIVE_DAYS = 7.0
TOP_N = 20  # categories per user in each ranking


def _serving_frame(ranked: pd.DataFrame, id_of: dict) -> pd.DataFrame:
    """``user_id, category_id, score, rank`` of a :func:`ml_tasks.model.score.score` frame."""
    return pd.DataFrame({"user_id": ranked["user_id"].astype(str),
                         "category_id": ranked["category_idx"].map(id_of).astype(str),
                         "score": ranked["score"].astype(float), "rank": ranked["rank"].astype(int)})


def score_run(paths: Paths, run_dir: Path, active_days: float | None = None) -> dict:
    """Batch scoring at the end of a train/update DAG run (logged under its parent run)."""
    state = read_state(run_dir)
    result = score_users(paths, active_days=active_days, parent_run_id=state["parent_run_id"])
    _write_last_run(paths, run_dir, state, result)
    return result


def score_users(paths: Paths, active_days: float | None = None, parent_run_id: str | None = None) -> dict:
    """Score every active user with the champion; write scores, trajectories and shift flags."""

    champion = tracking.alias_version(paths, tracking.CHAMPION)
    if champion is None:
        raise PipelineError("no champion model to score with; train one first (python -m ml_tasks train)")
    data = load_data(paths)
    active_days = DEFAULT_ACTIVE_DAYS if active_days is None else active_days
    fitted = tracking.load_fitted_model(paths, champion)
    seqs = data.sequences
    score_cutoff = int(data.protocol["score_cutoff_ts"])
    rows = scoring.active_users(seqs[seqs["split"] == "score"], active_days)
    users = set(rows["user_id"].astype(str))
    pf = data.pair_features
    pf_now = pf[pf["cutoff_ts"] == score_cutoff]

    pop_now = popularity_table(pf_now)
    id_of = dict(zip(data.categories["category_idx"], data.categories["category_id"], strict=True))
    scores, discover = (
        _serving_frame(score(fitted, rows, pf_now, top_n=TOP_N, popularity=pop_now, ranking=ranking), id_of)
        for ranking in ("overall", "discover")
    )
    history = seqs[seqs["user_id"].astype(str).isin(users)]
    emb = interest_embeddings(fitted, history)
    pcs = [c for c in emb.columns if c.startswith("pc_")]
    trajectory = pd.DataFrame({"user_id": emb["user_id"], "cutoff_ts": emb["cutoff_ts"],
                               "components": list(emb[pcs].to_numpy(dtype=float))})
    previous = serving_store.previous_scoring(paths.warehouse, score_cutoff)
    prev_limit = previous if previous is not None else score_cutoff - 24 * 3600
    now = emb[emb["cutoff_ts"] == score_cutoff]
    before = emb[emb["cutoff_ts"] <= prev_limit].sort_values("cutoff_ts").groupby("user_id").tail(1)
    shifts = _shifts(fitted, data, now, before, score_cutoff, prev_limit)
    top1 = scores[scores["rank"] == 1].set_index("user_id")["category_id"]
    flagged = shifts[shifts["is_shift"]].copy()
    flagged["top_category_id"] = flagged["user_id"].map(top1)
    written = serving_store.write_scoring(paths.warehouse, score_cutoff, champion, scores, trajectory,
                                          flagged.drop(columns=["is_shift"]), int(time.time()),
                                          discover=discover)
    result = {"model_version": champion, "scored_at": score_cutoff, "active_days": active_days, **written}

    with tracking.step_run(paths, parent_run_id, "score_users"):
        tracking.log_metrics({k: v for k, v in written.items()})
        tracking.log_params({"model_version": champion, "active_days": active_days,
                             "shift_detector": _detector(fitted)["detector"]})
        if len(shifts):
            tracking.log_metrics({"shift_threshold": float(shifts["threshold"].iloc[0]),
                                  "median_shift_distance": float(np.median(shifts["distance"]))})
    return result


def _detector(fitted: Any) -> dict[str, Any]:
    """The shift detector chosen for this model on validation days against planted switches (the evaluate
    step, synthetic data); without one, the robust rule on the interest vectors."""
    return fitted.info.get("shift_detector") or {"detector": "embedding_fixed_rule"}


def _shifts(fitted: Any, data: Any, now: pd.DataFrame, before: pd.DataFrame, score_cutoff: int,
            prev_limit: int) -> pd.DataFrame:
    """``user_id, previous_cutoff_ts, distance, threshold, is_shift`` with the model's shift detector."""
    chosen = _detector(fitted)
    if chosen["detector"] == "embedding_fixed_rule":
        return scoring.interest_shifts(now, before)
    if chosen["detector"] == "embedding":
        return scoring.interest_shifts(now, before, threshold=float(chosen["threshold"]))
    dist = shift_flags.distance_between(data.events.assign(user_id=data.events["user_id"].astype(str)),
                                        list(now["user_id"]), score_cutoff, prev_limit,
                                        float(chosen["half_life_hours"]))
    threshold = float(chosen["threshold"])
    return pd.DataFrame({"user_id": dist.index.astype(str), "previous_cutoff_ts": np.int64(prev_limit),
                         "distance": dist.to_numpy(), "threshold": threshold,
                         "is_shift": dist.to_numpy() > threshold})


def _write_last_run(paths: Paths, run_dir: Path, state: dict[str, Any], scoring: dict[str, Any]) -> None:
    pointer = {"run_dir": str(run_dir), "kind": state.get("kind"), "parent_run_id": state.get("parent_run_id"),
               "registered": state.get("registered"), "scoring": scoring}
    (paths.data_dir / "last_run.json").write_text(json.dumps(pointer, indent=1, default=str))
