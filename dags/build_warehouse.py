"""
### build_warehouse

Turns `raw.events` into clean, point-in-time user sequences with **dbt** (dbt-duckdb), rendered by
astronomer-cosmos in **watcher mode**: one task (`dbt.dbt_producer_watcher`) runs a single
`dbt build` of the whole project (models and tests, dbt's own threads), and every model and every
test keeps a task of its own that shows its status as dbt reports it, so the graph and grid views
still say which model or test failed. A failing test stops exactly the models downstream of it.

**Retries.** The producer never runs `dbt build` twice in one DAG run: on a retry Cosmos skips it and
restores the statuses it had reported. A retried (or cleared) model task runs that model alone,
`dbt run --select <model>`, and a retried test task `dbt test --select <model>`, once the producer has
ended; so to rebuild one model after fixing its cause, clear that model's task (and what depends on
it). Every task of the group runs in the one-slot pool `warehouse_writer`, so such a run is still the
warehouse's only writer.

Layers: `staging` (types, vocabulary, dedup) → `intermediate` (events enriched, sessions, protocol
cutoffs, per-user lists) → `marts` (`dim_categories`, `fct_events`, interest facts) → `marts/ml`
(`ml_sequences`, `ml_pair_features`, `ml_protocol`, contracts enforced).

After the models, `export_ml_tables` copies the ML tables to Parquet (`IEP_EXPORT_DIR`) for the
training and update DAGs, which never open the warehouse themselves (DuckDB has a single writer).
That task updates the **ml_sequences** asset, which schedules `update_interest_model`.

Runs when `ingest_events` loaded new rows (asset **raw_events**). All warehouse writers share the
one-slot pool `warehouse_writer`.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from airflow.sdk import TriggerRule, dag, task
from cosmos import DbtTaskGroup, ExecutionConfig, ProfileConfig, ProjectConfig, RenderConfig
from cosmos.constants import ExecutionMode, InvocationMode, LoadMode, TestBehavior, TestIndirectSelection
from pipeline_common import DEFAULT_ARGS, ML_SEQUENCES, RAW_EVENTS, START_DATE, WAREHOUSE_POOL

from ml_tasks.config import Paths, WarehouseConfig

PATHS = Paths.from_env()
DBT_EXECUTABLE = Path(sys.executable).parent / "dbt"
MANIFEST = PATHS.dbt_project_dir / "target" / "manifest.json"
DBT_ENV = {"IEP_WAREHOUSE": str(PATHS.warehouse), "IEP_EXPORT_DIR": str(PATHS.export_dir)}
# the pseudonymisation secret reaches dbt's connection through the profile's plugin, never SQL text; its
# name contains SECRET, so Airflow masks it in the task's rendered fields
if os.environ.get("IEP_PSEUDONYMISE_SECRET"):
    DBT_ENV["IEP_PSEUDONYMISE_SECRET"] = os.environ["IEP_PSEUDONYMISE_SECRET"]


def _group_tasks(group):
    """Every task of a task group, nested groups included."""
    for child in group.children.values():
        yield from (_group_tasks(child) if hasattr(child, "children") else (child,))


@dag(
    dag_id="build_warehouse",
    schedule=[RAW_EVENTS],
    start_date=START_DATE,
    catchup=False,
    max_active_runs=1,
    default_args=DEFAULT_ARGS,
    doc_md=__doc__,
    tags=["warehouse", "dbt"],
)
def build_warehouse():
    dbt = DbtTaskGroup(
        group_id="dbt",
        project_config=ProjectConfig(
            dbt_project_path=PATHS.dbt_project_dir,
            manifest_path=MANIFEST if MANIFEST.exists() else None,
            dbt_vars={k: str(v) for k, v in WarehouseConfig.from_env().dbt_vars().items()},
            env_vars=DBT_ENV,
            install_dbt_deps=False,
        ),
        profile_config=ProfileConfig(
            profile_name="interest_pipeline",
            target_name="local",
            profiles_yml_filepath=PATHS.dbt_project_dir / "profiles.yml",
        ),
        execution_config=ExecutionConfig(
            execution_mode=ExecutionMode.WATCHER,  # one dbt build, a task per model (see the doc above)
            invocation_mode=InvocationMode.SUBPROCESS,
            dbt_executable_path=DBT_EXECUTABLE,
            test_indirect_selection=TestIndirectSelection.CAUTIOUS,
        ),
        render_config=RenderConfig(
            load_method=LoadMode.DBT_MANIFEST if MANIFEST.exists() else LoadMode.DBT_LS,
            test_behavior=TestBehavior.AFTER_EACH,
            # watcher mode: a test of several models runs in the producer's dbt build (a failure fails the
            # build, so the run); a detached task of its own would find no status and run dbt test again
            should_detach_multiple_parents_tests=False,
            dbt_executable_path=DBT_EXECUTABLE,
            invocation_mode=InvocationMode.SUBPROCESS,
            emit_datasets=False,
        ),
        operator_args={"pool": WAREHOUSE_POOL, "install_deps": False},
    )

    # In a task group Cosmos leaves the model tasks that start the dbt graph without an upstream, so they
    # could start, and poll, before the producer's dbt build (in `airflow dags test`, one process: forever).
    # They follow the producer here, whatever its outcome: the one-slot pool serialises them after it anyway.
    producer = next(t for t in _group_tasks(dbt) if t.task_id.endswith("dbt_producer_watcher"))
    for consumer in _group_tasks(dbt):
        if consumer is not producer and not consumer.upstream_task_ids and consumer.task_type != "EmptyOperator":
            producer >> consumer
            consumer.trigger_rule = TriggerRule.ALL_DONE

    @task(pool=WAREHOUSE_POOL, outlets=[ML_SEQUENCES])
    def export_ml_tables() -> dict:
        """Copy the ML tables to Parquet (read-only warehouse connection, temp file + rename)."""
        from ml_tasks.steps import data

        return data.export(Paths.from_env())

    dbt >> export_ml_tables()


build_warehouse()
