"""One function per pipeline step: load -> pure work -> save -> track, returning a small JSON-safe dict.

The Airflow tasks and ``python -m ml_tasks`` call these and nothing else. Arrays, models and tables
go to files (the export folder, a per-run artifact folder, MLflow); the return values carry paths,
ids and small metric dicts only.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

from ml_tasks.config import ModelConfig, Paths, WarehouseConfig
from ml_tasks.errors import PipelineError

log = logging.getLogger(__name__)
#: below this many evaluated users an evaluation report says its figures are not meaningful
MIN_MEANINGFUL_USERS = 30

SYNTHETIC_EVENTS_FILE = "synthetic_events.csv"


# --- data -----------------------------------------------------------------------------------------


def generate(paths: Paths, out_dir: Path | None = None, users: int | None = None, days: int | None = None,
             seed: int | None = None, events_per_user_day: float | None = None,
             file_format: str = "csv", categories: int | None = None, items: int | None = None) -> dict:
    """Write the synthetic log to the landing folder and its ground truth to ``<data>/synthetic/``."""
    from ml_tasks import synthetic

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


def truth_path(paths: Paths) -> Path:
    return paths.data_dir / "synthetic" / "truth.parquet"


def ingest(paths: Paths, events_path: str | Path | None, fmt: str = "generic") -> dict:
    """Load one file, or every new file of the landing folder, into ``raw.events``."""
    from ml_tasks import ingest as ingest_mod

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
    from ml_tasks import warehouse

    if not paths.warehouse.exists():
        raise PipelineError(f"{paths.warehouse}: no warehouse yet; load events first "
                            "(python -m ml_tasks ingest --events FILE)")
    summary = warehouse.build(paths, config or WarehouseConfig.from_env(), full_refresh=full_refresh,
                              select=select)
    if export:
        summary["exports"] = warehouse.export_ml_tables(paths)
    return summary


def export(paths: Paths) -> dict:
    from ml_tasks import warehouse

    return warehouse.export_ml_tables(paths)


# --- training run state -----------------------------------------------------------------------------
# A DAG run's steps share one folder (``run_dir``): ``state.json`` holds the MLflow parent run id,
# the resolved model config and what each step produced; models and arrays sit beside it.

STATE_FILE = "state.json"
#: the scheduled pipelines' training budget (the evaluation protocol uses ModelConfig's own defaults):
#: a daily/weekly job on 2 cores should train in minutes, not an hour
PIPELINE_MODEL_DEFAULTS: dict[str, Any] = {"epochs": 4, "max_train_sequences": 12_000}


def _read_state(run_dir: Path) -> dict[str, Any]:
    path = run_dir / STATE_FILE
    if not path.exists():
        raise PipelineError(f"{run_dir}: no training run state here (the start step has not run)")
    return json.loads(path.read_text())


def _write_state(run_dir: Path, state: dict[str, Any]) -> None:
    run_dir.mkdir(parents=True, exist_ok=True)
    tmp = run_dir / f".{STATE_FILE}.tmp"
    tmp.write_text(json.dumps(state, indent=1, default=str))
    os.replace(tmp, run_dir / STATE_FILE)


def _update_state(run_dir: Path, **values: Any) -> dict[str, Any]:
    state = _read_state(run_dir)
    state.update(values)
    _write_state(run_dir, state)
    return state


def _model_config(state: dict[str, Any]) -> ModelConfig:
    from ml_tasks.model import _config_from_json

    return _config_from_json(state["config"])


def _load_data(paths: Paths):
    from ml_tasks.model import ModelData

    try:
        return ModelData.from_dir(paths.export_dir)
    except FileNotFoundError as exc:
        raise PipelineError(f"{exc}; build the warehouse first (python -m ml_tasks build)") from exc


def start_training(paths: Paths, run_dir: Path, kind: str = "full_retrain",
                   overrides: dict[str, Any] | None = None, parent_tags: dict[str, str] | None = None,
                   settings: dict[str, Any] | None = None) -> dict:
    """Check the exports, open the MLflow parent run with config, lineage and git commit.

    ``settings``: further :class:`ModelConfig` fields (the DAG's ``model_settings``), checked by name
    and type; ``overrides`` take precedence."""
    from ml_tasks import tracking
    from ml_tasks.config import validate_model_settings
    from ml_tasks.model import _config_to_json

    if (run_dir / STATE_FILE).exists():  # a retried task: keep the run it opened
        state = _read_state(run_dir)
        return {"parent_run_id": state["parent_run_id"], "run_dir": str(run_dir), "resumed": True}
    base = replace(ModelConfig(), **{**PIPELINE_MODEL_DEFAULTS, **validate_model_settings(settings or {})})
    data = _load_data(paths)
    if kind == "periodic_update":
        base = replace(base, fine_tune_epochs=(overrides or {}).get("epochs") or base.fine_tune_epochs)
    config = replace(base, **{k: v for k, v in (overrides or {}).items() if v is not None and k != "epochs"})
    if kind != "periodic_update" and (overrides or {}).get("epochs"):
        config = replace(config, epochs=int(overrides["epochs"]))
    champion = tracking.alias_version(paths, tracking.CHAMPION)
    parent = tracking.start_parent_run(
        paths, run_name=f"{kind}:{run_dir.name}",
        tags={"kind": kind, "run_dir": str(run_dir), **(parent_tags or {})},
        params={"kind": kind, "model": asdict(config), "warehouse": WarehouseConfig.from_env().dbt_vars(),
                "protocol": data.protocol},
    )
    with tracking.step_run(paths, parent, "start_training"):
        for name, frame in (("ml_sequences", data.sequences), ("ml_pair_features", data.pair_features),
                            ("events", data.events)):
            tracking.log_dataset(_lineage_view(frame), name=name,
                                 source=str(paths.export_dir / f"{name}.parquet"))
        tracking.log_metrics({"rows.events": len(data.events), "rows.ml_sequences": len(data.sequences),
                              "rows.ml_pair_features": len(data.pair_features),
                              "users": data.events["user_id"].nunique(),
                              "categories": len(data.categories)})
    _write_state(run_dir, {"kind": kind, "parent_run_id": parent, "config": _config_to_json(config),
                           "champion_at_start": champion, "protocol": data.protocol})
    return {"parent_run_id": parent, "run_dir": str(run_dir), "kind": kind,
            "champion_at_start": champion, "n_events": int(len(data.events))}


def _lineage_view(frame):
    """MLflow digests a frame's content; array columns are digested as JSON text."""
    out = frame.copy()
    for col in out.columns:
        first = out[col].dropna().iloc[0] if out[col].notna().any() else None
        if first is not None and not isinstance(first, str) and hasattr(first, "__len__"):
            out[col] = out[col].map(lambda v: None if v is None else json.dumps([x.item() if hasattr(x, "item")
                                                                                 else x for x in v]))
    return out


def fit_model(paths: Paths, run_dir: Path) -> dict:
    """LSTM -> hidden states -> PCA -> predictor (``ml_tasks.model.select_and_fit``).

    A selection fit (early stopping on the validation cutoff) picks the number of epochs; the final
    fit uses everything before the test cutoff. The stages run in one task because each one is fitted
    on the previous one's outputs over time-split samples (see ``ml_tasks.model.fit``).
    """
    from ml_tasks import model as m
    from ml_tasks import plots, tracking

    state = _read_state(run_dir)
    config = _model_config(state)
    data = _load_data(paths)
    with tracking.step_run(paths, state["parent_run_id"], "fit_model"):
        tracking.log_params({"seed": config.seed, "embedding_dim": config.embedding_dim,
                             "lstm_units": list(config.lstm_units), "epochs_max": config.epochs,
                             "learning_rate": config.learning_rate, "batch_size": config.batch_size,
                             "max_train_sequences": config.max_train_sequences, "predictor": config.predictor,
                             "pca_variance": config.pca_variance})
        final, selection = m.select_and_fit(data, config)
        lstm_info = selection.info["lstm"]
        tracking.log_history(lstm_info["history"])
        curve = final.info.get("pca", {})
        tracking.log_metrics({
            "best_epoch": final.info.get("selected_epochs", 0),
            "train_sequences_per_s": lstm_info.get("sequences_per_s", 0.0),
            "selection_fit_seconds": selection.info.get("fit_seconds", 0.0),
            "final_fit_seconds": final.info.get("fit_seconds", 0.0),
            "n_components": final.n_components,
            "n_predictor_pairs": final.info.get("n_predictor_pairs", 0),
            "vocabulary_size": final.vocab.size,
        })
        if curve:
            tracking.log_figure(plots.explained_variance(curve), "explained_variance.png")
        tracking.log_dict(final.info.get("coefficients", {}), "predictor_coefficients.json")
    final.save(run_dir / "model")
    _update_state(run_dir, best_epoch=final.info.get("selected_epochs"))
    return {"best_epoch": final.info.get("selected_epochs"), "n_components": final.n_components,
            "vocabulary_size": int(final.vocab.size)}


def fine_tune_challenger(paths: Paths, run_dir: Path) -> dict:
    """A challenger fine-tuned from the champion's weights on the newest window (or trained from
    scratch when there is no champion yet)."""
    from ml_tasks import model as m
    from ml_tasks import tracking

    state = _read_state(run_dir)
    champion = state.get("champion_at_start")
    if champion is None:
        log.warning("no champion yet: training the first model from scratch")
        result = fit_model(paths, run_dir)
        return {**result, "fine_tuned_from": None}
    config = _model_config(state)
    data = _load_data(paths)
    base = tracking.load_fitted_model(paths, champion)
    with tracking.step_run(paths, state["parent_run_id"], "fine_tune_challenger"):
        tracking.log_params({"fine_tuned_from_version": champion, "fine_tune_epochs": config.fine_tune_epochs})
        tuned = m.fine_tune(base, data, config)
        tracking.log_history(tuned.info["lstm"].get("history", {}))
        tracking.log_metrics({"n_train_sequences": tuned.info["lstm"].get("n_train_sequences", 0),
                              "fine_tune_seconds": tuned.info["lstm"].get("seconds", 0.0),
                              "update_seconds": tuned.info.get("fit_seconds", 0.0)})
    tuned.save(run_dir / "model")
    _update_state(run_dir, fine_tuned_from=champion)
    return {"fine_tuned_from": champion, "n_components": tuned.n_components}


def extract_interest_features(paths: Paths, run_dir: Path) -> dict:
    """Every (user, cutoff)'s interest vector: the LSTM's last hidden state on the PCA axes."""
    from ml_tasks import model as m
    from ml_tasks import plots, tracking

    state = _read_state(run_dir)
    data = _load_data(paths)
    fitted = m.FittedInterestModel.load(run_dir / "model")
    started = time.perf_counter()
    emb = m.interest_embeddings(fitted, data.sequences)
    seconds = time.perf_counter() - started
    emb.insert(2, "split", data.sequences["split"].to_numpy())
    out = run_dir / "interest_embeddings.parquet"
    emb.to_parquet(out, index=False)
    with tracking.step_run(paths, state["parent_run_id"], "extract_interest_features"):
        tracking.log_metrics({"n_embeddings": len(emb), "n_components": fitted.n_components,
                              "users_per_s": emb["user_id"].nunique() / max(seconds, 1e-9),
                              "sequences_per_s": len(emb) / max(seconds, 1e-9)})
        tracking.log_artifacts(out, "features")
        hist = emb[emb["split"] != "score"]
        some = hist["user_id"].drop_duplicates().head(300)
        tracking.log_figure(plots.trajectories(hist[hist["user_id"].isin(some)]), "interest_trajectories.png")
    return {"path": str(out), "n_embeddings": int(len(emb)), "n_components": int(fitted.n_components)}


def _last(values: list[float] | None) -> float | None:
    return float(values[-1]) if values else None


# --- evaluation and the gate --------------------------------------------------------------------


def evaluate(paths: Paths, run_dir: Path) -> dict:
    """The protocol at the test cutoff: the new model, its ablation, the five baselines and (when one
    exists) the current champion, all on the same users; one MLflow run per method."""
    from ml_tasks import evaluation as ev
    from ml_tasks import model as m
    from ml_tasks import plots, tracking
    from ml_tasks.features import ABLATION_NAME, MODEL_NAME

    state = _read_state(run_dir)
    config = _model_config(state)
    data = _load_data(paths)
    candidate = m.FittedInterestModel.load(run_dir / "model")
    events = ev._events(data)
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
    _update_state(run_dir, evaluated=True)
    return {"ndcg@10": results[MODEL_NAME]["ndcg@10"],
            "ablation_ndcg@10": results[ABLATION_NAME]["ndcg@10"],
            "recency_decay_ndcg@10": results["recency_decay"]["ndcg@10"],
            "popularity_ndcg@10": results["popularity"]["ndcg@10"],
            "champion_ndcg@10": (champion_metrics or {}).get("ndcg@10"),
            "n_eval_users": len(ctx.users)}


def gate(candidate_ndcg: float, champion_ndcg: float | None, margin: float) -> tuple[bool, str]:
    """Promote when there is no champion, or the candidate beats it by ``margin`` (relative)."""
    if champion_ndcg is None:
        return True, "no champion yet"
    needed = champion_ndcg * (1.0 + margin)
    if candidate_ndcg > needed:
        return True, f"ndcg@10 {candidate_ndcg:.4f} > champion {champion_ndcg:.4f} x (1 + {margin:g})"
    return False, f"ndcg@10 {candidate_ndcg:.4f} <= champion {champion_ndcg:.4f} x (1 + {margin:g})"


def register_model(paths: Paths, run_dir: Path, margin: float = 0.0) -> dict:
    """Log the model as one pyfunc version of ``user_interest_model`` and apply the champion gate.

    Idempotent per run: a retried task finds the version it registered and repeats no alias change.
    """
    import mlflow

    from ml_tasks import tracking
    from ml_tasks.features import MODEL_NAME

    state = _read_state(run_dir)
    if state.get("registered"):
        return state["registered"]
    report = json.loads((run_dir / "report.json").read_text())
    metrics = report["results"][MODEL_NAME]
    champion = state.get("champion_at_start")
    champion_ndcg = (report.get("champion", {}).get("metrics") or {}).get("ndcg@10")
    promote_it, reason = gate(metrics["ndcg@10"], champion_ndcg, margin)
    data = _load_data(paths)
    model_dir = run_dir / "model"
    _write_serving_extras(model_dir, data)
    example = _signature_example(data)
    with tracking.step_run(paths, state["parent_run_id"], "register_model"):
        from ml_tasks.serving import InterestModelPyfunc

        output = InterestModelPyfunc.from_dir(model_dir).predict(None, example)
        logged = tracking.log_interest_model(model_dir, example, output, metrics=metrics)
        version = logged["version"]
        tracking.log_metrics(metrics)
        tracking.log_params({"gate.margin": margin, "gate.champion_before": champion,
                             "gate.promoted": promote_it, "gate.reason": reason})
        run_id = mlflow.active_run().info.run_id
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
    _record_decision(paths, decision)
    _update_state(run_dir, registered=decision)
    return decision


def _signature_example(data) -> Any:
    """A few users' recent events: the served model's input."""
    ev = data.events
    users = ev["user_id"].drop_duplicates().head(3)
    sample = ev[ev["user_id"].isin(users)].sort_values("event_ts").groupby("user_id").tail(20)
    return sample[["user_id", "category_id", "event_type", "event_ts"]].reset_index(drop=True)


def _write_serving_extras(model_dir: Path, data) -> None:
    """What the served model needs beside the fitted parts: category ids and recent popularity."""
    from ml_tasks.predictor import popularity_table

    cats = data.categories[["category_idx", "category_id"]]
    cats.to_parquet(model_dir / "categories.parquet", index=False)
    pf = data.pair_features
    latest = pf[pf["cutoff_ts"] == pf["cutoff_ts"].max()]
    pop = popularity_table(latest).drop(columns=["cutoff_ts"])
    pop.to_parquet(model_dir / "popularity.parquet", index=False)
    meta = {"score_cutoff_ts": int(data.protocol["score_cutoff_ts"]),
            "horizon_hours": float(data.horizon_hours)}
    (model_dir / "serving.json").write_text(json.dumps(meta))


def _decisions_path(paths: Paths) -> Path:
    return paths.data_dir / "gate_decisions.jsonl"


def _record_decision(paths: Paths, decision: dict[str, Any]) -> None:
    path = _decisions_path(paths)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as handle:
        handle.write(json.dumps(decision, default=str) + "\n")


def promote(paths: Paths, version: int, reason: str = "manual promotion") -> dict:
    """Point ``champion`` at ``version`` (rollback or manual promotion), recorded in MLflow."""
    from ml_tasks import tracking

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
    _record_decision(paths, decision)
    return {"champion": version, "champion_before": before, "changed": True, "reason": reason}


# --- batch scoring --------------------------------------------------------------------------------

DEFAULT_ACTIVE_DAYS = 7.0


def score_run(paths: Paths, run_dir: Path, active_days: float | None = None) -> dict:
    """Batch scoring at the end of a train/update DAG run (logged under its parent run)."""
    state = _read_state(run_dir)
    result = score_users(paths, active_days=active_days, parent_run_id=state["parent_run_id"])
    _write_last_run(paths, run_dir, state, result)
    return result


def score_users(paths: Paths, active_days: float | None = None, parent_run_id: str | None = None) -> dict:
    """Score every active user with the champion; write scores, trajectories and shift flags."""
    import numpy as np
    import pandas as pd

    from ml_tasks import model as m
    from ml_tasks import scoring, serving_store, tracking

    champion = tracking.alias_version(paths, tracking.CHAMPION)
    if champion is None:
        raise PipelineError("no champion model to score with; train one first (python -m ml_tasks train)")
    data = _load_data(paths)
    active_days = DEFAULT_ACTIVE_DAYS if active_days is None else active_days
    fitted = tracking.load_fitted_model(paths, champion)
    seqs = data.sequences
    score_cutoff = int(data.protocol["score_cutoff_ts"])
    rows = scoring.active_users(seqs[seqs["split"] == "score"], active_days)
    users = set(rows["user_id"].astype(str))
    pf = data.pair_features
    pf_now = pf[pf["cutoff_ts"] == score_cutoff]
    from ml_tasks.predictor import popularity_table

    ranked = m.score(fitted, rows, pf_now, top_n=20, popularity=popularity_table(pf_now))
    id_of = dict(zip(data.categories["category_idx"], data.categories["category_id"], strict=True))
    scores = pd.DataFrame({"user_id": ranked["user_id"].astype(str),
                           "category_id": ranked["category_idx"].map(id_of).astype(str),
                           "score": ranked["score"].astype(float), "rank": ranked["rank"].astype(int)})
    history = seqs[seqs["user_id"].astype(str).isin(users)]
    emb = m.interest_embeddings(fitted, history)
    pcs = [c for c in emb.columns if c.startswith("pc_")]
    trajectory = pd.DataFrame({"user_id": emb["user_id"], "cutoff_ts": emb["cutoff_ts"],
                               "components": list(emb[pcs].to_numpy(dtype=float))})
    previous = serving_store.previous_scoring(paths.warehouse, score_cutoff)
    prev_limit = previous if previous is not None else score_cutoff - 24 * 3600
    now = emb[emb["cutoff_ts"] == score_cutoff]
    before = emb[emb["cutoff_ts"] <= prev_limit].sort_values("cutoff_ts").groupby("user_id").tail(1)
    shifts = scoring.interest_shifts(now, before)
    top1 = scores[scores["rank"] == 1].set_index("user_id")["category_id"]
    flagged = shifts[shifts["is_shift"]].copy()
    flagged["top_category_id"] = flagged["user_id"].map(top1)
    written = serving_store.write_scoring(paths.warehouse, score_cutoff, champion, scores, trajectory,
                                          flagged.drop(columns=["is_shift"]), int(time.time()))
    result = {"model_version": champion, "scored_at": score_cutoff, "active_days": active_days, **written}
    from ml_tasks import tracking as t

    with t.step_run(paths, parent_run_id, "score_users"):
        t.log_metrics({k: v for k, v in written.items()})
        t.log_params({"model_version": champion, "active_days": active_days})
        if len(shifts):
            t.log_metrics({"shift_threshold": float(shifts["threshold"].iloc[0]),
                           "median_interest_distance": float(np.median(shifts["distance"]))})
    return result


def _write_last_run(paths: Paths, run_dir: Path, state: dict[str, Any], scoring: dict[str, Any]) -> None:
    pointer = {"run_dir": str(run_dir), "kind": state.get("kind"), "parent_run_id": state.get("parent_run_id"),
               "registered": state.get("registered"), "scoring": scoring}
    (paths.data_dir / "last_run.json").write_text(json.dumps(pointer, indent=1, default=str))


def status(paths: Paths) -> dict:
    """Champion, its metrics, scored users, last update time and the last gate decision."""
    from ml_tasks import serving_store, tracking

    champion = tracking.alias_version(paths, tracking.CHAMPION)
    info = tracking.version_info(paths, champion) if champion is not None else {}
    decisions = _decisions_path(paths)
    last = json.loads(decisions.read_text().splitlines()[-1]) if decisions.exists() else None
    scored = serving_store.read_status(paths.warehouse)
    metrics = {k.replace("_at_", "@"): v for k, v in info.get("metrics", {}).items()
               if k in ("ndcg_at_10", "recall_at_10", "mrr")}
    return {
        "champion_version": champion,
        "champion_metrics": metrics,
        "challenger_version": tracking.alias_version(paths, tracking.CHALLENGER),
        "n_scored_users": scored.get("n_scored_users", 0),
        "scored_at": scored.get("scored_at"),
        "last_update_time": (last or {}).get("decided_at"),
        "last_gate_decision": last,
    }


# --- whole pipelines without Airflow ------------------------------------------------------------


def _cli_run_dir(paths: Paths, kind: str) -> Path:
    return paths.artifact_dir / "cli" / f"{kind}_{time.strftime('%Y%m%dT%H%M%S')}_{os.getpid()}"


def train_pipeline(paths: Paths, overrides: dict[str, Any] | None = None, margin: float = 0.0,
                   run_dir: Path | None = None) -> dict:
    """The ``train_interest_model`` DAG's steps in one process."""
    run_dir = run_dir or _cli_run_dir(paths, "train")
    return _run_steps([
        ("start", lambda: start_training(paths, run_dir, kind="full_retrain", overrides=overrides)),
        ("fit", lambda: fit_model(paths, run_dir)),
        ("features", lambda: extract_interest_features(paths, run_dir)),
        ("evaluate", lambda: evaluate(paths, run_dir)),
        ("register", lambda: register_model(paths, run_dir, margin=margin)),
        ("score", lambda: score_run(paths, run_dir)),
    ])


def _run_steps(steps: list[tuple[str, Any]]) -> dict:
    """Run named steps in order; each result gets its wall time (``seconds``)."""
    out: dict[str, Any] = {}
    for name, call in steps:
        started = time.perf_counter()
        result = call()
        out[name] = {**result, "seconds": round(time.perf_counter() - started, 1)}
        log.info("%s done in %.1fs", name, out[name]["seconds"])
    return out


def refresh_warehouse(paths: Paths, run_dir: Path | None = None) -> dict:
    """Incremental ``dbt build`` and export, so an update also sees rows ingested since the last build."""
    return build(paths, full_refresh=False)


def update_pipeline(paths: Paths, margin: float | None = None, overrides: dict[str, Any] | None = None,
                    run_dir: Path | None = None, refresh: bool = True) -> dict:
    """The ``update_interest_model`` DAG's steps in one process."""
    run_dir = run_dir or _cli_run_dir(paths, "update")
    steps = [("start", lambda: start_training(paths, run_dir, kind="periodic_update", overrides=overrides))]
    if refresh:
        steps.append(("refresh", lambda: refresh_warehouse(paths, run_dir)))
    steps += [
        ("fine_tune", lambda: fine_tune_challenger(paths, run_dir)),
        ("evaluate", lambda: evaluate(paths, run_dir)),
        ("register", lambda: register_model(paths, run_dir, margin=0.01 if margin is None else margin)),
        ("score", lambda: score_run(paths, run_dir)),
    ]
    return _run_steps(steps)


def evaluate_file(paths: Paths, events: Path, fmt: str, out: Path, horizon_days: float = 2.0,
                  n_seeds: int = 3, dataset: str | None = None, keep_workspace: Path | None = None,
                  overrides: dict[str, Any] | None = None) -> dict:
    """EVALUATION.md's protocol on one file: ingest -> build -> model and baselines, in a workspace.

    The report goes to ``out``; every method is logged to MLflow as a run with the same metric names.
    """
    import tempfile

    from ml_tasks import evaluation, plots, tracking
    from ml_tasks.features import ABLATION_NAME, MODEL_NAME
    from ml_tasks.model import ModelData

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
        report = evaluation.run_evaluation(data, config, seeds=tuple(range(n_seeds)), dataset=name,
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
        tracking.log_dict(report, "report.json")
        tracking.log_figure(plots.model_vs_baselines(report), "model_vs_baselines.png")
    res = report["results"]
    return {"out": str(out), "dataset": report["dataset"], "n_eval_users": n_eval,
            **({"warnings": report["warnings"]} if report["warnings"] else {}),
            "seconds": round(time.perf_counter() - started, 1), "mlflow_parent_run_id": parent,
            **{name: round(res[name]["ndcg@10"], 4) for name in (MODEL_NAME, ABLATION_NAME, "recency_decay",
                                                                 "user_frequency", "popularity")}}


def summary(paths: Paths) -> str:
    """What ``make run`` prints at the end: data processed, metrics vs baselines, where to look."""
    from ml_tasks.features import ABLATION_NAME, BASELINE_NAMES, MODEL_NAME

    pointer = paths.data_dir / "last_run.json"
    if not pointer.exists():
        raise PipelineError("no pipeline run recorded yet; run `make run` first")
    last = json.loads(pointer.read_text())
    run_dir = Path(last["run_dir"])
    report = json.loads((run_dir / "report.json").read_text())
    data = _load_data(paths)
    lines = [
        "=" * 72,
        "Interest-evolution pipeline: summary",
        "=" * 72,
        f"events processed   {len(data.events):>12,}   users {data.events['user_id'].nunique():,}"
        f"   categories {len(data.categories):,}",
        f"ML samples         {len(data.sequences):>12,}   (user, cutoff) sequences; "
        f"{len(data.pair_features):,} (user, category) feature rows",
        f"evaluated users    {report['protocol']['n_eval_users']:>12,}   at the test cutoff "
        f"(horizon {report['protocol']['horizon_days']:g} days, full ranking of "
        f"{report['protocol']['n_categories']:,} categories)",
        "",
        f"{'method':<26}{'ndcg@10':>10}{'recall@10':>11}{'mrr':>8}",
    ]
    order = [MODEL_NAME, ABLATION_NAME, *sorted(BASELINE_NAMES, key=lambda n: -report["results"][n]["ndcg@10"])]
    for name in order:
        r = report["results"][name]
        lines.append(f"{name:<26}{r['ndcg@10']:>10.4f}{r['recall@10']:>11.4f}{r['mrr']:>8.4f}")
    reg = last.get("registered") or {}
    score = last.get("scoring") or {}
    lines += [
        "",
        f"recency_decay half-life (chosen on validation): {report.get('half_life_hours')} h",
        f"MLflow parent run   {last.get('parent_run_id')}   (experiment user_interest)",
        f"registered model    user_interest_model v{reg.get('version')}: "
        f"{'promoted to @champion' if reg.get('promoted') else 'kept as @challenger'} ({reg.get('reason')})",
        f"scored users        {score.get('n_scored_users', 0):,} active users -> serving.user_interest_scores; "
        f"{score.get('n_shifts', 0)} interest shifts flagged",
        f"warehouse           {paths.warehouse}",
        "",
        "Look around:",
        "  make airflow    # Airflow UI on http://127.0.0.1:8080 (DAG runs of this data)",
        "  make mlflow     # MLflow UI on http://127.0.0.1:5000 (runs, baselines, registry)",
        "  make update     # the periodic update DAG once",
        "  .venv/bin/python -m ml_tasks status",
    ]
    return "\n".join(lines)


# --- simulation of periodic updates ---------------------------------------------------------------


def _canonical_events(path: Path, fmt: str, scratch: Path):
    """Any supported file -> canonical events (through the real loader, so the rules are the same)."""
    import duckdb

    from ml_tasks import ingest as ingest_mod

    try:
        ingest_mod.ingest_file(path, fmt, scratch)
    except ingest_mod.IngestError as exc:
        raise PipelineError(str(exc)) from exc
    con = duckdb.connect(str(scratch), read_only=True)
    try:
        return con.execute("""select distinct user_id, item_id, category_id, event_type,
                                     epoch(event_ts)::bigint as event_ts
                              from raw.events order by event_ts, user_id""").df()
    finally:
        con.close()


def simulate(paths: Paths, days: int = 4, out: Path | None = None, events: Path | None = None,
             fmt: str = "generic", overrides: dict[str, Any] | None = None) -> dict:
    """Replay a log day by day through ingest -> incremental dbt build -> models.

    The log's last ``days`` days arrive one per step. The first model is trained on everything
    before them. After each new day, three models are evaluated on the newest label window (the
    protocol's test cutoff of the data so far), on the same users: the first model never updated, a
    chain of daily fine-tunes from it (``periodic_update``), and a fresh fit on all data so far
    (``full_retrain``, what ``train_interest_model`` runs: the selection fit up to ``T_val`` and the
    final fit up to ``T_test``). ``update_cost_ratio`` = mean fine-tune time / mean full-retrain
    time; ``update_cost_ratio_vs_final_fit`` divides by the final fit alone.
    """
    import tempfile

    import numpy as np

    from ml_tasks import evaluation as ev
    from ml_tasks import model as m
    from ml_tasks import plots, synthetic, tracking

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
        log_frame = _canonical_events(events, fmt, root / "scratch.duckdb")
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
            return m.ModelData.from_dir(ws.export_dir)

        data = land_and_build(log_frame[log_frame["event_ts"] < bounds[0]], "day_0")
        base, _selection = m.select_and_fit(data, config)
        never, periodic = base, base
        per_day = []
        for k in range(1, days + 1):
            day = log_frame[(log_frame["event_ts"] >= bounds[k - 1]) & (log_frame["event_ts"] < bounds[k])]
            data = land_and_build(day, f"day_{k}")
            t0 = time.perf_counter()
            periodic = m.fine_tune(periodic, data, config)
            update_s = time.perf_counter() - t0
            t0 = time.perf_counter()
            full, _selection = m.select_and_fit(data, config)
            retrain_s = time.perf_counter() - t0
            ctx = ev.cutoff_context(ev._events(data), data.test_cutoff_ts, data.horizon_hours)
            row = {"day": k, "cutoff_ts": data.test_cutoff_ts, "n_eval_users": len(ctx.users),
                   "update_seconds": update_s, "retrain_seconds": retrain_s,
                   "retrain_final_fit_seconds": float(full.info["fit_seconds"]),
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
    ratio_final = update_s / float(np.mean([r["retrain_final_fit_seconds"] for r in per_day]))
    report = {
        "days": days, "source": str(events), "results": results, "update_cost_ratio": ratio,
        "update_cost_ratio_vs_final_fit": ratio_final,
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
        tracking.log_metrics({"update_cost_ratio": ratio, "update_cost_ratio_vs_final_fit": ratio_final,
                              "periodic_vs_never": report["periodic_vs_never"]})
        tracking.log_dict(report, "simulation.json")
        tracking.log_figure(plots.metrics_over_days(per_day, methods), "ndcg_over_days.png")
    return {"out": str(out) if out else None, "update_cost_ratio": round(ratio, 3),
            "update_cost_ratio_vs_final_fit": round(ratio_final, 3),
            "periodic_vs_never": round(report["periodic_vs_never"], 4),
            **{f"{name}.ndcg@10": round(results[name]["ndcg@10"], 4) for name in methods},
            "mlflow_parent_run_id": parent, "seconds": round(report["seconds"], 1)}
