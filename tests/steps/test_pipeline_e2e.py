"""End to end through the real DAGs with ``dag.test()``: synthetic data -> DuckDB -> dbt (Cosmos) ->
LSTM/PCA/predictor -> MLflow registry -> scores in the warehouse, then one periodic update."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import REPO

pytestmark = pytest.mark.slow


def _dagbag():
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(REPO / "dags"))
    assert bag.import_errors == {}
    return bag


def _run(dag, **conf):
    run = dag.test(run_conf=conf or None)
    failed = [ti.task_id for ti in run.get_task_instances() if ti.state not in ("success", "skipped")]
    assert run.state == "success", f"{dag.dag_id} failed tasks: {failed}"
    return run


def _query(warehouse, sql):
    import duckdb

    con = duckdb.connect(str(warehouse), read_only=True)
    try:
        return con.execute(sql).fetchall()
    finally:
        con.close()


def test_dags_run_the_whole_pipeline(airflow_db, pipeline_paths, monkeypatch):
    from ml_tasks import tracking
    from ml_tasks.config import Paths
    from ml_tasks.steps import data as data_step
    from ml_tasks.steps import status as status_step

    monkeypatch.setenv("IEP_HORIZON_HOURS", "24")
    generated = data_step.generate(pipeline_paths, users=250, days=8, seed=3)
    assert generated["n_events"] > 5000
    bag = _dagbag()
    paths = Paths.from_env()

    _run(bag.get_dag("ingest_events"))
    loaded = _query(paths.warehouse, "select count(*) from raw.events")[0][0]
    assert loaded == generated["n_events"]  # a clean synthetic file: every row loaded

    _run(bag.get_dag("build_warehouse"))
    for table in ("ml_sequences", "ml_pair_features", "dim_categories"):
        assert _query(paths.warehouse, f"select count(*) from {table}")[0][0] > 0, table
        assert (paths.export_dir / f"{table}.parquet").exists()

    _run(bag.get_dag("train_interest_model"), epochs=2, seed=1)
    champion = tracking.alias_version(paths, tracking.CHAMPION)
    assert champion == 1
    info = tracking.version_info(paths, champion)
    assert 0.0 < info["metrics"]["ndcg_at_10"] <= 1.0
    runs = tracking.latest_runs(paths, max_results=100)
    names = set(runs["tags.mlflow.runName"])
    assert {"eval:popularity", "eval:recency_decay", "eval:lstm_pca_predictor", "fit_model"} <= names
    scored = _query(paths.warehouse, "select count(distinct user_id), count(*) from serving.user_interest_scores")
    assert scored[0][0] > 0 and scored[0][1] >= scored[0][0]
    trajectory_users = _query(paths.warehouse, "select count(distinct user_id) from serving.user_interest_trajectory")
    assert trajectory_users[0][0] == scored[0][0]
    # the shift flags judged against the planted switches; the scoring step flags with the chosen detector
    last = json.loads((paths.data_dir / "last_run.json").read_text())
    report = json.loads((Path(last["run_dir"]) / "report.json").read_text())
    flags = report["shift_flags"]
    assert set(flags["test"]) == {"embedding", "recency_profile", "embedding_fixed_rule"}
    assert flags["validation_days"] >= 2 and flags["test_days"] == 3
    chosen = flags["chosen"]
    assert chosen == json.loads((Path(last["run_dir"]) / "model" / "model.json").read_text())["info"]["shift_detector"]
    thresholds = _query(paths.warehouse, "select distinct threshold from serving.user_interest_shifts")
    assert all(abs(t - chosen["threshold"]) < 1e-9 for (t,) in thresholds)

    # the daily update on the same data: nothing new since the champion, so no version and it says so
    _run(bag.get_dag("update_interest_model"), epochs=1, promotion_margin=0.0)
    assert tracking.alias_version(paths, tracking.CHAMPION) == 1
    assert tracking.alias_version(paths, tracking.CHALLENGER) is None
    assert len(tracking.client(paths).search_model_versions("name='user_interest_model'")) == 1
    status = status_step.status(paths)
    assert status["n_scored_users"] > 0
    assert status["last_gate_decision"]["version"] == 1  # the train run's decision: the update recorded none
    last_run = json.loads((paths.data_dir / "last_run.json").read_text())
    assert last_run["kind"] == "periodic_update"
    assert last_run["registered"]["version"] is None and "nothing new" in last_run["registered"]["reason"]
    json.dumps(status)
