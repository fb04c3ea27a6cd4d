"""The evaluation step: the protocol at the test cutoff for the new model, its ablation, the baselines
and the champion, on the same users, with bootstrap intervals for every comparison; on the synthetic
data (its truth file beside the warehouse's data), also how fast each method follows a planted switch.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ml_tasks import tracking
from ml_tasks.config import Paths
from ml_tasks.contracts import ABLATION_NAME, BASELINE_NAMES, MODEL_NAME
from ml_tasks.data.synthetic.config import TRUTH_FILE
from ml_tasks.errors import PipelineError
from ml_tasks.evaluation import plots, shift_flags
from ml_tasks.evaluation import protocol as ev
from ml_tasks.evaluation.compare import CI_METRICS, comparison_fields, confidence, interval_metrics
from ml_tasks.evaluation.metrics import mean_metrics
from ml_tasks.evaluation.switch_follow import switch_follow, truth_mismatch
from ml_tasks.model.persist import FittedInterestModel
from ml_tasks.model.samples import score_rows_at
from ml_tasks.model.score import interest_embeddings
from ml_tasks.steps import background as background_step
from ml_tasks.steps.state import load_data, model_config, read_state, update_state

log = logging.getLogger(__name__)

#: events after a planted switch that the switch-follow measurement looks at (in ``make run``)
SWITCH_FOLLOW_EVENTS = 12
#: shift flags: daily scorings replayed before the score cutoff; the last TEST of them are the test days
SHIFT_REPLAY_DAYS, SHIFT_TEST_DAYS = 8, 3
CHAMPION = "champion"


def truth_path(paths: Paths) -> Path:
    """Where ``python -m ml_tasks generate`` leaves the synthetic data's ground truth."""
    return paths.data_dir / "synthetic" / TRUTH_FILE


def planted_switches(truth: pd.DataFrame, model: Any, data: Any, half_life_hours: float) -> dict[str, Any]:
    """:func:`ml_tasks.evaluation.switch_follow.switch_follow` on the synthetic truth (:func:`planted_truth`)."""
    started = time.perf_counter()
    result = switch_follow(model, data, truth, max_events=SWITCH_FOLLOW_EVENTS, half_life_hours=half_life_hours)
    result["seconds"] = time.perf_counter() - started
    return result


def planted_truth(paths: Paths, data: Any) -> pd.DataFrame | None:
    """The synthetic data's truth file when it describes ``data``; ``None`` (and a log line) otherwise."""
    path = truth_path(paths)
    if not path.exists():
        return None
    truth = pd.read_parquet(path)
    reason = truth_mismatch(truth, data)
    if reason:
        log.info("planted switches not judged: %s does not describe the data (%s)", path, reason)
        return None
    return truth


def shift_flag_replay(truth: pd.DataFrame, model: FittedInterestModel, data: Any) -> dict[str, Any] | None:
    """The interest-shift flags judged against the planted switches (:mod:`ml_tasks.evaluation.shift_flags`):
    daily scorings at ``score_cutoff - k days`` replayed with this model (its interest vectors) and with
    the recency-profile detector; thresholds, half-life and detector chosen on the earlier days, judged on
    the last ``SHIFT_TEST_DAYS``; ``truth``: :func:`planted_truth`. ``None`` with too few days of data."""
    started = time.perf_counter()
    score_ts = int(data.protocol["score_cutoff_ts"])
    first_ts = int(data.events["event_ts"].min())
    cutoffs = [score_ts - k * 86_400 for k in range(SHIFT_REPLAY_DAYS, -1, -1) if score_ts - k * 86_400 > first_ts]
    if len(cutoffs) < SHIFT_TEST_DAYS + 3:
        log.info("shift flags not judged: %d daily cutoffs in the data", len(cutoffs))
        return None
    # users as integer codes from here on (pandas' map/isin on string ids dominated the replay's time)
    codes, names = pd.factorize(data.events["user_id"].astype(str).to_numpy(dtype=object))
    events = data.events[["category_idx", "event_type", "event_ts"]].assign(user_id=codes).sort_values(
        ["user_id", "event_ts"], kind="stable")
    vectors = interest_embeddings(model, score_rows_at(events, cutoffs, model.sequence_length))
    vectors["user_id"] = vectors["user_id"].astype(np.int64)
    embedding = shift_flags.vector_distances(vectors, cutoffs, events)
    profiles = {hl: shift_flags.profile_distances(events, cutoffs, hl) for hl in shift_flags.PROFILE_HALF_LIVES}
    sw = truth[truth["profile"] == "switch"]
    switch_ts = sw.groupby(sw["user_id"].astype(str).to_numpy(dtype=object))["switch_ts"].first().astype(float)
    switch_ts.index = pd.Index(names).get_indexer(switch_ts.index)
    switch_ts = switch_ts[switch_ts.index >= 0]  # switch users without events: nothing to flag
    result = shift_flags.compare_detectors(embedding, profiles, switch_ts, events,
                                           test_from_ts=cutoffs[-SHIFT_TEST_DAYS - 1])
    result["seconds"] = time.perf_counter() - started
    return result


def _shift_metrics(result: dict[str, Any]) -> dict[str, float]:
    out = {}
    for part in ("validation", "test"):
        for detector, m in result[part].items():
            for key in ("precision", "recall", "f1", "n_flags", "n_switches", "delay_hours_median",
                        "delay_events_median"):
                if key in m:
                    out[f"shift_flags.{part}.{detector}.{key}"] = m[key]
    out["shift_flags.chosen_threshold"] = result["chosen"]["threshold"]
    return out


