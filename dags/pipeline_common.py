"""Shared wiring for the project's DAGs: assets, pool names, default args, per-run paths, running a step.

Light on purpose: this module is imported at every DAG parse, so it imports only the standard
library, ``airflow.sdk`` and ``ml_tasks.contracts`` (constants only); the rest of ``ml_tasks`` is
imported when a task runs.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from airflow.sdk import Asset, get_current_context

from ml_tasks.contracts import REGISTRY_POOL, WAREHOUSE_POOL  # noqa: F401  (re-exported for the DAG files)

#: raw behaviour rows landed in the warehouse (``raw.events``)
RAW_EVENTS = Asset(name="raw_events", uri="duckdb://warehouse/raw/events", group="warehouse")
#: the ML tables exported as Parquet after a successful ``dbt build``
ML_SEQUENCES = Asset(name="ml_sequences", uri="file://exports/ml_sequences", group="warehouse")
#: scores, trajectories and shift flags written back to the warehouse
INTEREST_SCORES = Asset(name="user_interest_scores", uri="duckdb://warehouse/main/user_interest_scores",
                        group="serving")


START_DATE = datetime(2026, 1, 1, tzinfo=UTC)

DEFAULT_ARGS = {
    "owner": "interest-pipeline",
    "retries": 1,
    "retry_delay": timedelta(seconds=30),
}


def run_step(task_id: str, **kwargs) -> dict:
    """Run this DAG's step ``task_id`` (``ml_tasks.pipelines``) for the current DAG run, in its folder."""
    from ml_tasks import pipelines
    from ml_tasks.config import Paths

    ctx = get_current_context()
    dag_id = ctx["dag"].dag_id
    return pipelines.run_step(dag_id, task_id, Paths.from_env(), run_dir(dag_id, ctx["run_id"]), **kwargs)


def run_dir(dag_id: str, run_id: str) -> Path:
    """Artifact folder of one DAG run (``ml_tasks.config.Paths.run_dir``): XCom carries only paths."""
    from ml_tasks.config import Paths

    return Paths.from_env().run_dir(dag_id, run_id)
