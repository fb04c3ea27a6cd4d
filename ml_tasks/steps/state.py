"""The per-run state a DAG run's steps share, and what every step reads first.

A DAG run's steps share one folder (``run_dir``): ``state.json`` holds the MLflow parent run id, the
resolved model config and what each step produced; models and arrays sit beside it.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from ml_tasks.config import ModelConfig, Paths
from ml_tasks.errors import PipelineError
from ml_tasks.model.dataset import ModelData

STATE_FILE = "state.json"
#: the scheduled pipelines' training budget (the evaluation protocol uses ModelConfig's own defaults):
#: a daily/weekly job on 2 cores should train in minutes, not an hour


PIPELINE_MODEL_DEFAULTS: dict[str, Any] = {"epochs": 4, "max_train_sequences": 12_000}


def read_state(run_dir: Path) -> dict[str, Any]:
    path = run_dir / STATE_FILE
    if not path.exists():
        raise PipelineError(f"{run_dir}: no training run state here (the start step has not run)")
    return json.loads(path.read_text())


def write_state(run_dir: Path, state: dict[str, Any]) -> None:
    run_dir.mkdir(parents=True, exist_ok=True)
    tmp = run_dir / f".{STATE_FILE}.tmp"
    tmp.write_text(json.dumps(state, indent=1, default=str))
    os.replace(tmp, run_dir / STATE_FILE)


def update_state(run_dir: Path, **values: Any) -> dict[str, Any]:
    state = read_state(run_dir)
    state.update(values)
    write_state(run_dir, state)
    return state


def model_config(state: dict[str, Any]) -> ModelConfig:

    return ModelConfig.from_json(state["config"])


def load_data(paths: Paths):

    try:
        return ModelData.from_dir(paths.export_dir)
    except FileNotFoundError as exc:
        raise PipelineError(f"{exc}; build the warehouse first (python -m ml_tasks build)") from exc


def decisions_path(paths: Paths) -> Path:
    return paths.data_dir / "gate_decisions.jsonl"


def record_decision(paths: Paths, decision: dict[str, Any]) -> None:
    path = decisions_path(paths)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as handle:
        handle.write(json.dumps(decision, default=str) + "\n")
