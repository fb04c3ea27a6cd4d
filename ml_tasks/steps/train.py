"""Training steps: open the run, fit the model (or fine-tune the champion), extract interest features.
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

from ml_tasks import tracking
from ml_tasks.config import ModelConfig, Paths, WarehouseConfig, validate_model_settings
from ml_tasks.evaluation import plots
from ml_tasks.model.fit import fine_tune, fit
from ml_tasks.model.persist import FittedInterestModel
from ml_tasks.model.score import interest_embeddings
from ml_tasks.steps import background as background_step
from ml_tasks.steps.state import (
    PIPELINE_MODEL_DEFAULTS,
    STATE_FILE,
    load_data,
    model_config,
    read_state,
    update_state,
    write_state,
)

log = logging.getLogger(__name__)

def start_training(paths: Paths, run_dir: Path, kind: str = "full_retrain",
                   overrides: dict[str, Any] | None = None, parent_tags: dict[str, str] | None = None,
                   settings: dict[str, Any] | None = None, background: dict[str, Any] | None = None) -> dict:
    """Check the exports, open the MLflow parent run with config, lineage and git commit.

    ``settings``: further :class:`ModelConfig` fields (the DAG's ``model_settings``), checked by name
    and type; ``overrides`` take precedence. ``background``: ``{"events": FILE, "format": F}``, other
    users' events for the LSTM and the transition statistics (:mod:`ml_tasks.steps.background`)."""
    if (run_dir / STATE_FILE).exists():  # a retried task: keep the run it opened
        state = read_state(run_dir)
        return {"parent_run_id": state["parent_run_id"], "run_dir": str(run_dir), "resumed": True}
    base = replace(ModelConfig(), **{**PIPELINE_MODEL_DEFAULTS, **validate_model_settings(settings or {})})
    data = load_data(paths)
    if kind == "periodic_update":
        base = replace(base, fine_tune_epochs=(overrides or {}).get("epochs") or base.fine_tune_epochs)
    config = replace(base, **{k: v for k, v in (overrides or {}).items() if v is not None and k != "epochs"})
    if kind != "periodic_update" and (overrides or {}).get("epochs"):
        config = replace(config, epochs=int(overrides["epochs"]))
    bg_info: dict[str, Any] = {"used": False}
    if background and background.get("events"):
        bg_info = background_step.prepare(run_dir, data, background["events"], background.get("format", "generic"))
    champion = tracking.alias_version(paths, tracking.CHAMPION)
    parent = tracking.start_parent_run(
        paths, run_name=f"{kind}:{run_dir.name}",
        tags={"kind": kind, "run_dir": str(run_dir), **(parent_tags or {})},
        params={"kind": kind, "model": asdict(config), "warehouse": WarehouseConfig.from_env().dbt_vars(),
                "protocol": data.protocol,
                "background": {k: bg_info.get(k) for k in ("used", "file", "events_used", "users_used")}},
    )
    with tracking.step_run(paths, parent, "start_training"):
        for name, frame in (("ml_sequences", data.sequences), ("ml_pair_features", data.pair_features),
                            ("events", data.events)):
            tracking.log_dataset(frame, name=name,
                                 source=str(paths.export_dir / f"{name}.parquet"))
        tracking.log_metrics({"rows.events": len(data.events), "rows.ml_sequences": len(data.sequences),
                              "rows.ml_pair_features": len(data.pair_features),
                              "users": data.events["user_id"].nunique(),
                              "categories": len(data.categories)})
    write_state(run_dir, {"kind": kind, "parent_run_id": parent, "config": config.to_json(),
                           "champion_at_start": champion, "protocol": data.protocol, "background": bg_info})
    return {"parent_run_id": parent, "run_dir": str(run_dir), "kind": kind,
            "champion_at_start": champion, "n_events": int(len(data.events))}


def fit_model(paths: Paths, run_dir: Path) -> dict:
    """LSTM -> hidden states -> PCA -> predictor, fitted on everything before the test cutoff
    (``ml_tasks.model.fit.fit(final=True)``).

    One fit: the LSTM stops early on the next-window loss of the samples whose label windows end at the
    test cutoff (never trained on), so no separate selection fit is needed to choose its epochs. The
    stages run in one task because each one is fitted on the previous one's outputs over time-split
    samples (see ``ml_tasks.model.fit``).
    """
    state = read_state(run_dir)
    config = model_config(state)
    data, n_background = background_step.training_data(run_dir, state, load_data(paths), config.seed)
    with tracking.step_run(paths, state["parent_run_id"], "fit_model"):
        tracking.log_params({"seed": config.seed, "embedding_dim": config.embedding_dim,
                             "lstm_units": list(config.lstm_units), "epochs_max": config.epochs,
                             "learning_rate": config.learning_rate, "batch_size": config.batch_size,
                             "max_train_sequences": config.max_train_sequences, "predictor_c": config.predictor_c,
                             "pca_variance": config.pca_variance})
        final = fit(data, config, final=True)
        lstm_info = final.info["lstm"]
        tracking.log_history(lstm_info["history"])
        curve = final.info.get("pca", {})
        tracking.log_metrics({
            "best_epoch": lstm_info["best_epoch"],
            "epochs_run": lstm_info["epochs_run"],
            "train_sequences_per_s": lstm_info.get("sequences_per_s", 0.0),
            "lstm_fit_seconds": lstm_info.get("seconds", 0.0),
            "final_fit_seconds": final.info.get("fit_seconds", 0.0),
            "n_components": final.n_components,
            "n_predictor_pairs": final.info.get("n_predictor_pairs", 0),
            "vocabulary_size": final.vocab.size,
            "n_background_sequences": n_background,
        })
        if curve:
            tracking.log_figure(plots.explained_variance(curve), "explained_variance.png")
        tracking.log_dict(final.info.get("coefficients", {}), "predictor_coefficients.json")
    final.save(run_dir / "model")
    update_state(run_dir, best_epoch=lstm_info["best_epoch"])
    return {"best_epoch": lstm_info["best_epoch"], "epochs_run": lstm_info["epochs_run"],
            "n_components": final.n_components, "vocabulary_size": int(final.vocab.size),
            "fit_seconds": round(final.info.get("fit_seconds", 0.0), 1), "n_background_sequences": n_background}


def fine_tune_challenger(paths: Paths, run_dir: Path) -> dict:
    """A challenger fine-tuned from the champion's weights on the newest window (or trained from
    scratch when there is no champion yet). With nothing new since the champion's training limit there
    is no challenger: the run goes on with the champion and registers nothing."""
    state = read_state(run_dir)
    champion = state.get("champion_at_start")
    if champion is None:
        log.warning("no champion yet: training the first model from scratch")
        result = fit_model(paths, run_dir)
        return {**result, "fine_tuned_from": None}
    config = model_config(state)
    data = load_data(paths)
    base = tracking.load_fitted_model(paths, champion)
    if data.test_cutoff_ts <= base.trained_until_ts:  # no labelled sample the champion has not seen
        base.save(run_dir / "model")
        update_state(run_dir, fine_tuned_from=champion, nothing_new=True)
        log.warning("nothing new since champion v%s (trained until %s): no challenger", champion,
                    base.trained_until_ts)
        return {"fine_tuned_from": champion, "nothing_new": True, "n_components": base.n_components}
    with tracking.step_run(paths, state["parent_run_id"], "fine_tune_challenger"):
        tracking.log_params({"fine_tuned_from_version": champion, "fine_tune_epochs": config.fine_tune_epochs})
        tuned = fine_tune(base, data, config)
        tracking.log_history(tuned.info["lstm"].get("history", {}))
        tracking.log_metrics({"n_train_sequences": tuned.info["lstm"].get("n_train_sequences", 0),
                              "fine_tune_seconds": tuned.info["lstm"].get("seconds", 0.0),
                              "update_seconds": tuned.info.get("fit_seconds", 0.0)})
    tuned.save(run_dir / "model")
    update_state(run_dir, fine_tuned_from=champion)
    return {"fine_tuned_from": champion, "n_components": tuned.n_components}


def extract_interest_features(paths: Paths, run_dir: Path) -> dict:
    """Every (user, cutoff)'s interest vector: the LSTM's last hidden state on the PCA axes."""
    state = read_state(run_dir)
    data = load_data(paths)
    fitted = FittedInterestModel.load(run_dir / "model")
    started = time.perf_counter()
    emb = interest_embeddings(fitted, data.sequences)
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
