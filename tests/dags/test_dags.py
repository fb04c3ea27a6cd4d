"""DAG integrity: the files import cleanly, follow the project's conventions, and stay light to parse."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.conftest import REPO

EXPECTED = {"ingest_events", "build_warehouse", "train_interest_model", "update_interest_model"}
HEAVY = ("tensorflow", "keras", "mlflow", "pandas", "duckdb", "sklearn", "torch", "matplotlib")


@pytest.fixture(scope="module")
def dagbag(airflow_db):
    from airflow.dag_processing.dagbag import DagBag

    return DagBag(dag_folder=str(REPO / "dags"))


def test_no_import_errors(dagbag):
    assert dagbag.import_errors == {}


def test_expected_dags(dagbag):
    assert EXPECTED <= set(dagbag.dag_ids)


@pytest.mark.parametrize("dag_id", sorted(EXPECTED))
def test_dag_conventions(dagbag, dag_id):
    dag = dagbag.get_dag(dag_id)
    assert dag is not None
    assert dag.doc_md and len(dag.doc_md.strip()) > 200, "doc_md must explain the DAG to an operator"
    assert dag.tags
    assert dag.catchup is False
    assert dag.max_active_runs == 1
    assert dag.start_date.tzinfo is not None
    for t in dag.tasks:
        assert t.retries >= 1, f"{dag_id}.{t.task_id} has no retries"


def test_warehouse_writers_share_one_pool(dagbag):
    """Every task that writes DuckDB runs in the single-slot pool (DuckDB has one writer)."""
    build = dagbag.get_dag("build_warehouse")
    # every dbt task but Cosmos' gate after the producer (an EmptyOperator: it runs nothing)
    dbt_tasks = [t for t in build.tasks if t.task_id.startswith("dbt.") and t.task_type != "EmptyOperator"]
    assert dbt_tasks, "dbt models should render as Cosmos tasks"
    assert {t.pool for t in dbt_tasks} == {"warehouse_writer"}
    assert dagbag.get_dag("ingest_events").get_task("load_new_files").pool == "warehouse_writer"
    for dag_id in ("train_interest_model", "update_interest_model"):
        assert dagbag.get_dag(dag_id).get_task("score_users").pool == "warehouse_writer"


def test_registry_writers_share_one_pool(dagbag):
    """Training and the daily update never change versions or aliases at the same time."""
    for dag_id in ("train_interest_model", "update_interest_model"):
        assert dagbag.get_dag(dag_id).get_task("register_model").pool == "model_registry"
    assert dagbag.get_dag("update_interest_model").get_task("start_update").pool == "model_registry"  # rollback


@pytest.mark.parametrize("dag_id", ["train_interest_model", "update_interest_model"])
def test_model_dags_follow_the_one_step_list(dagbag, dag_id):
    """The DAG's tasks, in dependency order, are ``ml_tasks.pipelines``' steps (which the CLI runs too)."""
    from ml_tasks.pipelines import PIPELINES

    dag = dagbag.get_dag(dag_id)
    order = [t.task_id for t in dag.task_group.topological_sort()]
    assert order == [s.task_id for s in PIPELINES[dag_id]]
    for task in dag.tasks:  # a chain: each step waits for the one before it
        assert len(task.upstream_task_ids) <= 1 and len(task.downstream_task_ids) <= 1
    for step in PIPELINES[dag_id]:  # every step resolves to a function of ml_tasks.steps
        assert callable(step.function())


def test_dbt_runs_as_one_build_with_a_task_per_model(dagbag):
    """Watcher mode: one producer task runs ``dbt build``; model and test tasks report its statuses."""
    build = dagbag.get_dag("build_warehouse")
    producers = [t for t in build.tasks if t.task_type == "DbtProducerWatcherOperator"]
    assert [t.task_id for t in producers] == ["dbt.dbt_producer_watcher"]
    consumers = [t for t in build.tasks if t.task_id.startswith("dbt.") and t not in producers
                 and t.task_type != "EmptyOperator"]
    assert len(consumers) >= 17 and all("Watcher" in t.task_type for t in consumers)
    # every model/test task waits for the producer's build to end, whatever its outcome (one process
    # running the DAG, as `airflow dags test` does, must never poll for a build that has not started)
    downstream = producers[0].get_flat_relative_ids(upstream=False)
    assert {t.task_id for t in consumers} <= downstream
    roots = [t for t in consumers if producers[0].task_id in t.upstream_task_ids]
    assert roots and {t.trigger_rule for t in roots} == {"all_done"}


def test_dbt_models_render_as_tasks(dagbag):
    build = dagbag.get_dag("build_warehouse")
    ids = {t.task_id for t in build.tasks}
    for model in ("stg_raw__events", "ml_sequences", "ml_pair_features", "dim_categories"):
        assert any(i.startswith("dbt.") and model in i for i in ids), f"no task for {model}: {sorted(ids)}"


def test_assets_chain_ingest_to_models(dagbag):
    def outlet_names(dag):
        return {getattr(o, "name", None) for t in dag.tasks for o in t.outlets}

    assert "raw_events" in outlet_names(dagbag.get_dag("ingest_events"))
    assert "ml_sequences" in outlet_names(dagbag.get_dag("build_warehouse"))
    assert "user_interest_scores" in outlet_names(dagbag.get_dag("train_interest_model"))
    assert "raw_events" in repr(dagbag.get_dag("build_warehouse").timetable.asset_condition)
    update = dagbag.get_dag("update_interest_model").timetable
    assert "ml_sequences" in repr(update.asset_condition)
    assert "0 3 * * *" in repr(update.timetable), "the update also runs daily on its own"


@pytest.mark.parametrize("dag_file", sorted(p.name for p in (REPO / "dags").glob("*.py")))
def test_no_heavy_imports_at_parse_time(dag_file):
    """Parsing a DAG file must not import the ML stack (it runs constantly in the scheduler)."""
    code = (
        "import runpy, sys, json\n"
        f"sys.path.insert(0, {str(REPO / 'dags')!r}); sys.path.insert(0, {str(REPO)!r})\n"
        f"runpy.run_path({str(REPO / 'dags' / dag_file)!r})\n"
        f"print(json.dumps([m for m in {HEAVY!r} if m in sys.modules]))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    assert json.loads(out.stdout.strip().splitlines()[-1]) == []


def test_train_dag_takes_checked_model_settings(dagbag, tmp_path):
    from ml_tasks.config import Paths
    from ml_tasks.errors import PipelineError
    from ml_tasks.steps import train

    params = dagbag.get_dag("train_interest_model").params
    assert params["model_settings"] == {}
    assert params.get_param("model_settings").schema["type"] == "object"
    # what the start_training task does with a bad value: one sentence, before any work
    paths = Paths.from_env(data_dir=tmp_path)
    with pytest.raises(PipelineError, match="model setting copy_head takes bool, got 'yes'"):
        train.start_training(paths, tmp_path / "run", settings={"copy_head": "yes"})
    with pytest.raises(PipelineError, match="unknown model setting 'lstm_unit'"):
        train.start_training(paths, tmp_path / "run", settings={"lstm_unit": [8]})