def _record_shift_detector(run_dir: Path, chosen: dict[str, Any]) -> None:
    """The chosen detector goes with the model (``model.json``'s info), for the scoring step."""
    path = run_dir / "model" / "model.json"
    meta = json.loads(path.read_text())
    if meta.setdefault("info", {}).get("shift_detector") == chosen:
        return  # a retried evaluate: the files stay byte-identical (their digest is recorded at registration)
    meta["info"]["shift_detector"] = chosen
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(meta, indent=1))
    tmp.replace(path)


def _switch_metrics(result: dict[str, Any]) -> dict[str, float]:
    out = {}
    for kind in ("", "_discover"):
        for name, stats in result[f"events_to_follow{kind}"].items():
            for stat in ("median", "mean", "share_within_max"):
                out[f"switch_follow{kind}.{name}.{stat}"] = stats[stat]
    out.update({f"switch_follow.ndcg@10.{n}": v for n, v in result["ndcg@10_after_switch"].items()})
    out["switch_follow.n_users"] = result["n_users_followed"]
    out["switch_follow_discover.n_users"] = result["n_users_discover_followed"]
    return out


def evaluate(paths: Paths, run_dir: Path) -> dict:
    """The protocol at the test cutoff: the new model, its ablation, the baselines and (when one
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
    per_user = {
        MODEL_NAME: ctx.per_user(ev.model_score_matrix(candidate, data, ctx, use_lstm=True)),
        ABLATION_NAME: ctx.per_user(ev.model_score_matrix(candidate, data, ctx, use_lstm=False)),
        **ev.baseline_tables(data, ctx, half_life, population=background_step.population(run_dir, state, data)),
        "recency_decay_72h": ev.baseline_tables_one(data, ctx, "recency_decay", 72.0),
    }
    champion = state.get("champion_at_start")
    champion_metrics = None
    if champion is not None:
        champ_model = tracking.load_fitted_model(paths, champion)
        per_user[CHAMPION] = ctx.per_user(ev.model_score_matrix(champ_model, data, ctx, use_lstm=True))
        champion_metrics = mean_metrics(per_user[CHAMPION])
    results: dict[str, dict[str, Any]] = {n: mean_metrics(t) for n, t in per_user.items() if n != CHAMPION}
    conf = confidence(results, per_user, BASELINE_NAMES, extra=(CHAMPION,) if champion is not None else ())
    truth = planted_truth(paths, data)
    switches = None if truth is None else planted_switches(truth, candidate, data, half_life)
    shifts = None if truth is None else shift_flag_replay(truth, candidate, data)
    if shifts is not None:
        _record_shift_detector(run_dir, shifts["chosen"])
    report = {
        "dataset": "warehouse",
        "protocol": {"cutoff_ts": ctx.cutoff_ts, "horizon_days": data.horizon_hours / 24,
                     "n_eval_users": len(ctx.users), "n_categories": int(len(ctx.candidates))},
        "results": results,
        **conf,
        "half_life_hours": half_life,
        "half_life_validation_ndcg@10": {str(k): v for k, v in curve.items()},
        "champion": {"version": champion, "metrics": champion_metrics},
        "background": state.get("background") or {"used": False},
        **({"switch_follow": switches} if switches else {}),
        **({"shift_flags": shifts} if shifts else {}),
    }
    (run_dir / "report.json").write_text(json.dumps(report, indent=1))
    tracking.log_baseline_runs(paths, state["parent_run_id"], report)
    with tracking.step_run(paths, state["parent_run_id"], "evaluate"):
        tracking.log_metrics(interval_metrics(results[MODEL_NAME]))
        tracking.log_metrics({f"{k}.{name}": mm[k] for name, mm in results.items() for k in CI_METRICS if k in mm})
        cmp_metrics, cmp_params = comparison_fields(conf["comparisons"])
        tracking.log_metrics(cmp_metrics)
        tracking.log_params({**cmp_params, "ci_method": conf["ci_method"]})
        if champion_metrics:
            tracking.log_metrics(champion_metrics, prefix="champion.")
        tracking.log_dict(report, "report.json")
        tracking.log_figure(plots.model_vs_baselines(report), "model_vs_baselines.png")
        tracking.log_figure(plots.model_vs_baselines(report, "ndcg@10_discover"), "discover_vs_baselines.png")
        if switches:
            tracking.log_metrics(_switch_metrics(switches))
            tracking.log_figure(plots.switch_follow(switches), "switch_follow.png")
            tracking.log_figure(plots.switch_follow(switches, discover=True), "switch_follow_discover.png")
        if shifts:
            tracking.log_metrics(_shift_metrics(shifts))
            tracking.log_params({"shift_detector": shifts["chosen"]["detector"],
                                 "shift_half_life_hours": shifts["chosen"]["half_life_hours"]})
    update_state(run_dir, evaluated=True)
    comps = conf["comparisons"]
    return {"ndcg@10": results[MODEL_NAME]["ndcg@10"],
            "ablation_ndcg@10": results[ABLATION_NAME]["ndcg@10"],
            "recency_decay_ndcg@10": results["recency_decay"]["ndcg@10"],
            "popularity_ndcg@10": results["popularity"]["ndcg@10"],
            "ndcg@10_discover": results[MODEL_NAME]["ndcg@10_discover"],
            "champion_ndcg@10": (champion_metrics or {}).get("ndcg@10"),
            "n_eval_users": len(ctx.users),
            "verdicts": {key: c["verdict"] for key, c in comps.items()},
            **({"switch_follow_seconds": round(switches["seconds"], 1)} if switches else {}),
            **({"shift_detector": shifts["chosen"]} if shifts else {})}
