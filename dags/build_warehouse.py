"""
### build_warehouse

Turns `raw.events` into clean, point-in-time user sequences with **dbt** (dbt-duckdb), rendered by
astronomer-cosmos: every dbt model is one task that builds the model and runs its tests
(`dbt build --select model`), so a failing test stops exactly the models downstream of it; tests that
span two models run in their own task once both are built.

Layers: `staging` (types, vocabulary, dedup) → `intermediate` (sessions, user × category × day) →
`marts` (`dim_categories`, `fct_events`, interest facts) → `marts/ml` (`ml_sequences`,
`ml_pair_features`, `ml_protocol`, contracts enforced).

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

from airflow.sdk import dag, task
from cosmos import DbtTaskGroup, ExecutionConfig, ProfileConfig, ProjectConfig, RenderConfig
from cosmos.constants import InvocationMode, LoadMode, TestBehavior, TestIndirectSelection
from pipeline_common import DEFAULT_ARGS, ML_SEQUENCES, RAW_EVENTS, START_DATE, WAREHOUSE_POOL

from ml_tasks.config import Paths, WarehouseConfig

PATHS = Paths.from_env()
DBT_EXECUTABLE = Path(sys.executable).parent / "dbt"
MANIFEST = PATHS.dbt_project_dir / "target" / "manifest.json"
DBT_ENV = {"IEP_WAREHOUSE": str(PATHS.warehouse), "IEP_EXPORT_DIR": str(PATHS.export_dir)}
if os.environ.get("IEP_PSEUDONYMISE_SALT"):
    DBT_ENV["IEP_PSEUDONYMISE_SALT"] = os.environ["IEP_PSEUDONYMISE_SALT"]


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
            invocation_mode=InvocationMode.SUBPROCESS,
            dbt_executable_path=DBT_EXECUTABLE,
            test_indirect_selection=TestIndirectSelection.CAUTIOUS,
        ),
        render_config=RenderConfig(
            load_method=LoadMode.DBT_MANIFEST if MANIFEST.exists() else LoadMode.DBT_LS,
            test_behavior=TestBehavior.BUILD,
            should_detach_multiple_parents_tests=True,
            dbt_executable_path=DBT_EXECUTABLE,
            invocation_mode=InvocationMode.SUBPROCESS,
            emit_datasets=False,
        ),
        operator_args={"pool": WAREHOUSE_POOL, "install_deps": False},
    )

    @task(pool=WAREHOUSE_POOL, outlets=[ML_SEQUENCES])
    def export_ml_tables() -> dict:
        """Copy the ML tables to Parquet (read-only warehouse connection, temp file + rename)."""
        from ml_tasks.steps import data

        return data.export(Paths.from_env())

    dbt >> export_ml_tables()


build_warehouse()
