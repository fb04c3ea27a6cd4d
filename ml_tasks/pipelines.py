"""The pipelines' steps, in order: the one list that the DAGs and the CLI both follow.

Each :class:`Step` names its Airflow task id and the ``ml_tasks.steps`` function it runs; the DAG
files (``dags/train_interest_model.py``, ``dags/update_interest_model.py``) run their tasks through
:func:`run_step`, and ``python -m ml_tasks train|update`` runs the same list in one process with
:func:`run` (``tests/dags`` checks that the DAGs' task order is this order). Light to import: the
step modules load when a step runs.
"""

from __future__ import annotations

import importlib
import logging
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ml_tasks.config import Paths

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Step:
    """One pipeline step: ``task_id`` in the DAG, ``target`` = ``module:function`` under ``ml_tasks.steps``."""

    task_id: str
    target: str
    kwargs: Mapping[str, Any] = field(default_factory=dict)

    def function(self) -> Callable[..., dict]:
        module, _, name = self.target.partition(":")
        return getattr(importlib.import_module(f"ml_tasks.steps.{module}"), name)


TRAIN_INTEREST_MODEL = "train_interest_model"
UPDATE_INTEREST_MODEL = "update_interest_model"

_EVALUATE_REGISTER_SCORE = (
    Step("evaluate", "evaluate:evaluate"),
    Step("register_model", "register:register_model"),
    Step("score_users", "score:score_run"),
)
PIPELINES: dict[str, tuple[Step, ...]] = {
    # weekly full retrain
    TRAIN_INTEREST_MODEL: (
        Step("start_training", "train:start_training", {"kind": "full_retrain"}),
        Step("fit_model", "train:fit_model"),
        Step("extract_interest_features", "train:extract_interest_features"),
        *_EVALUATE_REGISTER_SCORE,
    ),
    # daily periodic update
    UPDATE_INTEREST_MODEL: (
        Step("start_update", "train:start_training", {"kind": "periodic_update"}),
        Step("refresh_warehouse", "data:refresh_warehouse"),
        Step("fine_tune_challenger", "train:fine_tune_challenger"),
        *_EVALUATE_REGISTER_SCORE,
    ),
}


def step(pipeline: str, task_id: str) -> Step:
    for candidate in PIPELINES[pipeline]:
        if candidate.task_id == task_id:
            return candidate
    raise KeyError(f"{pipeline} has no step {task_id!r}")


def run_step(pipeline: str, task_id: str, paths: Paths, run_dir: Path, **kwargs: Any) -> dict:
    """Run one step of ``pipeline`` for the run in ``run_dir`` (what a DAG task does)."""
    chosen = step(pipeline, task_id)
    return chosen.function()(paths, run_dir, **{**chosen.kwargs, **kwargs})


def run(pipeline: str, paths: Paths, run_dir: Path | None = None,
        kwargs: Mapping[str, Mapping[str, Any]] | None = None, skip: tuple[str, ...] = ()) -> dict:
    """Every step of ``pipeline`` in order, in this process; ``kwargs`` per task id, ``skip`` task ids.

    Returns each step's result by task id, with its wall time (``seconds``).
    """
    run_dir = run_dir or paths.run_dir(pipeline, f"cli_{time.strftime('%Y%m%dT%H%M%S')}_{os.getpid()}")
    out: dict[str, Any] = {}
    for chosen in PIPELINES[pipeline]:
        if chosen.task_id in skip:
            continue
        started = time.perf_counter()
        result = run_step(pipeline, chosen.task_id, paths, run_dir, **(kwargs or {}).get(chosen.task_id, {}))
        out[chosen.task_id] = {**result, "seconds": round(time.perf_counter() - started, 1)}
        log.info("%s done in %.1fs", chosen.task_id, out[chosen.task_id]["seconds"])
    return out


def train(paths: Paths, overrides: dict[str, Any] | None = None, margin: float = 0.0,
          run_dir: Path | None = None) -> dict:
    """The ``train_interest_model`` DAG's steps in one process (``python -m ml_tasks train``)."""
    return run(TRAIN_INTEREST_MODEL, paths, run_dir, {"start_training": {"overrides": overrides},
                                                      "register_model": {"margin": margin}})


def update(paths: Paths, margin: float | None = None, overrides: dict[str, Any] | None = None,
           run_dir: Path | None = None, refresh: bool = True) -> dict:
    """The ``update_interest_model`` DAG's steps in one process (``python -m ml_tasks update``)."""
    return run(UPDATE_INTEREST_MODEL, paths, run_dir,
               {"start_update": {"overrides": overrides},
                "register_model": {"margin": 0.01 if margin is None else margin}},
               skip=() if refresh else ("refresh_warehouse",))
